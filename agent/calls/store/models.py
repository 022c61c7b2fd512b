"""The call-records tables (SQLAlchemy 2 declarative). The migrations in ``migrations/versions`` create them.

Besides the columns of the contract, some are kept up to date by the store, in the transaction that changes
what they derive from, so that lists and analytics are aggregate queries over calls, not scans of every turn:
``calls.turn_count``, ``calls.started_day`` (the UTC date of ``started_at``), ``calls.v2v_count`` (how many of
its turns have a ``v2v_s``), ``turns.v2v_s`` (the voice-to-voice latency of a live call's assistant turn, for
the median), ``tags.effective`` (whether the tag is one of the call's effective tags: its user tags when it has
any, else its AI tags), and the tables ``call_languages`` (``calls.languages`` one row each),
``call_emotions`` (per call, how many of its turns carry each emotion) and ``emotion_totals`` (the same summed
over every call). The full-text index is dialect-specific and lives outside these models (see ``search.py``).
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

USER_ROLES = ("user", "admin")
SOURCES = ("live", "upload")
CALL_STATUSES = ("pending", "processing", "done", "failed")
TURN_ROLES = ("user", "assistant")
TAG_KINDS = ("ai", "user")
JOB_KINDS = ("transcribe", "analyze")
JOB_STATUSES = ("queued", "running", "done", "failed")

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

JsonValue = JSON().with_variant(JSONB(), "postgresql")


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on both databases (SQLite keeps them as naive UTC text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: the store takes timezone-aware datetimes")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utc_now() -> datetime:
    return datetime.now(UTC)


def new_call_id() -> str:
    return uuid.uuid4().hex


def one_of(column: str, values: tuple[str, ...]) -> str:
    """SQL for a CHECK that ``column`` holds one of ``values``."""
    return f"{column} IN ({', '.join(repr(value) for value in values)})"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JsonValue, list[str]: JsonValue}


class User(Base):
    __tablename__ = "users"
    __table_args__ = (CheckConstraint(one_of("role", USER_ROLES), name="role"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16), default="user")
    created_at: Mapped[datetime] = mapped_column(default=utc_now)


class Token(Base):
    __tablename__ = "tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utc_now)
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class Call(Base):
    __tablename__ = "calls"
    __table_args__ = (
        CheckConstraint(one_of("source", SOURCES), name="source"),
        CheckConstraint(one_of("status", CALL_STATUSES), name="status"),
        CheckConstraint("progress >= 0 AND progress <= 1", name="progress"),
        Index("ix_calls_owner_id_started_at", "owner_id", "started_at", "id"),
        Index("ix_calls_started_at", "started_at", "id"),
        Index("ix_calls_status", "status"),
        Index("ix_calls_content_hash", "content_hash"),
        # the totals and calls per day of analytics, read from the index alone
        Index("ix_calls_started_day", "started_day", "turn_count", "v2v_count"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_call_id)
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    source: Mapped[str] = mapped_column(String(16))
    file_name: Mapped[str | None] = mapped_column(String(512))
    content_hash: Mapped[str | None] = mapped_column(String(64))
    started_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]
    duration_s: Mapped[float | None] = mapped_column(Float)
    languages: Mapped[list[str]] = mapped_column(default=list)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    error: Mapped[str | None] = mapped_column(Text)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    audio_path: Mapped[str | None] = mapped_column(String(1024))
    audio_mime: Mapped[str | None] = mapped_column(String(128))
    analysis: Mapped[dict[str, Any] | None]
    analysis_version: Mapped[int | None] = mapped_column(Integer)
    turn_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(default=utc_now)
    # nullable because SQLite cannot add a NOT NULL column without a default; the store always sets it
    started_day: Mapped[date | None] = mapped_column(Date)
    v2v_count: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))


class CallLanguage(Base):
    __tablename__ = "call_languages"
    __table_args__ = (Index("ix_call_languages_language", "language", "call_id"),)

    call_id: Mapped[str] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    language: Mapped[str] = mapped_column(Text)


class CallEmotion(Base):
    __tablename__ = "call_emotions"
    __table_args__ = (Index("ix_call_emotions_emotion", "emotion", "count"),)

    call_id: Mapped[str] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"), primary_key=True)
    emotion: Mapped[str] = mapped_column(String(32), primary_key=True)
    count: Mapped[int] = mapped_column(Integer)


class EmotionTotal(Base):
    """The emotion distribution of all calls, which would otherwise sum every call's ``call_emotions``. A count
    that falls to 0 keeps its row."""

    __tablename__ = "emotion_totals"

    emotion: Mapped[str] = mapped_column(String(32), primary_key=True)
    count: Mapped[int] = mapped_column(Integer)


class Turn(Base):
    __tablename__ = "turns"
    __table_args__ = (
        CheckConstraint(one_of("role", TURN_ROLES), name="role"),
        UniqueConstraint("call_id", "idx"),
        Index("ix_turns_emotion", "emotion", sqlite_where=text("emotion IS NOT NULL"),
              postgresql_where=text("emotion IS NOT NULL")),
        Index("ix_turns_v2v_s", "v2v_s", sqlite_where=text("v2v_s IS NOT NULL"),
              postgresql_where=text("v2v_s IS NOT NULL")),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    call_id: Mapped[str] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"))
    idx: Mapped[int] = mapped_column(Integer)
    speaker: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(16))
    start_ms: Mapped[int] = mapped_column(Integer)
    end_ms: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    heard_text: Mapped[str | None] = mapped_column(Text)
    emotion: Mapped[str | None] = mapped_column(String(32))
    language: Mapped[str | None] = mapped_column(String(16))
    latency: Mapped[dict[str, Any] | None]
    v2v_s: Mapped[float | None] = mapped_column(Float)


class Tag(Base):
    __tablename__ = "tags"
    __table_args__ = (
        CheckConstraint(one_of("kind", TAG_KINDS), name="kind"),
        UniqueConstraint("call_id", "name", "kind"),
        # name first: the tag filter and the tag distribution read it without touching the table
        Index("ix_tags_name", "name", "effective", "call_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    call_id: Mapped[str] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(8))
    effective: Mapped[bool] = mapped_column(Boolean, default=False)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        CheckConstraint(one_of("kind", JOB_KINDS), name="kind"),
        CheckConstraint(one_of("status", JOB_STATUSES), name="status"),
        Index("ix_jobs_status_not_before", "status", "not_before"),
        Index("ix_jobs_call_id", "call_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    call_id: Mapped[str] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default="queued")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    not_before: Mapped[datetime]
    created_at: Mapped[datetime] = mapped_column(default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(default=utc_now)
