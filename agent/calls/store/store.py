"""The records store: every read and write of call records, accounts and jobs. Each write is one transaction."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import ColumnElement, Row, delete, exists, func, insert, select, true, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import Select

from agent.calls.store.database import DEFAULT_CONNECT_TIMEOUT_S, Database
from agent.calls.store.models import (
    TAG_KINDS,
    USER_ROLES,
    Call,
    CallEmotion,
    CallLanguage,
    EmotionTotal,
    Job,
    Tag,
    Token,
    Turn,
    User,
    utc_now,
)
from agent.calls.store.schemas import Analytics, CallDetail, CallSummary, JobOut, TurnOut, UserOut, UserRow
from agent.calls.store.search import search_index
from agent.calls.store.values import CallFilter, CallNotFound, TurnIn, Viewer

V2V_KEY = "voice_to_voice_s"

SUMMARY_COLUMNS = (Call.id, Call.owner_id, Call.source, Call.file_name, Call.started_at, Call.ended_at,
                   Call.duration_s, Call.languages, Call.status, Call.error, Call.progress, Call.audio_path,
                   Call.turn_count, Call.created_at)
DETAIL_COLUMNS = (*SUMMARY_COLUMNS, Call.analysis, Call.analysis_version, Call.audio_mime)
# columns update_call may not set: the key, and what the store derives itself
DERIVED_COLUMNS = frozenset({"id", "turn_count", "started_day", "v2v_count", "created_at", "updated_at"})
UPDATABLE_COLUMNS = frozenset(column.key for column in Call.__table__.columns) - DERIVED_COLUMNS


def voice_to_voice_s(source: str, turn: TurnIn) -> float | None:
    """The latency the median is taken over: a live call's assistant turn's voice-to-voice time."""
    if source != "live" or turn.role != "assistant" or not turn.latency:
        return None
    value = turn.latency.get(V2V_KEY)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def utc_day(moment: datetime) -> date | None:
    """``calls.started_day`` for ``started_at``; None for a naive datetime, which the column itself refuses."""
    return moment.astimezone(UTC).date() if moment.tzinfo is not None else None


def language_rows(call_id: str, languages: list[str]) -> list[dict[str, Any]]:
    """The ``call_languages`` rows of a call's languages."""
    return [{"call_id": call_id, "position": n, "language": language} for n, language in enumerate(languages)]


