"""Accounts: argon2 password hashes, random bearer tokens stored only as hashes, and login rate limits."""

from __future__ import annotations

import hashlib
import secrets
import time
from collections import defaultdict, deque
from datetime import UTC, datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()
TOKEN_BYTES = 32
MIN_PASSWORD_CHARS = 8
# Hashed once so that a login for an unknown name costs the same as one for a known name.
_DUMMY_HASH = _hasher.hash("not a password of anyone's")


def hash_password(password: str) -> str:
    """Blocking (argon2 is slow on purpose): run it in an executor."""
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """Blocking, like ``hash_password``. An unknown user (None) is checked against a dummy hash."""
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def new_token() -> tuple[str, str]:
    """A bearer token for the client and the hash the store keeps of it."""
    token = secrets.token_urlsafe(TOKEN_BYTES)
    return token, token_hash(token)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def expiry(ttl_hours: float) -> datetime:
    return datetime.now(UTC) + timedelta(hours=ttl_hours)


def password_problem(password: str) -> str | None:
    if len(password) < MIN_PASSWORD_CHARS:
        return f"the password needs at least {MIN_PASSWORD_CHARS} characters"
    return None


class LoginLimiter:
    """Failed logins per account and per address within a sliding window; past the limit, refuse."""

    def __init__(self, attempts: int, window_seconds: float, clock=time.monotonic) -> None:
        self.attempts = attempts
        self.window = window_seconds
        self._clock = clock
        self._failures: dict[str, deque[float]] = defaultdict(deque)

    def _recent(self, key: str) -> deque[float]:
        failures = self._failures[key]
        cutoff = self._clock() - self.window
        while failures and failures[0] < cutoff:
            failures.popleft()
        if not failures:
            del self._failures[key]
            return deque()
        return failures

    def retry_after(self, name: str, address: str) -> float | None:
        """Seconds to wait, or None when another attempt is allowed."""
        waits = []
        for key in (f"user:{name.lower()}", f"addr:{address}"):
            failures = self._recent(key)
            if len(failures) >= self.attempts:
                waits.append(failures[0] + self.window - self._clock())
        return max(waits) if waits else None

    def failed(self, name: str, address: str) -> None:
        now = self._clock()
        for key in (f"user:{name.lower()}", f"addr:{address}"):
            self._failures[key].append(now)

    def succeeded(self, name: str) -> None:
        self._failures.pop(f"user:{name.lower()}", None)
