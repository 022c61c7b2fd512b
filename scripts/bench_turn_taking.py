"""Turn-taking benchmark, all in one process on the same machine and the same loaded models.

1. Voice-to-voice with and without speculation (and with the adaptive end of turn), the variants
   taking turns question by question so that drift in machine load hits them alike.
2. Barge-in latency: a long answer is spoken over after a second; the server's ``agent.barge_in``
   (speech onset detected -> outgoing audio stopped) and what the client saw (onset event received
   -> last audible frame received).
3. End of turn on a test set of sentences with a pause inside: how many are cut into two turns with
   the fixed end-of-turn silence and with the adaptive one, and the endpointing delay of complete
   questions.

    python scripts/bench_turn_taking.py --turns 8 --barge-ins 5 --json out/turn_taking.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import json
import logging
import sys
import tempfile
from pathlib import Path

import numpy as np
from bench_latency import DEFAULT_PHRASES, synthesise

from agent.client.peer import SAMPLE_RATE, TalkClient
from agent.client.talk import run_turn
from agent.config import Config, load_config
from agent.models.runtime import ModelRuntime
from agent.server.background import running_server

STORY = "Tell me a long story about a brave knight and a dragon."
INTERRUPTION = "Wait, stop."
# Sentences said in two parts with a pause between: the first part trails off.
SPLIT_SENTENCES = (
    ("I want to", "book a table for two people."),
    ("Can you tell me about the weather in", "Paris tomorrow?"),
    ("My favourite colour is blue and", "my sister likes green."),
    ("I would like to", "know the time."),
    ("What is the capital of", "Spain?"),
    ("Remind me to", "call my mother tonight."),
    ("The best thing about summer is", "the long evenings."),
    ("So, um,", "what should I cook for dinner?"),
)
PAUSE_INSIDE_S = 0.65  # longer than the default 500 ms end-of-turn silence, shorter than 900 ms


def variants(base: Config) -> dict[str, Config]:
    adaptive = copy.deepcopy(base)
    fixed = copy.deepcopy(base)
    fixed.vad.adaptive_end_of_turn = False
    off = copy.deepcopy(fixed)
    off.vad.speculative_silence_ms = 0
    return {"speculation+adaptive": adaptive, "speculation, fixed 500 ms": fixed, "no speculation": off}


def trim(clip: np.ndarray, threshold: int = 300) -> np.ndarray:
    """Without espeak-ng's leading and trailing silence, so that the pause inside is exactly PAUSE_INSIDE_S."""
    loud = np.flatnonzero(np.abs(clip.astype(np.int32)) > threshold)
    return clip[loud[0] : loud[-1] + 1] if loud.size else clip


def median(values: list[float]) -> float | None:
    return float(np.median(values)) if values else None


async def voice_to_voice(
    runtime: ModelRuntime, configs: dict[str, Config], clips: list[np.ndarray], turns: int, swap_order: bool = False
) -> dict[str, dict[str, list[float]]]:
    """Each question asked of every server in turn. With ``swap_order`` the order is reversed every question:
    whichever server asks first after another has answered pays for what the shared model threads still
    finish, so a fixed order shows up as a cost of the first variant."""
    results = {
        name: {"client_voice_to_voice_s": [], "server_voice_to_voice_s": [], "endpointing_s": []} for name in configs
    }
    async with contextlib.AsyncExitStack() as stack:
        clients = {}
        for name, config in configs.items():
            url, _ = await stack.enter_async_context(running_server(config, runtime))
            clients[name] = await stack.enter_async_context(TalkClient())
            await clients[name].connect(url)
        await asyncio.sleep(1.0)
        for n in range(turns):
            order = list(clients.items())
            for name, client in reversed(order) if swap_order and n % 2 else order:
                turn = await run_turn(client, clips[n % len(clips)], SAMPLE_RATE, timeout=60)
                row = results[name]
                if turn.voice_to_voice_s is not None:
                    row["client_voice_to_voice_s"].append(turn.voice_to_voice_s)
                for key in ("voice_to_voice_s", "endpointing_s"):
                    value = turn.server_latency.get(key)
                    if value is not None:
                        row[key if key == "endpointing_s" else f"server_{key}"].append(value)
                v2v = "-" if turn.voice_to_voice_s is None else f"{turn.voice_to_voice_s:.3f}"
                print(f"  turn {n + 1}/{turns} {name:<28} voice-to-voice {v2v} s  {turn.status}", flush=True)
                await asyncio.sleep(0.5)
    return results


