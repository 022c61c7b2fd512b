"""Alembic environment: the store's own engine (async drivers), migrations run through ``run_sync``."""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy import text
from sqlalchemy.engine import Connection

from agent.calls.store.database import DEFAULT_CONNECT_TIMEOUT_S, create_engine, normalize_url
from agent.calls.store.models import Base

URL_VARIABLE = "VOICE_AGENT_RECORDS__DATABASE_URL"
# two servers starting at once on one PostgreSQL: the second waits for the first one's migration
MIGRATION_LOCK_KEY = 7_301_190_011

config = context.config


def database_url():
    url = config.attributes.get("url") or context.get_x_argument(as_dictionary=True).get("url")
    url = url or os.environ.get(URL_VARIABLE) or config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit(f"no database: pass -x url=... or set {URL_VARIABLE}")
    return normalize_url(url)


def include_object(obj, name, type_, reflected, compare_to) -> bool:
    # the full-text index (FTS5 tables on SQLite, calls.search_* columns) is not in the models
    if type_ == "table" and name and name.startswith("call_search"):
        return False
    return not (type_ in ("column", "index") and name and name.startswith(("search_", "ix_calls_search")))


def run_migrations(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=Base.metadata, include_object=include_object,
                      compare_type=True, render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        context.run_migrations()


async def run_online() -> None:
    timeout = config.attributes.get("connect_timeout_s", DEFAULT_CONNECT_TIMEOUT_S)
    engine = create_engine(database_url(), immediate=True, connect_timeout_s=timeout)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(run_migrations)
            await connection.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    context.configure(url=database_url(), target_metadata=Base.metadata, literal_binds=True,
                      include_object=include_object)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(run_online())
