"""A scripted WebRTC peer: a microphone we feed with audio, a recorder for the agent's voice, the event log.

``TalkClient`` connects the way the browser page does (data channel ``events`` created before the
offer, one outgoing audio track, ICE gathered fully before ``POST /offer``) and keeps every timestamp
on ``time.monotonic()``, so the instant our speech ended and the instant the agent's voice arrived can
be subtracted directly.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import contextlib
import fractions
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import av
import numpy as np
from aiortc import MediaStreamTrack, RTCDataChannel, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from agent.audio.resample import Resampler, resample_once
from agent.transport.ice import CandidatePair, round_trip_time, rtc_configuration, selected_pair

logger = logging.getLogger(__name__)

SAMPLE_RATE = 48_000
FRAME_SAMPLES = 960  # 20 ms at 48 kHz
AUDIBLE_THRESHOLD = 300  # peak int16 level that counts as audible (matches audio.audible_threshold)
EVENTS_CHANNEL = "events"
# Extra time say() allows beyond the queued audio's own duration before it gives up.
SEND_SLACK_S = 5.0

EventPredicate = Callable[[dict[str, Any]], bool]


class ServerNotReadyError(ConnectionError):
    """The agent server could not be reached, or it answered /ready with something other than 200."""


async def wait_until_ready(url: str, timeout: float) -> None:
    """Poll ``GET {url}/ready`` until it answers 200; raise ServerNotReadyError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    problem = "no answer yet"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5.0)) as http:
        while True:
            try:
                async with http.get(f"{url.rstrip('/')}/ready") as response:
                    if response.status == 200:
                        return
                    problem = f"GET /ready answered {response.status}"
                    if response.status == 503:
                        problem += " (models still warming up)"
            except (TimeoutError, aiohttp.ClientError) as exc:
                problem = f"cannot reach it ({exc or type(exc).__name__})"
            if time.monotonic() >= deadline:
                raise ServerNotReadyError(f"server at {url} is not ready after {timeout:.0f} s: {problem}")
            await asyncio.sleep(0.5)


def to_mic_samples(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Mono int16 or float (in [-1, 1]) audio at any rate -> int16 at 48 kHz."""
    audio = np.asarray(audio)
    if audio.ndim != 1:
        raise ValueError(f"expected mono audio as a 1-D array, got shape {audio.shape}")
    if audio.dtype != np.int16 and not np.issubdtype(audio.dtype, np.floating):
        raise TypeError(f"expected int16 or float audio, got {audio.dtype}")
    if audio.size == 0:
        return np.zeros(0, dtype=np.int16)
    return resample_once(audio, sample_rate, SAMPLE_RATE)


@dataclass(eq=False)
class _Clip:
    samples: np.ndarray  # int16, 48 kHz
    last_audible: int  # index of the last audible sample, -1 if none
    done: asyncio.Future[float]
    position: int = 0
    speech_sent_at: float | None = None


class MicrophoneTrack(MediaStreamTrack):
    """Outgoing audio: 20 ms frames of 48 kHz mono s16 paced by the wall clock, silence when idle."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._clips: collections.deque[_Clip] = collections.deque()
        self._start: float | None = None
        self._pts = 0

    def play(self, samples: np.ndarray, last_audible: int) -> asyncio.Future[float]:
        """Queue int16 48 kHz samples; the future resolves, once all are sent, to the monotonic
        time the frame holding sample ``last_audible`` was sent (the last frame's, if it is -1)."""
        clip = _Clip(samples, last_audible, asyncio.get_running_loop().create_future())
        self._clips.append(clip)
        return clip.done

    def discard(self, done: asyncio.Future[float]) -> None:
        """Drop the unsent rest of the clip that ``play`` returned ``done`` for."""
        self._clips = collections.deque(c for c in self._clips if c.done is not done)

    def queued_seconds(self) -> float:
        return sum(len(c.samples) - c.position for c in self._clips) / SAMPLE_RATE

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        else:
            self._pts += FRAME_SAMPLES
            wait = self._start + self._pts / SAMPLE_RATE - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        samples, finished, speech_clip = self._take_frame()
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, SAMPLE_RATE)
        sent_at = time.monotonic()
        if speech_clip is not None:
            speech_clip.speech_sent_at = sent_at
        if finished is not None and not finished.done.done():
            finished.done.set_result(sent_at if finished.speech_sent_at is None else finished.speech_sent_at)
        return frame

    def _take_frame(self) -> tuple[np.ndarray, _Clip | None, _Clip | None]:
        """The next 960 samples, the clip this frame finishes (if any), the clip whose speech ends in it."""
        if not self._clips:
            return np.zeros(FRAME_SAMPLES, dtype=np.int16), None, None
        clip = self._clips[0]
        start, end = clip.position, clip.position + FRAME_SAMPLES
        chunk = clip.samples[start:end]
        if len(chunk) < FRAME_SAMPLES:
            chunk = np.concatenate([chunk, np.zeros(FRAME_SAMPLES - len(chunk), dtype=np.int16)])
        clip.position = end
        speech_clip = clip if start <= clip.last_audible < end else None
        if end < len(clip.samples):
            return chunk, None, speech_clip
        self._clips.popleft()
        return chunk, clip, speech_clip

    def stop(self) -> None:
        for clip in self._clips:
            if not clip.done.done():
                clip.done.set_exception(ConnectionError("microphone stopped before the audio was sent"))
        self._clips.clear()
        super().stop()


