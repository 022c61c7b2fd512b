"""Does keeping every call on record slow the live conversation? Voice-to-voice with records on and off.

One process, one set of loaded models, two servers (records on: every exchange stored and the call
recorded in stereo; records off), asked the same spoken questions in turn. With ``--uploads N`` the
records server is also transcribing N uploaded recordings while it answers, so the figure shows
that background jobs run below live turns.

    python scripts/bench_recording.py --turns 10 --uploads 4
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import logging
import sys
import tempfile
import time
import wave
from pathlib import Path

import aiohttp
import numpy as np
from bench_latency import DEFAULT_PHRASES, synthesise
from bench_turn_taking import median, voice_to_voice

from agent.client.peer import SAMPLE_RATE
from agent.config import Config, load_config
from agent.models.runtime import ModelRuntime

UPLOAD_TEXT = (
    "Hello, this is the billing team calling back about your invoice. You were charged twice in March, "
    "and we have refunded the second payment. Is there anything else I can help you with today?"
)


def variants(base: Config, data_dir: Path) -> dict[str, Config]:
    on = copy.deepcopy(base)
    on.records.data_dir = str(data_dir)
    off = copy.deepcopy(on)
    off.records.enabled = False
    off.records.data_dir = str(data_dir / "off")  # its own store: it must not pick up the batch's jobs
    return {"records on": on, "records off": off}


def write_wav(path: Path, samples: np.ndarray, rate: int) -> None:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples.astype(np.int16).tobytes())


async def upload_batch(url: str, wav: Path, count: int) -> list[str]:
    async with aiohttp.ClientSession() as http:
        ids = []
        for n in range(count):
            form = aiohttp.FormData()
            form.add_field("file", wav.read_bytes(), filename=f"batch-{n}.wav")
            async with http.post(url + "/api/calls", data=form) as response:
                ids += (await response.json())["ids"]
        return ids


async def run(runtime: ModelRuntime, configs: dict[str, Config], clips: list[np.ndarray], turns: int,
              wav: Path, uploads: int) -> dict:
    from agent.server.background import running_server

    jobs: dict = {}
    if uploads:
        # The batch goes to the records-on server's store; a third server on the same data folder queues it.
        async with running_server(configs["records on"], runtime) as (url, state):
            jobs["ids"] = await upload_batch(url, wav, uploads)
    started = time.monotonic()
    results = await voice_to_voice(runtime, configs, clips, turns, swap_order=True)
    jobs["seconds_during_run"] = time.monotonic() - started
    return {"v2v": results, "jobs": jobs}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, help="YAML config (default config/default.yaml)")
    parser.add_argument("--turns", type=int, default=8, help="questions per variant (default 8)")
    parser.add_argument("--uploads", type=int, default=0, help="recordings queued for transcription first")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    base = load_config(args.config)
    print("loading models ...", flush=True)
    runtime = ModelRuntime.load(base)
    with tempfile.TemporaryDirectory(prefix="bench-recording-") as folder:
        folder = Path(folder)
        configs = variants(base, folder / "data")
        clips = synthesise(list(DEFAULT_PHRASES[: args.turns]), folder, "en-us")
        wav = folder / "upload.wav"
        [speech] = synthesise([UPLOAD_TEXT], folder, "en-gb")
        write_wav(wav, np.tile(speech, 3), SAMPLE_RATE)  # about 35 s
        try:
            out = asyncio.run(run(runtime, configs, clips, args.turns, wav, args.uploads))
        finally:
            runtime.close()

    summary = {name: {key: median(values) for key, values in row.items()} for name, row in out["v2v"].items()}
    off = summary["records off"]["client_voice_to_voice_s"]
    print(f"\n{'variant':<16}{'client v2v':>12}{'server v2v':>12}{'ratio':>8}")
    for name, row in summary.items():
        ratio = row["client_voice_to_voice_s"] / off if off and row["client_voice_to_voice_s"] else None
        row["ratio_to_records_off"] = ratio
        cells = [row["client_voice_to_voice_s"], row["server_voice_to_voice_s"]]
        print(f"{name:<16}" + "".join(f"{c:>12.3f}" if c is not None else f"{'-':>12}" for c in cells)
              + (f"{ratio:>8.2f}" if ratio else "       -"))
    if args.uploads:
        print(f"(records on was transcribing {args.uploads} uploaded recordings in the background)")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"summary": summary, "raw": out["v2v"], "uploads": args.uploads}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
