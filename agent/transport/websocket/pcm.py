"""Audio on a WebSocket: base64 of little-endian 16-bit mono PCM, both ways, for every protocol."""

from __future__ import annotations

import base64
import binascii

import numpy as np


def decode_pcm16(data: str) -> np.ndarray:
    """int16 samples from base64 PCM16; ValueError saying what is wrong (completes "audio ...")."""
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"is not base64: {exc}") from None
    if len(raw) % 2:
        raise ValueError("must be whole 16-bit samples (an even number of bytes)")
    return np.frombuffer(raw, dtype="<i2").astype(np.int16)


def encode_pcm16(samples: np.ndarray) -> str:
    return base64.b64encode(samples.astype("<i2").tobytes()).decode("ascii")
