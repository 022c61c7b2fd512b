"""Latency benchmark: ask a running agent spoken questions over WebRTC and time the answers.

Questions are synthesised with espeak-ng, played as the microphone in real time over one session,
and each turn waits for ``response.done`` and for the spoken reply to end. The client's own
voice-to-voice time (first audible reply frame received minus the instant our speech ended) is
reported beside the server's stage latencies from ``agent.turn.latency``, as median and p95.

    python scripts/bench_latency.py --url http://127.0.0.1:8000 --turns 10 --json out/bench.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from agent.client.peer import SAMPLE_RATE, TalkClient, wait_until_ready
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


async def bench(
    url: str,
    phrases: list[str],
    clips: list[np.ndarray],
    turns: int,
    timeout: float,
    rows: list[dict[str, Any]],
) -> None:
    """Ask ``turns`` questions over one session, appending one row per turn to ``rows`` as it ends."""
    async with TalkClient() as client:
        await client.connect(url)
        await asyncio.sleep(1.0)  # let the connection settle on silence
        for n in range(turns):
            turn = await run_turn(client, clips[n % len(clips)], SAMPLE_RATE, timeout)
            row = {
                "turn": n + 1,
                "phrase": phrases[n % len(phrases)],
                "transcript": turn.transcript,
                "reply_text": turn.reply_text,
                "status": turn.status,
                "error": turn.error,
                "client_voice_to_voice_s": turn.voice_to_voice_s,
                **{f"server_{key}": turn.server_latency.get(key) for key in LATENCY_FIELDS},
            }
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
    print(f"turn {row['turn']:>3}/{turns}  {timing}  heard {row['transcript']!r} -> {outcome}", flush=True)


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
    try:
        asyncio.run(bench(args.url, phrases, clips, args.turns, args.timeout, rows))
    except (ConnectionError, TimeoutError) as exc:
        print(f"error: the session broke off after {len(rows)} turns: {exc}", file=sys.stderr)
        if not rows:
            return 1

    summary = summarise(rows)
    print_summary(summary)
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
