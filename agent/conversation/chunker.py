"""Cuts a streamed reply into phrases that text-to-speech can start on before the reply is finished.

The first phrase is cut early (at a comma, or after a few words) because it decides when the user
first hears the agent; later phrases follow sentence ends so the voice keeps its intonation.
"""

from __future__ import annotations

import re

from agent.config import ChunkerConfig

_SENTENCE_END = re.compile(r"[.!?…。！？]+[\"')\]]*(?=\s)|[。！？]")
_CLAUSE_END = re.compile(r"[,;:，、；：](?=\s)|[，、；：]")
_MARKUP = re.compile(r"[*_#`~>|]+")


def speakable(text: str) -> str:
    """Remove markdown symbols that a voice would read out or stumble on."""
    return re.sub(r"\s+", " ", _MARKUP.sub(" ", text)).strip()


class PhraseChunker:
    def __init__(self, config: ChunkerConfig) -> None:
        self._config = config
        self._buffer = ""
        self._phrases_out = 0

    def push(self, text: str) -> list[str]:
        """Add streamed text; return the phrases it completed."""
        self._buffer += text
        phrases = []
        while (cut := self._find_cut()) is not None:
            phrase, self._buffer = self._buffer[:cut], self._buffer[cut:]
            self._emit(phrase, phrases)
        return phrases

    def flush(self) -> list[str]:
        """The reply ended: return what is left."""
        phrases: list[str] = []
        self._emit(self._buffer, phrases)
        self._buffer = ""
        return phrases

    def _emit(self, phrase: str, phrases: list[str]) -> None:
        phrase = speakable(phrase)
        if phrase and any(ch.isalnum() for ch in phrase):
            phrases.append(phrase)
            self._phrases_out += 1

    def _find_cut(self) -> int | None:
        text = self._buffer
        min_chars = self._config.min_phrase_chars
        for match in _SENTENCE_END.finditer(text):
            if len(text[: match.end()].strip()) >= min_chars:
                return match.end()
        first = self._phrases_out == 0
        if first:
            for match in _CLAUSE_END.finditer(text):
                if len(text[: match.end()].strip()) >= min_chars:
                    return match.end()
        limit = self._config.first_phrase_max_words if first else self._config.phrase_max_words
        words = list(re.finditer(r"\S+\s", text))  # words followed by a space are complete
        if len(words) >= limit:
            return words[limit - 1].end()
        return None
