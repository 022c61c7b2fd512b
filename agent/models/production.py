"""What the production backends (weights from the Hugging Face hub, run on a GPU) share: where their
weights are cached, how a configured source is told apart (a local folder or a hub id), and which
device runs them."""

from __future__ import annotations

from pathlib import Path

import torch

from agent.config import Config, ConfigError


def hub_cache_dir(config: Config) -> Path:
    """Where hub models are downloaded to and read from (``scripts/download_models.py`` fills it)."""
    return config.cache_path / "huggingface"


def local_folder(source: str, key: str, what: str) -> Path | None:
    """``source`` as a folder when it is one; None when it is a hub id; a clear error for a missing path."""
    folder = Path(source).expanduser()
    if folder.is_dir():
        return folder
    if source.startswith((".", "/", "~")):
        raise ConfigError(f"{key} {source!r} does not exist; give {what} folder or a hub id")
    return None


def cuda_or_cpu(requested: str, key: str) -> str:
    """``cuda`` when asked for or, with ``auto``, when torch sees a GPU; else ``cpu``."""
    if requested == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{key} is 'cuda' but torch sees no CUDA device; use 'auto' or 'cpu'")
    return "cuda" if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()) else "cpu"
