"""What the user actually heard of a reply, from the samples the outgoing track really sent.

No word timestamps are needed: each phrase keeps its text and its audio length, and a phrase cut
in the middle keeps the share of its words that matches the share of its audio played.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class SpokenPhrase:
    text: str
    samples: int  # audio length queued for this phrase


def heard_text(phrases: list[SpokenPhrase], sent: list[int]) -> str:
    """Join the heard part of each phrase; ``sent[i]`` is how many samples of phrase i went out."""
    heard = []
    for phrase, played in zip(phrases, sent, strict=True):
        if played <= 0 or phrase.samples <= 0:
            break
        if played >= phrase.samples:
            heard.append(phrase.text)
            continue
        words = phrase.text.split()
        kept = int(len(words) * played / phrase.samples)
        if kept:
            heard.append(" ".join(words[:kept]))
        break
    return " ".join(heard)
