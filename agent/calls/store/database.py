"""Engines for the records database: SQLite (aiosqlite, WAL) or PostgreSQL (asyncpg), and its migrations."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

from sqlalchemy import event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from agent.calls.store.values import StoreUnavailable

log = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).parent
ALEMBIC_INI = PACKAGE_DIR / "alembic.ini"

DEFAULT_CONNECT_TIMEOUT_S = 5.0
SQLITE_BUSY_TIMEOUT_S = 10.0  # a write waits this long for another process's write to finish
APPLICATION_NAME = "voice-agent"

# SQLite errors that mean "the file cannot be used now", not "the statement is wrong"
_SQLITE_UNAVAILABLE = ("database is locked", "unable to open", "disk i/o error", "disk is full", "readonly database",
                       "not a database")
# PostgreSQL SQLSTATE classes: connection exception, insufficient resources, operator intervention,
# invalid authorization, and "database does not exist"
# Alembic keeps its context in module globals: two upgrades at once in one process would share it.
_UPGRADE_LOCK = threading.Lock()
_PG_UNAVAILABLE = ("08", "53", "57", "28", "3D000")


def normalize_url(url: str | URL) -> URL:
    """The URL with its async driver: ``sqlite://`` becomes aiosqlite, ``postgresql://`` asyncpg."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if parsed.get_driver_name() not in ("pysqlite", "aiosqlite"):
            raise ValueError(f"unsupported SQLite driver in {parsed.drivername!r}: use sqlite+aiosqlite://")
        if not parsed.database or parsed.database == ":memory:":
            raise ValueError("the records database must be a file: sqlite+aiosqlite:////path/to/records.db")
        return parsed.set(drivername="sqlite+aiosqlite")
    if backend in ("postgresql", "postgres"):
        if parsed.get_driver_name() not in ("psycopg2", "asyncpg", "postgres", "postgresql"):
            raise ValueError(f"unsupported PostgreSQL driver in {parsed.drivername!r}: use postgresql+asyncpg://")
        return parsed.set(drivername="postgresql+asyncpg")
    raise ValueError(f"unsupported records database {parsed.drivername!r}: use SQLite or PostgreSQL")


def create_engine(url: str | URL, *, immediate: bool = False,
                  connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S) -> AsyncEngine:
    """An engine for ``url``. On SQLite, ``immediate`` makes each transaction take the write lock at BEGIN,
    so that a read-then-write transaction never fails half way because another process wrote meanwhile."""
    url = normalize_url(url)
    if url.get_backend_name() == "postgresql":
        return create_async_engine(
            url, pool_pre_ping=True,
            connect_args={"timeout": connect_timeout_s, "server_settings": {"application_name": APPLICATION_NAME}},
        )
    engine = create_async_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})
    begin = "BEGIN IMMEDIATE" if immediate else "BEGIN"

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:
        # the driver's own implicit transactions are switched off; the "begin" event below opens real ones
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
        _switch_to_wal(cursor)
        for pragma in ("foreign_keys=ON", "synchronous=NORMAL"):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection) -> None:
        connection.exec_driver_sql(begin)

    return engine


def _switch_to_wal(cursor) -> None:
    """WAL mode, waiting out another process doing the same: SQLite answers "database is locked" at once to a
    journal-mode change that meets another's lock on a fresh file, without waiting for the busy timeout."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_S
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except Exception as exc:  # sqlite3.OperationalError, as the driver passes it on
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def describe_failure(url: URL, exc: BaseException) -> str:
    """A message saying what could not be reached and what to check."""
    reason = f"{type(exc).__name__}: {exc}".strip()
    if url.get_backend_name() == "sqlite":
        return (f"cannot use the records database {url.database} ({reason}); check that its folder exists and is "
                "writable, and that no other program keeps it locked")
    return (f"cannot reach the records database {url.render_as_string(hide_password=True)} ({reason}); check that "
            "PostgreSQL is running and listening at that host and port, the user and password in "
            "records.database_url, and that the database exists")


def is_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` means the database cannot be reached or used now (as opposed to a wrong statement)."""
    if isinstance(exc, OSError | TimeoutError | ConnectionError):
        return True
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        sqlstate = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
        if sqlstate:
            return any(str(sqlstate).startswith(prefix) for prefix in _PG_UNAVAILABLE)
        message = str(exc.orig).lower()
        return any(part in message for part in _SQLITE_UNAVAILABLE)
    try:
        import asyncpg
    except ImportError:  # pragma: no cover - asyncpg is a dependency
        return False
    return isinstance(exc, asyncpg.PostgresConnectionError | asyncpg.InterfaceError) or (
        isinstance(exc, asyncpg.PostgresError) and any(exc.sqlstate.startswith(p) for p in _PG_UNAVAILABLE))


