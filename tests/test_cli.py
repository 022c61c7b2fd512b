"""The ``voice-agent`` command as an operator runs it: bad config stops start-up, SIGTERM exits cleanly."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

from agent.client.peer import TalkClient, wait_until_ready
from agent.config import REPO_ROOT
from tests.conftest import serve_in_subprocess


def test_an_unknown_config_key_stops_start_up_naming_the_key():
    env = {**os.environ, "VOICE_AGENT_VAD__AGRESSIVENESS": "2"}
    result = subprocess.run(
        [sys.executable, "-m", "agent", "serve"], env=env, capture_output=True, text=True, timeout=60, cwd=REPO_ROOT
    )
    assert result.returncode == 2
    assert "unknown config key vad.agressiveness" in result.stderr
    assert "aggressiveness" in result.stderr.split("allowed keys")[1]


async def test_sigterm_closes_every_peer_connection_and_exits_cleanly():
    server, url = serve_in_subprocess()
    try:
        await wait_until_ready(url, timeout=180)
        async with TalkClient() as client:
            await client.connect(url)
            server.send_signal(signal.SIGTERM)
            exit_code = await asyncio.to_thread(server.wait, 20)
            log = server.stderr.read()
            assert exit_code == 0, log
            assert "closed 1 sessions" in log
            assert "session" in log and "server shutting down" in log
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
