"""``voice-agent talk``: say a WAV file to the agent, print what comes back, save the spoken reply.

The WAV plays as the microphone in real time; each event prints as one line; the report gives the
voice-to-voice time the client measured (first audible reply frame received minus the instant the
last audible frame of the WAV was sent) next to the server's own stage latencies.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np
from av.error import FFmpegError

from agent.audio.resample import Resampler
from agent.client.peer import SAMPLE_RATE, TalkClient, wait_until_ready

logger = logging.getLogger(__name__)

DEFAULT_URL = "http://127.0.0.1:8000"
LATENCY_FIELDS = (
    "endpointing_s",
    "asr_s",
    "llm_first_token_s",
    "llm_per_token_s",
    "llm_first_phrase_s",
    "tts_first_audio_s",
    "voice_to_voice_s",
)
# How long the agent's audio must stay silent before its reply counts as finished.
REPLY_QUIET_S = 0.5
# The turn-latency event may follow response.done; this is how long we wait for it.
LATENCY_EVENT_WAIT_S = 2.0
REPORT_KEYS = ("transcript", "reply_text", "status", "error", "reply_wav", "reply_audio_s")


@dataclass
class TurnResult:
    """What one spoken question produced, as the client saw it."""

    end_of_speech_at: float
    first_audio_at: float | None = None
    reply_end_at: float | None = None
    status: str | None = None  # response.done status, None if it never came
    transcript: str | None = None
    reply_text: str | None = None
    server_latency: dict[str, float] = field(default_factory=dict)
    llm_backend: str | None = None  # the chat backend that answered, as the server's latency event says
    error: str | None = None

    @property
    def voice_to_voice_s(self) -> float | None:
        if self.first_audio_at is None:
            return None
        return self.first_audio_at - self.end_of_speech_at


async def run_turn(client: TalkClient, audio: np.ndarray, sample_rate: int, timeout: float) -> TurnResult:
    """Say ``audio``, wait for ``response.done`` and for the spoken reply to finish."""
    start_index = len(client.events)
    # A reply started before this turn (the one this turn interrupts) ends during it: not ours.
    earlier = {e["response"]["id"] for e in client.events if e["type"] == "response.created"}
    result = TurnResult(end_of_speech_at=await client.say(audio, sample_rate))

    def ours(event: dict[str, Any]) -> bool:
        # Nor is a reply dropped because the user went on speaking (the turn reopened): the next one answers.
        response_id = event["response"]["id"]
        dropped = any(e["type"] == "agent.reply.dropped" and e["response_id"] == response_id for e in client.events)
        return response_id not in earlier and not dropped

    try:
        done = await client.wait_for_event("response.done", timeout, after_index=start_index, predicate=ours)
    except TimeoutError as exc:
        result.error = str(exc)
    else:
        response = done.get("response", {})
        result.status = response.get("status")
        result.reply_text = response.get("output_text")
        try:
            latency = await client.wait_for_event(
                "agent.turn.latency",
                LATENCY_EVENT_WAIT_S,
                after_index=start_index,
                predicate=lambda e: e.get("response_id") in (None, response.get("id")),
            )
            result.server_latency = {k: latency[k] for k in LATENCY_FIELDS if latency.get(k) is not None}
            result.llm_backend = latency.get("llm_backend")
        except TimeoutError:
            logger.warning("no agent.turn.latency event for response %s", response.get("id"))
    # A reply with text is also spoken: wait for its audio to arrive, then to end.
    spoken = result.end_of_speech_at if result.status == "completed" and result.reply_text else None
    try:
        await client.wait_until_quiet(REPLY_QUIET_S, timeout=timeout, after=spoken)
    except TimeoutError as exc:
        result.error = result.error or str(exc)
    result.reply_end_at = time.monotonic()
    result.first_audio_at = client.first_audible_after(result.end_of_speech_at)
    for event in client.events[start_index:]:
        if event["type"] == "conversation.item.input_audio_transcription.completed":
            result.transcript = event.get("transcript")
    return result


def read_audio(path: Path) -> np.ndarray:
    """Any audio file FFmpeg reads (any rate, any channels) -> 48 kHz mono int16."""
    resampler = Resampler(SAMPLE_RATE)
    with av.open(str(path)) as container:
        chunks = [resampler.frame(frame) for frame in container.decode(audio=0)]
    audio = np.concatenate([*chunks, resampler.flush()])
    if audio.size == 0:
        raise ValueError(f"{path} holds no audio")
    return audio


def write_wav(path: Path, samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """Mono int16 samples -> a 16-bit PCM WAV file."""
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(np.ascontiguousarray(samples, dtype="<i2").tobytes())


def format_event(event: dict[str, Any]) -> str:
    """One line: the event type and the fields worth reading."""
    kind = event.get("type", "?")
    if kind == "response.audio_transcript.delta":
        detail = repr(event.get("delta", ""))
    elif kind in ("response.audio_transcript.done", "conversation.item.input_audio_transcription.completed"):
        detail = repr(event.get("transcript", ""))
    elif kind == "agent.state":
        detail = str(event.get("state"))
    elif kind == "session.created":
        session = event.get("session", {})
        detail = f"id={session.get('id')} language={session.get('language')}"
    elif kind == "input_audio_buffer.speech_started":
        detail = f"audio_start_ms={event.get('audio_start_ms')}"
    elif kind == "input_audio_buffer.speech_stopped":
        detail = f"audio_end_ms={event.get('audio_end_ms')}"
    elif kind in ("response.created", "response.done"):
        response = event.get("response", {})
        detail = f"id={response.get('id')} status={response.get('status')}"
        if response.get("output_text"):
            detail += f" text={response['output_text']!r}"
    elif kind == "agent.turn.latency":
        timings = [k for k in LATENCY_FIELDS if isinstance(event.get(k), (int, float))]
        detail = " ".join(f"{k}={event[k]:.3f}" for k in timings)
    elif kind == "error":
        error = event.get("error", {})
        detail = f"{error.get('type')}: {error.get('message')}"
    else:
        rest = {k: v for k, v in event.items() if k not in ("type", "event_id", "_received_at")}
        detail = json.dumps(rest, separators=(",", ":"))
    return f"{kind} {detail}"[:200]


async def run_talk(
    wav: Path, url: str, out: Path | None, timeout: float = 60.0, ready_timeout: float = 10.0
) -> dict[str, Any]:
    """Say ``wav`` to the agent at ``url``; print events, save the reply to ``out``, return the report."""
    audio = read_audio(wav)
    out = out or wav.with_name(f"{wav.stem}.reply.wav")
    await wait_until_ready(url, ready_timeout)
    started = time.monotonic()

    def print_event(event: dict[str, Any]) -> None:
        print(f"{event['_received_at'] - started:8.3f}s  {format_event(event)}", flush=True)

    async with TalkClient(on_event=print_event) as client:
        await client.connect(url)
        await asyncio.sleep(0.3)  # a moment of silence before speaking, as a person would
        print(f"{time.monotonic() - started:8.3f}s  (speaking {wav.name}, {len(audio) / SAMPLE_RATE:.2f} s)")
        turn = await run_turn(client, audio, SAMPLE_RATE, timeout)
        reply = np.zeros(0, dtype=np.int16)
        if turn.first_audio_at is not None:
            reply = client.reply_audio(since=turn.first_audio_at, until=turn.reply_end_at)
    if len(reply):
        write_wav(out, reply)
    return {
        "wav": str(wav),
        "reply_wav": str(out) if len(reply) else None,
        "reply_audio_s": round(len(reply) / SAMPLE_RATE, 3),
        "status": turn.status,
        "error": turn.error,
        "transcript": turn.transcript,
        "reply_text": turn.reply_text,
        "voice_to_voice_s": None if turn.voice_to_voice_s is None else round(turn.voice_to_voice_s, 3),
        "server_latency": turn.server_latency,
    }


def print_report(report: dict[str, Any]) -> None:
    print("--- report")
    for key in REPORT_KEYS:
        if report.get(key) is not None:
            print(f"{key:>24}: {report[key]}")
    v2v = report["voice_to_voice_s"]
    print(f"{'client voice_to_voice_s':>24}: {'no reply audio' if v2v is None else f'{v2v:.3f}'}")
    for key, value in report["server_latency"].items():
        print(f"{'server ' + key:>24}: {value:.3f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="voice-agent talk", description=__doc__.splitlines()[0])
    parser.add_argument("--wav", type=Path, required=True, help="audio to say (any rate and channels)")
    parser.add_argument("--url", default=DEFAULT_URL, help=f"agent server (default {DEFAULT_URL})")
    parser.add_argument("--out", type=Path, help="reply WAV to write (default <name>.reply.wav beside --wav)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the reply")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not args.wav.is_file():
        print(f"error: {args.wav} does not exist", file=sys.stderr)
        return 2
    try:
        report = asyncio.run(run_talk(args.wav, args.url, args.out, args.timeout))
    except (ConnectionError, TimeoutError, FFmpegError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    return 0 if report["status"] == "completed" else 1


if __name__ == "__main__":
    sys.exit(main())
