"""How fast the records store answers at scale: lists, full-text search and analytics over N synthetic calls.

    .venv/bin/python scripts/bench_records.py                    # 100,000 calls x 20 turns, SQLite and PostgreSQL
    .venv/bin/python scripts/bench_records.py --calls 10000 --backend sqlite --json
    .venv/bin/python scripts/bench_records.py --calls 0 --zip 20        # only the ZIP of 20 one-minute calls

The calls are bulk-loaded (batched executemany on SQLite, COPY on PostgreSQL) with the derived columns and tables the
store maintains, then each query runs through ``RecordStore`` as the API calls it, and p50/p95 are reported.
PostgreSQL comes from tests/postgres.py (a throwaway server) unless ``--postgres-url`` names one. A database
that already holds calls (``--sqlite-file`` or ``--postgres-url`` given twice) is measured as it is.

``--zip N`` (default 20) then measures uploads: a ZIP of N one-minute spoken calls (espeak-ng, two voices
taking turns) goes through the intake and the background transcription jobs with the default settings,
and the wall time from the archive to the last transcript gives calls per minute and the real-time factor.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sqlite3
import statistics
import sys
import tempfile
import time
import zipfile
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from agent.calls.store import CallFilter, RecordStore, TurnIn  # noqa: E402
from agent.calls.store.search import document  # noqa: E402
from agent.calls.store.store import language_rows, utc_day, voice_to_voice_s  # noqa: E402

TURNS_PER_CALL = 20
BATCH_CALLS = 2000
RUNS = 50
WARMUP_RUNS = 5
SEED = 11
DAYS = 365
FIRST_DAY = datetime(2025, 1, 1, tzinfo=UTC)
USERS = 10
VOCABULARY = 3000
SENTENCES = 5000
RARE_WORD, RARE_SHARE = "zanzibar", 0.01      # said in about 1% of the calls
COMMON_WORD, COMMON_SHARE = "invoice", 0.5    # and in about half of them
AI_TAGS = [f"topic-{n}" for n in range(30)]
USER_TAGS = ["follow-up", "escalate", "vip", "resolved"]
USER_TAGGED_SHARE = 0.1
LANGUAGES = ["en", "en", "en", "de", "fr", "es", "ja"]
EMOTIONS = ["neutral", "neutral", "happy", "sad", "angry", "surprised"]
TARGETS_MS = {"list": 50.0, "search": 50.0, "analytics": 200.0}


@dataclass
class Batch:
    calls: list[dict] = field(default_factory=list)
    turns: list[dict] = field(default_factory=list)
    tags: list[dict] = field(default_factory=list)
    languages: list[dict] = field(default_factory=list)
    emotions: list[dict] = field(default_factory=list)
    bodies: list[tuple[str, str]] = field(default_factory=list)  # (call id, search document)


def synthetic_batches(n_calls: int) -> Iterator[Batch]:
    """The same calls for every backend (seeded), BATCH_CALLS at a time."""
    rng = random.Random(SEED)
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 9)))
             for _ in range(VOCABULARY)]
    sentences = [" ".join(rng.choices(words, k=rng.randint(6, 14))) for _ in range(SENTENCES)]
    made = 0
    while made < n_calls:
        batch = Batch()
        for _ in range(min(BATCH_CALLS, n_calls - made)):
            _add_call(rng, sentences, batch, made)
            made += 1
        yield batch


def _add_call(rng: random.Random, sentences: list[str], batch: Batch, n: int) -> None:
    call_id = f"{rng.getrandbits(128):032x}"
    started = FIRST_DAY + timedelta(seconds=rng.uniform(0, DAYS * 86400))
    source = "live" if n % 2 == 0 else "upload"
    languages = sorted({rng.choice(LANGUAGES) for _ in range(rng.choice((1, 1, 1, 2)))})
    texts = [rng.choice(sentences) for _ in range(TURNS_PER_CALL)]
    if rng.random() < RARE_SHARE:
        texts[rng.randrange(TURNS_PER_CALL)] += f" {RARE_WORD}"
    if rng.random() < COMMON_SHARE:
        texts[rng.randrange(TURNS_PER_CALL)] += f" {COMMON_WORD}"
    at_ms = 0
    for idx, text in enumerate(texts):
        role = "user" if idx % 2 == 0 else "assistant"
        latency = {"voice_to_voice_s": round(rng.uniform(0.3, 1.5), 3)} if role == "assistant" else None
        turn = TurnIn(speaker="user" if role == "user" else "agent", role=role, start_ms=at_ms,
                      end_ms=at_ms + 2500, text=text, emotion=rng.choice(EMOTIONS) if role == "user" else None,
                      language=languages[0], latency=latency)
        at_ms += 3000
        batch.turns.append({**turn.__dict__, "call_id": call_id, "idx": idx, "heard_text": None,
                            "v2v_s": voice_to_voice_s(source, turn)})
    call_turns = batch.turns[-TURNS_PER_CALL:]
    emotions = Counter(turn["emotion"] for turn in call_turns if turn["emotion"] is not None)
    batch.emotions += [{"call_id": call_id, "emotion": emotion, "count": count} for emotion, count in emotions.items()]
    batch.languages += language_rows(call_id, languages)
    ai = rng.sample(AI_TAGS, rng.randint(1, 3))
    user = rng.sample(USER_TAGS, rng.randint(1, 2)) if rng.random() < USER_TAGGED_SHARE else []
    for kind, names in (("ai", ai), ("user", user)):
        for name in names:
            batch.tags.append({"call_id": call_id, "name": name, "kind": kind,
                               "effective": kind == ("user" if user else "ai")})
    duration = at_ms / 1000
    batch.calls.append({
        "id": call_id, "owner_id": 1 + n % USERS, "source": source,
        "file_name": None if source == "live" else f"call-{n}.wav", "content_hash": None, "started_at": started,
        "ended_at": started + timedelta(seconds=duration), "duration_s": duration, "languages": languages,
        "status": "done", "error": None, "progress": 1.0, "audio_path": f"audio/{call_id}.flac",
        "audio_mime": "audio/flac", "analysis": None, "analysis_version": None, "turn_count": TURNS_PER_CALL,
        "created_at": started, "updated_at": started, "started_day": utc_day(started),
        "v2v_count": sum(turn["v2v_s"] is not None for turn in call_turns),
    })
    batch.bodies.append((call_id, document(texts)))


CALL_COLUMNS = ["id", "owner_id", "source", "file_name", "content_hash", "started_at", "ended_at", "duration_s",
                "languages", "status", "error", "progress", "audio_path", "audio_mime", "analysis",
                "analysis_version", "turn_count", "created_at", "updated_at", "started_day", "v2v_count"]
TURN_COLUMNS = ["call_id", "idx", "speaker", "role", "start_ms", "end_ms", "text", "heard_text", "emotion",
                "language", "latency", "v2v_s"]
TAG_COLUMNS = ["call_id", "name", "kind", "effective"]
LANGUAGE_COLUMNS = ["call_id", "position", "language"]
EMOTION_COLUMNS = ["call_id", "emotion", "count"]
JSON_COLUMNS = {"languages", "analysis", "latency"}


def _sqlite_value(column: str, value):
    if column in JSON_COLUMNS:
        return None if value is None else json.dumps(value)
    if isinstance(value, datetime):  # the store's SQLite format: naive UTC, microseconds always written
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    if isinstance(value, date):
        return value.isoformat()
    return value


def load_sqlite(path: Path, n_calls: int) -> None:
    """Blocking: batched executemany on one connection, like the store's own rows."""
    db = sqlite3.connect(path)
    db.execute("PRAGMA synchronous=OFF")
    now = _sqlite_value("created_at", datetime.now(UTC))
    db.executemany("INSERT INTO users (id, name, password_hash, role, created_at) VALUES (?, ?, 'x', 'user', ?)",
                   [(n, f"user{n}", now) for n in range(1, USERS + 1)])
    rowid, emotions = 0, Counter()
    for batch in synthetic_batches(n_calls):
        emotions += _emotions(batch)
        with db:
            _insert_rows(db, "calls", CALL_COLUMNS, batch.calls)
            _insert_rows(db, "turns", TURN_COLUMNS, batch.turns)
            _insert_rows(db, "tags", TAG_COLUMNS, batch.tags)
            _insert_rows(db, "call_languages", LANGUAGE_COLUMNS, batch.languages)
            _insert_rows(db, "call_emotions", EMOTION_COLUMNS, batch.emotions)
            rows = [(rowid := rowid + 1, body) for _, body in batch.bodies]
            db.executemany("INSERT INTO call_search (rowid, body) VALUES (?, ?)", rows)
            db.executemany("UPDATE calls SET search_rowid = ? WHERE id = ?",
                           [(r, call_id) for (r, _), (call_id, _) in zip(rows, batch.bodies, strict=True)])
    with db:
        db.executemany("INSERT INTO emotion_totals (emotion, count) VALUES (?, ?)", emotions.items())
    db.close()


