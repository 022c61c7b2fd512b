"""vLLM benchmark: V2V through llm.backend vllm against the in-process backend on the same model, in one run.

Starts two agent servers (``voice-agent serve``): one with the in-process chat model (the default
config, in float32 like the vLLM one unless ``--in-process-dtype`` says otherwise) and one with
``--config config/vllm-cpu.yaml`` (or ``--vllm-config``), which launches vLLM
serving the same SmolLM2 folder. Then, over one WebRTC session on each, it asks the same spoken
questions, alternating server by server (the order swapped every question), and reports:

- voice-to-voice medians of both and their ratio (vllm / in-process);
- vLLM's prefix-cache hit rate over the ten-turn conversation, from vLLM's own counters
  (``vllm:prefix_cache_hits_total`` / ``vllm:prefix_cache_queries_total``, the increase over those turns);
- the time from vLLM killed (SIGKILL to its process group) to the first answer heard, which the
  embedded fallback gives, and the time until the agent has restarted vLLM and it answers again.

    python scripts/bench_vllm.py --turns 10 --json out/bench_vllm.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from agent.client.peer import SAMPLE_RATE, TalkClient, wait_until_ready
from agent.client.talk import run_turn
from agent.config import REPO_ROOT

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_latency import DEFAULT_PHRASES, synthesise  # noqa: E402

log = logging.getLogger("bench_vllm")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(name: str, config: Path | None, env: dict[str, str], log_folder: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    args = [sys.executable, "-m", "agent", "serve", "--port", str(port)]
    if config is not None:
        args += ["--config", str(config)]
    output = open(log_folder / f"{name}.log", "w")  # noqa: SIM115 - closed with the process
    server = subprocess.Popen(args, cwd=REPO_ROOT, env={**os.environ, **env}, stdout=output, stderr=subprocess.STDOUT)
    return server, f"http://127.0.0.1:{port}"


async def ready_state(url: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.get(f"{url}/ready") as response:
        return await response.json()


async def wait_for_vllm(url: str, timeout: float, not_pid: int | None = None) -> dict[str, Any]:
    """Wait until the agent at ``url`` reports its vLLM healthy (and, after a kill, with a new pid)."""
    deadline = time.monotonic() + timeout
    while True:
        chat = (await ready_state(url)).get("chat", {})
        if chat.get("state") == "healthy" and chat.get("model") and chat.get("pid") != not_pid:
            return chat
        if time.monotonic() > deadline:
            raise TimeoutError(f"vLLM behind {url} not healthy after {timeout:.0f} s: {chat}")
        await asyncio.sleep(0.5)


async def vllm_counters(vllm_url: str) -> dict[str, float]:
    async with aiohttp.ClientSession() as http, http.get(f"{vllm_url}/metrics") as response:
        text = await response.text()
    totals: dict[str, float] = {}
    for name in ("vllm:prefix_cache_hits_total", "vllm:prefix_cache_queries_total"):
        totals[name] = sum(float(m) for m in re.findall(rf"^{re.escape(name)}\{{[^}}]*\}} ([0-9.e+-]+)$", text, re.M))
    return totals


def row(server: str, n: int, turn) -> dict[str, Any]:
    return {
        "server": server,
        "turn": n,
        "status": turn.status,
        "error": turn.error,
        "llm_backend": turn.llm_backend,
        "transcript": turn.transcript,
        "reply_text": turn.reply_text,
        "client_voice_to_voice_s": turn.voice_to_voice_s,
        **{f"server_{k}": v for k, v in turn.server_latency.items()},
    }


async def bench(
    urls: dict[str, str], vllm_url: str, clips: list, turns: int, timeout: float, start_timeout: float
) -> dict:
    rows: list[dict[str, Any]] = []
    result: dict[str, Any] = {"turns": rows}
    async with contextlib.AsyncExitStack() as stack:
        clients = {}
        for name, url in urls.items():
            clients[name] = await stack.enter_async_context(TalkClient())
            await clients[name].connect(url)
        await asyncio.sleep(1.0)
        before = await vllm_counters(vllm_url)
        for n in range(turns):
            order = list(urls) if n % 2 == 0 else list(reversed(urls))
            for name in order:
                turn = await run_turn(clients[name], clips[n % len(clips)], SAMPLE_RATE, timeout)
                rows.append(row(name, n + 1, turn))
                print_row(rows[-1], turns)
                await asyncio.sleep(0.5)
        after = await vllm_counters(vllm_url)
        hits = after["vllm:prefix_cache_hits_total"] - before["vllm:prefix_cache_hits_total"]
        queries = after["vllm:prefix_cache_queries_total"] - before["vllm:prefix_cache_queries_total"]
        rate = hits / queries if queries else None
        result["prefix_cache"] = {"hit_tokens": hits, "queried_tokens": queries, "hit_rate": rate}

        # vLLM killed, as an out-of-memory kill would: the next question is answered by the fallback.
        chat = (await ready_state(urls["vllm"]))["chat"]
        killed_at = time.monotonic()
        os.killpg(chat["pid"], signal.SIGKILL)
        clip = clips[turns % len(clips)]
        fallback = await run_turn(clients["vllm"], clip, SAMPLE_RATE, timeout)
        rows.append(row("vllm", turns + 1, fallback) | {"after_kill": True})
        print_row(rows[-1], turns + 1)
        await wait_for_vllm(urls["vllm"], start_timeout, not_pid=chat["pid"])
        healthy_at = time.monotonic()
        again = await run_turn(clients["vllm"], clips[(turns + 1) % len(clips)], SAMPLE_RATE, timeout)
        rows.append(row("vllm", turns + 2, again) | {"after_restart": True})
        print_row(rows[-1], turns + 2)
        heard_at = fallback.first_audio_at
        result["kill"] = {
            "first_answer_after_kill_s": None if heard_at is None else heard_at - killed_at,
            "fallback_voice_to_voice_s": fallback.voice_to_voice_s,
            "fallback_backend": fallback.llm_backend,
            "restarted_healthy_after_s": healthy_at - killed_at,
            "backend_after_restart": again.llm_backend,
        }
    return result


def print_row(r: dict[str, Any], turns: int) -> None:
    v2v = r["client_voice_to_voice_s"]
    shown = "-" if v2v is None else f"{v2v:.3f} s"
    print(f"turn {r['turn']:>3}/{turns} {r['server']:<10} {str(r['llm_backend']):<17} voice-to-voice {shown}"
          f"  heard {r['transcript']!r} -> {r['status']}")


def median(values: list[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarise(result: dict) -> dict:
    rows = [r for r in result["turns"] if not r.get("after_kill") and not r.get("after_restart")]
    summary: dict[str, Any] = {}
    for server in ("in_process", "vllm"):
        mine = [r for r in rows if r["server"] == server]
        summary[server] = {
            key: median([r.get(key) for r in mine])
            for key in ("client_voice_to_voice_s", "server_llm_first_token_s", "server_llm_per_token_s")
        } | {"n": len(mine), "answered_by": sorted({str(r["llm_backend"]) for r in mine})}
    a, b = summary["in_process"]["client_voice_to_voice_s"], summary["vllm"]["client_voice_to_voice_s"]
    summary["voice_to_voice_ratio_vllm_over_in_process"] = b / a if a and b else None
    summary["prefix_cache"] = result["prefix_cache"]
    summary["kill"] = result["kill"]
    return summary


def print_summary(summary: dict) -> None:
    print(f"\n{'median':<28}{'in-process':>12}{'vllm':>12}")
    for key in ("client_voice_to_voice_s", "server_llm_first_token_s", "server_llm_per_token_s"):
        a, b = summary["in_process"][key], summary["vllm"][key]
        print(f"{key:<28}{'-' if a is None else f'{a:.3f}':>12}{'-' if b is None else f'{b:.3f}':>12}")
    ratio = summary["voice_to_voice_ratio_vllm_over_in_process"]
    print(f"voice-to-voice ratio vllm / in-process: {'-' if ratio is None else f'{ratio:.2f}'}")
    cache = summary["prefix_cache"]
    rate = cache["hit_rate"]
    print(f"vLLM prefix cache over the conversation: {cache['hit_tokens']:.0f} of {cache['queried_tokens']:.0f} "
          f"prompt tokens hit ({'-' if rate is None else f'{100 * rate:.0f}%'})")
    kill = summary["kill"]
    first = kill["first_answer_after_kill_s"]
    print(f"vLLM killed -> first answer heard: {'-' if first is None else f'{first:.2f} s'} "
          f"(answered by {kill['fallback_backend']}, voice-to-voice {kill['fallback_voice_to_voice_s']})")
    print(f"vLLM killed -> restarted and healthy: {kill['restarted_healthy_after_s']:.1f} s; "
          f"next turn answered by {kill['backend_after_restart']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=10, help="questions per server (default 10)")
    parser.add_argument("--vllm-config", type=Path, default=REPO_ROOT / "config" / "vllm-cpu.yaml")
    parser.add_argument("--voice", default="en-us", help="espeak-ng voice for the questions")
    parser.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for each reply")
    parser.add_argument("--start-timeout", type=float, default=900.0, help="seconds to wait for vLLM to start")
    parser.add_argument("--json", type=Path, help="write every turn and the summary here")
    parser.add_argument(
        "--in-process-dtype",
        choices=("auto", "bfloat16", "float32"),
        default="float32",
        help="llm.dtype of the in-process server (default float32, as config/vllm-cpu.yaml serves it)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    vllm_url = f"http://127.0.0.1:{free_port()}"
    phrases = list(DEFAULT_PHRASES)
    with tempfile.TemporaryDirectory(prefix="bench-vllm-") as folder:
        clips = synthesise(phrases, Path(folder), args.voice)
        dtype = {"VOICE_AGENT_LLM__DTYPE": args.in_process_dtype}
        in_process, in_process_url = start_server("in_process", None, dtype, Path(folder))
        env = {"VOICE_AGENT_LLM__VLLM__URL": vllm_url}
        served, served_url = start_server("vllm", args.vllm_config, env, Path(folder))
        urls = {"in_process": in_process_url, "vllm": served_url}
        try:
            for url in urls.values():
                asyncio.run(wait_until_ready(url, 300))
            chat = asyncio.run(wait_for_vllm(served_url, args.start_timeout))
            print(f"vLLM serves {chat['model']} at {vllm_url}")
            result = asyncio.run(bench(urls, vllm_url, clips, args.turns, args.timeout, args.start_timeout))
        except (ConnectionError, TimeoutError) as exc:
            print(f"error: {exc}; the servers' logs were in {folder}", file=sys.stderr)
            for name in urls:
                tail = (Path(folder) / f"{name}.log").read_text().splitlines(True)[-20:]
                print(f"--- {name}.log (tail)\n" + "".join(tail))
            return 1
        finally:
            for server in (in_process, served):
                server.terminate()
            for server in (in_process, served):
                try:
                    server.wait(30)
                except subprocess.TimeoutExpired:
                    server.kill()
    summary = summarise(result)
    print_summary(summary)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({**result, "summary": summary}, indent=2))
        print(f"wrote {args.json}")
    failed = [r for r in result["turns"] if r["status"] != "completed"]
    return 0 if not failed else 2


if __name__ == "__main__":
    sys.exit(main())
