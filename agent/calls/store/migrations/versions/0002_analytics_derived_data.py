"""Derived data for analytics at scale, backfilled from the calls and turns already stored.

Revision ID: 0002
Revises: 0001
Created: 2025-12-02

Written by hand. Analytics over 100,000 calls took half a second: each query read every turn or unpacked every
call's language list. The store now keeps, in the transaction that writes what they derive from:
- ``calls.started_day`` (the UTC date of ``started_at``) and ``calls.v2v_count`` (the call's turns that have a
  ``v2v_s``), indexed with ``turn_count``: the totals, the calls per day and the size of the median's population
  come from one index.
- ``call_languages``: one row per entry of ``calls.languages``, for the language filter and distribution.
- ``call_emotions``: per call, how many turns carry each emotion; ``emotion_totals``: the same over all calls,
  for the distribution of everything (it would otherwise sum some 450,000 rows at 100,000 calls).
- SQLite only: ``ix_calls_search_started_at`` (``started_at, id, search_rowid``), so that a search walking the
  calls newest first checks each call against the matching documents from the index, not the table.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    dialect = op.get_context().dialect.name
    op.add_column("calls", sa.Column("started_day", sa.Date(), nullable=True))
    op.add_column("calls", sa.Column("v2v_count", sa.Integer(), nullable=False, server_default=sa.text("0")))
    op.create_table(
        "call_languages",
        sa.Column("call_id", sa.String(32), sa.ForeignKey("calls.id", ondelete="CASCADE",
                                                          name=op.f("fk_call_languages_call_id_calls")),
                  nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("language", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("call_id", "position", name=op.f("pk_call_languages")),
    )
    op.create_table(
        "call_emotions",
        sa.Column("call_id", sa.String(32), sa.ForeignKey("calls.id", ondelete="CASCADE",
                                                          name=op.f("fk_call_emotions_call_id_calls")),
                  nullable=False),
        sa.Column("emotion", sa.String(32), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("call_id", "emotion", name=op.f("pk_call_emotions")),
    )
    op.create_table(
        "emotion_totals",
        sa.Column("emotion", sa.String(32), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("emotion", name=op.f("pk_emotion_totals")),
    )

    if dialect == "postgresql":
        day = "(timezone('UTC', started_at))::date"
        languages = ("SELECT calls.id, listed.ordinality - 1, listed.value FROM calls CROSS JOIN "
                     "jsonb_array_elements_text(calls.languages) WITH ORDINALITY AS listed(value, ordinality)")
    else:
        day = "substr(started_at, 1, 10)"  # SQLite keeps UTC times as 'YYYY-MM-DD HH:MM:SS.ffffff'
        languages = ("SELECT calls.id, listed.key, listed.value FROM calls "
                     "CROSS JOIN json_each(calls.languages) AS listed")
    op.execute(f"UPDATE calls SET started_day = {day}")
    op.execute("UPDATE calls SET v2v_count = (SELECT count(*) FROM turns WHERE turns.call_id = calls.id "
               "AND turns.v2v_s IS NOT NULL)")
    op.execute(f"INSERT INTO call_languages (call_id, position, language) {languages} WHERE listed.value IS NOT NULL")
    op.execute("INSERT INTO call_emotions (call_id, emotion, count) SELECT call_id, emotion, count(*) FROM turns "
               "WHERE emotion IS NOT NULL GROUP BY call_id, emotion")
    op.execute("INSERT INTO emotion_totals (emotion, count) SELECT emotion, sum(count) FROM call_emotions "
               "GROUP BY emotion")

    op.create_index("ix_calls_started_day", "calls", ["started_day", "turn_count", "v2v_count"])
    op.create_index("ix_call_languages_language", "call_languages", ["language", "call_id"])
    op.create_index("ix_call_emotions_emotion", "call_emotions", ["emotion", "count"])
    if dialect == "sqlite":
        op.create_index("ix_calls_search_started_at", "calls", ["started_at", "id", "search_rowid"])


def downgrade() -> None:
    if op.get_context().dialect.name == "sqlite":
        op.drop_index("ix_calls_search_started_at", "calls")
    op.drop_table("emotion_totals")
    op.drop_table("call_emotions")
    op.drop_table("call_languages")
    op.drop_index("ix_calls_started_day", "calls")
    op.drop_column("calls", "v2v_count")
    op.drop_column("calls", "started_day")