class TalkClient:
    """One conversation with the agent server over WebRTC.

    All times are ``time.monotonic()`` seconds. ``events`` holds every event received, oldest first,
    each with ``_received_at`` added. Received audio is kept as 48 kHz mono int16 frames with their
    receive times; only the last ``max_received_seconds`` are kept.
    """

    def __init__(
        self,
        on_event: Callable[[dict[str, Any]], None] | None = None,
        max_received_seconds: float = 600.0,
    ) -> None:
        self.events: list[dict[str, Any]] = []
        self._on_event = on_event
        self._pc: RTCPeerConnection | None = None
        self._channel: RTCDataChannel | None = None
        self._mic: MicrophoneTrack | None = None
        self._receivers: set[asyncio.Task[None]] = set()
        self._event_arrived = asyncio.Event()
        self._closed = False
        self._max_rx_frames = max(1, int(max_received_seconds * SAMPLE_RATE / FRAME_SAMPLES))
        self._rx_frames: list[np.ndarray] = []
        self._rx_times: list[float] = []
        self._rx_peaks: list[int] = []

    async def __aenter__(self) -> TalkClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def connect(
        self, url: str, ice_servers: list | None = None, timeout: float = 15.0, *, relay_only: bool = False
    ) -> None:
        """Offer to ``{url}/offer`` and wait until the events channel is open.

        ``ice_servers`` are ``RTCIceServer`` objects or dicts ``{urls, username?, credential?}``;
        ``None`` means none at all (loopback/LAN), not aiortc's default public STUN server.
        ``relay_only`` offers TURN candidates only, as a browser with ``iceTransportPolicy: "relay"``.
        """
        if self._pc is not None:
            raise RuntimeError("TalkClient.connect() may be called once; make a new client to reconnect")
        self._pc = pc = RTCPeerConnection(rtc_configuration(ice_servers or [], relay_only=relay_only))
        pc.on("connectionstatechange", self._on_connection_state)
        pc.on("track", self._on_track)
        self._channel = channel = pc.createDataChannel(EVENTS_CHANNEL)
        opened = asyncio.Event()
        channel.on("open", opened.set)
        channel.on("message", self._on_message)
        self._mic = MicrophoneTrack()
        pc.addTrack(self._mic)

        try:
            await pc.setLocalDescription(await pc.createOffer())  # aiortc gathers all candidates here
            offer = {"sdp": pc.localDescription.sdp, "type": pc.localDescription.type}
            answer = await _post_offer(url, offer, timeout)
            await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))
            try:
                await asyncio.wait_for(opened.wait(), timeout)
            except TimeoutError:
                raise ConnectionError(
                    f"the events data channel did not open within {timeout:.0f} s "
                    f"(connection state: {pc.connectionState})"
                ) from None
        except BaseException:
            await self.close()
            raise
        logger.info("connected to %s", url)

    async def say(self, audio: np.ndarray, sample_rate: int, *, threshold: int = AUDIBLE_THRESHOLD) -> float:
        """Speak ``audio`` (mono int16, or float in [-1, 1]) into the microphone in real time.

        Returns once the whole clip is sent, with the monotonic time the frame holding its last
        sample louder than ``threshold`` was sent (the last frame's time if none is). Silence follows.
        """
        if self._mic is None or self._closed:
            raise RuntimeError("say() needs a connected client")
        samples = to_mic_samples(audio, sample_rate)
        audible = np.flatnonzero(np.abs(samples.astype(np.int32)) > threshold)
        last_audible = int(audible[-1]) if audible.size else -1
        limit = self._mic.queued_seconds() + len(samples) / SAMPLE_RATE + SEND_SLACK_S
        done = self._mic.play(samples, last_audible)
        try:
            return await asyncio.wait_for(done, limit)
        except TimeoutError:
            raise TimeoutError(f"the microphone audio was not sent within {limit:.1f} s") from None
        finally:
            self._mic.discard(done)

    async def send_event(self, event: dict[str, Any]) -> None:
        if self._channel is None or self._channel.readyState != "open":
            raise ConnectionError("the events channel is not open")
        self._channel.send(json.dumps(event))

    async def report_playout(self, mouth_to_ear_s: float | None, response_id: str | None = None) -> dict[str, Any]:
        """Tell the server what this client measured, as the page does: an ``agent.client.stats`` event.

        ``mouth_to_ear_s`` is the caller's (end of speech sent to first audible reply frame received);
        the round-trip time is aiortc's, from RTCP, once it has one. aiortc has no counterpart of the
        browser's jitter buffer delay, so that field is left out. Returns the event sent.
        """
        event: dict[str, Any] = {"type": "agent.client.stats"}
        if response_id is not None:
            event["response_id"] = response_id
        if mouth_to_ear_s is not None:
            event["mouth_to_ear_s"] = mouth_to_ear_s
        if (rtt := await self.round_trip_time()) is not None:
            event["round_trip_time_s"] = rtt
        await self.send_event(event)
        return event

    async def round_trip_time(self) -> float | None:
        """Round-trip time to the server from RTCP receiver reports, None before the first one."""
        return None if self._pc is None else await round_trip_time(self._pc)

    def selected_pair(self) -> CandidatePair | None:
        """The ICE candidate pair the media flows over (``.type``: host, srflx, prflx or relay)."""
        return None if self._pc is None else selected_pair(self._pc)

    async def wait_for_event(
        self,
        type: str,
        timeout: float,
        after_index: int = 0,
        predicate: EventPredicate | None = None,
    ) -> dict[str, Any]:
        """The first ``type`` event in ``events[after_index:]`` that matches ``predicate``, waiting for it."""
        deadline = time.monotonic() + timeout
        index = after_index
        while True:
            for event in self.events[index:]:
                if event.get("type") == type and (predicate is None or predicate(event)):
                    return event
            index = max(index, len(self.events))
            if self._closed:
                raise ConnectionError(f"connection closed while waiting for {type!r}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                seen = [e.get("type") for e in self.events[after_index:]]
                raise TimeoutError(f"no {type!r} event within {timeout:.1f} s; received since: {seen}")
            arrived = self._event_arrived
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(arrived.wait(), remaining)

    def first_audible_after(self, t: float, threshold: int = AUDIBLE_THRESHOLD) -> float | None:
        """Receive time of the first frame received after ``t`` whose peak exceeds ``threshold``."""
        for i in range(bisect.bisect_right(self._rx_times, t), len(self._rx_times)):
            if self._rx_peaks[i] > threshold:
                return self._rx_times[i]
        return None

    def last_audible_before(self, t: float, threshold: int = AUDIBLE_THRESHOLD) -> float | None:
        """Receive time of the last frame received before ``t`` whose peak exceeds ``threshold``."""
        for i in range(bisect.bisect_left(self._rx_times, t) - 1, -1, -1):
            if self._rx_peaks[i] > threshold:
                return self._rx_times[i]
        return None

    def reply_audio(self, since: float, until: float | None = None) -> np.ndarray:
        """48 kHz mono int16 audio of the frames received at or after ``since`` and before ``until``."""
        start = bisect.bisect_left(self._rx_times, since)
        stop = len(self._rx_times) if until is None else bisect.bisect_left(self._rx_times, until)
        if start >= stop:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate(self._rx_frames[start:stop])

    async def wait_until_quiet(
        self,
        quiet: float = 0.5,
        timeout: float = 30.0,
        threshold: int = AUDIBLE_THRESHOLD,
        after: float | None = None,
    ) -> None:
        """Wait until no audible frame has been received for ``quiet`` seconds.

        With ``after``, an audible frame received after that time must come first: the reply is
        awaited before its end is.
        """
        deadline = time.monotonic() + timeout
        while True:
            now = time.monotonic()
            heard = after is None or self.first_audible_after(after, threshold) is not None
            if heard and self.first_audible_after(now - quiet, threshold) is None:
                return
            if now >= deadline:
                raise TimeoutError(f"the agent's audio did not go quiet within {timeout:.1f} s")
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._wake_waiters()
        if self._mic is not None:
            self._mic.stop()
        for task in self._receivers:
            task.cancel()
        await asyncio.gather(*self._receivers, return_exceptions=True)
        if self._pc is not None:
            await self._pc.close()
        logger.info("closed")

    # -- aiortc callbacks ----------------------------------------------------------------------

    def _on_connection_state(self) -> None:
        assert self._pc is not None
        state = self._pc.connectionState
        logger.info("connection state: %s", state)
        if state in ("failed", "closed"):
            self._closed = True
            self._wake_waiters()

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind != "audio":
            logger.info("ignoring a %s track", track.kind)
            return
        task = asyncio.create_task(self._receive_audio(track))
        self._receivers.add(task)
        task.add_done_callback(self._receivers.discard)

    async def _receive_audio(self, track: MediaStreamTrack) -> None:
        resampler = Resampler(SAMPLE_RATE)  # aiortc decodes to 48 kHz stereo; we keep mono
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                logger.info("the server's audio track ended")
                return
            received_at = time.monotonic()
            samples = resampler.frame(frame)
            self._rx_frames.append(samples)
            self._rx_times.append(received_at)
            self._rx_peaks.append(int(np.abs(samples.astype(np.int32)).max(initial=0)))
            if len(self._rx_times) > 2 * self._max_rx_frames:
                for buffer in (self._rx_frames, self._rx_times, self._rx_peaks):
                    del buffer[: -self._max_rx_frames]

    def _on_message(self, message: str | bytes) -> None:
        received_at = time.monotonic()
        try:
            event = json.loads(message)
        except (ValueError, UnicodeDecodeError):
            logger.warning("ignoring a data channel message that is not JSON: %.80r", message)
            return
        if not isinstance(event, dict) or "type" not in event:
            logger.warning("ignoring a data channel message without a type: %.80r", message)
            return
        event["_received_at"] = received_at
        self.events.append(event)
        self._wake_waiters()
        if self._on_event is not None:
            try:
                self._on_event(event)
            except Exception:
                logger.exception("on_event callback failed for %s", event["type"])

    def _wake_waiters(self) -> None:
        self._event_arrived.set()
        self._event_arrived = asyncio.Event()


async def _post_offer(url: str, offer: dict[str, str], timeout: float) -> dict[str, str]:
    endpoint = f"{url.rstrip('/')}/offer"
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as http,
            http.post(endpoint, json=offer) as response,
        ):
            if response.status != 200:
                body = (await response.text())[:300]
                raise ConnectionError(f"POST {endpoint} answered {response.status}: {body}")
            answer = await response.json()
    except (TimeoutError, aiohttp.ClientError) as exc:
        raise ConnectionError(f"cannot POST the offer to {endpoint}: {exc or type(exc).__name__}") from exc
    if not isinstance(answer, dict) or answer.get("type") != "answer" or "sdp" not in answer:
        raise ConnectionError(f"POST {endpoint} did not return an SDP answer: {str(answer)[:300]}")
    return answer
