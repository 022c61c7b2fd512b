"""Accounts and access: register, log in, log out; the token and origin checks in front of every route.

``auth.mode: off`` (one person on 127.0.0.1): nothing is asked, every record is visible. ``token``:
``/api`` (but logging in and the API docs), ``POST /offer``, ``/v1`` and WebSockets need a bearer token,
in the ``Authorization`` header, as ``?access_token=`` on GET (an ``<audio>`` element cannot send
headers), or in the ``openai-insecure-api-key.<token>`` WebSocket subprotocol that browsers must use.
Cross-origin requests are refused unless their origin is in ``server.allowed_origins``.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp_pydantic.oas.typing import r200, r201, r204, r400, r401, r403, r409, r429
from pydantic import BaseModel, Field

from agent.calls import accounts
from agent.calls.records import OPENING_WAIT_S
from agent.calls.store import RecordStore, UserOut, Viewer
from agent.config import Config
from agent.server.api import CONFIG_KEY, RECORDS_KEY, TOKEN_HASH, USER, VIEWER, ApiView
from agent.server.errors import ApiError, error_response

log = logging.getLogger(__name__)

LIMITER_KEY = web.AppKey("login_limiter", accounts.LoginLimiter)
OPEN_PATHS = ("/api/auth/login", "/api/auth/register", "/api/openapi.json", "/api/docs")
WS_TOKEN_PREFIX = "openai-insecure-api-key."
NAME_PATTERN = r"^[A-Za-z0-9_.@-]{1,64}$"


def needs_access_check(path: str) -> bool:
    return path.startswith(("/api/", "/v1/")) or path in ("/offer", "/ws")


def _is_open(path: str) -> bool:
    return any(path == p or path.startswith(p + "/") for p in OPEN_PATHS)


def origin_allowed(request: web.Request, allowed: list[str]) -> bool:
    origin = request.headers.get("Origin")
    if origin is None:
        return True  # not a browser's cross-site request: a script, curl, a native client
    if origin in allowed:
        return True
    return urlsplit(origin).netloc.lower() == (request.host or "").lower()


def _token_of(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip() or None
    for protocol in request.headers.get("Sec-WebSocket-Protocol", "").split(","):
        if protocol.strip().startswith(WS_TOKEN_PREFIX):
            return protocol.strip()[len(WS_TOKEN_PREFIX) :] or None
    if request.method in ("GET", "HEAD"):
        return request.query.get("access_token") or None
    return None


def access_middleware(config: Config):
    token_mode = config.auth.mode == "token"
    allowed = list(config.server.allowed_origins)

    @web.middleware
    async def check_access(request: web.Request, handler) -> web.StreamResponse:
        request[VIEWER] = None
        if not needs_access_check(request.path):
            return await handler(request)
        if not origin_allowed(request, allowed):
            return error_response(
                403, f"origin {request.headers['Origin']} is not allowed; add it to server.allowed_origins"
            )
        if request.path.startswith("/api/") or token_mode:
            await request.app[RECORDS_KEY].opened(OPENING_WAIT_S)
        if not token_mode:
            return await handler(request)
        token = _token_of(request)
        if token is not None:
            token_hash = accounts.token_hash(token)
            user = await request.app[RECORDS_KEY].store.user_for_token(token_hash, datetime.now(UTC))
            if user is not None:
                request[USER], request[TOKEN_HASH] = user, token_hash
                request[VIEWER] = Viewer(user.id, user.role == "admin")
        if request.get(USER) is None and not _is_open(request.path):
            message = "log in first: POST /api/auth/login, then send Authorization: Bearer <token>"
            if token is not None:
                message = "the token is unknown, expired or revoked; log in again"
            return error_response(401, message, headers={"WWW-Authenticate": "Bearer"})
        return await handler(request)

    return check_access


class Credentials(BaseModel):
    name: Annotated[str, Field(pattern=NAME_PATTERN, description="letters, digits and _ . @ -")]
    password: Annotated[str, Field(min_length=1, max_length=1024)]


class UserReply(BaseModel):
    user: UserOut


class LoginReply(BaseModel):
    token: str
    expires_at: datetime
    user: UserOut


class ErrorReply(BaseModel):
    error: str
    detail: Any = None


def _accounts_on(view: ApiView) -> Config:
    config = view.config
    if config.auth.mode != "token":
        raise ApiError(400, "accounts are off on this server (auth.mode: off); nothing to log in to")
    return config


async def create_account(store: RecordStore, name: str, password: str, role: str) -> UserOut:
    """Shared by the register route and ``voice-agent user add``."""
    if problem := accounts.password_problem(password):
        raise ApiError(400, problem)
    password_hash = await asyncio.to_thread(accounts.hash_password, password)
    try:
        return await store.create_user(name, password_hash, role)
    except ValueError:
        raise ApiError(409, f"the name {name!r} is taken; pick another") from None


class RegisterView(ApiView):
    async def post(self, credentials: Credentials) -> r201[UserReply] | r400[ErrorReply] | r403[ErrorReply] | r409[
        ErrorReply
    ]:
        """Create an account (when ``auth.allow_registration``)."""
        config = _accounts_on(self)
        if not config.auth.allow_registration:
            raise ApiError(403, "registration is closed on this server; ask an admin (voice-agent user add)")
        user = await create_account(self.records.store, credentials.name, credentials.password, "user")
        log.info("account %s registered", user.name)
        return web.json_response(UserReply(user=user).model_dump(mode="json"), status=201)


class LoginView(ApiView):
    async def post(self, credentials: Credentials) -> r200[LoginReply] | r401[ErrorReply] | r429[ErrorReply]:
        """Exchange a name and password for a bearer token."""
        config = _accounts_on(self)
        limiter = self.request.app[LIMITER_KEY]
        address = self.request.remote or "unknown"
        if (wait := limiter.retry_after(credentials.name, address)) is not None:
            return error_response(
                429, f"too many failed logins; try again in {wait:.0f} s", headers={"Retry-After": f"{wait:.0f}"}
            )
        row = await self.records.store.user_by_name(credentials.name)
        valid = await asyncio.to_thread(accounts.verify_password, row.password_hash if row else None,
                                        credentials.password)
        if not valid:
            limiter.failed(credentials.name, address)
            log.info("failed login for %r from %s", credentials.name, address)
            raise ApiError(401, "wrong name or password")
        limiter.succeeded(credentials.name)
        token, token_hash = accounts.new_token()
        expires_at = accounts.expiry(config.auth.token_ttl_hours)
        await self.records.store.add_token(row.id, token_hash, expires_at)
        user = UserOut.model_validate(row, from_attributes=True)
        return web.json_response(LoginReply(token=token, expires_at=expires_at, user=user).model_dump(mode="json"))


class LogoutView(ApiView):
    async def post(self) -> r204 | r401[ErrorReply]:
        """Revoke the token this request carries."""
        if (token_hash := self.request.get(TOKEN_HASH)) is not None:
            await self.records.store.revoke_token(token_hash)
        return web.Response(status=204)


class MeView(ApiView):
    async def get(self) -> r200[UserReply] | r401[ErrorReply]:
        """The account of this token (404 while auth is off)."""
        if self.user is None:
            raise ApiError(404, "no account: auth.mode is off")
        return web.json_response(UserReply(user=self.user).model_dump(mode="json"))


def add_routes(app: web.Application) -> None:
    config = app[CONFIG_KEY]
    app[LIMITER_KEY] = accounts.LoginLimiter(config.auth.login_attempts, config.auth.login_window_seconds)
    app.router.add_view("/api/auth/register", RegisterView)
    app.router.add_view("/api/auth/login", LoginView)
    app.router.add_view("/api/auth/logout", LogoutView)
    app.router.add_view("/api/auth/me", MeView)