async def barge_ins(runtime: ModelRuntime, config: Config, story: np.ndarray, stop: np.ndarray, trials: int) -> dict:
    server_s: list[float] = []
    decision_s: list[float] = []
    client_s: list[float] = []
    audible_after: list[int] = []
    async with running_server(config, runtime) as (url, _):
        for n in range(trials):
            async with TalkClient() as client:  # a fresh conversation each time: the story is always long
                await client.connect(url)
                await asyncio.sleep(0.5)
                await client.say(story, SAMPLE_RATE)
                await client.wait_for_event("agent.state", 60, predicate=lambda e: e["state"] == "speaking")
                await asyncio.sleep(1.0)
                mark = len(client.events)
                await client.say(stop, SAMPLE_RATE)
                try:
                    event = await client.wait_for_event("agent.barge_in", 10, after_index=mark)
                except TimeoutError:
                    print(f"  barge-in {n + 1}: no agent.barge_in event", flush=True)
                    continue
                onset = await client.wait_for_event("input_audio_buffer.speech_started", 1, after_index=mark)
                stopped = await client.wait_for_event("input_audio_buffer.speech_stopped", 10, after_index=mark)
                server_s.append(event["latency_s"])
                decision_s.append(event["stopped_after_decision_s"])
                audible_after.append(event["audible_frames_after_decision"])
                last = client.last_audible_before(stopped["_received_at"])
                if last is not None:
                    client_s.append(max(0.0, last - onset["_received_at"]))
                print(f"  barge-in {n + 1}/{trials}: server {event['latency_s'] * 1000:.0f} ms", flush=True)
    return {
        "n": len(server_s),
        "server_barge_in_median_s": median(server_s),
        "server_barge_in_max_s": max(server_s) if server_s else None,
        "server_stopped_after_decision_median_s": median(decision_s),
        "audible_frames_after_decision_max": max(audible_after) if audible_after else None,
        "client_last_audio_after_onset_event_median_s": median(client_s),
    }


async def end_of_turn(
    runtime: ModelRuntime, configs: dict[str, Config], split: list[np.ndarray], complete: list[np.ndarray]
) -> dict:
    report = {}
    for name, config in configs.items():
        cut, endpointing = 0, []
        async with running_server(config, runtime) as (url, _):
            async with TalkClient() as client:
                await client.connect(url)
                await asyncio.sleep(0.5)
                for clip in split:
                    mark = len(client.events)
                    await run_turn(client, clip, SAMPLE_RATE, timeout=60)
                    await asyncio.sleep(1.0)  # a second turn's reply, if the sentence was cut
                    heard = [
                        e
                        for e in client.events[mark:]
                        if e["type"] == "conversation.item.input_audio_transcription.completed"
                    ]
                    cut += len(heard) > 1
                for clip in complete:
                    turn = await run_turn(client, clip, SAMPLE_RATE, timeout=60)
                    if turn.server_latency.get("endpointing_s") is not None:
                        endpointing.append(turn.server_latency["endpointing_s"])
        report[name] = {
            "sentences_with_a_pause": len(split),
            "cut_into_two_turns": cut,
            "complete_question_endpointing_median_s": median(endpointing),
        }
        print(
            f"  {name:<28} cut {cut}/{len(split)}  endpointing {report[name]['complete_question_endpointing_median_s']}"
        )
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, help="YAML config (default config/default.yaml)")
    parser.add_argument("--turns", type=int, default=8, help="questions per variant (default 8)")
    parser.add_argument("--barge-ins", type=int, default=5, help="interruptions to time (default 5)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    base = load_config(args.config)
    base.server.max_sessions = 16
    configs = variants(base)
    print("loading models ...", flush=True)
    runtime = ModelRuntime.load(base)
    with tempfile.TemporaryDirectory(prefix="bench-turn-taking-") as folder:
        folder = Path(folder)
        clips = synthesise(list(DEFAULT_PHRASES[: args.turns]), folder, "en-us")
        story, stop = synthesise([STORY, INTERRUPTION], folder, "en-us")
        pause = np.zeros(int(PAUSE_INSIDE_S * SAMPLE_RATE), dtype=np.int16)
        firsts = synthesise([first for first, _ in SPLIT_SENTENCES], folder, "en-us")
        seconds = synthesise([second for _, second in SPLIT_SENTENCES], folder, "en-us")
        split = [np.concatenate([trim(a), pause, trim(b)]) for a, b in zip(firsts, seconds, strict=True)]
    try:
        print("1. voice-to-voice, variants interleaved", flush=True)
        v2v = asyncio.run(voice_to_voice(runtime, configs, clips, args.turns))
        print("2. barge-in", flush=True)
        barge = asyncio.run(barge_ins(runtime, configs["speculation+adaptive"], story, stop, args.barge_ins))
        print("3. end of turn on sentences with a pause inside", flush=True)
        eot_configs = {k: configs[k] for k in ("speculation, fixed 500 ms", "speculation+adaptive")}
        eot = asyncio.run(end_of_turn(runtime, eot_configs, split, clips[:4]))
    finally:
        runtime.close()

    summary = {name: {key: median(values) for key, values in row.items()} for name, row in v2v.items()}
    baseline = summary["no speculation"]["client_voice_to_voice_s"]
    print(f"\n{'variant':<28}{'client v2v':>12}{'server v2v':>12}{'endpointing':>13}{'ratio':>8}")
    for name, row in summary.items():
        ratio = row["client_voice_to_voice_s"] / baseline if baseline and row["client_voice_to_voice_s"] else None
        row["ratio_to_no_speculation"] = ratio
        cells = [row["client_voice_to_voice_s"], row["server_voice_to_voice_s"], row["endpointing_s"]]
        print(
            f"{name:<28}"
            + "".join(f"{c:>12.3f}" if c is not None else f"{'-':>12}" for c in cells)
            + (f"{ratio:>9.2f}" if ratio else "        -")
        )
    print(f"\nbarge-in: {barge}")
    print(f"end of turn: {eot}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps({"voice_to_voice": summary, "raw": v2v, "barge_in": barge, "end_of_turn": eot}, indent=2)
        )
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