def _emotions(batch: Batch) -> Counter:
    """The batch's share of ``emotion_totals``."""
    totals = Counter()
    for row in batch.emotions:
        totals[row["emotion"]] += row["count"]
    return totals


def _insert_rows(db: sqlite3.Connection, table: str, columns: list[str], rows: list[dict]) -> None:
    marks = ", ".join("?" * len(columns))
    db.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})",
                   [tuple(_sqlite_value(c, row[c]) for c in columns) for row in rows])


async def load_postgres(url: str, n_calls: int) -> None:
    """COPY, then the search vectors from the documents in one UPDATE, then VACUUM ANALYZE (as autovacuum would)."""
    import asyncpg

    connection = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        now = datetime.now(UTC)
        await connection.copy_records_to_table(
            "users", records=[(n, f"user{n}", "x", "user", now) for n in range(1, USERS + 1)],
            columns=["id", "name", "password_hash", "role", "created_at"])
        await connection.execute("CREATE TEMPORARY TABLE bench_bodies (call_id text PRIMARY KEY, body text)")
        emotions = Counter()
        for batch in synthetic_batches(n_calls):
            emotions += _emotions(batch)
            for table, columns, rows in (("calls", CALL_COLUMNS, batch.calls), ("turns", TURN_COLUMNS, batch.turns),
                                         ("tags", TAG_COLUMNS, batch.tags),
                                         ("call_languages", LANGUAGE_COLUMNS, batch.languages),
                                         ("call_emotions", EMOTION_COLUMNS, batch.emotions)):
                records = [tuple(json.dumps(row[c]) if c in JSON_COLUMNS and row[c] is not None else row[c]
                                 for c in columns) for row in rows]
                await connection.copy_records_to_table(table, records=records, columns=columns)
            await connection.copy_records_to_table("bench_bodies", records=batch.bodies)
        await connection.copy_records_to_table("emotion_totals", records=list(emotions.items()))
        await connection.execute("UPDATE calls SET search_vector = to_tsvector('simple'::regconfig, b.body) "
                                 "FROM bench_bodies b WHERE calls.id = b.call_id")
        await connection.execute("SELECT setval(pg_get_serial_sequence('users', 'id'), (SELECT max(id) FROM users))")
        await connection.execute("VACUUM ANALYZE")
    finally:
        await connection.close()


