"""Call records: users, tokens, calls, turns, tags, jobs, and the full-text search over what was said.

Revision ID: 0001
Revises:
Created: 2025-01-01

Written by hand. Full-text search keeps one document per call (the text of all its turns), maintained by the
store when turns are added or replaced:
- SQLite: the FTS5 table ``call_search`` (rowid in ``calls.search_rowid``); a trigger drops a call's document
  when the call is deleted.
- PostgreSQL: ``calls.search_vector`` (tsvector, 'simple' configuration so that every language is indexed
  word by word) with a GIN index.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, TSVECTOR

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(JSONB(), "postgresql")
TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    dialect = op.get_context().dialect.name
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.CheckConstraint("role IN ('user', 'admin')", name=op.f("ck_users_role")),
        sa.UniqueConstraint("name", name=op.f("uq_users_name")),
    )
    op.create_table(
        "tokens",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("users.id", ondelete="CASCADE",
                                                         name=op.f("fk_tokens_user_id_users")), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("expires_at", TIME, nullable=False),
        sa.Column("revoked_at", TIME, nullable=True),
        sa.UniqueConstraint("token_hash", name=op.f("uq_tokens_token_hash")),
    )
    op.create_index(op.f("ix_tokens_user_id"), "tokens", ["user_id"])

    op.create_table(
        "calls",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("owner_id", sa.Integer(), sa.ForeignKey("users.id", ondelete="SET NULL",
                                                          name=op.f("fk_calls_owner_id_users")), nullable=True),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("file_name", sa.String(512), nullable=True),
        sa.Column("content_hash", sa.String(64), nullable=True),
        sa.Column("started_at", TIME, nullable=False),
        sa.Column("ended_at", TIME, nullable=True),
        sa.Column("duration_s", sa.Float(), nullable=True),
        sa.Column("languages", JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("progress", sa.Float(), nullable=False),
        sa.Column("audio_path", sa.String(1024), nullable=True),
        sa.Column("audio_mime", sa.String(128), nullable=True),
        sa.Column("analysis", JSON, nullable=True),
        sa.Column("analysis_version", sa.Integer(), nullable=True),
        sa.Column("turn_count", sa.Integer(), nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("updated_at", TIME, nullable=False),
        sa.CheckConstraint("source IN ('live', 'upload')", name=op.f("ck_calls_source")),
        sa.CheckConstraint("status IN ('pending', 'processing', 'done', 'failed')", name=op.f("ck_calls_status")),
        sa.CheckConstraint("progress >= 0 AND progress <= 1", name=op.f("ck_calls_progress")),
    )
    op.create_index("ix_calls_owner_id_started_at", "calls", ["owner_id", "started_at", "id"])
    op.create_index("ix_calls_started_at", "calls", ["started_at", "id"])
    op.create_index("ix_calls_status", "calls", ["status"])
    op.create_index("ix_calls_content_hash", "calls", ["content_hash"])

    op.create_table(
        "turns",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("call_id", sa.String(32), sa.ForeignKey("calls.id", ondelete="CASCADE",
                                                          name=op.f("fk_turns_call_id_calls")), nullable=False),
        sa.Column("idx", sa.Integer(), nullable=False),
        sa.Column("speaker", sa.String(64), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("start_ms", sa.Integer(), nullable=False),
        sa.Column("end_ms", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("heard_text", sa.Text(), nullable=True),
        sa.Column("emotion", sa.String(32), nullable=True),
        sa.Column("language", sa.String(16), nullable=True),
        sa.Column("latency", JSON, nullable=True),
        sa.Column("v2v_s", sa.Float(), nullable=True),
        sa.CheckConstraint("role IN ('user', 'assistant')", name=op.f("ck_turns_role")),
        sa.UniqueConstraint("call_id", "idx", name=op.f("uq_turns_call_id_idx")),
    )
    op.create_index("ix_turns_emotion", "turns", ["emotion"], sqlite_where=sa.text("emotion IS NOT NULL"),
                    postgresql_where=sa.text("emotion IS NOT NULL"))
    op.create_index("ix_turns_v2v_s", "turns", ["v2v_s"], sqlite_where=sa.text("v2v_s IS NOT NULL"),
                    postgresql_where=sa.text("v2v_s IS NOT NULL"))

    op.create_table(
        "tags",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("call_id", sa.String(32), sa.ForeignKey("calls.id", ondelete="CASCADE",
                                                          name=op.f("fk_tags_call_id_calls")), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("effective", sa.Boolean(), nullable=False),
        sa.CheckConstraint("kind IN ('ai', 'user')", name=op.f("ck_tags_kind")),
        sa.UniqueConstraint("call_id", "name", "kind", name=op.f("uq_tags_call_id_name_kind")),
    )
    op.create_index("ix_tags_name", "tags", ["name", "effective", "call_id"])

    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("call_id", sa.String(32), sa.ForeignKey("calls.id", ondelete="CASCADE",
                                                          name=op.f("fk_jobs_call_id_calls")), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("not_before", TIME, nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("updated_at", TIME, nullable=False),
        sa.CheckConstraint("kind IN ('transcribe', 'analyze')", name=op.f("ck_jobs_kind")),
        sa.CheckConstraint("status IN ('queued', 'running', 'done', 'failed')", name=op.f("ck_jobs_status")),
    )
    op.create_index("ix_jobs_status_not_before", "jobs", ["status", "not_before"])
    op.create_index("ix_jobs_call_id", "jobs", ["call_id"])

    if dialect == "sqlite":
        op.add_column("calls", sa.Column("search_rowid", sa.Integer(), nullable=True))
        op.execute("CREATE VIRTUAL TABLE call_search USING fts5(body, tokenize = 'unicode61 remove_diacritics 2')")
        op.execute(
            "CREATE TRIGGER call_search_delete AFTER DELETE ON calls WHEN old.search_rowid IS NOT NULL "
            "BEGIN DELETE FROM call_search WHERE rowid = old.search_rowid; END"
        )
    elif dialect == "postgresql":
        op.add_column("calls", sa.Column("search_vector", TSVECTOR(), nullable=True))
        op.create_index("ix_calls_search_vector", "calls", ["search_vector"], postgresql_using="gin")


def downgrade() -> None:
    dialect = op.get_context().dialect.name
    if dialect == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS call_search_delete")
        op.execute("DROP TABLE IF EXISTS call_search")
    for table in ("jobs", "tags", "turns", "calls", "tokens", "users"):
        op.drop_table(table)