class Database:
    """The engines of one records database: reads, and writes (on SQLite one writer at a time)."""

    def __init__(self, url: str | URL, connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S) -> None:
        self.url = normalize_url(url)
        self.connect_timeout_s = connect_timeout_s
        self.dialect = self.url.get_backend_name()
        self.read_engine = create_engine(self.url, connect_timeout_s=connect_timeout_s)
        self.write_engine = (create_engine(self.url, immediate=True, connect_timeout_s=connect_timeout_s)
                             if self.dialect == "sqlite" else self.read_engine)
        self._read = async_sessionmaker(self.read_engine, expire_on_commit=False)
        self._write = async_sessionmaker(self.write_engine, expire_on_commit=False)
        # SQLite has one writer: waiting here is cheaper than its busy-loop, and keeps BEGIN IMMEDIATE short
        self._write_lock = asyncio.Lock() if self.dialect == "sqlite" else None

    @property
    def is_postgres(self) -> bool:
        return self.dialect == "postgresql"

    def unavailable(self, exc: BaseException) -> StoreUnavailable:
        return StoreUnavailable(describe_failure(self.url, exc))

    @contextlib.asynccontextmanager
    async def reading(self) -> AsyncIterator[AsyncSession]:
        """A session whose statements see one snapshot; nothing it does is committed."""
        try:
            async with self._read() as session:
                yield session
        except Exception as exc:
            if is_unavailable(exc):
                raise self.unavailable(exc) from exc
            raise

    @contextlib.asynccontextmanager
    async def writing(self) -> AsyncIterator[AsyncSession]:
        """One transaction: committed when the block ends, rolled back entirely if it raises."""
        lock = self._write_lock or contextlib.nullcontext()
        try:
            async with lock, self._write.begin() as session:
                yield session
        except IntegrityError as exc:
            raise ValueError(f"the database refused the write: {exc.orig}") from exc
        except Exception as exc:
            if is_unavailable(exc):
                raise self.unavailable(exc) from exc
            raise

    async def probe(self) -> None:
        """Connects once; StoreUnavailable, saying what to check, if that fails for any reason."""
        try:
            async with self.read_engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
        except Exception as exc:
            raise self.unavailable(exc) from exc

    def upgrade(self) -> None:
        """``alembic upgrade head``; blocking (it runs its own event loop), so call it in a thread."""
        from alembic import command
        from alembic.config import Config

        logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)  # one line per plugin, each time
        config = Config(str(ALEMBIC_INI))
        config.attributes["url"] = self.url
        config.attributes["connect_timeout_s"] = self.connect_timeout_s
        try:
            with _UPGRADE_LOCK:
                command.upgrade(config, "head")
        except Exception as exc:
            if is_unavailable(exc):
                raise self.unavailable(exc) from exc
            raise

    async def dispose(self, optimize: bool = False) -> None:
        if optimize and self.dialect == "sqlite":
            # what SQLite advises before closing: refresh the planner's statistics where they went stale
            with contextlib.suppress(Exception):
                async with self.write_engine.begin() as connection:
                    await connection.exec_driver_sql("PRAGMA optimize")
        await self.read_engine.dispose()
        if self.write_engine is not self.read_engine:
            await self.write_engine.dispose()
