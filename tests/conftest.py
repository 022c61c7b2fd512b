from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from agent.config import REPO_ROOT, Config
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


@pytest.fixture
def config() -> Config:
    return Config()
