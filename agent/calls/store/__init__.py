"""Call records: SQLAlchemy models, the store's queries, and the Alembic migrations applied at open."""

from agent.calls.store.schemas import (
    Analytics,
    CallDetail,
    CallSummary,
    JobOut,
    TurnOut,
    UserOut,
    UserRow,
)
from agent.calls.store.store import RecordStore
from agent.calls.store.values import CallFilter, CallNotFound, StoreUnavailable, TurnIn, Viewer

__all__ = [
    "Analytics",
    "CallDetail",
    "CallFilter",
    "CallNotFound",
    "CallSummary",
    "JobOut",
    "RecordStore",
    "StoreUnavailable",
    "TurnIn",
    "TurnOut",
    "UserOut",
    "UserRow",
    "Viewer",
]
