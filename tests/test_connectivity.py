"""Connectivity that survives NAT: media relayed through a real coturn, the server's UDP ports pinned to a
range, the ICE servers each side is given, and /diag telling which path a session's media took."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import numpy as np
import pytest
from aioice.ice import get_host_addresses

from agent.client.peer import TalkClient
from agent.client.talk import run_turn
from agent.config import REPO_ROOT, Config, ConfigError, load_config
from agent.transport.ice import ice_connections
from agent.transport.udp_ports import bind_in_range
from tests.conftest import free_port, running_server
from tests.fakes import scripted_runtime
from tests.speech import silence, speak

TURN_CONF = REPO_ROOT / "runpod" / "turnserver.conf"
TURN_USER, TURN_PASSWORD = "agent", "s3cret-for-tests"


@pytest.fixture(scope="module")
def question() -> np.ndarray:
    return np.concatenate([speak("What is the capital of France?"), silence(0.2)])


@contextlib.contextmanager
def coturn(workdir: Path) -> Iterator[int]:
    """Debian's coturn with the pod's runpod/turnserver.conf, on loopback; yields its TCP+UDP port.

    As in the pod, the relay may reach only this machine's own addresses, where the server's host
    candidates are; TLS is off (a test has no certificate).
    """
    binary = shutil.which("turnserver")
    if binary is None:
        pytest.skip("coturn is not installed (scripts/install.sh --test installs Debian's coturn)")
    port = free_port()
    peers = get_host_addresses(use_ipv4=True, use_ipv6=True)
    log_path = workdir / "turnserver.log"
    command = [
        binary, "-c", str(TURN_CONF),
        "--listening-ip", "127.0.0.1", "--listening-port", str(port), "--relay-ip", "127.0.0.1",
        "--user", f"{TURN_USER}:{TURN_PASSWORD}", "--no-tls", "--no-dtls",
        "--pidfile", str(workdir / "turnserver.pid"), "--db", str(workdir / "turndb"),
        *(f"--allowed-peer-ip={address}" for address in peers),
    ]  # fmt: skip
    with log_path.open("w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_for_tcp(port, process, log_path)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)


def _wait_for_tcp(port: int, process: subprocess.Popen, log_path: Path, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            pytest.fail(f"turnserver exited with {process.returncode}:\n{log_path.read_text()[-2000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        if time.monotonic() > deadline:
            pytest.fail(f"turnserver did not listen on {port} within {timeout:.0f} s")
        time.sleep(0.1)


@pytest.fixture
def turn_port(tmp_path: Path) -> Iterator[int]:
    with coturn(tmp_path) as port:
        yield port


async def get_json(url: str) -> dict:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        assert response.status == 200
        return await response.json()


async def wait_for_round_trip_time(url: str, timeout: float = 15.0) -> dict:
    """The only session in /diag, once the client's RTCP receiver reports have given it an RTT."""
    deadline = time.monotonic() + timeout
    while True:
        (session,) = (await get_json(url + "/diag"))["sessions"]
        if session["round_trip_time_s"] is not None or time.monotonic() > deadline:
            return session
        await asyncio.sleep(0.2)


@pytest.mark.parametrize("transport", ["tcp", "udp"])
async def test_a_client_that_may_only_relay_talks_through_turn_and_diag_reports_a_relay_pair(
    config, question, turn_port, transport
):
    turn = {"urls": f"turn:127.0.0.1:{turn_port}?transport={transport}", "username": TURN_USER}
    turn["credential"] = TURN_PASSWORD
    async with running_server(config, scripted_runtime()) as (url, state):
        assert await get_json(url + "/diag") == {"sessions": []}
        async with TalkClient() as client:
            await client.connect(url, ice_servers=[turn], relay_only=True)
            pair = client.selected_pair()
            assert pair is not None and pair.local.type == "relay" and pair.type == "relay"
            result = await run_turn(client, question, 16_000, timeout=20)
            assert result.status == "completed" and result.voice_to_voice_s is not None  # the reply was heard
            session = await wait_for_round_trip_time(url)
    assert session["id"] in result.reply_text or session["id"]  # the session listed is the one we held
    assert session["connection_state"] == "connected"
    server_pair = session["candidate_pair"]
    assert server_pair["type"] == "relay"
    assert server_pair["local"]["type"] == "host" and server_pair["remote"]["type"] == "relay"
    assert "address" not in server_pair["remote"]  # the user's address is not published
    assert session["round_trip_time_s"] is not None and session["round_trip_time_s"] >= 0


