"""TalkClient against a tiny in-process WebRTC echo server: what we say comes back, on time and in tune."""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import numpy as np
import pytest
import pytest_asyncio
from aiohttp import web
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCDataChannel,
    RTCPeerConnection,
    RTCSessionDescription,
)
from av.frame import Frame

from agent.client.peer import FRAME_SAMPLES, SAMPLE_RATE, MicrophoneTrack, TalkClient

TEST_TIMEOUT_S = 30.0


def bounded(test: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    """Fail the test instead of hanging if it runs past TEST_TIMEOUT_S."""

    @functools.wraps(test)
    async def run(*args: Any, **kwargs: Any) -> None:
        await asyncio.wait_for(test(*args, **kwargs), TEST_TIMEOUT_S)

    return run


class EchoTrack(MediaStreamTrack):
    """Sends back whatever audio frames the peer sends us."""

    kind = "audio"

    def __init__(self, source: MediaStreamTrack) -> None:
        super().__init__()
        self._source = source

    async def recv(self) -> Frame:
        return await self._source.recv()


@pytest_asyncio.fixture
async def echo_server() -> AsyncIterator[str]:
    peers: set[RTCPeerConnection] = set()

    async def offer(request: web.Request) -> web.Response:
        params = await request.json()
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        peers.add(pc)

        @pc.on("datachannel")
        def on_datachannel(channel: RTCDataChannel) -> None:
            channel.send(json.dumps({"type": "session.created", "event_id": "e1", "session": {"id": "s1"}}))

            @channel.on("message")
            def on_message(message: str) -> None:
                event = json.loads(message)
                channel.send(json.dumps({"type": "pong", "event_id": "e2", "echo": event.get("type")}))

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            pc.addTrack(EchoTrack(track))

        await pc.setRemoteDescription(RTCSessionDescription(sdp=params["sdp"], type=params["type"]))
        await pc.setLocalDescription(await pc.createAnswer())
        return web.json_response({"sdp": pc.localDescription.sdp, "type": pc.localDescription.type})

    app = web.Application()
    app.router.add_post("/offer", offer)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await asyncio.gather(*(pc.close() for pc in peers))
        await runner.cleanup()


def tone(freq: float, seconds: float, sample_rate: int, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def dominant_frequency(samples: np.ndarray, sample_rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float32)))
    return float(np.argmax(spectrum) * sample_rate / len(samples))


@pytest.mark.asyncio
@bounded
async def test_spoken_audio_comes_back_after_end_of_speech_at_the_same_pitch(echo_server: str) -> None:
    async with TalkClient() as client:
        await client.connect(echo_server)
        await asyncio.sleep(0.5)  # the idle microphone sends silence meanwhile

        before = time.monotonic()
        clip = np.concatenate([tone(440.0, 0.6, 16_000), np.zeros(6_400, dtype=np.float32)])
        end_of_speech = await client.say(clip, 16_000)
        returned = time.monotonic()

        # End of speech is when the tone's last frame left, not when the trailing silence did.
        assert before + 0.55 < end_of_speech < returned - 0.2
        # Nothing audible came back while the microphone was only sending silence.
        first_echo = client.first_audible_after(0.0)
        assert first_echo is not None
        assert first_echo > before
        # The tail of the tone is still on its way back when say() returns.
        echo_tail = client.first_audible_after(end_of_speech)
        assert echo_tail is not None
        assert end_of_speech < echo_tail < end_of_speech + 1.0

        await client.wait_until_quiet(quiet=0.3, timeout=5.0, after=before)
        echoed = client.reply_audio(since=before)
        loud = np.flatnonzero(np.abs(echoed.astype(np.int32)) > 3000)
        assert 0.55 < (loud[-1] - loud[0]) / SAMPLE_RATE < 0.65
        assert abs(dominant_frequency(echoed[loud[0] : loud[-1]], SAMPLE_RATE) - 440.0) < 5.0
        assert client.first_audible_after(time.monotonic()) is None


@pytest.mark.asyncio
@bounded
async def test_events_are_received_stamped_and_answered(echo_server: str) -> None:
    async with TalkClient() as client:
        await client.connect(echo_server)
        created = await client.wait_for_event("session.created", timeout=5.0)
        assert created["session"]["id"] == "s1"
        assert created["_received_at"] <= time.monotonic()

        index = len(client.events)
        await client.send_event({"type": "ping"})
        pong = await client.wait_for_event("pong", timeout=5.0, after_index=index)
        assert pong["echo"] == "ping"

        with pytest.raises(TimeoutError, match=r"session\.updated"):
            await client.wait_for_event("session.updated", timeout=0.2)
        with pytest.raises(TimeoutError):
            await client.wait_for_event("pong", timeout=0.2, predicate=lambda e: e["echo"] == "other")


@pytest.mark.asyncio
@bounded
async def test_connect_to_a_missing_server_fails_with_a_clear_error() -> None:
    async with TalkClient() as client:
        with pytest.raises(ConnectionError, match="/offer"):
            await client.connect("http://127.0.0.1:9", timeout=3.0)


@pytest.mark.asyncio
@bounded
async def test_idle_microphone_sends_paced_silent_20ms_frames() -> None:
    mic = MicrophoneTrack()
    start = time.monotonic()
    frames = [await mic.recv() for _ in range(6)]
    elapsed = time.monotonic() - start
    mic.stop()

    assert 0.095 < elapsed < 0.5  # five 20 ms waits after the first frame, never faster
    assert [f.pts for f in frames] == [i * FRAME_SAMPLES for i in range(6)]
    assert all(f.sample_rate == SAMPLE_RATE and f.samples == FRAME_SAMPLES for f in frames)
    assert all(not f.to_ndarray().any() for f in frames)
