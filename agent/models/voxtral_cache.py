"""How a conversation maps onto one Voxtral KV cache, turn after turn.

A conversation is a list of segments: the BOS token, then one segment per message. A user segment
is ``[INST] (instructions) [BEGIN_AUDIO] [AUDIO]xN [/INST]`` and is known by a digest of its audio (or
its text when it has none); an assistant segment is the token ids that were *generated* for it, never
the reply text tokenized again, closed by ``</s>``. A session slot remembers the segments its cache
holds; a new call shares the longest prefix of segments with the slot and prefills only the rest.

The instructions ride in the first user message: Voxtral's tokenizer (mistral-common v7) refuses a
system message next to audio.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from agent.models.base import SAMPLE_RATE, ChatMessage
from agent.models.prefix_cache import common_prefix_length

_DIGEST_BYTES = 16
_INSTRUCTIONS_SEPARATOR = "\n\n"
BOS_KEY = "bos"


@dataclass
class Segment:
    key: str  # "bos", "user:<digest>" (+ ":first" when it carries the instructions) or "assistant:<user key>"
    ids: list[int]
    user: str = ""  # the user turn's key, for a user segment
    # The clip padded as the tokenizer padded it; its embeddings fill the [AUDIO] placeholders.
    audio: np.ndarray | None = field(default=None, repr=False)
    audio_start: int = 0  # index in ``ids`` of the first [AUDIO]
    audio_tokens: int = 0


@dataclass
class Slot:
    """One conversation's static KV cache, allocated once, and what it holds."""

    index: int
    cache: Any  # transformers StaticCache
    segments: list[Segment] = field(default_factory=list)
    length: int = 0  # tokens the cache holds: a prefix of the segments' ids
    replies: dict[str, list[int]] = field(default_factory=dict)  # user key -> ids generated for it
    # Projected audio embeddings by user key, computed once: a rebuild after the window slides skips the encoder.
    embeds: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    busy: bool = False
    last_used: float = 0.0

    @property
    def ids(self) -> list[int]:
        return [token for segment in self.segments for token in segment.ids]

    def forget_dropped_turns(self) -> None:
        """Keep replies and embeddings only for the turns the cache still holds."""
        users = {segment.user for segment in self.segments if segment.user}
        self.replies = {key: ids for key, ids in self.replies.items() if key in users}
        self.embeds = {key: embeds for key, embeds in self.embeds.items() if key in users}


def user_key(message: ChatMessage) -> str:
    """A user turn's identity: a digest of its audio, or of its text when it has none."""
    if message.audio is not None:
        data = np.ascontiguousarray(message.audio).tobytes()
    else:
        data = message.text.encode()
    return "user:" + hashlib.blake2b(data, digest_size=_DIGEST_BYTES).hexdigest()


class TurnEncoder:
    """Token ids of each segment, exactly as mistral-common's v7 instruct tokenizer lays out a request."""

    def __init__(self, instruct_tokenizer: Any) -> None:
        self._tokenizer = instruct_tokenizer
        self._text = instruct_tokenizer.tokenizer
        self._audio = instruct_tokenizer.audio_encoder
        self.bos = self._text.bos_id
        self.eos = self._text.eos_id
        self.audio_token = self._audio.audio_token

    def encode_text(self, text: str) -> list[int]:
        return self._text.encode(text, bos=False, eos=False)

    def decode(self, ids: list[int]) -> str:
        return self._text.decode(ids)

    def user(self, message: ChatMessage, instructions: str | None) -> Segment:
        ids = [self._tokenizer.BEGIN_INST]
        key = user_key(message)
        if instructions is not None:
            ids += self.encode_text(instructions + _INSTRUCTIONS_SEPARATOR)
        # The same turn opening the window (with the instructions) is other tokens than in the middle.
        segment = Segment(key + (":first" if instructions is not None else ""), ids, user=key)
        if message.audio is not None:
            from mistral_common.tokens.tokenizers.audio import Audio

            encoded = self._audio.encode_audio(Audio(message.audio.astype(np.float32), SAMPLE_RATE, "wav"))
            segment.audio = encoded.audio.audio_array
            segment.audio_start = len(ids) + encoded.tokens.index(self.audio_token)
            segment.audio_tokens = encoded.tokens.count(self.audio_token)
            ids += encoded.tokens
        else:
            ids += self.encode_text(message.text)
        ids.append(self._tokenizer.END_INST)
        return segment


