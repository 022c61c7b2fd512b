"""The records store on its own: migrations, calls and turns, filters and search, tags, who sees what, analytics
and the job queue. Every test runs on SQLite and on a real PostgreSQL server.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select, text

from agent.calls.store import CallFilter, CallNotFound, RecordStore, TurnIn, Viewer
from agent.calls.store.database import ALEMBIC_INI, create_engine, normalize_url
from agent.calls.store.models import Base, Job, Tag, Turn
from agent.config import REPO_ROOT
from tests.postgres import postgres_server, postgres_url  # noqa: F401 - fixtures

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
ALL = CallFilter()
# the examples of a property share one store; each keeps to calls of its own new user
PROPERTY_SETTINGS = settings(max_examples=25, deadline=None,
                             suppress_health_check=[HealthCheck.function_scoped_fixture])
_names = itertools.count()
OPEN_STORE = """
import asyncio, sys
from agent.calls.store import RecordStore

async def main():
    await (await RecordStore.open(sys.argv[1])).close()

asyncio.run(main())
"""


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request, tmp_path) -> str:
    if request.param == "postgres":
        return request.getfixturevalue("postgres_url")
    return f"sqlite+aiosqlite:///{tmp_path / 'records.db'}"


@pytest.fixture
async def store(database_url):
    store = await RecordStore.open(database_url)
    yield store
    await store.close()


def said(text: str, role: str = "user", start_ms: int = 0, end_ms: int = 1000, **more) -> TurnIn:
    return TurnIn(speaker=role, role=role, start_ms=start_ms, end_ms=end_ms, text=text, **more)


async def new_call(store: RecordStore, *, source: str = "live", owner_id: int | None = None,
                   started_at: datetime = T0, turns: Sequence[TurnIn] = (), **fields) -> str:
    call_id = await store.create_call(source=source, owner_id=owner_id, started_at=started_at, **fields)
    if turns:
        await store.add_turns(call_id, list(turns))
    return call_id


async def new_user(store: RecordStore, role: str = "user") -> int:
    return (await store.create_user(f"user{next(_names)}", "hash", role)).id


async def query(url: str, statement) -> list:
    """Rows read straight from the database, beside the store."""
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            return (await connection.execute(statement)).all()
    finally:
        await engine.dispose()


async def ids(store: RecordStore, viewer: Viewer | None = None, **filters) -> list[str]:
    return [call.id for call in await store.list_calls(CallFilter(**filters), viewer)]


def script_head() -> str:
    return ScriptDirectory.from_config(AlembicConfig(str(ALEMBIC_INI))).get_current_head()


def downgrade(url: str, revision: str) -> None:
    """``alembic downgrade``; blocking, like ``Database.upgrade``."""
    config = AlembicConfig(str(ALEMBIC_INI))
    config.attributes["url"] = normalize_url(url)
    command.downgrade(config, revision)


# --- migrations ---------------------------------------------------------------------------------------


async def test_opening_a_fresh_database_migrates_it_to_the_newest_revision(store, database_url):
    assert await query(database_url, text("SELECT version_num FROM alembic_version")) == [(script_head(),)]
    assert await store.count_calls(ALL, None) == 0


async def test_opening_again_is_a_no_op_that_keeps_the_records(store, database_url):
    call_id = await new_call(store, turns=[said("still here")])
    await store.close()
    again = await RecordStore.open(database_url)
    try:
        assert await query(database_url, text("SELECT version_num FROM alembic_version")) == [(script_head(),)]
        call = await again.get_call(call_id, None)
        assert [turn.text for turn in call.turns] == ["still here"]
        assert await ids(again, q="still") == [call_id]
    finally:
        await again.close()


async def test_two_servers_opening_a_fresh_database_at_once_both_get_the_migrated_schema(database_url):
    # separate processes, as real servers are: Alembic's context is one per process
    opening = [await asyncio.create_subprocess_exec(sys.executable, "-c", OPEN_STORE, database_url, cwd=REPO_ROOT,
                                                    stderr=asyncio.subprocess.PIPE) for _ in range(2)]
    for process in opening:
        _, stderr = await process.communicate()
        assert process.returncode == 0, stderr.decode()
    assert await query(database_url, text("SELECT version_num FROM alembic_version")) == [(script_head(),)]


async def test_the_migrated_schema_matches_the_models(store, database_url):
    def include(obj, name, type_, reflected, compare_to) -> bool:
        # the full-text index is dialect-specific and outside the models (as in migrations/env.py)
        if type_ == "table" and name and (name.startswith("call_search") or name == "alembic_version"):
            return False
        return not (type_ in ("column", "index") and name and name.startswith(("search_", "ix_calls_search")))

    def differences(connection) -> list:
        context = MigrationContext.configure(connection, opts={"include_object": include, "compare_type": True})
        return compare_metadata(context, Base.metadata)

    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            assert await connection.run_sync(differences) == []
    finally:
        await engine.dispose()


# --- calls and turns ----------------------------------------------------------------------------------


async def test_a_call_round_trips_with_its_turns_analysis_and_latencies(store):
    started = datetime(2025, 3, 1, 10, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
    call_id = await store.create_call(source="live", owner_id=None, started_at=started, languages=["fr"],
                                      audio_path="/audio/a.flac", audio_mime="audio/flac")
    latency = {"voice_to_voice_s": 0.42, "stages": {"stt_ms": 80, "llm_ms": [12, 30]}}
    await store.add_turns(call_id, [
        said("Bonjour, ma facture est fausse.", start_ms=0, end_ms=1800, emotion="angry", language="fr"),
        said("Je regarde cela tout de suite.", role="assistant", start_ms=2100, end_ms=4200,
             heard_text="Je regarde", latency=latency),
    ])
    await store.add_turns(call_id, [said("Merci.", start_ms=4300, end_ms=4700)])
    analysis = {"schema_version": 1, "summary": "wrong invoice", "topics": ["billing"], "score": 0.5}
    ended = started + timedelta(seconds=5)
    await store.update_call(call_id, status="done", ended_at=ended, duration_s=4.7, progress=1.0,
                            analysis=analysis, analysis_version=1)

    call = await store.get_call(call_id, None)
    assert (call.started_at, call.ended_at) == (started, ended)
    assert call.started_at.tzinfo is not None
    assert (call.source, call.status, call.progress, call.duration_s) == ("live", "done", 1.0, 4.7)
    assert (call.languages, call.turn_count, call.has_audio, call.audio_mime) == (["fr"], 3, True, "audio/flac")
    assert (call.analysis, call.analysis_version) == (analysis, 1)
    assert [(t.idx, t.role, t.start_ms, t.end_ms) for t in call.turns] == [
        (0, "user", 0, 1800), (1, "assistant", 2100, 4200), (2, "user", 4300, 4700)]
    first, reply, _ = call.turns
    assert (first.text, first.emotion, first.language, first.heard_text) == (
        "Bonjour, ma facture est fausse.", "angry", "fr", None)
    assert (reply.text, reply.heard_text, reply.latency) == ("Je regarde cela tout de suite.", "Je regarde", latency)


async def test_replacing_the_turns_replaces_the_transcript_and_what_search_finds(store):
    call_id = await new_call(store, source="upload", turns=[said("first draft"), said("wrong words")])
    await store.replace_turns(call_id, [said("corrected transcript", start_ms=500, end_ms=900)])
    call = await store.get_call(call_id, None)
    assert [(t.idx, t.text, t.start_ms) for t in call.turns] == [(0, "corrected transcript", 500)]
    assert call.turn_count == 1
    assert await ids(store, q="corrected") == [call_id]
    assert await ids(store, q="draft") == []
    await store.replace_turns(call_id, [])
    assert (await store.get_call(call_id, None)).turn_count == 0
    assert await ids(store, q="corrected") == []


async def test_writes_naming_a_missing_call_or_a_derived_column_are_refused(store):
    with pytest.raises(CallNotFound):
        await store.add_turns("0" * 32, [said("lost")])
    with pytest.raises(CallNotFound):
        await store.replace_turns("0" * 32, [])
    with pytest.raises(CallNotFound):
        await store.set_tags("0" * 32, ["x"], "ai")
    with pytest.raises(CallNotFound):
        await store.enqueue_job("0" * 32, "transcribe")
    await store.update_call("0" * 32, status="done")  # deleted meanwhile: nothing to do
    call_id = await new_call(store)
    for column in ("turn_count", "id", "no_such_column"):
        with pytest.raises(ValueError):
            await store.update_call(call_id, **{column: 1})


async def test_a_batch_of_turns_with_one_invalid_turn_stores_none_of_them(store):
    call_id = await new_call(store, turns=[said("kept words")])
    with pytest.raises(ValueError):
        await store.add_turns(call_id, [said("lost words"), said("bad role", role="narrator")])
    call = await store.get_call(call_id, None)
    assert [turn.text for turn in call.turns] == ["kept words"]
    assert call.turn_count == 1
    assert await ids(store, q="lost") == []
    await store.add_turns(call_id, [said("next words")])
    assert [t.idx for t in (await store.get_call(call_id, None)).turns] == [0, 1]


async def test_a_call_whose_job_cannot_be_queued_is_not_created(store):
    with pytest.raises(ValueError):
        await store.create_call(source="upload", owner_id=None, started_at=T0, job="no_such_kind")
    assert await store.count_calls(ALL, None) == 0
    with pytest.raises(ValueError):
        await store.create_call(source="radio", owner_id=None, started_at=T0)
    assert await store.count_calls(ALL, None) == 0


# --- filters, search, paging --------------------------------------------------------------------------


async def test_filters_narrow_the_list_and_the_count_alike(store):
    early = await new_call(store, source="live", started_at=T0, languages=["en"])
    middle = await new_call(store, source="upload", started_at=T0 + timedelta(days=1), languages=["en", "de"],
                            status="done")
    late = await new_call(store, source="upload", started_at=T0 + timedelta(days=2), languages=["de"])
    await store.set_tags(middle, ["refund"], "ai")
    await store.set_tags(late, ["refund", "angry"], "ai")
    cases = [
        ({}, [late, middle, early]),
        ({"tag": "refund"}, [late, middle]),
        ({"tag": "angry"}, [late]),
        ({"tag": "nothing"}, []),
        ({"language": "de"}, [late, middle]),
        ({"language": "en"}, [middle, early]),
        ({"language": "e"}, []),
        ({"source": "live"}, [early]),
        ({"source": "upload", "language": "en"}, [middle]),
        ({"status": "done"}, [middle]),
        ({"start_date": T0 + timedelta(days=1)}, [late, middle]),  # both ends are inclusive
        ({"end_date": T0 + timedelta(days=1)}, [middle, early]),
        ({"start_date": T0 + timedelta(hours=1), "end_date": T0 + timedelta(days=1, hours=1)}, [middle]),
        # the same moment in another time zone
        ({"start_date": (T0 + timedelta(days=2)).astimezone(timezone(timedelta(hours=-5)))}, [late]),
        ({"tag": "refund", "start_date": T0, "end_date": T0 + timedelta(hours=1)}, []),
    ]
    for filters, expected in cases:
        assert await ids(store, **filters) == expected, filters
        assert await store.count_calls(CallFilter(**filters), None) == len(expected), filters


async def test_search_finds_the_call_where_a_word_was_said_whatever_its_case(store):
    invoice = await new_call(store, turns=[said("My invoice was charged twice."), said("Sorry about that.",
                                                                                      role="assistant")])
    dessert = await new_call(store, turns=[said("Je voudrais une crème brûlée.")])
    street = await new_call(store, turns=[said("Die Straße war voller Ärger.")])
    cases = [
        ("invoice", [invoice]), ("INVOICE", [invoice]), ("Charged", [invoice]),
        ("sorry", [invoice]),  # the assistant's words too
        ("invoice twice", [invoice]),  # every word must be said
        ("invoice crème", []),
        ("crème", [dessert]), ("brûlée crème", [dessert]), ("CRÈME", [dessert]),
        ("straße", [street]), ("ärger", [street]), ("ÄRGER", [street]),
        ("invoic", []),  # whole words, not prefixes
    ]
    for q, expected in cases:
        assert await ids(store, q=q) == expected, q


async def test_search_words_are_never_query_syntax(store):
    call_id = await new_call(store, turns=[said("near the end or not")])
    for q in ('"', "NEAR(", "end OR", "-end", "end*", "end:", "end & !or", "(end) | x", "'", "\\"):
        found = await ids(store, q=q)
        assert found in ([], [call_id]), q
    assert await ids(store, q="... !!") == []  # no word at all matches nothing
    assert await ids(store, q="end OR") == [call_id]
    assert await ids(store, q="end -missing") == []


async def test_calls_come_newest_first_and_pages_neither_overlap_nor_skip(store):
    moments = [T0, T0 + timedelta(minutes=5), T0 + timedelta(minutes=5), T0 + timedelta(minutes=5),
               T0 - timedelta(days=3), T0 + timedelta(days=1), T0]
    for moment in moments:
        await new_call(store, started_at=moment)
    listed = await store.list_calls(ALL, None)
    assert [call.started_at for call in listed] == sorted(moments, reverse=True)
    paged = []
    for skip in range(0, len(moments), 3):
        paged += await ids(store, limit=3, skip=skip)
    assert paged == [call.id for call in listed]
    assert await ids(store, limit=3, skip=len(moments)) == []


@PROPERTY_SETTINGS
@given(offsets=st.lists(st.integers(0, 3), max_size=10), limit=st.integers(1, 4), skip=st.integers(0, 12))
async def test_paging_with_any_limit_returns_each_call_exactly_once(store, offsets, limit, skip):
    owner = Viewer(await new_user(store), is_admin=False)
    created = [await new_call(store, owner_id=owner.user_id, started_at=T0 + timedelta(minutes=m)) for m in offsets]
    everything = await ids(store, owner)
    assert sorted(everything) == sorted(created)
    pages = [await ids(store, owner, limit=limit, skip=start) for start in range(0, len(created) + 1, limit)]
    assert [call_id for page in pages for call_id in page] == everything
    assert await ids(store, owner, limit=limit, skip=skip) == everything[skip:skip + limit]
    assert await store.count_calls(CallFilter(limit=limit, skip=skip), owner) == len(created)


WORD = st.text(st.characters(categories=("Ll", "Lu", "Nd"), max_codepoint=0x04FF), min_size=1, max_size=12)


def recased(word: str, mask: int) -> str:
    """The word with the case of some letters swapped (those whose swap is one letter that swaps back)."""
    def swap(ch: str) -> str:
        other = ch.swapcase()
        return other if len(other) == 1 and other.swapcase() == ch else ch

    return "".join(swap(ch) if mask >> n & 1 else ch for n, ch in enumerate(word))


@PROPERTY_SETTINGS
@given(words=st.lists(WORD, min_size=1, max_size=6), pick=st.integers(0, 5), mask=st.integers(0, 2**12 - 1))
async def test_any_word_said_in_a_call_finds_that_call_in_any_case(store, words, pick, mask):
    owner = Viewer(await new_user(store), is_admin=False)
    call_id = await new_call(store, owner_id=owner.user_id, turns=[said(word + ",") for word in words])
    await new_call(store, owner_id=owner.user_id, turns=[said("unrelated")])
    word = words[pick % len(words)]
    assert await ids(store, owner, q=recased(word, mask)) == [call_id]


# --- tags ---------------------------------------------------------------------------------------------


async def test_user_tags_override_the_ai_tags_which_stay_visible(store):
    call_id = await new_call(store)
    await store.set_tags(call_id, ["billing", "refund", "billing"], "ai")
    call = await store.get_call(call_id, None)
    assert (call.tags, call.ai_tags, call.user_tags) == (["billing", "refund"], ["billing", "refund"], [])

    await store.set_tags(call_id, ["vip"], "user")
    call = await store.get_call(call_id, None)
    assert (call.tags, call.ai_tags, call.user_tags) == (["vip"], ["billing", "refund"], ["vip"])
    assert await ids(store, tag="vip") == [call_id]
    assert await ids(store, tag="billing") == []

    await store.set_tags(call_id, ["billing", "angry"], "ai")  # a new analysis does not undo the user's choice
    call = await store.get_call(call_id, None)
    assert (call.tags, call.ai_tags) == (["vip"], ["billing", "angry"])
    assert await ids(store, tag="angry") == []

    await store.set_tags(call_id, [], "user")
    call = await store.get_call(call_id, None)
    assert (call.tags, call.user_tags) == (["billing", "angry"], [])
    assert await ids(store, tag="angry") == [call_id]
    with pytest.raises(ValueError):
        await store.set_tags(call_id, ["x"], "robot")


# --- who sees what ------------------------------------------------------------------------------------


async def test_a_user_sees_only_their_own_calls_and_an_admin_sees_all(store):
    alice, bob, admin = await new_user(store), await new_user(store), await new_user(store, "admin")
    as_alice, as_admin = Viewer(alice, is_admin=False), Viewer(admin, is_admin=True)
    hers = await new_call(store, owner_id=alice, turns=[said("secret plan")])
    his = await new_call(store, owner_id=bob, started_at=T0 + timedelta(hours=1), turns=[said("secret plan")])
    await store.set_tags(his, ["private"], "ai")

    assert await ids(store, as_alice) == [hers]
    assert await ids(store, as_alice, q="secret") == [hers]
    assert await ids(store, as_alice, tag="private") == []
    assert await store.count_calls(ALL, as_alice) == 1
    assert (await store.analytics(ALL, as_alice)).total_calls == 1
    assert await store.get_call(his, as_alice) is None
    assert (await store.get_call(hers, as_alice)).owner_id == alice
    assert await store.delete_call(his, as_alice) is None
    assert await store.get_call(his, None) is not None

    for everyone in (as_admin, None):
        assert await ids(store, everyone) == [his, hers]
        assert await store.get_call(his, everyone) is not None


async def test_deleting_a_call_removes_its_turns_tags_jobs_and_search_document(store, database_url):
    gone = await new_call(store, source="upload", job="transcribe", turns=[said("remove me")])
    kept = await new_call(store, source="upload", job="transcribe", turns=[said("keep me")])
    for call_id in (gone, kept):
        await store.set_tags(call_id, ["a"], "ai")
        await store.set_tags(call_id, ["b"], "user")
        await store.enqueue_job(call_id, "analyze")

    deleted = await store.delete_call(gone, None)
    assert (deleted.id, deleted.turn_count, deleted.tags) == (gone, 1, ["b"])
    assert await store.get_call(gone, None) is None
    assert await store.delete_call(gone, None) is None
    for table in (Turn, Tag, Job):
        rows = await query(database_url, select(table.call_id, func.count()).group_by(table.call_id))
        assert dict(rows) == {kept: 1 if table is Turn else 2}, table.__tablename__
    if store.dialect == "sqlite":
        assert await query(database_url, text("SELECT count(*) FROM call_search")) == [(1,)]
    assert await ids(store, q="me") == [kept]


# --- analytics ----------------------------------------------------------------------------------------


async def analytics_calls(store: RecordStore) -> dict[str, str]:
    """Four calls whose analytics are worked out by hand in the tests below."""
    a = await new_call(store, source="live", started_at=datetime(2025, 3, 1, 9, tzinfo=UTC), languages=["en"],
                       turns=[said("hello there", emotion="neutral"),
                              said("hi", role="assistant", emotion="happy", latency={"voice_to_voice_s": 0.4}),
                              said("thanks", emotion="happy"),
                              said("bye", role="assistant", latency={"voice_to_voice_s": 1.0})])
    # 01:00 at UTC+2 is 23:00 UTC the day before: days are counted in UTC
    b = await new_call(store, source="live", started_at=datetime(2025, 3, 2, 1, tzinfo=timezone(timedelta(hours=2))),
                       languages=["en", "fr"],
                       turns=[said("allo", latency={"voice_to_voice_s": 9.0}),  # a user turn: not a reply time
                              said("oui", role="assistant", emotion="angry",
                                   latency={"voice_to_voice_s": 0.6, "ttfb_s": 0.2}),
                              said("non", role="assistant", latency={"voice_to_voice_s": True})])
    c = await new_call(store, source="upload", started_at=datetime(2025, 3, 2, 10, tzinfo=UTC), languages=["fr"],
                       turns=[said("enregistré", role="assistant", latency={"voice_to_voice_s": 5.0})])
    d = await new_call(store, source="upload", started_at=datetime(2025, 3, 3, 12, tzinfo=UTC))
    await store.set_tags(a, ["billing", "refund"], "ai")
    await store.set_tags(b, ["billing"], "ai")
    await store.set_tags(b, ["vip"], "user")
    await store.set_tags(d, ["billing"], "ai")
    return {"a": a, "b": b, "c": c, "d": d}


async def test_analytics_add_up_over_a_known_set_of_calls(store):
    await analytics_calls(store)
    stats = await store.analytics(ALL, None)
    assert (stats.total_calls, stats.total_tags, stats.average_tags_per_call) == (4, 4, 1.0)
    assert (stats.calls_with_transcript, stats.calls_without_transcript) == (3, 1)
    assert list(stats.tag_distribution.items()) == [("billing", 2), ("refund", 1), ("vip", 1)]
    assert list(stats.calls_per_day.items()) == [("2025-03-01", 2), ("2025-03-02", 1), ("2025-03-03", 1)]
    assert stats.calls_per_language == {"en": 2, "fr": 2}
    assert list(stats.emotion_distribution.items()) == [("happy", 2), ("angry", 1), ("neutral", 1)]
    assert stats.median_voice_to_voice_s == pytest.approx(0.6)  # of 0.4, 0.6 and 1.0; uploads do not count


async def test_analytics_cover_only_the_calls_the_filter_matches(store):
    calls = await analytics_calls(store)
    live = await store.analytics(CallFilter(source="live", limit=1, skip=5), None)  # the page is ignored
    assert (live.total_calls, live.total_tags, live.average_tags_per_call) == (2, 3, 1.5)
    assert live.tag_distribution == {"billing": 1, "refund": 1, "vip": 1}
    assert live.calls_per_day == {"2025-03-01": 2}
    assert live.calls_per_language == {"en": 2, "fr": 1}
    assert live.emotion_distribution == {"happy": 2, "angry": 1, "neutral": 1}

    refund = await store.analytics(CallFilter(tag="refund"), None)
    assert refund.total_calls == 1
    assert refund.median_voice_to_voice_s == pytest.approx(0.7)  # the mean of the middle two, 0.4 and 1.0

    uploads = await store.analytics(CallFilter(source="upload"), None)
    assert (uploads.calls_with_transcript, uploads.calls_without_transcript) == (1, 1)
    assert uploads.median_voice_to_voice_s is None
    assert uploads.tag_distribution == {"billing": 1}

    await store.delete_call(calls["a"], None)
    assert (await store.analytics(ALL, None)).median_voice_to_voice_s == pytest.approx(0.6)


async def test_analytics_of_no_calls_are_zero(store):
    stats = await store.analytics(ALL, None)
    assert (stats.total_calls, stats.total_tags, stats.average_tags_per_call) == (0, 0, 0.0)
    assert (stats.tag_distribution, stats.calls_per_day, stats.emotion_distribution) == ({}, {}, {})
    assert stats.median_voice_to_voice_s is None


async def test_the_emotion_distribution_follows_turns_added_replaced_and_deleted(store):
    a = await new_call(store, turns=[said("hi", emotion="happy"), said("hm", emotion="sad")])
    b = await new_call(store, turns=[said("yo", emotion="happy")])
    await store.add_turns(a, [said("grr", emotion="angry"), said("meh", emotion="sad")])
    assert (await store.analytics(ALL, None)).emotion_distribution == {"happy": 2, "sad": 2, "angry": 1}

    await store.replace_turns(a, [said("ok", emotion="neutral"), said("fine")])
    assert (await store.analytics(ALL, None)).emotion_distribution == {"happy": 1, "neutral": 1}
    await store.delete_call(b, None)
    for everything in (ALL, CallFilter(q="ok")):
        assert (await store.analytics(everything, None)).emotion_distribution == {"neutral": 1}


async def test_the_language_and_day_of_a_call_follow_its_updates(store):
    call_id = await new_call(store, languages=["en"])
    await store.update_call(call_id, languages=["fr", "de"],
                            started_at=datetime(2025, 4, 1, 23, 30, tzinfo=timezone(timedelta(hours=-2))))
    assert (await ids(store, language="fr"), await ids(store, language="en")) == ([call_id], [])
    stats = await store.analytics(ALL, None)
    assert (stats.calls_per_language, stats.calls_per_day) == ({"de": 1, "fr": 1}, {"2025-04-02": 1})


async def test_upgrading_a_first_revision_database_derives_the_analytics_data_from_its_records(store, database_url):
    calls = await analytics_calls(store)
    await store.update_call(calls["d"], languages=["de"])
    filters = [ALL, CallFilter(source="live"), CallFilter(tag="refund"), CallFilter(language="fr")]
    expected = [await store.analytics(f, None) for f in filters]
    listed = await ids(store, language="fr")
    await store.close()
    await asyncio.to_thread(downgrade, database_url, "0001")  # the derived data is gone, the records stay

    upgraded = await RecordStore.open(database_url)
    try:
        assert [await upgraded.analytics(f, None) for f in filters] == expected
        assert await ids(upgraded, language="fr") == listed
        assert expected[0].calls_per_language == {"en": 2, "fr": 2, "de": 1}
    finally:
        await upgraded.close()


# --- jobs ---------------------------------------------------------------------------------------------


async def test_a_queued_job_is_claimed_once_and_only_by_its_kind(store):
    call_id = await new_call(store, source="upload", job="transcribe")
    now = datetime.now(UTC)
    assert await store.claim_job(["analyze"], now) is None
    assert await store.claim_job([], now) is None
    job = await store.claim_job(["analyze", "transcribe"], now)
    assert (job.call_id, job.kind, job.status, job.attempts) == (call_id, "transcribe", "running", 1)
    assert await store.claim_job(["transcribe"], now) is None

    later = await store.enqueue_job(call_id, "analyze")
    second = await store.claim_job(["transcribe", "analyze"], datetime.now(UTC))
    assert (second.id, second.kind) == (later, "analyze")


async def test_servers_sharing_the_database_never_claim_the_same_job(store, database_url):
    call_id = await new_call(store, source="upload")
    queued = {await store.enqueue_job(call_id, "transcribe") for _ in range(4)}
    other = await RecordStore.open(database_url)
    try:
        now = datetime.now(UTC)
        claims = await asyncio.gather(*(server.claim_job(["transcribe"], now)
                                        for server in (store, other) for _ in range(4)))
    finally:
        await other.close()
    claimed = [job.id for job in claims if job is not None]
    assert sorted(claimed) == sorted(queued)


async def test_a_job_is_not_claimed_before_it_is_due_and_a_retry_counts_its_attempts(store):
    call_id = await new_call(store, source="upload", job="transcribe")
    job = await store.claim_job(["transcribe"], datetime.now(UTC))
    retry_at = datetime.now(UTC) + timedelta(minutes=1)
    await store.finish_job(job.id, error="decoder crashed", retry_at=retry_at)
    assert await store.claim_job(["transcribe"], retry_at - timedelta(seconds=1)) is None
    again = await store.claim_job(["transcribe"], retry_at)
    assert (again.id, again.call_id, again.attempts) == (job.id, call_id, 2)

    await store.finish_job(job.id, error="decoder crashed again")  # no retry: failed for good
    assert await store.claim_job(["transcribe"], retry_at + timedelta(days=1)) is None
    assert not await store.retry_failed(call_id, None)  # the call itself did not fail
    await store.update_call(call_id, status="failed", error="decoder crashed again", progress=0.5)
    assert await store.retry_failed(call_id, None)
    call = await store.get_call(call_id, None)
    assert (call.status, call.error, call.progress) == ("pending", None, 0.0)
    fresh = await store.claim_job(["transcribe"], datetime.now(UTC) + timedelta(seconds=1))
    assert (fresh.id, fresh.attempts) == (job.id, 1)

    await store.finish_job(fresh.id)
    assert await store.claim_job(["transcribe"], retry_at + timedelta(days=1)) is None


async def test_jobs_a_crash_left_running_are_queued_again_at_start_up(store, database_url):
    call_id = await new_call(store, source="upload", job="transcribe")
    await store.enqueue_job(call_id, "analyze")
    await store.enqueue_job(call_id, "analyze")
    now = datetime.now(UTC)
    running = [await store.claim_job(["transcribe", "analyze"], now) for _ in range(2)]
    await store.finish_job(running[1].id)
    await store.close()  # the server dies with the first job running

    restarted = await RecordStore.open(database_url)
    try:
        assert await restarted.requeue_running_jobs() == 1
        assert await restarted.requeue_running_jobs() == 0
        claimed = [await restarted.claim_job(["transcribe", "analyze"], now) for _ in range(3)]
    finally:
        await restarted.close()
    assert claimed[2] is None
    assert {(job.id, job.attempts) for job in claimed[:2]} == {(running[0].id, 2), (running[1].id + 1, 1)}


async def test_an_upload_is_found_by_its_hash_for_the_same_owner_only(store):
    alice, bob = await new_user(store), await new_user(store)
    first = await new_call(store, source="upload", owner_id=alice, content_hash="ab" * 32)
    await new_call(store, source="upload", owner_id=alice, content_hash="ab" * 32)
    anonymous = await new_call(store, source="upload", content_hash="ab" * 32)
    assert await store.find_by_hash(alice, "ab" * 32) == first
    assert await store.find_by_hash(bob, "ab" * 32) is None
    assert await store.find_by_hash(None, "ab" * 32) == anonymous
    assert await store.find_by_hash(alice, "cd" * 32) is None


async def test_expired_calls_are_every_owners_calls_started_before_the_cutoff_oldest_first(store):
    alice, bob = await new_user(store), await new_user(store)
    old = await new_call(store, owner_id=bob, started_at=T0 - timedelta(days=40))
    older = await new_call(store, owner_id=alice, started_at=T0 - timedelta(days=50))
    await new_call(store, owner_id=alice, started_at=T0)
    assert [call.id for call in await store.expired_calls(T0 - timedelta(days=30))] == [older, old]
    assert await store.expired_calls(T0 - timedelta(days=50)) == []
