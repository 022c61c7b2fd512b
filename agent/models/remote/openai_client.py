"""One client for every OpenAI-compatible server (vLLM, llama.cpp, Ollama, OpenAI): streaming chat,
structured output, health, timeouts and retries, over one pooled aiohttp session per server.

Streams fail in one of two ways: before the first token (``ServerUnavailable``, with a reason a
caller can fall back on and count) or after it (the reply ends where it is; ``StreamBroken``).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

log = logging.getLogger(__name__)


class ServerUnavailable(Exception):
    """The server gave no answer to work with; ``reason`` is a short label (refused, http_5xx, ...)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


class StreamBroken(Exception):
    """A stream that had started stopped before its end (the server died, or went silent)."""


class OpenAICompatibleClient:
    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        connect_timeout_s: float = 1.0,
        read_timeout_s: float = 30.0,
        max_connections: int = 64,
    ) -> None:
        """``base_url`` is the server's root (``http://host:port``) or its ``/v1`` URL."""
        root = base_url.rstrip("/")
        self.root = root.removesuffix("/v1")
        self.v1 = self.root + "/v1"
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._connect_timeout_s = connect_timeout_s
        self._read_timeout_s = read_timeout_s
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self._max_connections)
            self._session = aiohttp.ClientSession(connector=connector, headers=self._headers)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("OpenAICompatibleClient.start() was not awaited")
        return self._session

    async def health(self, timeout_s: float = 2.0) -> bool:
        """True when the server says it can serve: /health (vLLM, llama.cpp), else /v1/models."""
        for url in (self.root + "/health", self.v1 + "/models"):
            try:
                async with self.session.get(url, timeout=aiohttp.ClientTimeout(total=timeout_s)) as response:
                    if response.status == 200:
                        return True
                    if response.status != 404:
                        return False
            except (TimeoutError, aiohttp.ClientError, OSError):
                return False
        return False

    async def models(self) -> list[str]:
        async with self.session.get(self.v1 + "/models", timeout=self._timeout(total=True)) as response:
            response.raise_for_status()
            return [model["id"] for model in (await response.json()).get("data", [])]

    async def metrics_text(self) -> str:
        """The server's Prometheus metrics (vLLM serves them at /metrics)."""
        async with self.session.get(self.root + "/metrics", timeout=self._timeout(total=True)) as response:
            response.raise_for_status()
            return await response.text()

    async def stream_chat(self, body: dict[str, Any], first_token_timeout_s: float) -> AsyncIterator[str]:
        """Yield the reply's text deltas of a ``/chat/completions`` request with ``stream: true``.

        Leaving the loop early closes the connection, which a vLLM server takes as an abort.
        """
        body = {**body, "stream": True}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + first_token_timeout_s
        try:
            response = await asyncio.wait_for(
                self.session.post(self.v1 + "/chat/completions", json=body, timeout=self._timeout()),
                first_token_timeout_s,
            )
        except TimeoutError:
            raise ServerUnavailable("first_token_timeout", f"no answer within {first_token_timeout_s}s") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise ServerUnavailable("refused", f"{type(exc).__name__}: {exc}") from None
        async with response:
            if response.status != 200:
                detail = (await response.text())[:300]
                kind = "http_5xx" if response.status >= 500 else "http_4xx"
                raise ServerUnavailable(kind, f"HTTP {response.status}: {detail}")
            lines = _sse_data(response.content)
            started = finished = False
            try:
                while not finished:
                    wait = self._read_timeout_s if started else max(0.0, deadline - loop.time())
                    try:
                        data = await asyncio.wait_for(anext(lines), wait)
                    except StopAsyncIteration:
                        break
                    finished = data == "[DONE]"
                    if not finished and (delta := _delta(data)):
                        started = True
                        yield delta
            except TimeoutError:
                if not started:
                    detail = f"no token within {first_token_timeout_s}s"
                    raise ServerUnavailable("first_token_timeout", detail) from None
                raise StreamBroken(f"no token for {self._read_timeout_s}s") from None
            except (aiohttp.ClientError, OSError, ValueError) as exc:
                if not started:
                    raise ServerUnavailable("stream_broken", f"{type(exc).__name__}: {exc}") from None
                raise StreamBroken(f"{type(exc).__name__}: {exc}") from None
            finally:
                await lines.aclose()
            if not finished:  # the connection ended without the stream's end marker
                if not started:
                    raise ServerUnavailable("stream_broken", "the stream ended before any token")
                raise StreamBroken("the stream ended before its end marker")

    async def chat_json(
        self,
        body: dict[str, Any],
        schema: dict[str, Any] | None = None,
        *,
        attempts: int = 3,
        backoff_s: float = 1.0,
        timeout_s: float = 300.0,
    ) -> dict[str, Any]:
        """A non-streamed completion parsed as JSON, constrained to ``schema`` where the server supports it.

        Retried with exponential backoff on a refused connection, a 5xx or output that is not JSON;
        the last failure is raised as ``ServerUnavailable``.
        """
        body = {**body, "stream": False}
        if schema is not None:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": schema, "strict": True},
            }
        last: ServerUnavailable | None = None
        for attempt in range(attempts):
            if attempt:
                await asyncio.sleep(backoff_s * 2 ** (attempt - 1))
            try:
                async with self.session.post(
                    self.v1 + "/chat/completions", json=body, timeout=aiohttp.ClientTimeout(total=timeout_s)
                ) as response:
                    text = await response.text()
                    if response.status >= 500:
                        last = ServerUnavailable("http_5xx", f"HTTP {response.status}: {text[:300]}")
                        continue
                    if response.status != 200:
                        raise ServerUnavailable("http_4xx", f"HTTP {response.status}: {text[:300]}")
                content = json.loads(text)["choices"][0]["message"]["content"]
                return json.loads(content)
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                last = ServerUnavailable("refused", f"{type(exc).__name__}: {exc}")
            except (ValueError, KeyError, IndexError, TypeError) as exc:
                last = ServerUnavailable("bad_output", f"the answer is not the JSON asked for: {exc}")
            log.warning("%s: attempt %d of %d failed: %s", self.v1, attempt + 1, attempts, last)
        assert last is not None
        raise last

    def _timeout(self, total: bool = False) -> aiohttp.ClientTimeout:
        if total:
            return aiohttp.ClientTimeout(total=self._connect_timeout_s + self._read_timeout_s)
        return aiohttp.ClientTimeout(total=None, connect=self._connect_timeout_s, sock_connect=self._connect_timeout_s)


async def _sse_data(content: aiohttp.StreamReader) -> AsyncIterator[str]:
    """The ``data:`` payloads of a server-sent event stream, one per event."""
    async for raw in content:
        line = raw.decode("utf-8").strip()
        if line.startswith("data:"):
            yield line[5:].strip()


def _delta(data: str) -> str:
    event = json.loads(data)
    if "error" in event:
        raise ValueError(f"the server reported an error: {event['error']}")
    choices = event.get("choices") or []
    return (choices[0].get("delta") or {}).get("content") or "" if choices else ""
