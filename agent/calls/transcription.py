"""An uploaded recording to speaker turns: Whisper with segment timestamps, the language detected per file.

A stereo file with different content on each channel is a call recorded one speaker per channel
(the usual telephony export): each channel is transcribed on its own and its segments become that
speaker's turns. A mono file gets one speaker here; telling voices apart is the analysis step's job.
Blocking: runs in the job runner's thread, never on the event loop.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from agent.calls.audio_files import DecodedAudio
from agent.calls.store import TurnIn
from agent.config import AUTO_LANGUAGE, Config
from agent.models.whisper_stt import model_folder

if TYPE_CHECKING:
    from faster_whisper.transcribe import Segment, TranscriptionInfo

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
# Channels this close (RMS of the difference against RMS of the signal) are one mono signal twice.
_SAME_CHANNEL_RATIO = 0.05
_models: dict[tuple[Path, int], object] = {}
_models_lock = threading.Lock()


@dataclass
class Transcription:
    turns: list[TurnIn]
    languages: list[str]


def _model(config: Config):
    from faster_whisper import WhisperModel

    folder = model_folder(config, AUTO_LANGUAGE)  # the multilingual model: uploads come in any language
    threads = config.records.transcription_threads
    with _models_lock:
        if (folder, threads) not in _models:
            _models[folder, threads] = WhisperModel(
                str(folder), device="cpu", compute_type=config.stt.compute_type, cpu_threads=threads
            )
        return _models[folder, threads]


def whisper_segments(
    signal: np.ndarray,
    config: Config,
    *,
    language: str | None = None,
    prompt: str | None = None,
    temperature: float | None = None,
    word_timestamps: bool = False,
) -> tuple[Iterator[Segment], TranscriptionInfo]:
    """The multilingual Whisper's segments of one 16 kHz mono signal (lazy: iterate them in the same thread).

    ``language`` None: detected. ``temperature`` None keeps faster-whisper's fallback from 0 upwards."""
    return _model(config).transcribe(
        signal,
        language=language,
        initial_prompt=prompt,
        beam_size=config.stt.beam_size,
        vad_filter=True,  # skips long silences and keeps Whisper from inventing words in them
        condition_on_previous_text=False,
        word_timestamps=word_timestamps,
        **({} if temperature is None else {"temperature": temperature}),
    )


def speaker_channels(audio: DecodedAudio) -> list[np.ndarray]:
    """One signal per speaker channel: two for a two-channel call, one for mono (or a stereo copy of mono)."""
    samples = audio.samples
    if samples.shape[0] == 2:
        left, right = samples
        level = max(float(np.sqrt(np.mean(left**2))), float(np.sqrt(np.mean(right**2))), 1e-9)
        if float(np.sqrt(np.mean((left - right) ** 2))) / level > _SAME_CHANNEL_RATIO:
            return [np.ascontiguousarray(left), np.ascontiguousarray(right)]
    return [np.ascontiguousarray(samples.mean(axis=0), dtype=np.float32)]


def transcribe_recording(
    audio: DecodedAudio,
    config: Config,
    on_progress: Callable[[float], None] = lambda share: None,
    cancelled: threading.Event | None = None,
) -> Transcription:
    """Every channel's segments as turns in time order, and the languages heard."""
    channels = speaker_channels(audio)
    total_s = max(audio.duration_s * len(channels), 1e-6)
    done_s = 0.0
    turns: list[TurnIn] = []
    languages: list[str] = []
    for number, signal in enumerate(channels, start=1):
        if not signal.size:
            continue
        segments, info = whisper_segments(signal, config)  # the language detected per file (per channel)
        heard_any = False
        for segment in segments:
            if cancelled is not None and cancelled.is_set():
                raise InterruptedError("transcription cancelled")
            on_progress(min(1.0, (done_s + segment.end) / total_s))
            text = segment.text.strip()
            if not text:
                continue
            heard_any = True
            turns.append(
                TurnIn(
                    speaker=f"Speaker {number}",
                    role="user",
                    start_ms=int(segment.start * 1000),
                    end_ms=int(segment.end * 1000),
                    text=text,
                    language=info.language,
                )
            )
        done_s += audio.duration_s
        if heard_any and info.language not in languages:
            languages.append(info.language)
    turns.sort(key=lambda turn: (turn.start_ms, turn.speaker))
    on_progress(1.0)
    return Transcription(turns, languages)
