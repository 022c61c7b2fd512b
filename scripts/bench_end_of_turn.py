"""End-of-turn benchmark on the test set in ``scripts/data/turn_test_set.yaml`` (62 utterances, 4 languages,
7 voices): does a pause inside a thought end the turn, and how soon does a complete question end it.

1. Offline, for every way of deciding (``vad.end_of_turn_model``): ``none`` (a fixed 500 ms), ``rules``
   (the speculative transcript), ``smart_turn`` (the Smart Turn v3.2 audio model), ``both``. The first
   part of each split utterance is recognised by Whisper as the session does at a pause, and judged; the
   turn is cut if the silence chosen is shorter than the pause. For complete questions the end-of-turn
   delay is the silence chosen, or the time the judgement takes if that is longer.
2. With ``--live``, through the server with the real models over WebRTC: the English split utterances said with
   their pauses, before (no reopening, ``vad.reopen_window_ms: 0``) and after (turns reopen): the share heard
   as one whole turn (one user item, one answer), and the share where reply audio was heard before the
   user finished.

    python scripts/bench_end_of_turn.py --json out/end_of_turn.json
    python scripts/bench_end_of_turn.py --live
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import shutil
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path

import numpy as np
import yaml

from agent.audio.resample import resample_once, to_int16
from agent.client.peer import SAMPLE_RATE, TalkClient
from agent.client.talk import run_turn
from agent.config import Config
from agent.conversation.end_of_turn import end_of_turn_silence_ms
from agent.models.runtime import ModelRuntime
from agent.models.smart_turn import SmartTurnModel
from agent.server.background import running_server

TEST_SET = Path(__file__).parent / "data" / "turn_test_set.yaml"
VOICES = {"en": ["piper", "en-us", "en-gb+f3"], "es": ["es", "es+f3"], "fr": ["fr", "fr+f2"], "de": ["de", "de+f4"]}
POLICIES = ("none", "rules", "smart_turn", "both")
RATE = 16_000
SPECULATIVE_S = 0.2  # the session judges a turn after this much silence (vad.speculative_silence_ms)


def speak(text: str, voice: str, piper) -> np.ndarray:
    """16 kHz int16 speech, trimmed of the silence around it."""
    if voice == "piper":
        chunks = list(piper.synthesize(text, "en"))
        audio = resample_once(to_int16(np.concatenate([c.audio for c in chunks])), chunks[0].sample_rate, RATE)
    else:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "speech.wav"
            subprocess.run(["espeak-ng", "-v", voice, "-s", "150", "-w", str(path), text], check=True)
            with wave.open(str(path)) as wav:
                rate = wav.getframerate()
                audio = resample_once(np.frombuffer(wav.readframes(wav.getnframes()), np.int16), rate, RATE)
    loud = np.flatnonzero(np.abs(audio) > 300)
    return audio[loud[0] : loud[-1] + 1] if len(loud) else audio


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * RATE), dtype=np.int16)


def load_test_set(piper) -> list[dict]:
    entries = yaml.safe_load(TEST_SET.read_text())
    turns = {lang: 0 for lang in VOICES}
    for entry in entries:
        voices = VOICES[entry["lang"]]
        entry["voice"] = voices[turns[entry["lang"]] % len(voices)]
        turns[entry["lang"]] += 1
        entry["audio"] = [speak(part, entry["voice"], piper) for part in entry["parts"]]
    return entries


def judge_offline(entries: list[dict], runtime: ModelRuntime, smart_turn: SmartTurnModel) -> dict:
    """Each policy's verdict on the first part (split) or the whole (complete) of every utterance."""
    rows = []
    for entry in entries:
        heard = np.concatenate([silence(0.3), entry["audio"][0], silence(SPECULATIVE_S)])
        started = time.perf_counter()
        transcript = runtime.stt.transcribe(heard.astype(np.float32) / 32768, entry["lang"]).text
        asr_s = time.perf_counter() - started
        started = time.perf_counter()
        probability = smart_turn.probability_complete(heard)
        model_s = time.perf_counter() - started
        row = {
            "lang": entry["lang"],
            "voice": entry["voice"],
            "kind": entry["kind"],
            "first": entry["parts"][0],
            "transcript": transcript,
            "complete_probability": round(probability, 3),
            "asr_s": round(asr_s, 3),
            "model_s": round(model_s, 3),
        }
        for policy in POLICIES:
            vad = Config().vad
            vad.end_of_turn_model = policy
            silence_ms = end_of_turn_silence_ms(transcript, entry["lang"], vad, probability)
            row[policy] = silence_ms
        rows.append(row)
        print(
            f"{entry['lang']} {entry['voice']:<9} {entry['kind']:<8} p={probability:.2f} "
            f"{' '.join(f'{p}={row[p]}' for p in POLICIES)}  {transcript!r}",
            flush=True,
        )
    summary = {}
    for policy in POLICIES:
        split = [(r, e) for r, e in zip(rows, entries, strict=True) if e["kind"] == "split"]
        whole = [r[policy] >= e["pause_ms"] for r, e in split]
        delays = []
        for r in rows:
            if r["kind"] != "complete":
                continue
            judged_ms = 1000 * (
                SPECULATIVE_S + max(r["asr_s"], r["model_s"] if policy in ("smart_turn", "both") else 0)
            )
            delays.append(r[policy] if policy == "none" else max(r[policy], judged_ms))
        summary[policy] = {
            "split_kept_whole": f"{sum(whole)}/{len(whole)}",
            "split_kept_whole_share": round(sum(whole) / len(whole), 3),
            "complete_end_of_turn_median_ms": round(float(np.median(delays))),
            "complete_end_of_turn_p95_ms": round(float(np.percentile(delays, 95))),
        }
    return {"rows": rows, "summary": summary}


