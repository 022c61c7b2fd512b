"""Full-text search over what was said in a call: one document per call, in the dialect's own index.

Users' words are never passed as query syntax: each whitespace-separated word becomes a quoted phrase (FTS5)
or goes through ``plainto_tsquery`` (PostgreSQL), and a call matches when it contains every word.
"""

from __future__ import annotations

from typing import Protocol

from sqlalchemy import ColumnElement, bindparam, column, false, func, literal_column, select, table, text
from sqlalchemy.ext.asyncio import AsyncSession

# "simple": no stemming and no stop words, so that every language is indexed (and found) word by word
PG_CONFIGURATION = "'simple'::regconfig"
CALL_SEARCH = table("call_search", column("rowid"))


# Case is folded here, in Python, for both indexes: PostgreSQL's lowercasing follows the database's locale
# (under C it leaves "CRÈME" as "crÈme"), and FTS5's knows only Unicode 6.1 (it does not fold "Ʝ" to "ʝ").
def search_words(q: str) -> list[str]:
    """The words of a query, lowercased: whitespace-separated pieces that hold at least one letter or digit."""
    return [word for word in q.lower().replace("\x00", " ").split() if any(ch.isalnum() for ch in word)]


def document(texts: list[str]) -> str:
    return "\n".join(texts).lower()


class SearchIndex(Protocol):
    def condition(self, q: str) -> ColumnElement[bool]:
        """True for the calls whose turns contain every word of ``q``."""

    async def append(self, session: AsyncSession, call_id: str, texts: list[str]) -> None: ...

    async def replace(self, session: AsyncSession, call_id: str, texts: list[str]) -> None: ...


class SqliteSearch:
    """FTS5 table ``call_search(body)``; its rowid is kept in ``calls.search_rowid``. A trigger of the migration
    deletes the document with its call."""

    def condition(self, q: str) -> ColumnElement[bool]:
        words = search_words(q)
        if not words:
            return false()
        phrases = " ".join('"' + word.replace('"', '""') + '"' for word in words)
        matches = select(CALL_SEARCH.c.rowid).where(literal_column("call_search").op("MATCH")(bindparam(None, phrases)))
        return literal_column("calls.search_rowid").in_(matches)

    async def append(self, session: AsyncSession, call_id: str, texts: list[str]) -> None:
        if not texts:
            return
        rowid = await session.scalar(text("SELECT search_rowid FROM calls WHERE id = :id"), {"id": call_id})
        if rowid is None:
            await self._insert(session, call_id, document(texts))
        else:
            await session.execute(text("UPDATE call_search SET body = body || char(10) || :body WHERE rowid = :r"),
                                  {"body": document(texts), "r": rowid})

    async def replace(self, session: AsyncSession, call_id: str, texts: list[str]) -> None:
        rowid = await session.scalar(text("SELECT search_rowid FROM calls WHERE id = :id"), {"id": call_id})
        if rowid is None:
            if texts:
                await self._insert(session, call_id, document(texts))
        else:
            await session.execute(text("UPDATE call_search SET body = :body WHERE rowid = :r"),
                                  {"body": document(texts), "r": rowid})

    @staticmethod
    async def _insert(session: AsyncSession, call_id: str, body: str) -> None:
        result = await session.execute(text("INSERT INTO call_search (body) VALUES (:body)"), {"body": body})
        await session.execute(text("UPDATE calls SET search_rowid = :r WHERE id = :id"),
                              {"r": result.lastrowid, "id": call_id})


class PostgresSearch:
    """``calls.search_vector`` (tsvector) with a GIN index."""

    def condition(self, q: str) -> ColumnElement[bool]:
        words = search_words(q)
        if not words:
            return false()
        query = func.plainto_tsquery(literal_column(PG_CONFIGURATION), bindparam(None, " ".join(words)))
        return literal_column("calls.search_vector").op("@@")(query)

    async def append(self, session: AsyncSession, call_id: str, texts: list[str]) -> None:
        if texts:
            await session.execute(
                text("UPDATE calls SET search_vector = coalesce(search_vector, ''::tsvector) || "
                     f"to_tsvector({PG_CONFIGURATION}, :body) WHERE id = :id"),
                {"body": document(texts), "id": call_id})

    async def replace(self, session: AsyncSession, call_id: str, texts: list[str]) -> None:
        await session.execute(
            text(f"UPDATE calls SET search_vector = to_tsvector({PG_CONFIGURATION}, :body) WHERE id = :id"),
            {"body": document(texts), "id": call_id})


def search_index(dialect: str) -> SearchIndex:
    return PostgresSearch() if dialect == "postgresql" else SqliteSearch()
