"""One way to answer an error: ``{"error": "...", "detail": ...}`` with the right status, on every route.

Handlers raise ``ApiError``; the middleware turns it, aiohttp's own HTTP errors, pydantic validation
errors, an unreachable database and anything unexpected into that shape, so a client parses one thing.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from agent import metrics
from agent.calls.store import StoreUnavailable

log = logging.getLogger(__name__)


class ApiError(Exception):
    def __init__(self, status: int, message: str, detail: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.detail = detail


def error_response(status: int, message: str, detail: Any = None, headers: dict | None = None) -> web.Response:
    body: dict[str, Any] = {"error": message}
    if detail is not None:
        body["detail"] = detail
    return web.json_response(body, status=status, headers=headers)


def validation_detail(exc: ValidationError) -> list[dict]:
    """What pydantic found, without echoing the input back (it may be huge or private)."""
    return [{"loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors(include_url=False, include_input=False)]


def validation_message(exc: ValidationError, where: str) -> str:
    first = exc.errors(include_url=False, include_input=False)[0]
    loc = ".".join(str(part) for part in first["loc"]) or where
    return f"invalid {where}: {loc}: {first['msg']}"


def _detail_of(text: str | None) -> Any:
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


@web.middleware
async def error_middleware(request: web.Request, handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.message, exc.detail)
    except ValidationError as exc:
        return error_response(400, validation_message(exc, "request"), validation_detail(exc))
    except StoreUnavailable as exc:
        metrics.ERRORS.labels(stage="records").inc()
        return error_response(503, f"the call records database is unavailable: {exc}; retry later")
    except RecursionError:
        return error_response(400, "the JSON body is nested too deeply")
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json" and _is_ours(exc.text):
            raise
        message = exc.reason if exc.status != 404 else f"no route {request.method} {request.path}"
        if exc.status == 413:
            message = f"request body too large ({exc.text})"
        response = error_response(exc.status, message, _detail_of(exc.text) if exc.status == 400 else None)
        for name in ("Allow", "WWW-Authenticate", "Retry-After"):
            if name in exc.headers:
                response.headers[name] = exc.headers[name]
        return response
    except Exception:
        metrics.ERRORS.labels(stage="http").inc()
        log.exception("%s %s failed", request.method, request.path)
        return error_response(500, "internal error; the server log has the details")


def _is_ours(text: str | None) -> bool:
    detail = _detail_of(text)
    return isinstance(detail, dict) and "error" in detail