async def timed(work: Callable[[int], Awaitable[object]]) -> tuple[float, float]:
    """p50 and p95 in milliseconds over RUNS runs (after WARMUP_RUNS unmeasured ones)."""
    for n in range(WARMUP_RUNS):
        await work(n)
    times = []
    for n in range(RUNS):
        started = time.perf_counter()
        await work(n)
        times.append((time.perf_counter() - started) * 1000)
    quantiles = statistics.quantiles(times, n=20, method="inclusive")
    return statistics.median(times), quantiles[18]


async def measure(store: RecordStore) -> dict[str, tuple[float, float]]:
    rng = random.Random(SEED)
    windows = [FIRST_DAY + timedelta(days=rng.randrange(DAYS - 30)) for _ in range(RUNS + WARMUP_RUNS)]

    def tag_and_dates(n: int) -> CallFilter:
        return CallFilter(tag=AI_TAGS[n % len(AI_TAGS)], start_date=windows[n], end_date=windows[n] + timedelta(30),
                          limit=100)

    async def check(found: list, what: str) -> None:
        if not found:
            raise SystemExit(f"the benchmark's {what} found nothing: the loaded data does not match the store")

    await check(await store.list_calls(CallFilter(q=RARE_WORD), None), "rare-word search")
    await check(await store.list_calls(tag_and_dates(0), None), "tag filter")
    return {
        "list: tag + 30 days, 100": await timed(lambda n: store.list_calls(tag_and_dates(n), None)),
        "count: tag + 30 days": await timed(lambda n: store.count_calls(tag_and_dates(n), None)),
        f"search: rare word ({RARE_SHARE:.0%} of calls), 100":
            await timed(lambda n: store.list_calls(CallFilter(q=RARE_WORD), None)),
        f"search: common word ({COMMON_SHARE:.0%}), 100":
            await timed(lambda n: store.list_calls(CallFilter(q=COMMON_WORD), None)),
        f"count: common word ({COMMON_SHARE:.0%})": await timed(lambda n: store.count_calls(CallFilter(q=COMMON_WORD),
                                                                                           None)),
        "list: newest 100, no filter": await timed(lambda n: store.list_calls(CallFilter(), None)),
        "analytics: everything": await timed(lambda n: store.analytics(CallFilter(), None)),
    }


