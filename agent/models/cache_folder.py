"""Model folders built once into the cache: written beside the target and renamed into place."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def build_once(folder: Path, marker: str, build: Callable[[Path], None]) -> Path:
    """Make ``folder`` (complete when it holds ``marker``) by calling ``build`` on a scratch folder.

    A crash mid-build never leaves a half-written model under the real name, and two processes
    building at once both end up with a complete folder.
    """
    if (folder / marker).is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        build(scratch)
        scratch.chmod(0o755)  # mkdtemp makes it private
        try:
            os.rename(scratch, folder)
        except OSError:
            if not (folder / marker).is_file():
                raise
            # Another process finished the same build first; its copy is as good as ours.
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return folder
