"""tts.backend ``auto``: every phrase spoken in its language by the best installed voice that speaks it.

The routing table, best first among ``tts.voices``:

- ``chatterbox``: the languages of the configured Chatterbox model (23 multilingual, or English);
- ``piper``: English (the joe voice);
- ``espeak``: any language espeak-ng has a voice for, the last resort.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator

from agent.config import Config, ConfigError
from agent.languages import answer_language
from agent.models.base import NEUTRAL, SpeechChunk, SpeechStyle, TextToSpeech
from agent.models.espeak_tts import EspeakTextToSpeech
from agent.models.piper_tts import PiperTextToSpeech

log = logging.getLogger(__name__)

# Voices whose languages are fixed; chatterbox tells its own (``languages``) once loaded.
PIPER_LANGUAGES = frozenset({"en"})


def _voices() -> dict[str, Callable[[Config], TextToSpeech]]:
    from agent.models.registry import TEXT_TO_SPEECH

    return {name: build for name, build in TEXT_TO_SPEECH.items() if name != VoiceRouter.name}


def speaks(voice: TextToSpeech, language: str) -> bool:
    """Whether ``voice`` is the one to speak ``language`` with; espeak-ng takes whatever is left."""
    if isinstance(voice, EspeakTextToSpeech):
        return True
    if isinstance(voice, PiperTextToSpeech):
        return language in PIPER_LANGUAGES
    return language in getattr(voice, "languages", frozenset())


class VoiceRouter:
    """Holds the voices of ``tts.voices`` and hands each phrase to the first one that speaks its language."""

    name = "auto"

    def __init__(self, config: Config, voices: list[TextToSpeech] | None = None) -> None:
        if voices is None:
            known = _voices()
            names = list(config.tts.voices)
            if unknown := [name for name in names if name not in known]:
                raise ConfigError(
                    f"unknown tts.voices {', '.join(map(repr, unknown))}; allowed values: {', '.join(known)}"
                )
            if not names:
                raise ConfigError("tts.voices is empty; name at least one of: " + ", ".join(known))
            voices = [known[name](config) for name in dict.fromkeys(names)]
        self.voices = voices
        self._language = answer_language(config)
        log.info("voices, best first: %s", ", ".join(voice.name for voice in voices))

    def voice_for(self, language: str) -> TextToSpeech:
        for voice in self.voices:
            if speaks(voice, language):
                return voice
        raise ValueError(f"no voice of tts.voices ({', '.join(v.name for v in self.voices)}) speaks {language!r}")

    def synthesize(
        self, text: str, language: str, style: SpeechStyle = NEUTRAL, *, cancel: threading.Event | None = None
    ) -> Iterator[SpeechChunk]:
        return self.voice_for(language).synthesize(text, language, style, cancel=cancel)

    def warm_up(self) -> None:
        """Warm the voices the configured language and English go to."""
        for voice in dict.fromkeys([self.voice_for(self._language), self.voice_for("en")]):
            voice.warm_up()