def target_of(name: str) -> float | None:
    kind = name.split(":")[0]
    return TARGETS_MS.get(kind)


async def bench(backend: str, url: str, n_calls: int, load: Callable[[], Awaitable[None]]) -> dict:
    store = await RecordStore.open(url)
    try:
        present = await store.count_calls(CallFilter(), None)
        load_s = None
        if present == 0:
            started = time.perf_counter()
            await load()
            load_s = time.perf_counter() - started
            present = await store.count_calls(CallFilter(), None)
        print(f"{backend}: {present} calls" + (f" loaded in {load_s:.0f} s" if load_s else " (already there)"),
              file=sys.stderr, flush=True)
        figures = await measure(store)
    finally:
        await store.close()
    return {"backend": backend, "calls": present, "load_s": load_s,
            "queries": {name: {"p50_ms": round(p50, 2), "p95_ms": round(p95, 2), "target_ms": target_of(name)}
                        for name, (p50, p95) in figures.items()}}


def print_table(results: list[dict]) -> None:
    print(f"{'backend':<10} {'calls':>8}  {'query':<36} {'p50 ms':>8} {'p95 ms':>8} {'target':>8}")
    for result in results:
        for name, figures in result["queries"].items():
            target = figures["target_ms"]
            verdict = "" if target is None else (" ok" if figures["p95_ms"] <= target else " SLOW")
            print(f"{result['backend']:<10} {result['calls']:>8}  {name:<36} {figures['p50_ms']:>8.1f} "
                  f"{figures['p95_ms']:>8.1f} {'' if target is None else f'{target:.0f}':>8}{verdict}")


async def main_async(args: argparse.Namespace, stack: ExitStack) -> list[dict]:
    results = []
    if args.backend in ("sqlite", "both"):
        path = Path(args.sqlite_file) if args.sqlite_file else Path(stack.enter_context(
            tempfile.TemporaryDirectory(prefix="bench-records-"))) / "records.db"
        results.append(await bench("sqlite", f"sqlite+aiosqlite:///{path}", args.calls,
                                   lambda: asyncio.to_thread(load_sqlite, path, args.calls)))
    if args.backend in ("postgres", "both"):
        url = args.postgres_url
        if url is None:
            from tests.postgres import running_postgres

            url = stack.enter_context(running_postgres()).create_database("bench_records")
        results.append(await bench("postgres", url, args.calls, lambda: load_postgres(url, args.calls)))
    return results


