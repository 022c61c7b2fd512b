"""Secrets never reach the log or the operator pages: passwords, bearer tokens, TURN credentials, the
database password and the model server's API key, with the log at DEBUG, through logins (good and bad),
records, /diag and a records database that cannot be reached."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp

from agent.client.peer import wait_until_ready
from agent.config import REPO_ROOT
from tests.conftest import free_port

PASSWORD = "pw-secret-7c1d-correct-horse"
TURN_CREDENTIAL = "turn-secret-1f2e"
DB_PASSWORD = "db-secret-9a8b"
VLLM_KEY = "vllm-key-secret-5d6e"
OPERATOR_PAGES = ("/diag", "/ready", "/health", "/metrics")


@asynccontextmanager
async def server_at_debug(tmp_path, **settings: str) -> AsyncIterator[tuple[str, list[str]]]:
    """``voice-agent serve`` at DEBUG with ``settings`` as VOICE_AGENT_* variables; yields its URL and, once
    it has stopped, its whole output as the list's one item."""
    port = free_port()
    env = {
        **os.environ,
        "VOICE_AGENT_LOGGING__LEVEL": "DEBUG",
        "VOICE_AGENT_AUTH__MODE": "token",
        "VOICE_AGENT_RECORDS__DATA_DIR": str(tmp_path / f"records-{port}"),
        "VOICE_AGENT_SERVER__ICE_SERVERS": (
            f'[{{urls: "turn:127.0.0.1:{free_port()}", username: turnuser, credential: "{TURN_CREDENTIAL}"}}]'
        ),
        "VLLM_API_KEY": VLLM_KEY,
        **{f"VOICE_AGENT_{key.upper()}": value for key, value in settings.items()},
    }
    log_path = tmp_path / f"server-{port}.log"  # a file, not a pipe: a DEBUG log would fill a pipe and block it
    output: list[str] = []
    with open(log_path, "w") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "agent", "serve", "--port", str(port)],
            cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, text=True,
        )
        try:
            await wait_until_ready(f"http://127.0.0.1:{port}", timeout=180)
            yield f"http://127.0.0.1:{port}", output
        finally:
            server.terminate()
            try:
                await asyncio.to_thread(server.wait, 60)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
    output.append(log_path.read_text())


async def get_all(http: aiohttp.ClientSession, url: str, paths, headers=None) -> list[str]:
    bodies = []
    for path in paths:
        async with http.get(f"{url}{path}", headers=headers or {}) as response:
            bodies.append(await response.text())
    return bodies


def assert_nowhere(secrets: dict[str, str], log: str, bodies: list[str]) -> None:
    assert "DEBUG" in log, "the log ran at DEBUG, where leaks would be"
    for name, secret in secrets.items():
        assert secret not in log, f"the {name} is in the log"
        for body in bodies:
            assert secret not in body, f"the {name} is in a response: {body[:300]}"


async def test_no_password_token_turn_credential_or_api_key_in_the_log_or_the_answers(tmp_path):
    async with server_at_debug(tmp_path) as (url, output):
        credentials = {"name": "olga", "password": PASSWORD}
        bodies: list[str] = []
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{url}/api/auth/register", json=credentials) as response:
                bodies.append(await response.text())
            async with http.post(f"{url}/api/auth/login", json={**credentials, "password": PASSWORD + "x"}) as response:
                bodies.append(await response.text())
            async with http.post(f"{url}/api/auth/login", json=credentials) as response:
                token = (await response.json())["token"]
            auth = {"Authorization": f"Bearer {token}"}
            bodies += await get_all(http, url, ("/api/calls", "/api/calls/analytics", *OPERATOR_PAGES), auth)
            bodies += await get_all(http, url, ("/api/calls",), {"Authorization": f"Bearer not-{token}"})
            async with http.post(f"{url}/offer", headers=auth, json={"sdp": "v=0 broken", "type": "offer"}) as response:
                bodies.append(await response.text())
    secrets = {"password": PASSWORD, "token": token, "TURN credential": TURN_CREDENTIAL, "vLLM key": VLLM_KEY}
    assert_nowhere(secrets, output[0], bodies)


async def test_the_records_database_password_is_masked_when_the_database_cannot_be_reached(tmp_path):
    # Nothing listens there: the store's failures are logged and answered, and must not carry the password.
    database = f"postgresql+asyncpg://voice:{DB_PASSWORD}@127.0.0.1:{free_port()}/voice"
    async with server_at_debug(tmp_path, records__database_url=database) as (url, output):
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{url}/api/auth/login", json={"name": "olga", "password": PASSWORD}) as response:
                refused = response.status, await response.text()
            bodies = [refused[1], *await get_all(http, url, OPERATOR_PAGES)]
    assert refused[0] == 503 and "***" in refused[1], "the error names the database, with its password masked"
    assert_nowhere({"database password": DB_PASSWORD, "password": PASSWORD}, output[0], bodies)
