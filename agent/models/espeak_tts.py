"""espeak-ng text-to-speech through ctypes: robotic, instant, and it speaks about a hundred languages."""

from __future__ import annotations

import ctypes
import logging
import threading
from collections.abc import Iterator

import numpy as np

from agent.config import Config
from agent.languages import answer_language
from agent.models.base import NEUTRAL, SpeechChunk, SpeechStyle
from agent.models.speech_style import voice_style

log = logging.getLogger(__name__)

# Values from espeak-ng's speak_lib.h.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000
_EE_OK = 0
_ESPEAK_RATE = 1
_ESPEAK_PITCH = 3
_ESPEAK_RANGE = 4
_RATE_NORMAL = 175  # words a minute
_RATE_MIN, _RATE_MAX = 80, 450
_CHARS_UTF8 = 1
_POS_CHARACTER = 1
_BUFFER_MS = 200
# ISO 639-1 codes that espeak-ng files under another name.
_VOICE_ALIASES = {"zh": "cmn", "no": "nb"}

_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class _Espeak:
    """The process-wide espeak-ng library: its voice and callback are globals, so one caller at a time."""

    def __init__(self) -> None:
        import espeakng_loader

        self.lock = threading.Lock()
        self._lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self._lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        self._lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
        self._lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self._lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        self._lib.espeak_Synth.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        data_path = espeakng_loader.get_data_path().encode()
        self.sample_rate = self._lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, _BUFFER_MS, data_path, _INITIALIZE_DONT_EXIT
        )
        if self.sample_rate <= 0:
            raise RuntimeError(f"espeak_Initialize failed with data at {data_path.decode()}")
        self._pieces: list[np.ndarray] = []
        # Kept on the instance: ctypes does not keep a callback alive for the C side.
        self._callback = _SynthCallback(self._collect)
        self._lib.espeak_SetSynthCallback(self._callback)

    def _collect(self, samples: ctypes._Pointer, count: int, _events: int | None) -> int:
        if samples and count > 0:
            self._pieces.append(np.ctypeslib.as_array(samples, shape=(count,)).copy())
        return 0  # 0 = go on

    def synthesize(self, text: str, voice: str, rate: int, pitch: int = 50, pitch_range: int = 50) -> np.ndarray:
        """Whole phrase as int16 samples at ``sample_rate``; pitch and its range 0..100 (50 = the voice's own)."""
        with self.lock:
            if self._lib.espeak_SetVoiceByName(voice.encode()) != _EE_OK:
                raise ValueError(f"espeak-ng has no voice for language {voice!r}")
            self._lib.espeak_SetParameter(_ESPEAK_RATE, rate, 0)
            self._lib.espeak_SetParameter(_ESPEAK_PITCH, pitch, 0)
            self._lib.espeak_SetParameter(_ESPEAK_RANGE, pitch_range, 0)
            encoded = text.encode() + b"\0"
            self._pieces = []
            status = self._lib.espeak_Synth(
                encoded, len(encoded), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None
            )
            pieces, self._pieces = self._pieces, []
        if status != _EE_OK:
            raise RuntimeError(f"espeak_Synth failed with status {status}")
        return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int16)


_instance: _Espeak | None = None
_instance_lock = threading.Lock()


def _espeak() -> _Espeak:
    global _instance
    with _instance_lock:
        if _instance is None:
            _instance = _Espeak()
        return _instance


def espeak_rate(speaking_rate: float) -> int:
    """espeak-ng words a minute for a speaking-rate multiplier (1.0 = espeak's normal pace)."""
    if speaking_rate <= 0:
        raise ValueError(f"speaking_rate must be above 0, got {speaking_rate}")
    return int(min(max(round(_RATE_NORMAL * speaking_rate), _RATE_MIN), _RATE_MAX))


class EspeakTextToSpeech:
    """Any language espeak-ng has a voice for, named by its language code ("es", "hi", "fr")."""

    name = "espeak"

    def __init__(self, config: Config) -> None:
        self._speaking_rate = config.tts.speaking_rate
        self._language = answer_language(config)  # "auto" answers in English until it hears otherwise
        self._espeak = _espeak()

    @property
    def sample_rate(self) -> int:
        return self._espeak.sample_rate

    def synthesize(
        self,
        text: str,
        language: str,
        style: SpeechStyle = NEUTRAL,
        *,
        speaking_rate: float | None = None,
        cancel: threading.Event | None = None,
    ) -> Iterator[SpeechChunk]:
        """The whole phrase in one chunk; ``style`` sets its pace, pitch and intonation range."""
        voice = voice_style(style)
        rate = espeak_rate((self._speaking_rate if speaking_rate is None else speaking_rate) * voice.rate)
        samples = self._espeak.synthesize(
            text, _VOICE_ALIASES.get(language, language), rate, voice.pitch, voice.pitch_range
        )
        if samples.size:
            yield SpeechChunk((samples.astype(np.float32) / 32768.0), self._espeak.sample_rate)

    def warm_up(self) -> None:
        for _ in self.synthesize("ok", self._language):
            pass
