"""What callers hand to the store, and what it raises."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Viewer:
    """Who asks. ``None`` in place of a viewer means "no auth": everything is visible."""

    user_id: int
    is_admin: bool


class StoreUnavailable(Exception):
    """The database cannot be reached (routes answer 503); the message says what to check."""


class CallNotFound(LookupError):
    """A write named a call that does not exist (never created, or deleted meanwhile)."""


@dataclass
class TurnIn:
    speaker: str
    role: str
    start_ms: int
    end_ms: int
    text: str
    heard_text: str | None = None
    emotion: str | None = None
    language: str | None = None
    latency: dict | None = None


@dataclass
class CallFilter:
    tag: str | None = None
    start_date: datetime | None = None
    end_date: datetime | None = None
    q: str | None = None
    language: str | None = None
    source: str | None = None
    status: str | None = None
    limit: int = 100
    skip: int = 0

    def narrows(self) -> bool:
        """Whether any condition (not just the page) is set."""
        return any(
            value is not None
            for value in (self.tag, self.start_date, self.end_date, self.q, self.language, self.source, self.status)
        )