ZIP_CALL_SECONDS = 60.0
ZIP_SENTENCES = [
    "Hello, thank you for calling the billing team, how can I help you today?",
    "I was charged twice for my subscription this month and I would like a refund.",
    "I am sorry about that, let me look at your account and the last two invoices.",
    "I can see both payments, the second one was a mistake and I will reverse it now.",
    "How long will it take before the money is back on my card?",
    "It usually takes three to five working days, and you will get an email when it is done.",
    "Could you also change the plan to the yearly one, it is cheaper for us.",
    "Of course, the yearly plan starts on the first of next month at the new price.",
]


def spoken_call(n: int) -> np.ndarray:
    """About a minute of two people talking (two espeak-ng voices), different for each n."""
    from tests.speech import silence, speak

    rng = random.Random(SEED + n)
    parts, length = [], 0
    while length < ZIP_CALL_SECONDS * 16_000:
        line = rng.choice(ZIP_SENTENCES)
        parts += [speak(line, voice="en-us" if len(parts) % 4 == 0 else "en-gb"), silence(0.4)]
        length += len(parts[-2]) + len(parts[-1])
    return np.concatenate(parts)[: int(ZIP_CALL_SECONDS * 16_000)]


async def bench_zip(n_calls: int, folder: Path) -> dict:
    from agent.calls import intake
    from agent.calls.records import CallRecords
    from agent.config import Config
    from tests.speech import write_wav

    archive = folder / "calls.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zipped:
        for n in range(n_calls):
            zipped.write(write_wav(folder / f"call-{n:02d}.wav", spoken_call(n), 16_000), f"day/call-{n:02d}.wav")
    print(f"zip: {n_calls} calls of {ZIP_CALL_SECONDS:.0f} s, {archive.stat().st_size / 1e6:.0f} MB",
          file=sys.stderr, flush=True)
    config = Config()
    config.records.data_dir = str(folder / "data")
    config.records.job_poll_seconds = 0.2
    records = CallRecords(config)
    records.start()
    await records.opened(60)
    try:
        started = time.perf_counter()
        accepted = await intake.add_zip(records, archive, None, folder)
        ids = [entry.id for entry in accepted if entry.id]
        while True:
            calls = [await records.store.get_call(call_id, None) for call_id in ids]
            if all(call.status in ("done", "failed") for call in calls):
                break
            await asyncio.sleep(0.5)
        wall_s = time.perf_counter() - started
    finally:
        await records.close(5)
    audio_s = n_calls * ZIP_CALL_SECONDS
    return {"calls": n_calls, "audio_s": audio_s, "wall_s": round(wall_s, 1),
            "done": sum(call.status == "done" for call in calls), "turns": sum(len(call.turns) for call in calls),
            "calls_per_minute": round(n_calls / wall_s * 60, 2), "real_time_factor": round(wall_s / audio_s, 3),
            "job_concurrency": config.records.job_concurrency,
            "transcription_threads": config.records.transcription_threads}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=100_000, help="synthetic calls of 20 turns (default 100000)")
    parser.add_argument("--backend", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--postgres-url", help="postgresql+asyncpg://... (default: a throwaway local server)")
    parser.add_argument("--sqlite-file", help="keep the SQLite database here (default: a temporary folder)")
    parser.add_argument("--zip", type=int, default=20, help="one-minute calls in the ZIP throughput run (0: skip)")
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    args = parser.parse_args()
    results, uploads = [], None
    with ExitStack() as stack:
        if args.calls > 0:
            results = asyncio.run(main_async(args, stack))
        if args.zip > 0:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-zip-")))
            uploads = asyncio.run(bench_zip(args.zip, folder))
    if results:
        print_table(results)
    if uploads:
        print(f"zip of {uploads['calls']} one-minute calls: {uploads['wall_s']:.0f} s to the last transcript, "
              f"{uploads['calls_per_minute']:.1f} calls/min, real-time factor {uploads['real_time_factor']:.3f} "
              f"({uploads['done']} done, {uploads['turns']} turns; {uploads['job_concurrency']} job, "
              f"{uploads['transcription_threads']} Whisper threads)")
    if args.json:
        print(json.dumps({"bench": "records", "turns_per_call": TURNS_PER_CALL, "runs": RUNS, "results": results,
                          "zip": uploads}))


if __name__ == "__main__":
    main()
