"""Incoming microphone audio: decoded Opus (48 kHz stereo) -> 16 kHz mono frames of fixed size.

The conversion happens here, once; nothing past this module sees any other format. The queue
towards the turn detector is bounded: when processing falls behind, the oldest frames are dropped
and counted, so latency cannot grow without limit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from agent.audio.resample import Resampler

log = logging.getLogger(__name__)

INTERNAL_RATE = 16_000


@dataclass
class InboundFrame:
    samples: np.ndarray  # int16 mono at 16 kHz, exactly one VAD frame
    arrived_at: float  # time.monotonic() when the packet holding its end was decoded


class PeerVanished(Exception):
    """The peer's microphone stopped sending: it closed the connection or disappeared."""


class InboundAudio:
    """Reads a remote audio track and offers fixed-size 16 kHz frames through a bounded queue."""

    def __init__(
        self,
        frame_samples: int,
        max_frames: int,
        timeout_seconds: float,
        on_drop: Callable[[int], None] = lambda n: None,
    ) -> None:
        self.frame_samples = frame_samples
        self.queue: asyncio.Queue[InboundFrame] = asyncio.Queue(maxsize=max_frames)
        self.dropped = 0
        self._timeout = timeout_seconds
        self._on_drop = on_drop
        self._resampler = Resampler(INTERNAL_RATE)
        self._pending = np.zeros(0, dtype=np.int16)

    async def pump(self, track: MediaStreamTrack) -> None:
        """Run until the track ends; raises ``PeerVanished`` when it stops or goes silent."""
        while True:
            try:
                frame = await asyncio.wait_for(track.recv(), self._timeout)
            except (TimeoutError, MediaStreamError) as exc:
                raise PeerVanished(f"no audio from the peer ({type(exc).__name__})") from exc
            self.push(self._resampler.frame(frame), time.monotonic())

    def push(self, samples: np.ndarray, now: float) -> None:
        """Split 16 kHz samples into frames and queue them, dropping the oldest when full."""
        self._pending = np.concatenate([self._pending, samples]) if len(self._pending) else samples
        while len(self._pending) >= self.frame_samples:
            frame, self._pending = self._pending[: self.frame_samples], self._pending[self.frame_samples :]
            if self.queue.full():
                self.queue.get_nowait()
                self.dropped += 1
                self._on_drop(1)
            self.queue.put_nowait(InboundFrame(frame, now))