async def test_a_udp_port_range_holds_every_server_host_candidate_and_the_media(question):
    low = free_port()  # a free TCP port marks a quiet spot; the range above it is checked by binding
    config = Config()
    config.server.udp_port_range = [low, low + 20]
    async with running_server(config, scripted_runtime()) as (url, state):
        async with TalkClient() as client:
            await client.connect(url)
            (session,) = state.sessions.values()
            answer_ports = [
                int(line.split()[5]) for line in session.transport.pc.localDescription.sdp.splitlines()
                if line.startswith("a=candidate:")
            ]  # fmt: skip
            result = await run_turn(client, question, 16_000, timeout=20)
            pair = (await get_json(url + "/diag"))["sessions"][0]["candidate_pair"]
    assert answer_ports and all(low <= port <= low + 20 for port in answer_ports)
    assert pair["type"] == "host" and low <= pair["local"]["port"] <= low + 20
    assert result.status == "completed" and result.voice_to_voice_s is not None


def test_binding_in_a_range_skips_taken_ports_and_finds_none_in_a_full_range():
    taken = bind_in_range("127.0.0.1", 1024, 65_535)
    assert taken is not None
    port = taken.getsockname()[1]
    try:
        with contextlib.closing(bind_in_range("127.0.0.1", port, port + 1)) as sock:
            if sock is None:
                pytest.skip(f"port {port + 1} is busy on this machine")
            assert sock.getsockname()[1] == port + 1
        assert bind_in_range("127.0.0.1", port, port) is None
    finally:
        taken.close()


async def test_the_page_gets_shared_and_page_only_ice_servers_and_the_server_uses_only_the_shared(turn_port):
    shared = {"urls": f"stun:127.0.0.1:{turn_port}"}  # coturn answers STUN too
    page_only = {"urls": "turn:203.0.113.7:3478?transport=tcp", "username": "u", "credential": "p"}
    config = Config()
    config.server.ice_servers = [shared]
    config.server.page_ice_servers = [page_only]
    async with running_server(config, scripted_runtime()) as (url, state):
        assert (await get_json(url + "/config.json"))["ice_servers"] == [shared, page_only]
        async with TalkClient() as client:
            await client.connect(url)
            (session,) = state.sessions.values()
            (connection,) = ice_connections(session.transport.pc)
    assert connection.stun_server == ("127.0.0.1", turn_port)
    assert connection.turn_server is None  # the page's TURN address is not the server's business


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("VOICE_AGENT_SERVER__UDP_PORT_RANGE", "[50000]", "server.udp_port_range"),
        ("VOICE_AGENT_SERVER__UDP_PORT_RANGE", "[50010, 50000]", "server.udp_port_range"),
        ("VOICE_AGENT_SERVER__ICE_SERVERS", "[{url: 'stun:x'}]", "server.ice_servers"),
        ("VOICE_AGENT_SERVER__PAGE_ICE_SERVERS", "['turn:x']", "server.page_ice_servers"),
    ],
)
def test_a_bad_port_range_or_ice_server_entry_stops_start_up_naming_the_key(name, value, message):
    with pytest.raises(ConfigError, match=message):
        load_config(environ={name: value})


def test_page_ice_servers_and_a_port_range_come_from_the_environment():
    config = load_config(
        environ={
            "VOICE_AGENT_SERVER__PAGE_ICE_SERVERS": '[{urls: "turn:198.51.100.4:40123?transport=tcp", '
            'username: voice, credential: pw}]',
            "VOICE_AGENT_SERVER__UDP_PORT_RANGE": "[40000, 40100]",
        }
    )
    assert config.server.page_ice_servers[0]["urls"] == "turn:198.51.100.4:40123?transport=tcp"
    assert config.server.udp_port_range == [40000, 40100]
