"""Sample-rate and channel conversion, done once at each edge of the agent.

Inside the agent audio is 16 kHz mono; the outgoing track runs at its own rate (48 kHz).
libswresample (through PyAV) does the filtering; a ``Resampler`` keeps its state between
calls so streamed chunks join without clicks.
"""

from __future__ import annotations

import av
import numpy as np

_FORMAT_BY_DTYPE = {np.dtype(np.int16): "s16", np.dtype(np.float32): "flt"}


class Resampler:
    """Converts a stream of audio (any rate, mono or interleaved stereo) to mono int16 at ``rate``."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)

    def frame(self, frame: av.AudioFrame) -> np.ndarray:
        """Resample one decoded frame (as aiortc delivers them)."""
        frame.pts = None  # we resample a continuous stream; aiortc's timestamps are not ours to check
        return self._collect(self._resampler.resample(frame))

    def samples(self, samples: np.ndarray, sample_rate: int, channels: int = 1) -> np.ndarray:
        """Resample an array: int16 or float32 in [-1, 1]; interleaved when ``channels`` is 2."""
        if samples.dtype not in _FORMAT_BY_DTYPE:
            samples = samples.astype(np.float32)
        layout = "mono" if channels == 1 else "stereo"
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(samples).reshape(1, -1),
            format=_FORMAT_BY_DTYPE[samples.dtype],
            layout=layout,
        )
        frame.sample_rate = sample_rate
        return self._collect(self._resampler.resample(frame))

    def flush(self) -> np.ndarray:
        """Return what the filter still holds at the end of a stream."""
        return self._collect(self._resampler.resample(None))

    @staticmethod
    def _collect(frames: list[av.AudioFrame]) -> np.ndarray:
        if not frames:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate([f.to_ndarray().reshape(-1) for f in frames]).astype(np.int16, copy=False)


def resample_once(samples: np.ndarray, sample_rate: int, rate: int) -> np.ndarray:
    """Resample a whole clip (mono) to int16 at ``rate``, including the filter's tail."""
    resampler = Resampler(rate)
    return np.concatenate([resampler.samples(samples, sample_rate), resampler.flush()])


def to_float(samples: np.ndarray) -> np.ndarray:
    """int16 PCM to float32 in [-1, 1]."""
    return samples.astype(np.float32) / 32768.0


def to_int16(samples: np.ndarray) -> np.ndarray:
    """float32 in [-1, 1] to int16 PCM, clipping what lies outside."""
    return np.clip(np.rint(samples * 32768.0), -32768, 32767).astype(np.int16)