def build_segments(
    messages: list[ChatMessage],
    default_instructions: str,
    encoder: TurnEncoder,
    replies: dict[str, list[int]],
    close_last_reply: bool = True,
) -> list[Segment]:
    """The segments of a conversation.

    An assistant message maps to the ids generated for the user turn before it, cut to the part whose
    text it holds (the user heard only that much). ``close_last_reply`` False leaves a trailing reply
    open (no ``</s>``), as the cache holds it right after a barge-in.
    """
    instructions = default_instructions
    if messages and messages[0].role == "system":
        instructions, messages = messages[0].text, messages[1:]
    segments = [Segment(BOS_KEY, [encoder.bos])]
    previous_user = ""
    first_user = True
    for position, message in enumerate(messages):
        if message.role == "user":
            segment = encoder.user(message, instructions if first_user else None)
            segments.append(segment)
            previous_user, first_user = segment.user, False
        elif message.role == "assistant":
            ids = _reply_ids(message.text, replies.get(previous_user), encoder)
            if close_last_reply or position < len(messages) - 1:
                ids = ids + [encoder.eos]
            segments.append(Segment("assistant:" + previous_user, ids))
        else:
            raise ValueError(f"unexpected message role {message.role!r} after the first message")
    return segments


def _reply_ids(text: str, generated: list[int] | None, encoder: TurnEncoder) -> list[int]:
    if generated is not None:
        heard = heard_token_count(encoder.decode, generated, text)
        if heard is not None:
            return generated[:heard]
    return encoder.encode_text(text)  # a reply this slot did not generate (another process, a lost slot)


def _normalized(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def heard_token_count(decode: Callable[[list[int]], str], generated: list[int], heard: str) -> int | None:
    """How many generated tokens the heard text covers: the longest prefix whose text starts ``heard``.

    None when ``heard`` is not a prefix of what was generated at all (then it was not this reply).
    Spacing is compared loosely: the heard text is rebuilt from words.
    """
    target = _normalized(heard)
    if _normalized(decode(generated)) == target:
        return len(generated)
    best = 0
    for count in range(1, len(generated) + 1):
        text = _normalized(decode(generated[:count]))
        if len(text) > len(target):
            break
        if target.startswith(text):
            best = count
    if best == 0 and target:
        return None
    return best


def shared_prefix(held: list[Segment], wanted: list[Segment]) -> int:
    """Tokens at the start of ``wanted`` that ``held`` has too (same audio behind every [AUDIO])."""
    shared = 0
    for mine, theirs in zip(held, wanted, strict=False):
        if mine.key != theirs.key:
            break
        same = common_prefix_length(mine.ids, theirs.ids)
        shared += same
        if same < len(mine.ids) or same < len(theirs.ids):
            break
    return shared


def conversation_keys(messages: list[ChatMessage]) -> list[str]:
    """The segment keys of a conversation, without tokenizing it: enough to pick its slot."""
    if messages and messages[0].role == "system":
        messages = messages[1:]
    keys, previous = [BOS_KEY], ""
    for message in messages:
        if message.role == "user":
            previous = user_key(message)
            keys.append(previous + (":first" if len(keys) == 1 else ""))
        else:
            keys.append("assistant:" + previous)
    return keys


def _matching_segments(slot: Slot, keys: list[str]) -> int:
    count = 0
    for segment, key in zip(slot.segments, keys, strict=False):
        if segment.key != key:
            break
        count += 1
    return count if slot.length else 0


def choose_slot(slots: list[Slot], keys: list[str]) -> Slot | None:
    """The slot for a conversation with these segment keys, or None to wait for one.

    The slot holding most of its segments; when that one is busy (the conversation's previous reply
    is still being cancelled), wait for it. Else a free slot that holds this conversation's turns (its
    window slid), else the least recently used free slot.
    """
    best = max(slots, key=lambda slot: (_matching_segments(slot, keys), not slot.busy, -slot.index))
    if _matching_segments(best, keys) > 1:
        return None if best.busy else best
    free = [slot for slot in slots if not slot.busy]
    if not free:
        return None
    users = {key.removesuffix(":first") for key in keys if key.startswith("user:")}
    for slot in free:
        if users & set(slot.replies):
            return slot
    return min(free, key=lambda slot: slot.last_used)
