"""Where a user turn starts and ends: webrtcvad plus an energy floor over 16 kHz mono frames.

A turn starts once ``min_speech_ms`` of voiced audio has accumulated and ends after
``end_of_turn_silence_ms`` of unvoiced audio. Its audio starts ``pre_speech_padding_ms`` before the
first voiced frame, so the recognizer hears the onset of the first word.
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass

import numpy as np
import webrtcvad

from agent.config import VadConfig

SAMPLE_RATE = 16_000
# Trailing silence kept on a finished turn: enough for the last word's decay, no more for ASR to chew on.
_TAIL_KEPT_MS = 200


@dataclass
class SpeechStarted:
    audio_start_ms: int  # stream position of the turn's first sample (padding included)
    at: float  # arrival time of the frame that confirmed speech


@dataclass
class PauseDetected:
    """Speech paused for ``speculative_silence_ms``: the turn may be over. Audio as a TurnEnded would hold."""

    audio: np.ndarray
    audio_start_ms: int
    audio_end_ms: int
    speech_ended_at: float


@dataclass
class SpeechResumed:
    """Voiced audio after a ``PauseDetected``: the turn was not over."""

    at: float


@dataclass
class TurnEnded:
    audio: np.ndarray  # int16, padding + speech + a short tail
    audio_start_ms: int
    audio_end_ms: int  # stream position where speech stopped
    speech_ended_at: float  # arrival time of the last voiced frame
    decided_at: float  # arrival time of the frame that closed the turn


TurnEvent = SpeechStarted | PauseDetected | SpeechResumed | TurnEnded


def frame_dbfs(frame: np.ndarray) -> float:
    """RMS level of an int16 frame in dB relative to full scale (-inf for digital silence)."""
    rms = math.sqrt(float(np.mean(frame.astype(np.float64) ** 2))) if len(frame) else 0.0
    return 20 * math.log10(rms / 32768.0) if rms > 0 else -math.inf


class TurnDetector:
    """Feeds on fixed-size frames, emits ``SpeechStarted``, ``PauseDetected``, ``SpeechResumed`` and ``TurnEnded``.

    The silence that ends a turn can be changed while the user pauses (adaptive end of turn).
    """

    def __init__(self, config: VadConfig) -> None:
        self._config = config
        self._vad = webrtcvad.Vad(config.aggressiveness)
        self.frame_samples = SAMPLE_RATE * config.frame_ms // 1000
        self._frames_to_start = max(1, math.ceil(config.min_speech_ms / config.frame_ms))
        # Holds the padding plus the voiced frames that confirm speech has started.
        self._padding = collections.deque(
            maxlen=config.pre_speech_padding_ms // config.frame_ms + self._frames_to_start
        )
        self._default_frames_to_end = self._frames(config.end_of_turn_silence_ms)
        self._frames_to_end = self._default_frames_to_end
        speculative = math.ceil(config.speculative_silence_ms / config.frame_ms)
        self._frames_to_pause = speculative if 0 < speculative < self._frames_to_end else 0
        self._voiced_in_turn = 0
        self._paused = False
        self._max_frames = int(config.max_turn_seconds * 1000 / config.frame_ms)
        self._position = 0  # frames seen since the stream began
        self._in_turn = False
        self._voiced_run = 0
        self._silent_run = 0
        self._turn: list[np.ndarray] = []
        self._turn_start_frame = 0
        self._last_voiced_frame = 0
        self._last_voiced_at = 0.0

    @property
    def in_turn(self) -> bool:
        return self._in_turn

    @property
    def hearing_speech(self) -> bool:
        """In a turn, or voiced frames are coming that may start one (the onset is being confirmed)."""
        return self._in_turn or self._voiced_run > 0

    @property
    def voiced_ms(self) -> int:
        """Voiced audio in the current turn so far."""
        return self._voiced_in_turn * self._config.frame_ms

    @property
    def silence_ms(self) -> int:
        """Silence since the current turn's last voiced frame."""
        return self._silent_run * self._config.frame_ms

    def set_end_of_turn_silence(self, ms: int) -> None:
        """Change the silence that ends the current turn; back to the configured value when speech resumes."""
        if self._in_turn:
            self._frames_to_end = self._frames(ms)

    def set_default_end_of_turn_silence(self, ms: int) -> None:
        """Change the silence that ends every turn from now on (a client's ``silence_duration_ms``)."""
        self._default_frames_to_end = self._frames(ms)
        if not self._paused:
            self._frames_to_end = self._default_frames_to_end
        speculative = math.ceil(self._config.speculative_silence_ms / self._config.frame_ms)
        self._frames_to_pause = speculative if 0 < speculative < self._default_frames_to_end else 0

    def end_turn_now(self, now: float) -> TurnEnded | None:
        """End the current turn whatever its silence (a client committed the audio); None outside a turn."""
        return self._end_turn(now) if self._in_turn else None

    def drop_turn(self) -> None:
        """Forget the turn in progress and the padding before it (a client cleared the audio)."""
        self._reset_turn()
        self._padding.clear()

    def end_turn_if_silent_enough(self, now: float) -> TurnEnded | None:
        """End the current turn now if its silence already reaches the (possibly shortened) threshold."""
        if self._in_turn and self._silent_run and self._silent_run >= self._frames_to_end:
            return self._end_turn(now)
        return None

    def is_voiced(self, frame: np.ndarray) -> bool:
        if frame_dbfs(frame) < self._config.energy_floor_dbfs:
            return False
        return self._vad.is_speech(frame.tobytes(), SAMPLE_RATE)

    def process(self, frame: np.ndarray, now: float) -> list[TurnEvent]:
        """Consume one frame of ``frame_samples`` int16 samples that arrived at ``now``."""
        if len(frame) != self.frame_samples:
            raise ValueError(f"VAD frames must be {self.frame_samples} samples, got {len(frame)}")
        voiced = self.is_voiced(frame)
        self._position += 1
        events: list[TurnEvent] = []
        if voiced:
            self._last_voiced_frame = self._position
            self._last_voiced_at = now
        if not self._in_turn:
            self._padding.append(frame)
            self._voiced_run = self._voiced_run + 1 if voiced else 0
            if self._voiced_run >= self._frames_to_start:
                self._in_turn = True
                self._silent_run = 0
                self._voiced_in_turn = self._voiced_run
                self._turn = list(self._padding)
                self._turn_start_frame = self._position - len(self._turn)
                self._padding.clear()
                events.append(SpeechStarted(self._ms(self._turn_start_frame), now))
            return events
        self._turn.append(frame)
        if voiced:
            self._silent_run = 0
            self._voiced_in_turn += 1
            if self._paused:
                self._paused = False
                self._frames_to_end = self._default_frames_to_end
                events.append(SpeechResumed(now))
        else:
            self._silent_run += 1
        if self._silent_run >= self._frames_to_end or len(self._turn) >= self._max_frames:
            events.append(self._end_turn(now))
        elif self._frames_to_pause and self._silent_run == self._frames_to_pause:
            self._paused = True
            events.append(
                PauseDetected(
                    self._turn_audio(),
                    self._ms(self._turn_start_frame),
                    self._ms(self._last_voiced_frame),
                    self._last_voiced_at,
                )
            )
        return events

    def _turn_audio(self) -> np.ndarray:
        tail_frames = min(self._silent_run, _TAIL_KEPT_MS // self._config.frame_ms)
        return np.concatenate(self._turn[: len(self._turn) - self._silent_run + tail_frames])

    def _end_turn(self, now: float) -> TurnEnded:
        event = TurnEnded(
            audio=self._turn_audio(),
            audio_start_ms=self._ms(self._turn_start_frame),
            audio_end_ms=self._ms(self._last_voiced_frame),
            speech_ended_at=self._last_voiced_at,
            decided_at=now,
        )
        self._reset_turn()
        return event

    def _reset_turn(self) -> None:
        self._in_turn = False
        self._paused = False
        self._frames_to_end = self._default_frames_to_end
        self._voiced_run = 0
        self._silent_run = 0
        self._voiced_in_turn = 0
        self._turn = []

    def _frames(self, ms: int) -> int:
        return max(1, math.ceil(ms / self._config.frame_ms))

    def _ms(self, frames: int) -> int:
        return frames * self._config.frame_ms
