"""Picking the next token from a model's logits: greedy or sampled, with a penalty on the reply's own tokens."""

from __future__ import annotations

import torch


def pick_token(logits: torch.Tensor, generated: list[int], temperature: float, repetition_penalty: float) -> int:
    """The next token id; ``temperature`` 0 is greedy."""
    logits = logits.float().reshape(-1).clone()  # a fresh tensor: the penalty edits it in place
    if repetition_penalty != 1.0 and generated:
        # Only the reply's own tokens: penalising the prompt's pushes a small model off its language.
        seen = torch.tensor(sorted(set(generated)), device=logits.device)
        scores = logits[seen]
        logits[seen] = torch.where(scores > 0, scores / repetition_penalty, scores * repetition_penalty)
    if temperature <= 0:
        return int(logits.argmax())
    probabilities = torch.softmax(logits / temperature, dim=-1)
    return int(torch.multinomial(probabilities, 1))
