"""Latency benchmark: ask a running agent spoken questions over WebRTC or its Realtime WebSocket and time the answers.

Questions are synthesised with espeak-ng, played as the microphone in real time over one session,
and each turn waits for ``response.done`` and for the spoken reply to end. The client's own
voice-to-voice time (first audible reply audio received minus the instant our speech ended) is
reported beside the server's stage latencies from ``agent.turn.latency``, as median and p95.

``--transport websocket`` asks over ``/v1/realtime`` through the official ``openai`` SDK's realtime
client instead; ``--transport both`` opens one session of each on the same server and asks every
question over both, the order swapped every question, and reports the medians side by side.

    python scripts/bench_latency.py --url http://127.0.0.1:8000 --turns 10 --json out/bench.json
    python scripts/bench_latency.py --transport both --turns 12
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from agent.audio.resample import resample_once
from agent.client.peer import SAMPLE_RATE, TalkClient, wait_until_ready
from agent.client.realtime import RATE as REALTIME_RATE
from agent.client.realtime import RealtimeConversation
from agent.client.talk import DEFAULT_URL, LATENCY_FIELDS, read_audio, run_turn

DEFAULT_PHRASES = (
    "What is the capital of France?",
    "How many legs does a spider have?",
    "What colour is the sky on a clear day?",
    "Can you tell me a fun fact about octopuses?",
    "What is two plus three?",
    "Who wrote Romeo and Juliet?",
    "What is the tallest mountain in the world?",
    "How do I boil an egg?",
    "What is the opposite of hot?",
    "Which planet is closest to the sun?",
    "Why do leaves change colour in autumn?",
    "What should I name my cat?",
)
# Client-measured voice-to-voice first, then the server's stages in pipeline order.
METRICS = ("client_voice_to_voice_s", *(f"server_{key}" for key in LATENCY_FIELDS))
PAUSE_BETWEEN_TURNS_S = 0.5


def synthesise(phrases: list[str], folder: Path, voice: str) -> list[np.ndarray]:
    """Each phrase spoken by espeak-ng, as 48 kHz mono int16."""
    if shutil.which("espeak-ng") is None:
        raise RuntimeError("espeak-ng is not installed (apt-get install espeak-ng)")
    clips = []
    for i, phrase in enumerate(phrases):
        path = folder / f"question_{i:02d}.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-w", str(path), phrase], check=True, capture_output=True)
        clips.append(read_audio(path))
    return clips


async def ask_webrtc(client: TalkClient, clip: np.ndarray, timeout: float) -> dict[str, Any]:
    turn = await run_turn(client, clip, SAMPLE_RATE, timeout)
    return {
        "transcript": turn.transcript,
        "reply_text": turn.reply_text,
        "status": turn.status,
        "error": turn.error,
        "client_voice_to_voice_s": turn.voice_to_voice_s,
        **{f"server_{key}": turn.server_latency.get(key) for key in LATENCY_FIELDS},
    }


async def ask_websocket(talk: RealtimeConversation, clip: np.ndarray, timeout: float) -> dict[str, Any]:
    seen = len(talk.user_transcripts)
    try:
        reply = await talk.ask(resample_once(clip, SAMPLE_RATE, REALTIME_RATE), timeout)
    except TimeoutError as exc:
        return {
            "transcript": None,
            "reply_text": "",
            "status": None,
            "error": str(exc),
            "client_voice_to_voice_s": None,
            **{f"server_{key}": None for key in LATENCY_FIELDS},
        }
    heard = list(talk.user_transcripts.values())[seen:]
    v2v = None
    if reply.first_audible_at is not None and talk.speech_ended_at is not None:
        v2v = reply.first_audible_at - talk.speech_ended_at
    return {
        "transcript": " ".join(heard),
        "reply_text": reply.transcript,
        "status": reply.status,
        "error": talk.errors[-1]["message"] if talk.errors else None,
        "client_voice_to_voice_s": v2v,
        **{f"server_{key}": reply.latency.get(key) for key in LATENCY_FIELDS},
    }


async def bench(
    url: str,
    phrases: list[str],
    clips: list[np.ndarray],
    turns: int,
    timeout: float,
    rows: list[dict[str, Any]],
    transports: tuple[str, ...] = ("webrtc",),
    fresh_sessions: bool = False,
) -> None:
    """Ask ``turns`` questions over one session per transport, appending one row per answer to ``rows``.

    With two transports every question is asked over both, whichever went first the last time going second.
    With ``fresh_sessions`` every question gets new sessions: both transports answer it with the same empty
    memory, so their replies (and the chat model's time) match and only the transports differ.
    """

    async def connect(stack: contextlib.AsyncExitStack) -> dict:
        askers = {}
        if "webrtc" in transports:
            client = await stack.enter_async_context(TalkClient())
            await client.connect(url)
            askers["webrtc"] = lambda clip: ask_webrtc(client, clip, timeout)
        if "websocket" in transports:
            talk = await stack.enter_async_context(RealtimeConversation(url, agent_events=True))
            askers["websocket"] = lambda clip: ask_websocket(talk, clip, timeout)
        await asyncio.sleep(1.0)  # let the connections settle on silence
        return askers

    async with contextlib.AsyncExitStack() as conversation:
        askers = None if fresh_sessions else await connect(conversation)
        for n in range(turns):
            order = list(transports) if n % 2 == 0 else list(reversed(transports))
            async with contextlib.AsyncExitStack() as question:
                if fresh_sessions:
                    askers = await connect(question)
                for transport in order:
                    row = {"turn": n + 1, "transport": transport, "phrase": phrases[n % len(phrases)]}
                    row |= await askers[transport](clips[n % len(clips)])
                    rows.append(row)
                    print_turn(row, turns)
                    await asyncio.sleep(PAUSE_BETWEEN_TURNS_S)


def print_turn(row: dict[str, Any], turns: int) -> None:
    client = row["client_voice_to_voice_s"]
    server = row["server_voice_to_voice_s"]
    timing = "no reply audio" if client is None else f"voice-to-voice {client:.3f} s"
    if server is not None:
        timing += f" (server {server:.3f} s)"
    outcome = row["error"] or f"{row['status']}: {row['reply_text']!r}"
    where = row["transport"]
    print(f"turn {row['turn']:>3}/{turns} {where:<9} {timing}  heard {row['transcript']!r} -> {outcome}", flush=True)


def summarise(rows: list[dict[str, Any]]) -> dict[str, dict[str, float | int | None]]:
    summary: dict[str, dict[str, float | int | None]] = {}
    for metric in METRICS:
        values = np.array([row[metric] for row in rows if row[metric] is not None], dtype=float)
        summary[metric] = {
            "n": int(values.size),
            "median_s": float(np.median(values)) if values.size else None,
            "p95_s": float(np.percentile(values, 95)) if values.size else None,
        }
    return summary


def print_summary(summary: dict[str, dict[str, float | int | None]]) -> None:
    print(f"\n{'metric':<32}{'n':>4}{'median s':>11}{'p95 s':>9}")
    for metric, stats in summary.items():
        median, p95 = stats["median_s"], stats["p95_s"]
        cells = "        -        -" if median is None else f"{median:>11.3f}{p95:>9.3f}"
        print(f"{metric:<32}{stats['n']:>4}{cells}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=DEFAULT_URL, help=f"agent server (default {DEFAULT_URL})")
    parser.add_argument("--turns", type=int, default=10, help="questions to ask (default 10)")
    parser.add_argument("--phrases", type=Path, help="text file, one question per line (default: built in)")
    parser.add_argument("--json", type=Path, help="write every turn's numbers and the summary here")
    parser.add_argument("--voice", default="en-us", help="espeak-ng voice for the questions (default en-us)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for each reply")
    parser.add_argument("--ready-timeout", type=float, default=10.0, help="seconds to wait for GET /ready")
    parser.add_argument(
        "--transport",
        choices=("webrtc", "websocket", "both"),
        default="webrtc",
        help="WebRTC (our page's way), /v1/realtime through the openai SDK, or both in turn (default webrtc)",
    )
    parser.add_argument(
        "--fresh-sessions",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="new sessions for every question (default: on with --transport both, off otherwise)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.turns < 1:
        parser.error("--turns must be at least 1")

    phrases = list(DEFAULT_PHRASES)
    if args.phrases is not None:
        phrases = [line.strip() for line in args.phrases.read_text().splitlines() if line.strip()]
        if not phrases:
            parser.error(f"{args.phrases} holds no phrases")
    phrases = phrases[: args.turns]

    try:
        asyncio.run(wait_until_ready(args.url, args.ready_timeout))
        with tempfile.TemporaryDirectory(prefix="bench-latency-") as folder:
            clips = synthesise(phrases, Path(folder), args.voice)
    except (ConnectionError, RuntimeError, subprocess.CalledProcessError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    rows: list[dict[str, Any]] = []
    transports = ("webrtc", "websocket") if args.transport == "both" else (args.transport,)
    try:
        fresh = args.transport == "both" if args.fresh_sessions is None else args.fresh_sessions
        asyncio.run(bench(args.url, phrases, clips, args.turns, args.timeout, rows, transports, fresh))
    except (ConnectionError, TimeoutError) as exc:
        print(f"error: the session broke off after {len(rows)} turns: {exc}", file=sys.stderr)
        if not rows:
            return 1

    summary = {t: summarise([row for row in rows if row["transport"] == t]) for t in transports}
    for transport, stats in summary.items():
        print(f"\n{transport}")
        print_summary(stats)
    if len(transports) == 2:
        medians = [summary[t]["client_voice_to_voice_s"]["median_s"] for t in transports]
        if None not in medians:
            print(
                f"\nvoice-to-voice median, websocket - webrtc: {1000 * (medians[1] - medians[0]):+.0f} ms "
                f"(ratio {medians[1] / medians[0]:.2f})"
            )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"url": args.url, "turns": rows, "summary": summary}, indent=2))
        print(f"wrote {args.json}")
    failed = sum(1 for row in rows if row["status"] != "completed")
    if failed:
        print(f"{failed} of {len(rows)} turns did not complete", file=sys.stderr)
    return 0 if failed == 0 else 2


if __name__ == "__main__":
    sys.exit(main())
