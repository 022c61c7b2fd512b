"""Test speech: espeak-ng says a sentence, we get 16 kHz mono int16 back."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import wave
from pathlib import Path

import numpy as np

from agent.audio.resample import resample_once

ESPEAK = shutil.which("espeak-ng")


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """Mono int16 samples and the rate of a 16-bit WAV (channels averaged)."""
    with wave.open(str(path), "rb") as wav:
        rate, channels = wav.getframerate(), wav.getnchannels()
        samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1).astype(np.int16)
    return samples, rate


def write_wav(path: Path, samples: np.ndarray, rate: int) -> Path:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(samples.astype(np.int16).tobytes())
    return path


def speak(text: str, voice: str = "en-us", rate: int = 16_000, words_per_minute: int = 165) -> np.ndarray:
    """espeak-ng speech for ``text`` as int16 mono at ``rate``."""
    if ESPEAK is None:
        raise RuntimeError("espeak-ng is not installed (apt-get install espeak-ng)")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "speech.wav"
        subprocess.run([ESPEAK, "-v", voice, "-s", str(words_per_minute), "-w", str(out), text], check=True)
        samples, source_rate = read_wav(out)
    return resample_once(samples, source_rate, rate)


def trim(samples: np.ndarray, threshold: int = 300) -> np.ndarray:
    """Cut the leading and trailing silence espeak-ng leaves around speech."""
    loud = np.flatnonzero(np.abs(samples) > threshold)
    return samples[loud[0] : loud[-1] + 1] if len(loud) else samples[:0]


def silence(seconds: float, rate: int = 16_000) -> np.ndarray:
    return np.zeros(int(seconds * rate), dtype=np.int16)


def utterance(text: str) -> np.ndarray:
    """A question as a turn: a little silence, the words at a calm pace (espeak-ng), a little silence."""
    return np.concatenate([silence(0.3), speak(text, words_per_minute=140), silence(0.2)])
