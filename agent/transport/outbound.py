"""The agent's voice on its way out: tagged audio queued for sending, and the WebRTC track that paces it.

``OutboundAudio`` holds what is still to be sent, in segments tagged with the reply and phrase they
belong to; ``clear()`` takes every unsent sample out at once (barge-in), handing it back so that a
false interruption can ``restore()`` it. It counts the samples of each tag really taken for sending,
so the server knows what the user heard. A transport takes frames from it at its own pace:
``OutboundAudioTrack`` by the wall clock for WebRTC (silence when there is nothing to say), the
WebSocket sender a bounded lead ahead of real time.
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


class OutboundAudio:
    def __init__(self, sample_rate: int = 48_000, frame_ms: int = 20, audible_threshold: int = 300) -> None:
        self.sample_rate = sample_rate
        self.frame_samples = sample_rate * frame_ms // 1000
        self.audible_threshold = audible_threshold
        self.silence = np.zeros(self.frame_samples, dtype=np.int16)
        self._segments: collections.deque[QueuedAudio] = collections.deque()
        self.sent_by_tag: dict[Hashable, int] = collections.defaultdict(int)
        # Called with (tag, time.monotonic()) when the first sample of a tag leaves.
        self.on_tag_started: Callable[[Hashable, float], None] = lambda tag, at: None
        # Called with time.monotonic() when the first frame after a clear() goes out silent.
        self.on_stopped: Callable[[float], None] = lambda at: None
        # Called with (samples, sample_rate) for every frame sent, silence included (the call's recording).
        self.on_frame: Callable[[np.ndarray, int], None] = lambda samples, rate: None
        # Audio a transport took but the listener has not played yet (a WebSocket client's buffer):
        # clear() takes it back too, counted as not sent. WebRTC plays what it takes at once.
        self.take_back: Callable[[], list[QueuedAudio]] = lambda: []
        self._stop_pending = False
        self.frames_sent = 0
        self.last_audible_frame = 0  # index (1-based) in frames_sent of the last frame above the threshold
        self._drained = asyncio.Event()
        self._drained.set()
        self._queued = asyncio.Event()  # set while there is audio to send

    def enqueue(self, samples: np.ndarray, tag: Hashable) -> None:
        """Queue int16 mono samples at this rate, to be played after what is queued already."""
        if len(samples):
            self._segments.append(QueuedAudio(tag, samples.astype(np.int16, copy=False)))
            self._drained.clear()
            self._queued.set()

    def clear(self) -> list[QueuedAudio]:
        """Take all unplayed audio out now; the next frame is silence. Returns what was taken."""
        unplayed = self.take_back()
        for segment in unplayed:
            self.sent_by_tag[segment.tag] -= segment.remaining
        taken = unplayed + list(self._segments)
        self._segments.clear()
        self._drained.set()
        self._queued.clear()
        self._stop_pending = True
        return taken

    def restore(self, taken: list[QueuedAudio]) -> None:
        """Put audio taken by ``clear()`` back in front of whatever is queued now."""
        self._segments.extendleft(reversed([segment for segment in taken if segment.remaining]))
        if self._segments:
            self._drained.clear()
            self._queued.set()

    @property
    def queued_samples(self) -> int:
        return sum(segment.remaining for segment in self._segments)

    @property
    def has_audio(self) -> bool:
        return bool(self._segments)

    async def wait_drained(self) -> None:
        """Return once everything queued has been sent (or cleared)."""
        await self._drained.wait()

    async def wait_queued(self) -> None:
        """Return once there is audio to send."""
        await self._queued.wait()

    def next_frame(self) -> tuple[np.ndarray, list[tuple[Hashable, int]]]:
        """The next frame to send (``silence`` when nothing is queued) and the (tag, samples) it holds."""
        if not self._segments:
            if self._stop_pending:
                self._stop_pending = False
                self.on_stopped(time.monotonic())
            frame, parts = self.silence, []
        else:
            frame, parts = self._take_frame()
        self.on_frame(frame, self.sample_rate)
        self.frames_sent += 1
        if frame is not self.silence and max(int(frame.max()), -int(frame.min())) > self.audible_threshold:
            self.last_audible_frame = self.frames_sent
        return frame, parts

    def _take_frame(self) -> tuple[np.ndarray, list[tuple[Hashable, int]]]:
        self._stop_pending = False
        out = np.zeros(self.frame_samples, dtype=np.int16)
        parts: list[tuple[Hashable, int]] = []
        filled = 0
        now = time.monotonic()
        while filled < self.frame_samples and self._segments:
            segment = self._segments[0]
            take = min(self.frame_samples - filled, segment.remaining)
            out[filled : filled + take] = segment.samples[segment.offset : segment.offset + take]
            if self.sent_by_tag[segment.tag] == 0:
                self.on_tag_started(segment.tag, now)
            self.sent_by_tag[segment.tag] += take
            parts.append((segment.tag, take))
            segment.offset += take
            filled += take
            if segment.offset >= len(segment.samples):
                self._segments.popleft()
        if not self._segments:
            self._drained.set()
            self._queued.clear()
        return out, parts


class OutboundAudioTrack(MediaStreamTrack):
    """WebRTC: one frame of ``OutboundAudio`` every frame period by the wall clock, silence when idle."""

    kind = "audio"

    def __init__(self, audio: OutboundAudio) -> None:
        super().__init__()
        self.audio = audio
        self._time_base = fractions.Fraction(1, audio.sample_rate)
        self._start: float | None = None
        self._timestamp = 0

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        audio = self.audio
        if self._start is None:
            self._start = time.time()
        else:
            self._timestamp += audio.frame_samples
            wait = self._start + self._timestamp / audio.sample_rate - time.time()
            if wait > 0:
                await asyncio.sleep(wait)
        samples, _ = audio.next_frame()
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = audio.sample_rate
        frame.pts = self._timestamp
        frame.time_base = self._time_base
        return frame
