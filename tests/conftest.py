from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from agent.config import REPO_ROOT, Config
from agent.models.runtime import ModelRuntime
from agent.server.background import running_server

__all__ = ["running_server"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_in_subprocess(*args: str) -> tuple[subprocess.Popen, str]:
    """``voice-agent serve`` as its own process on a free port; returns it and its URL. stderr is piped."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "agent", "serve", "--port", str(port), *args],
        cwd=REPO_ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    return server, f"http://127.0.0.1:{port}"


@pytest.fixture(autouse=True, scope="session")
def _records_in_a_temporary_folder(tmp_path_factory) -> None:
    """Servers the tests start (in process or as ``voice-agent serve``) keep their call records out of ~."""
    os.environ["VOICE_AGENT_RECORDS__DATA_DIR"] = str(tmp_path_factory.mktemp("records"))


@pytest.fixture(scope="module")
def runtime() -> Iterator[ModelRuntime]:
    """The embedded default models, loaded once per test module (a module may define its own instead)."""
    runtime = ModelRuntime.load(Config())
    yield runtime
    runtime.close()


@pytest.fixture
def config(tmp_path) -> Config:
    config = Config()
    config.records.data_dir = str(tmp_path / "records")
    return config
