"""Benchmark the Voxtral decode path: prefill, time to first token, ms per token, concurrent sessions.

    python scripts/bench_voxtral.py                 # full-size Voxtral-Mini-3B, random weights, on the GPU
    python scripts/bench_voxtral.py --tiny          # the tiny test model (runs on a CPU)
    python scripts/bench_voxtral.py --tiny --with-stt   # + does a concurrent Whisper transcript delay the reply?

The full-size model is built from its configuration with random weights (nothing to download) and a
tekken vocabulary from mistral-common's own data, so every figure is the real model's shape and cost;
only the words are random. Every figure is a median over ``--repeats`` runs (and over sessions).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agent.config import REPO_ROOT, Config
from agent.models.base import SAMPLE_RATE, ChatMessage
from agent.models.voxtral_chat import VoxtralChatModel, choose_placement

sys.path.insert(0, str(REPO_ROOT))
from tests.tiny_voxtral import NUM_SPECIAL_TOKENS, build_tiny_voxtral, processor_for, tekken_json  # noqa: E402

# mistralai/Voxtral-Mini-3B-2507's config.json (= transformers' VoxtralConfig defaults).
FULL_AUDIO_CONFIG = dict(
    hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
    num_mel_bins=128, max_source_positions=1500,
)  # fmt: skip
FULL_TEXT_CONFIG = dict(
    vocab_size=131_072, hidden_size=3072, intermediate_size=8192, num_hidden_layers=30, num_attention_heads=32,
    num_key_value_heads=8, head_dim=128, max_position_embeddings=131_072, rms_norm_eps=1e-5,
    rope_parameters={"rope_theta": 1e8, "rope_type": "default"}, tie_word_embeddings=False,
    bos_token_id=1, eos_token_id=2,
)  # fmt: skip
FULL_SPECIAL_TOKENS = 1000
TURN_SECONDS = 5.0  # one spoken question; padded to 30 s it is 375 audio tokens whatever its length
INSTRUCTIONS = "You are a helpful voice assistant. Answer every question in one short sentence."


def full_size_model(folder: Path, device: str, dtype: torch.dtype, attention: str) -> tuple[Any, Any]:
    """Voxtral-Mini-3B with random weights on ``device``, and a processor with a full-size tekken vocabulary."""
    import mistral_common
    from transformers import LlamaConfig, VoxtralConfig, VoxtralEncoderConfig, VoxtralForConditionalGeneration

    tekken = tekken_json()
    shipped = json.loads((Path(mistral_common.__file__).parent / "data" / "tekken_240911.json").read_text())
    vocab_tokens = FULL_TEXT_CONFIG["vocab_size"] - FULL_SPECIAL_TOKENS
    tekken["vocab"] = shipped["vocab"][:vocab_tokens]
    tekken["config"] |= {
        "num_vocab_tokens": vocab_tokens,
        "default_vocab_size": FULL_TEXT_CONFIG["vocab_size"],
        "default_num_special_tokens": FULL_SPECIAL_TOKENS,
    }
    names = {entry["rank"]: entry["token_str"] for entry in tekken["special_tokens"][:NUM_SPECIAL_TOKENS]}
    tekken["special_tokens"] = [
        {"rank": i, "token_str": names.get(i, f"<SPECIAL_{i}>"), "is_control": True} for i in range(FULL_SPECIAL_TOKENS)
    ]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tekken.json").write_text(json.dumps(tekken))
    processor = processor_for(folder)
    config = VoxtralConfig(
        audio_config=VoxtralEncoderConfig(**FULL_AUDIO_CONFIG),
        text_config=LlamaConfig(**FULL_TEXT_CONFIG),
        audio_token_id=24,
    )
    config._attn_implementation = attention
    with torch.device(device):
        model = VoxtralForConditionalGeneration(config).to(dtype)
    model.generation_config.eos_token_id = -1  # random weights: never stop early, every run decodes as many tokens
    return model, processor


def clip(seed: int, seconds: float = TURN_SECONDS) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(int(SAMPLE_RATE * seconds)) * 0.1).astype(np.float32)


def timed_turn(model: VoxtralChatModel, messages: list[ChatMessage], tokens: int) -> dict[str, float]:
    """Time to first token, and the median gap between the following tokens, in ms."""
    started = time.perf_counter()
    arrivals = [time.perf_counter() for _ in model.stream_ids(messages, threading.Event(), max_new_tokens=tokens)]
    gaps = np.diff(arrivals) * 1000
    return {
        "ttft_ms": (arrivals[0] - started) * 1000,
        "ms_per_token": float(np.median(gaps)) if len(gaps) else float("nan"),
        "prefill_ms": model.last_turn.prefill_seconds * 1000 if model.last_turn else float("nan"),
        "tokens": len(arrivals),
    }


def concurrent_turns(model: VoxtralChatModel, sessions: int, tokens: int, seed: int) -> dict[str, float]:
    """``sessions`` conversations asking at the same instant; medians over sessions, throughput overall."""
    results: list[dict[str, float]] = [{} for _ in range(sessions)]
    barrier = threading.Barrier(sessions)

    def converse(index: int) -> None:
        messages = [ChatMessage("system", INSTRUCTIONS), ChatMessage("user", "", audio=clip(seed + index))]
        barrier.wait()
        results[index] = timed_turn(model, messages, tokens)

    threads = [threading.Thread(target=converse, args=(i,)) for i in range(sessions)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    return {
        "ttft_ms": statistics.median(r["ttft_ms"] for r in results),
        "ttft_max_ms": max(r["ttft_ms"] for r in results),
        "ms_per_token": statistics.median(r["ms_per_token"] for r in results),
        "tokens_per_s": sum(r["tokens"] for r in results) / elapsed,
    }


def medians(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: round(statistics.median(run[key] for run in runs), 2) for key in runs[0]}


def repeat(times: int, run: Callable[[int], dict[str, float]]) -> dict[str, float]:
    return medians([run(i) for i in range(times)])


def bench(model: VoxtralChatModel, args: argparse.Namespace) -> dict[str, Any]:
    model.warm_up()
    report: dict[str, Any] = {}

    def first_turn(i: int) -> dict[str, float]:
        messages = [ChatMessage("system", INSTRUCTIONS), ChatMessage("user", "", audio=clip(100 + i))]
        return timed_turn(model, messages, args.tokens)

    report["first_turn"] = repeat(args.repeats, first_turn)
    report["first_turn"]["prefill_tokens"] = model.last_turn.prefill_tokens

    # Later turns prefill only their own tokens; the sixth slides the window and prefills the rest again.
    def conversation(i: int) -> dict[str, float]:
        messages = [ChatMessage("system", INSTRUCTIONS)]
        exchanges: list[list[ChatMessage]] = []
        for turn in range(6):
            window = exchanges[-4:] if turn == 5 else exchanges
            user = ChatMessage("user", "", audio=clip(1000 * (i + 1) + turn))
            context = [*messages, *(message for exchange in window for message in exchange), user]
            reply = "".join(model.stream_reply(context, threading.Event()))
            exchanges.append([user, ChatMessage("assistant", reply)])
            if turn == 1:
                second = (model.last_turn.prefill_seconds * 1000, model.last_turn.prefill_tokens)
        slid = model.last_turn
        return {
            "second_turn_prefill_ms": second[0],
            "second_turn_prefill_tokens": second[1],
            "window_slide_prefill_ms": slid.prefill_seconds * 1000,
            "window_slide_prefill_tokens": slid.prefill_tokens,
        }

    report["turns"] = repeat(args.repeats, conversation)
    report["concurrent"] = {
        str(n): repeat(args.repeats, lambda i, n=n: concurrent_turns(model, n, args.tokens, seed=10_000 * (i + 1)))
        for n in args.sessions
    }
    if args.with_stt:
        report["with_concurrent_stt"] = stt_contention(model, args)
    if model.placement.device == "cuda":
        report["peak_gpu_memory_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return report


def stt_contention(model: VoxtralChatModel, args: argparse.Namespace) -> dict[str, float]:
    """Time to first token alone and while the embedded Whisper transcribes the same turn on its own thread."""
    from agent.models.whisper_stt import WhisperSpeechToText

    stt = WhisperSpeechToText(Config())
    stt.warm_up()
    speech = clip(7)

    def alone(i: int) -> dict[str, float]:
        return timed_turn(model, [ChatMessage("user", "", audio=clip(200 + i))], 1)

    def beside_whisper(i: int) -> dict[str, float]:
        transcriber = threading.Thread(target=stt.transcribe, args=(speech, "en"))
        transcriber.start()
        result = timed_turn(model, [ChatMessage("user", "", audio=clip(300 + i))], 1)
        transcriber.join()
        return result

    return {
        "ttft_alone_ms": repeat(args.repeats, alone)["ttft_ms"],
        "ttft_with_whisper_ms": repeat(args.repeats, beside_whisper)["ttft_ms"],
    }


def build(args: argparse.Namespace, compiled: bool, loaded: tuple[Any, Any] | None, folder: Path) -> VoxtralChatModel:
    config = Config()
    config.llm.backend = "voxtral"
    config.llm.model = str(folder)
    config.llm.device = args.device
    config.llm.compile = compiled
    config.llm.max_new_tokens = args.tokens
    config.llm.repetition_penalty = 1.0
    config.llm.session_slots = max(args.sessions)
    config.llm.max_cache_tokens = args.max_cache_tokens
    return VoxtralChatModel(config, loaded=loaded)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="the tiny random test model instead of the 3B")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--tokens", type=int, default=32, help="tokens decoded per reply")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sessions", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--max-cache-tokens", type=int, default=4096)
    parser.add_argument("--modes", nargs="+", choices=["eager", "compiled"], default=["eager", "compiled"])
    parser.add_argument("--with-stt", action="store_true", help="also time the first token beside a Whisper run")
    parser.add_argument("--json", type=Path, help="write the report here too")
    args = parser.parse_args(argv)

    placement = choose_placement(args.device)
    scratch = Path(tempfile.mkdtemp(prefix="bench-voxtral-"))
    started = time.perf_counter()
    if args.tiny:
        folder, loaded = build_tiny_voxtral(scratch / "tiny"), None
    else:
        folder = scratch / "voxtral-mini-3b-random"
        loaded = full_size_model(folder, placement.device, placement.dtype, placement.attention)
    report: dict[str, Any] = {
        "model": "tiny" if args.tiny else "Voxtral-Mini-3B (random weights)",
        "device": torch.cuda.get_device_name() if placement.device == "cuda" else f"cpu x{torch.get_num_threads()}",
        "build_s": round(time.perf_counter() - started, 2),
    }
    for mode in args.modes:
        if placement.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        model = build(args, mode == "compiled", loaded, folder)
        if args.tiny:
            loaded = (model._model, model._processor)  # the same weights for both modes
        report[mode] = bench(model, args)
        report[mode]["setup_and_bench_s"] = round(time.perf_counter() - started, 1)
        report[mode]["describe"] = model.describe()
        model.close()
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