async def live(entries: list[dict], runtime: ModelRuntime, policy: str) -> dict:
    """The English split utterances said with their pauses, before and after reopening turns."""
    results = {}
    for name, reopen_ms in (("before: no reopening", 0), ("after: turns reopen", Config().vad.reopen_window_ms)):
        config = Config()
        config.records.enabled = False
        config.vad.end_of_turn_model = policy
        config.vad.reopen_window_ms = reopen_ms
        one_turn = over_user = 0
        split = [e for e in entries if e["kind"] == "split" and e["lang"] == "en"]
        async with running_server(copy.deepcopy(config), runtime) as (url, _):
            for entry in split:
                first, second = entry["audio"]
                spoken = np.concatenate([silence(0.3), first, silence(entry["pause_ms"] / 1000), second, silence(0.2)])
                async with TalkClient() as client:
                    await client.connect(url)
                    await asyncio.sleep(0.3)
                    await run_turn(client, resample_once(spoken, RATE, SAMPLE_RATE), SAMPLE_RATE, timeout=60)
                    await asyncio.sleep(0.5)
                events = client.events
                items = {
                    e["item_id"] for e in events if e["type"] == "conversation.item.input_audio_transcription.completed"
                }
                answers = [e for e in events if e["type"] == "response.done" and e["response"]["status"] == "completed"]
                one_turn += len(items) == 1 and len(answers) == 1
                started = [e["_received_at"] for e in events if e["type"] == "input_audio_buffer.speech_started"]
                stopped = [e["_received_at"] for e in events if e["type"] == "input_audio_buffer.speech_stopped"]
                if started and stopped:
                    audible = client.first_audible_after(started[0])
                    over_user += audible is not None and audible < stopped[-1]
                print(f"  {name}: {entry['parts'][0]!r} -> items {len(items)}, answers {len(answers)}", flush=True)
        results[name] = {
            "one_turn": f"{one_turn}/{len(split)}",
            "one_turn_share": round(one_turn / len(split), 3),
            "reply_heard_before_user_finished": f"{over_user}/{len(split)}",
        }
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--live", action="store_true", help="also say the split utterances to the server")
    parser.add_argument("--policy", default="rules", choices=POLICIES, help="the live run's end_of_turn_model")
    parser.add_argument("--json", type=Path, help="write the rows and the summary here")
    args = parser.parse_args(argv)
    if shutil.which("espeak-ng") is None:
        print("error: espeak-ng is not installed (apt-get install espeak-ng)", file=sys.stderr)
        return 1
    config = Config()
    config.language = "auto"  # Whisper base, which knows every language of the set
    runtime = ModelRuntime.load(config)
    from agent.models.piper_tts import PiperTextToSpeech

    entries = load_test_set(PiperTextToSpeech(config))
    report = judge_offline(entries, runtime, SmartTurnModel())
    print(f"\n{'policy':<12}{'split kept whole':>18}{'complete: end of turn median':>30}{'p95':>8}")
    for policy, stats in report["summary"].items():
        print(
            f"{policy:<12}{stats['split_kept_whole']:>18}{stats['complete_end_of_turn_median_ms']:>27} ms"
            f"{stats['complete_end_of_turn_p95_ms']:>5} ms"
        )
    if args.live:
        live_config = Config()
        live_runtime = ModelRuntime.load(live_config)
        report["live"] = asyncio.run(live(entries, live_runtime, args.policy))
        for name, stats in report["live"].items():
            print(
                f"{name:<24} one turn {stats['one_turn']}   reply heard before the user finished "
                f"{stats['reply_heard_before_user_finished']}"
            )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
