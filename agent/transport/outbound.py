"""The agent's voice: an aiortc audio track that paces 20 ms frames by the wall clock.

It sends silence when it has nothing to say, and ``clear()`` takes every unplayed sample out at once
(barge-in), handing it back so that a false interruption can ``restore()`` it. Audio is queued in
segments, each with a tag (the reply and phrase it belongs to), and the track counts the samples of
each tag it has really sent, so the server knows what the user heard.
"""

from __future__ import annotations

import asyncio
import collections
import fractions
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack


@dataclass
class QueuedAudio:
    tag: Hashable
    samples: np.ndarray
    offset: int = 0  # samples already sent

    @property
    def remaining(self) -> int:
        return len(self.samples) - self.offset


class OutboundAudioTrack(MediaStreamTrack):
    kind = "audio"

    def __init__(self, sample_rate: int = 48_000, frame_ms: int = 20, audible_threshold: int = 300) -> None:
        super().__init__()
        self.sample_rate = sample_rate
        self.frame_samples = sample_rate * frame_ms // 1000
        self.audible_threshold = audible_threshold
        self._time_base = fractions.Fraction(1, sample_rate)
        self._segments: collections.deque[QueuedAudio] = collections.deque()
        self._silence = np.zeros(self.frame_samples, dtype=np.int16)
        self._start: float | None = None
        self._timestamp = 0
        self.sent_by_tag: dict[Hashable, int] = collections.defaultdict(int)
        # Called with (tag, time.monotonic()) when the first sample of a tag leaves.
        self.on_tag_started: Callable[[Hashable, float], None] = lambda tag, at: None
        # Called with time.monotonic() when the first frame after a clear() goes out silent.
        self.on_stopped: Callable[[float], None] = lambda at: None
        # Called with (samples, sample_rate) for every frame sent, silence included (the call's recording).
        self.on_frame: Callable[[np.ndarray, int], None] = lambda samples, rate: None
        self._stop_pending = False
        self.frames_sent = 0
        self.last_audible_frame = 0  # index (1-based) in frames_sent of the last frame above the threshold
        self._drained = asyncio.Event()
        self._drained.set()

    def enqueue(self, samples: np.ndarray, tag: Hashable) -> None:
        """Queue int16 mono samples at the track's rate, to be played after what is queued already."""
        if len(samples):
            self._segments.append(QueuedAudio(tag, samples.astype(np.int16, copy=False)))
            self._drained.clear()

    def clear(self) -> list[QueuedAudio]:
        """Take all unplayed audio out now; the next frame is silence. Returns what was taken."""
        taken = list(self._segments)
        self._segments.clear()
        self._drained.set()
        self._stop_pending = True
        return taken

    def restore(self, taken: list[QueuedAudio]) -> None:
        """Put audio taken by ``clear()`` back in front of whatever is queued now."""
        self._segments.extendleft(reversed([segment for segment in taken if segment.remaining]))
        if self._segments:
            self._drained.clear()

    @property
    def queued_samples(self) -> int:
        return sum(segment.remaining for segment in self._segments)

    async def wait_drained(self) -> None:
        """Return once everything queued has been sent (or cleared)."""
        await self._drained.wait()

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.time()
        else:
            self._timestamp += self.frame_samples
            wait = self._start + self._timestamp / self.sample_rate - time.time()
            if wait > 0:
                await asyncio.sleep(wait)
        samples = self._next_frame()
        self.on_frame(samples, self.sample_rate)
        self.frames_sent += 1
        if samples is not self._silence and max(int(samples.max()), -int(samples.min())) > self.audible_threshold:
            self.last_audible_frame = self.frames_sent
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self.sample_rate
        frame.pts = self._timestamp
        frame.time_base = self._time_base
        return frame

    def _next_frame(self) -> np.ndarray:
        if not self._segments:
            if self._stop_pending:
                self._stop_pending = False
                self.on_stopped(time.monotonic())
            return self._silence
        self._stop_pending = False
        out = np.zeros(self.frame_samples, dtype=np.int16)
        filled = 0
        now = time.monotonic()
        while filled < self.frame_samples and self._segments:
            segment = self._segments[0]
            take = min(self.frame_samples - filled, len(segment.samples) - segment.offset)
            out[filled : filled + take] = segment.samples[segment.offset : segment.offset + take]
            if self.sent_by_tag[segment.tag] == 0:
                self.on_tag_started(segment.tag, now)
            self.sent_by_tag[segment.tag] += take
            segment.offset += take
            filled += take
            if segment.offset >= len(segment.samples):
                self._segments.popleft()
        if not self._segments:
            self._drained.set()
        return out