class RecordStore:
    """Open with ``await RecordStore.open(url)``; it migrates the database to the newest schema first."""

    def __init__(self, database: Database) -> None:
        self._db = database
        self._search = search_index(database.dialect)

    @classmethod
    async def open(cls, url: str, *, connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S) -> RecordStore:
        """Connects, applies the migrations (``alembic upgrade head``), and returns the store.

        Raises StoreUnavailable, with what to check, when the database cannot be reached or opened."""
        database = Database(url, connect_timeout_s)
        try:
            await database.probe()
            await asyncio.to_thread(database.upgrade)
        except BaseException:
            await database.dispose()
            raise
        return cls(database)

    @property
    def dialect(self) -> str:
        return self._db.dialect

    async def close(self) -> None:
        await self._db.dispose(optimize=True)

    async def ping(self) -> bool:
        try:
            async with self._db.reading() as session:
                await session.execute(select(1))
        except Exception:
            return False
        return True

    # --- accounts -----------------------------------------------------------------------------------

    async def create_user(self, name: str, password_hash: str, role: str = "user") -> UserOut:
        """A new account; ValueError if the name is taken."""
        if role not in USER_ROLES:
            raise ValueError(f"role must be one of {', '.join(USER_ROLES)}, not {role!r}")
        taken = ValueError(f"the name {name!r} is taken")
        try:
            async with self._db.writing() as session:
                if await session.scalar(select(User.id).where(User.name == name)) is not None:
                    raise taken
                user = User(name=name, password_hash=password_hash, role=role, created_at=utc_now())
                session.add(user)
                await session.flush()
                return UserOut.model_validate(user)
        except ValueError as exc:
            raise taken from exc  # also when another server registered the same name a moment before

    async def user_by_name(self, name: str) -> UserRow | None:
        async with self._db.reading() as session:
            user = await session.scalar(select(User).where(User.name == name))
            return None if user is None else UserRow.model_validate(user)

    async def add_token(self, user_id: int, token_hash: str, expires_at: datetime) -> None:
        async with self._db.writing() as session:
            session.add(Token(user_id=user_id, token_hash=token_hash, created_at=utc_now(), expires_at=expires_at))

    async def user_for_token(self, token_hash: str, now: datetime) -> UserOut | None:
        """The token's user, unless the token was revoked or has expired."""
        query = (select(User).join(Token, Token.user_id == User.id)
                 .where(Token.token_hash == token_hash, Token.revoked_at.is_(None), Token.expires_at > now))
        async with self._db.reading() as session:
            user = await session.scalar(query)
            return None if user is None else UserOut.model_validate(user)

    async def revoke_token(self, token_hash: str) -> None:
        async with self._db.writing() as session:
            await session.execute(update(Token).where(Token.token_hash == token_hash, Token.revoked_at.is_(None))
                                  .values(revoked_at=utc_now()))

    # --- calls: writes ------------------------------------------------------------------------------

    async def create_call(self, *, source: str, owner_id: int | None, file_name: str | None = None,
                          content_hash: str | None = None, started_at: datetime, status: str = "pending",
                          languages: list[str] | None = None, audio_path: str | None = None,
                          audio_mime: str | None = None, job: str | None = None) -> str:
        """A new call record; returns its id (32 hex digits). With ``job`` (a kind), its job is queued in the
        same transaction, so that there is never a pending call that nothing will process."""
        now = utc_now()
        call = Call(source=source, owner_id=owner_id, file_name=file_name, content_hash=content_hash,
                    started_at=started_at, status=status, languages=list(languages or []), audio_path=audio_path,
                    audio_mime=audio_mime, progress=0.0, turn_count=0, started_day=utc_day(started_at),
                    v2v_count=0, created_at=now, updated_at=now)
        async with self._db.writing() as session:
            session.add(call)
            await session.flush()
            await self._set_languages(session, call.id, call.languages)
            if job is not None:
                session.add(Job(call_id=call.id, kind=job, status="queued", attempts=0, not_before=now,
                                created_at=now, updated_at=now))
        return call.id

    async def update_call(self, call_id: str, **fields: Any) -> None:
        """Sets any of the call's columns (status, error, progress, ended_at, ...). A call that is gone (deleted
        meanwhile) is left alone; an unknown column is a ValueError."""
        unknown = set(fields) - UPDATABLE_COLUMNS
        if unknown:
            raise ValueError(f"not a column update_call may set: {', '.join(sorted(unknown))}")
        if "languages" in fields:
            fields["languages"] = list(fields["languages"] or [])
        if "started_at" in fields:
            fields["started_day"] = utc_day(fields["started_at"])
        async with self._db.writing() as session:
            updated = await session.execute(update(Call).where(Call.id == call_id)
                                            .values(**fields, updated_at=utc_now()))
            if "languages" in fields and updated.rowcount:
                await self._set_languages(session, call_id, fields["languages"])

    async def add_turns(self, call_id: str, turns: list[TurnIn]) -> None:
        """Appends turns (their idx continues the call's); CallNotFound if there is no such call."""
        async with self._db.writing() as session:
            source = await self._lock_call(session, call_id)
            if not turns:
                return
            first = await session.scalar(select(func.coalesce(func.max(Turn.idx) + 1, 0))
                                         .where(Turn.call_id == call_id))
            v2v_count = await self._insert_turns(session, call_id, source, turns, first)
            await session.execute(update(Call).where(Call.id == call_id)
                                  .values(turn_count=Call.turn_count + len(turns),
                                          v2v_count=Call.v2v_count + v2v_count, updated_at=utc_now()))
            await self._count_emotions(session, call_id)
            await self._search.append(session, call_id, [turn.text for turn in turns])

    async def replace_turns(self, call_id: str, turns: list[TurnIn]) -> None:
        """The call's turns become ``turns`` (an upload's transcription); CallNotFound if there is no such call."""
        async with self._db.writing() as session:
            source = await self._lock_call(session, call_id)
            await session.execute(delete(Turn).where(Turn.call_id == call_id))
            v2v_count = await self._insert_turns(session, call_id, source, turns, 0) if turns else 0
            await session.execute(update(Call).where(Call.id == call_id)
                                  .values(turn_count=len(turns), v2v_count=v2v_count, updated_at=utc_now()))
            await self._count_emotions(session, call_id)
            await self._search.replace(session, call_id, [turn.text for turn in turns])

    async def set_tags(self, call_id: str, names: list[str], kind: str) -> None:
        """Replaces the call's tags of that kind ('ai' or 'user'); CallNotFound if there is no such call."""
        if kind not in TAG_KINDS:
            raise ValueError(f"tag kind must be one of {', '.join(TAG_KINDS)}, not {kind!r}")
        names = list(dict.fromkeys(names))
        async with self._db.writing() as session:
            await self._lock_call(session, call_id)
            await session.execute(delete(Tag).where(Tag.call_id == call_id, Tag.kind == kind))
            if names:
                await session.execute(insert(Tag), [
                    {"call_id": call_id, "name": name, "kind": kind, "effective": False} for name in names])
            has_user_tags = bool(names) if kind == "user" else await session.scalar(
                select(exists().where(Tag.call_id == call_id, Tag.kind == "user")))
            effective_kind = "user" if has_user_tags else "ai"
            await session.execute(update(Tag).where(Tag.call_id == call_id)
                                  .values(effective=Tag.kind == effective_kind)
                                  .execution_options(synchronize_session=False))
            await session.execute(update(Call).where(Call.id == call_id).values(updated_at=utc_now()))

    async def delete_call(self, call_id: str, viewer: Viewer | None) -> CallSummary | None:
        """Deletes the call with its turns, tags and jobs; None (nothing deleted) if absent or not the viewer's."""
        async with self._db.writing() as session:
            # locked, as every write to a call locks it: its emotions are subtracted from the totals as they are
            rows = await self._summaries(session, select(*SUMMARY_COLUMNS).where(
                Call.id == call_id, *self._visible(viewer)).with_for_update())
            if not rows:
                return None
            await self._set_emotions(session, call_id, {})
            await session.execute(delete(Call).where(Call.id == call_id))
            return rows[0]

    # --- calls: reads -------------------------------------------------------------------------------

    async def get_call(self, call_id: str, viewer: Viewer | None) -> CallDetail | None:
        """The call with its turns; None if there is no such call or the viewer may not see it."""
        async with self._db.reading() as session:
            row = (await session.execute(select(*DETAIL_COLUMNS).where(Call.id == call_id, *self._visible(viewer)))
                   ).first()
            if row is None:
                return None
            tags = await self._tags_of(session, [call_id])
            turns = await session.scalars(select(Turn).where(Turn.call_id == call_id).order_by(Turn.idx))
            return CallDetail(**self._summary_fields(row, tags.get(call_id, {})),
                              turns=[TurnOut.model_validate(turn) for turn in turns],
                              analysis=row.analysis, analysis_version=row.analysis_version,
                              audio_path=row.audio_path, audio_mime=row.audio_mime)

    async def list_calls(self, f: CallFilter, viewer: Viewer | None) -> list[CallSummary]:
        """The page ``f.skip``..``f.skip + f.limit`` of the matching calls, newest first."""
        query = (select(*SUMMARY_COLUMNS).where(*self._conditions(f, viewer))
                 .order_by(Call.started_at.desc(), Call.id.desc()).limit(f.limit).offset(f.skip))
        async with self._db.reading() as session:
            return await self._summaries(session, query)

    async def count_calls(self, f: CallFilter, viewer: Viewer | None) -> int:
        async with self._db.reading() as session:
            return await session.scalar(select(func.count()).select_from(Call).where(*self._conditions(f, viewer)))

    async def expired_calls(self, before: datetime) -> list[CallSummary]:
        """Every call started before ``before``, oldest first (for retention, whoever owns them)."""
        query = select(*SUMMARY_COLUMNS).where(Call.started_at < before).order_by(Call.started_at, Call.id)
        async with self._db.reading() as session:
            return await self._summaries(session, query)

    async def find_by_hash(self, owner_id: int | None, content_hash: str) -> str | None:
        """The id of the owner's earliest call made from the same uploaded bytes, if any."""
        owner = Call.owner_id.is_(None) if owner_id is None else Call.owner_id == owner_id
        query = (select(Call.id).where(Call.content_hash == content_hash, owner)
                 .order_by(Call.created_at, Call.id).limit(1))
        async with self._db.reading() as session:
            return await session.scalar(query)

    async def analytics(self, f: CallFilter, viewer: Viewer | None) -> Analytics:
        """Totals over the calls matching ``f`` (its page is ignored), all computed by aggregate queries."""
        conditions = self._conditions(f, viewer)
        matching = select(Call.id).where(*conditions)

        def of_matching(call_id: ColumnElement) -> list[ColumnElement[bool]]:
            return [call_id.in_(matching)] if conditions else []

        async with self._db.reading() as session:
            days = (await session.execute(
                select(Call.started_day, func.count().label("calls"),
                       func.count().filter(Call.turn_count > 0).label("with_transcript"),
                       func.sum(Call.v2v_count).label("v2v_count"))
                .where(*conditions).group_by(Call.started_day))).all()
            per_language = await session.execute(select(CallLanguage.language, func.count())
                                                 .where(*of_matching(CallLanguage.call_id))
                                                 .group_by(CallLanguage.language))
            tags = await session.execute(select(Tag.name, func.count())
                                         .where(Tag.effective == true(), *of_matching(Tag.call_id))
                                         .group_by(Tag.name))
            if conditions:
                emotions = await session.execute(select(CallEmotion.emotion, func.sum(CallEmotion.count))
                                                 .where(CallEmotion.call_id.in_(matching))
                                                 .group_by(CallEmotion.emotion))
            else:
                emotions = await session.execute(select(EmotionTotal.emotion, EmotionTotal.count)
                                                 .where(EmotionTotal.count > 0))
            v2v_count = sum(int(day.v2v_count or 0) for day in days)
            median = await self._median_v2v(session, v2v_count, of_matching(Turn.call_id))
        total = sum(day.calls for day in days)
        with_transcript = sum(day.with_transcript for day in days)
        tag_distribution = _by_count(tags)
        total_tags = sum(tag_distribution.values())
        return Analytics(
            total_calls=total, total_tags=total_tags,
            average_tags_per_call=total_tags / total if total else 0.0,
            calls_with_transcript=with_transcript, calls_without_transcript=total - with_transcript,
            tag_distribution=tag_distribution,
            calls_per_day=dict(sorted((str(day.started_day), day.calls) for day in days)),
            calls_per_language=_by_count(per_language),
            emotion_distribution=_by_count(emotions),
            median_voice_to_voice_s=median,
        )

    # --- jobs ---------------------------------------------------------------------------------------

    async def enqueue_job(self, call_id: str, kind: str) -> int:
        """A queued job for the call, due now; CallNotFound if there is no such call."""
        now = utc_now()
        async with self._db.writing() as session:
            await self._lock_call(session, call_id)
            job = Job(call_id=call_id, kind=kind, status="queued", attempts=0, not_before=now, created_at=now,
                      updated_at=now)
            session.add(job)
            await session.flush()
            return job.id

    async def claim_job(self, kinds: list[str], now: datetime) -> JobOut | None:
        """The oldest queued job of those kinds that is due, set running with one more attempt; None if none.

        One statement, so that of several servers sharing the database exactly one gets each job: on PostgreSQL
        the candidate row is locked with SKIP LOCKED, on SQLite the write lock covers the statement."""
        if not kinds:
            return None
        candidate = (select(Job.id).where(Job.status == "queued", Job.kind.in_(kinds), Job.not_before <= now)
                     .order_by(Job.not_before, Job.id).limit(1))
        if self._db.is_postgres:
            candidate = candidate.with_for_update(skip_locked=True)
        claim = (update(Job).where(Job.id == candidate.scalar_subquery(), Job.status == "queued")
                 .values(status="running", attempts=Job.attempts + 1, updated_at=utc_now())
                 .returning(Job.id, Job.call_id, Job.kind, Job.attempts, Job.status)
                 .execution_options(synchronize_session=False))
        async with self._db.writing() as session:
            row = (await session.execute(claim)).first()
            return None if row is None else JobOut.model_validate(row._mapping)

    async def finish_job(self, job_id: int, error: str | None = None, retry_at: datetime | None = None) -> None:
        """No error: done. An error and ``retry_at``: queued again, due then. An error alone: failed."""
        if error is None:
            values: dict[str, Any] = {"status": "done", "error": None}
        elif retry_at is not None:
            values = {"status": "queued", "error": error, "not_before": retry_at}
        else:
            values = {"status": "failed", "error": error}
        async with self._db.writing() as session:
            await session.execute(update(Job).where(Job.id == job_id).values(**values, updated_at=utc_now()))

    async def retry_failed(self, call_id: str, viewer: Viewer | None) -> bool:
        """A failed call's failed jobs queued again, due now, with fresh attempts; the call back to pending.
        False if the call is not the viewer's, or did not fail."""
        now = utc_now()
        async with self._db.writing() as session:
            found = await session.execute(select(Call.id).where(Call.id == call_id, Call.status == "failed",
                                                                *self._visible(viewer)))
            if found.first() is None:
                return False
            retried = await session.execute(update(Job).where(Job.call_id == call_id, Job.status == "failed")
                                            .values(status="queued", attempts=0, not_before=now, updated_at=now)
                                            .execution_options(synchronize_session=False))
            if retried.rowcount == 0:
                return False
            await session.execute(update(Call).where(Call.id == call_id)
                                  .values(status="pending", progress=0.0, error=None, updated_at=now))
            return True

    async def requeue_running_jobs(self) -> int:
        """At start-up: the jobs a crash left running go back to the queue. Returns how many."""
        async with self._db.writing() as session:
            result = await session.execute(update(Job).where(Job.status == "running")
                                           .values(status="queued", updated_at=utc_now())
                                           .execution_options(synchronize_session=False))
            return result.rowcount

    # --- helpers ------------------------------------------------------------------------------------

    @staticmethod
    def _visible(viewer: Viewer | None) -> list[ColumnElement[bool]]:
        """Who may see a call: everyone without auth, admins everything, a user their own calls."""
        if viewer is None or viewer.is_admin:
            return []
        return [Call.owner_id == viewer.user_id]

    def _conditions(self, f: CallFilter, viewer: Viewer | None) -> list[ColumnElement[bool]]:
        conditions = self._visible(viewer)
        if f.tag is not None:
            conditions.append(exists().where(Tag.call_id == Call.id, Tag.name == f.tag, Tag.effective == true()))
        if f.start_date is not None:
            conditions.append(Call.started_at >= f.start_date)
        if f.end_date is not None:
            conditions.append(Call.started_at <= f.end_date)
        if f.q is not None:
            conditions.append(self._search.condition(f.q))
        if f.language is not None:
            conditions.append(self._has_language(f.language))
        if f.source is not None:
            conditions.append(Call.source == f.source)
        if f.status is not None:
            conditions.append(Call.status == f.status)
        return conditions

    @staticmethod
    def _has_language(language: str) -> ColumnElement[bool]:
        return exists().where(CallLanguage.call_id == Call.id, CallLanguage.language == language)

    @staticmethod
    async def _median_v2v(session: AsyncSession, count: int, conditions: list[ColumnElement[bool]]) -> float | None:
        """The median of ``count`` values over an index: read the middle one or two values in order."""
        if not count:
            return None
        present = [Turn.v2v_s.is_not(None), *conditions]
        middle = await session.scalars(select(Turn.v2v_s).where(*present).order_by(Turn.v2v_s)
                                       .offset((count - 1) // 2).limit(1 if count % 2 else 2))
        values = list(middle)
        return sum(values) / len(values)

    async def _lock_call(self, session: AsyncSession, call_id: str) -> str:
        """The call's source, with its row locked until the transaction ends (PostgreSQL; SQLite's write lock
        already covers the transaction); CallNotFound if there is no such call."""
        source = await session.scalar(select(Call.source).where(Call.id == call_id).with_for_update())
        if source is None:
            raise CallNotFound(f"no call {call_id}")
        return source

    @staticmethod
    async def _insert_turns(session: AsyncSession, call_id: str, source: str, turns: Sequence[TurnIn],
                            first: int) -> int:
        """Inserts the turns; returns how many have a voice-to-voice latency."""
        rows = [{"call_id": call_id, "idx": first + n, "speaker": turn.speaker, "role": turn.role,
                 "start_ms": turn.start_ms, "end_ms": turn.end_ms, "text": turn.text, "heard_text": turn.heard_text,
                 "emotion": turn.emotion, "language": turn.language, "latency": turn.latency,
                 "v2v_s": voice_to_voice_s(source, turn)}
                for n, turn in enumerate(turns)]
        await session.execute(insert(Turn), rows)
        return sum(row["v2v_s"] is not None for row in rows)

    @staticmethod
    async def _set_languages(session: AsyncSession, call_id: str, languages: list[str]) -> None:
        await session.execute(delete(CallLanguage).where(CallLanguage.call_id == call_id))
        if languages:
            await session.execute(insert(CallLanguage), language_rows(call_id, languages))

    async def _count_emotions(self, session: AsyncSession, call_id: str) -> None:
        """The call's emotions counted again from its turns."""
        counted = await session.execute(select(Turn.emotion, func.count())
                                        .where(Turn.call_id == call_id, Turn.emotion.is_not(None))
                                        .group_by(Turn.emotion))
        await self._set_emotions(session, call_id, dict(counted.all()))

    async def _set_emotions(self, session: AsyncSession, call_id: str, counts: dict[str, int]) -> None:
        """The call's ``call_emotions`` become ``counts``, and ``emotion_totals`` change by the difference."""
        before = dict((await session.execute(select(CallEmotion.emotion, CallEmotion.count)
                                             .where(CallEmotion.call_id == call_id))).all())
        if counts == before:
            return
        await session.execute(delete(CallEmotion).where(CallEmotion.call_id == call_id))
        if counts:
            await session.execute(insert(CallEmotion), [{"call_id": call_id, "emotion": emotion, "count": count}
                                                        for emotion, count in counts.items()])
        changes = {emotion: counts.get(emotion, 0) - before.get(emotion, 0) for emotion in {*counts, *before}}
        # sorted, so that two transactions lock the rows they share in the same order
        rows = [{"emotion": emotion, "count": change} for emotion, change in sorted(changes.items()) if change]
        upsert = (postgresql if self._db.is_postgres else sqlite).insert(EmotionTotal)
        await session.execute(upsert.on_conflict_do_update(index_elements=[EmotionTotal.emotion],
                                                           set_={"count": EmotionTotal.count + upsert.excluded.count}),
                              rows)

    async def _summaries(self, session: AsyncSession, query: Select) -> list[CallSummary]:
        rows = (await session.execute(query)).all()
        tags = await self._tags_of(session, [row.id for row in rows])
        return [CallSummary(**self._summary_fields(row, tags.get(row.id, {}))) for row in rows]

    @staticmethod
    async def _tags_of(session: AsyncSession, call_ids: list[str]) -> dict[str, dict[str, list[str]]]:
        """Per call, its tag names by kind, in the order they were set."""
        found: dict[str, dict[str, list[str]]] = {}
        if not call_ids:
            return found
        rows = await session.execute(select(Tag.call_id, Tag.kind, Tag.name).where(Tag.call_id.in_(call_ids))
                                     .order_by(Tag.id))
        for call_id, kind, name in rows:
            found.setdefault(call_id, {}).setdefault(kind, []).append(name)
        return found

    @staticmethod
    def _summary_fields(row: Row, tags: dict[str, list[str]]) -> dict[str, Any]:
        ai_tags, user_tags = tags.get("ai", []), tags.get("user", [])
        return {
            "id": row.id, "owner_id": row.owner_id, "source": row.source, "file_name": row.file_name,
            "started_at": row.started_at, "ended_at": row.ended_at, "duration_s": row.duration_s,
            "languages": list(row.languages or []), "status": row.status, "error": row.error,
            "progress": row.progress, "has_audio": row.audio_path is not None,
            "tags": user_tags or ai_tags, "ai_tags": ai_tags, "user_tags": user_tags,
            "turn_count": row.turn_count, "created_at": row.created_at,
        }


def _by_count(rows: Iterable[Row]) -> dict[str, int]:
    """``{name: count}``, largest first (then by name)."""
    return dict(sorted(((str(name), int(count)) for name, count in rows), key=lambda item: (-item[1], item[0])))
