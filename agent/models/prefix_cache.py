"""KV caches of recent conversations, reused so a new turn only prefills what is new.

A conversation's next prompt starts with its previous prompt and reply, so the cache built while
answering the last turn already holds most of it. Each entry keeps the token ids its cache holds; a
new prompt takes the entry sharing the longest prefix, cropped to that prefix, and prefills the rest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class _Entry:
    ids: list[int]
    cache: Any  # a transformers Cache: get_seq_length() and crop(-n)


def common_prefix_length(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


class PrefixCaches:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._entries: list[_Entry] = []  # oldest first

    def take(self, ids: list[int]) -> tuple[Any | None, int]:
        """Remove and return the cache sharing the longest prefix with ``ids``, cropped to it, and that length.

        At least the last token of ``ids`` is always left to prefill, since its logits are needed.
        """
        best, best_length = None, 0
        for entry in self._entries:
            length = min(common_prefix_length(entry.ids, ids), len(ids) - 1)
            if length > best_length:
                best, best_length = entry, length
        if best is None:
            return None, 0
        self._entries.remove(best)
        surplus = best.cache.get_seq_length() - best_length
        if surplus > 0:
            best.cache.crop(-surplus)  # a negative count removes that many tokens from the end
        return best.cache, best_length

    def put(self, ids: list[int], cache: Any) -> None:
        """Keep ``cache``, which holds exactly ``ids``; the least recently used entry goes beyond capacity."""
        if self.capacity <= 0:
            return
        self._entries.append(_Entry(list(ids), cache))
        del self._entries[: -self.capacity]
