"""Benchmark the streamed Chatterbox backend on random weights (nothing to download).

    python scripts/bench_tts.py                          # full-size multilingual model, CUDA when present
    python scripts/bench_tts.py --device cpu --small     # the test-size model on a CPU

The model is built at full size from chatterbox's own constructors with random weights, saved in
the hub's layout and loaded back through ``from_local``, as production loads it. Random weights
sample random speech tokens, so every phrase is held to the speech a 12-word phrase gets (about
4 s, ``--phrase-seconds``). Reported, as medians over ``--repeats`` phrases: time to first audio,
real-time factor (synthesis time over audio length) and peak memory, with 1 and 4 sessions
synthesizing at once (each its own thread; the backend interleaves their model steps).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import torch

from agent.config import REPO_ROOT, Config
from agent.models.chatterbox_tts import TOKENS_PER_SECOND, ChatterboxTextToSpeech

sys.path.insert(0, str(REPO_ROOT))
from tests.tiny_chatterbox import build_chatterbox, small_chatterbox  # noqa: E402

PHRASE = "The weather in Lisbon will be sunny tomorrow, with a light breeze."  # 12 words


def phrase_stats(tts: ChatterboxTextToSpeech, max_tokens: int) -> dict[str, float]:
    started = time.perf_counter()
    first = None
    samples = 0
    chunks = 0
    for chunk in tts.synthesize(PHRASE, "en", max_tokens=max_tokens):
        if first is None:
            first = time.perf_counter() - started
        samples += len(chunk.audio)
        chunks += 1
    total = time.perf_counter() - started
    audio_seconds = samples / tts.sample_rate
    return {
        "first_audio_s": first or total,
        "rtf": total / audio_seconds if audio_seconds else float("inf"),
        "audio_s": audio_seconds,
        "chunks": chunks,
    }


def concurrent(tts: ChatterboxTextToSpeech, sessions: int, max_tokens: int) -> list[dict[str, float]]:
    results: list[dict[str, float]] = []
    lock = threading.Lock()

    def session() -> None:
        stats = phrase_stats(tts, max_tokens)
        with lock:
            results.append(stats)

    threads = [threading.Thread(target=session) for _ in range(sessions)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def peak_memory(device: str) -> dict[str, float]:
    memory = {"peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}
    if device == "cuda":
        memory["peak_gpu_allocated_gb"] = torch.cuda.max_memory_allocated() / 2**30
    return memory


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--small", action="store_true", help="the test-size model (tests/tiny_chatterbox.py)")
    parser.add_argument("--variant", choices=["multilingual", "english"], default="multilingual")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sessions", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--phrase-seconds", type=float, default=4.0, help="speech each phrase is held to")
    parser.add_argument("--cfm-steps", type=int, default=10)
    parser.add_argument("--no-watermark", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    size = small_chatterbox() if args.small else contextlib.nullcontext()
    with tempfile.TemporaryDirectory(prefix="bench-chatterbox-") as scratch, size:
        started = time.perf_counter()
        folder = build_chatterbox(Path(scratch), args.variant)
        built = time.perf_counter() - started
        config = Config()
        config.tts.chatterbox_model = str(folder)
        config.tts.chatterbox_variant = args.variant
        config.tts.chatterbox_device = args.device
        config.tts.chatterbox_cfm_steps = args.cfm_steps
        config.tts.chatterbox_watermark = not args.no_watermark
        started = time.perf_counter()
        tts = ChatterboxTextToSpeech(config)
        loaded = time.perf_counter() - started
    parameters = sum(p.numel() for m in (tts._model.t3, tts._model.s3gen, tts._model.ve) for p in m.parameters())
    max_tokens = int(args.phrase_seconds * TOKENS_PER_SECOND)
    started = time.perf_counter()
    tts.warm_up()
    phrase_stats(tts, max_tokens)
    warm_up = time.perf_counter() - started
    device = tts.device.split(":")[0]
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()

    report: dict[str, Any] = {
        "device": tts.device,
        "model": f"{'small' if args.small else 'full-size'} {args.variant}, {parameters / 1e6:.0f}M parameters",
        "build_s": round(built, 2),
        "load_s": round(loaded, 2),
        "warm_up_s": round(warm_up, 2),
        "phrase": PHRASE,
    }
    for sessions in args.sessions:
        runs = [stats for _ in range(args.repeats) for stats in concurrent(tts, sessions, max_tokens)]
        report[f"{sessions}_sessions"] = {
            key: round(statistics.median(run[key] for run in runs), 3) for key in ("first_audio_s", "rtf", "audio_s")
        } | {"chunks": statistics.median(run["chunks"] for run in runs)}
    report |= {key: round(value, 2) for key, value in peak_memory(device).items()}
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
