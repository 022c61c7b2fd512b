"""llm.backend vllm: each turn's reply streamed from a vLLM server's /v1/chat/completions.

The request is built the same way every turn (same system prompt, same remembered messages, the same
WAV bytes for the same audio), so vLLM's prefix cache finds the conversation so far and prefills only
the new turn. A failure before the first token raises ``ServerUnavailable``: the runtime then answers
the turn with the embedded models, and a circuit breaker keeps the next turns off the server until
its /health answers again.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import logging
import os
import time
import wave
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np

from agent import metrics
from agent.audio.resample import to_int16
from agent.config import REPO_ROOT, Config, VllmConfig, with_llm_model
from agent.models.base import SAMPLE_RATE, ChatMessage
from agent.models.remote.openai_client import OpenAICompatibleClient, ServerUnavailable, StreamBroken
from agent.models.remote.vllm_process import DOWN, HEALTHY, STARTING, VllmProcess

log = logging.getLogger(__name__)

# Encoded turns kept: every session's five remembered turns, for a few dozen sessions.
_WAV_CACHE_ENTRIES = 256


def launch_config(config: Config) -> VllmConfig:
    """llm.vllm with what the child needs resolved: ``embedded`` as the SmolLM2 folder (the same model the
    in-process backend runs), ``~`` expanded, and a relative command path taken from the repository root."""
    vllm = config.llm.vllm
    model = vllm.model
    if model == "embedded":
        from agent.models.smollm_chat import model_folder

        model = str(model_folder(with_llm_model(config, model)))
    elif model.startswith("~"):
        model = str(Path(model).expanduser())
    command = list(vllm.command)
    if "/" in command[0] and not Path(command[0]).is_absolute():
        command[0] = str(REPO_ROOT / command[0])
    return vllm.model_copy(update={"model": model, "command": command})


class VllmChatModel:
    name = "vllm"
    remote = True  # the runtime streams it on the event loop (astream_reply), not in a thread

    def __init__(self, config: Config) -> None:
        self.config = config.llm
        self.vllm = config.llm.vllm
        self.hears_audio = self.vllm.input == "audio"
        self.client = OpenAICompatibleClient(
            self.vllm.url,
            api_key=os.environ.get(self.vllm.api_key_env) or None,
            connect_timeout_s=self.vllm.connect_timeout_s,
            read_timeout_s=self.vllm.read_timeout_s,
            max_connections=self.vllm.max_connections,
        )
        self.launch = launch_config(config) if self.vllm.launch else None
        self.process: VllmProcess | None = None
        self.served_model: str | None = None
        self._healthy = False
        self._open_until = 0.0  # the breaker: before this, turns skip the server
        self._watcher: asyncio.Task | None = None
        self._wav_cache: dict[int, tuple[np.ndarray, str]] = {}

    # --- lifecycle (on the event loop) --------------------------------------------------------------

    def warm_up(self) -> None:
        """Nothing to warm in-process; the server warms itself, and /ready shows when it answers."""

    async def start(self) -> None:
        await self.client.start()
        if self.launch is not None and self.process is None:
            self.process = VllmProcess(self.launch, self.client.health)
            self.process.start()
        if self._watcher is None:
            self._watcher = asyncio.create_task(self._watch(), name="vllm-health")

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None
        if self.process is not None:
            await self.process.stop()
        await self.client.close()

    @property
    def state(self) -> str:
        """starting, healthy, down or restarting: what /ready and the metrics show."""
        if self.process is not None and self.process.state != HEALTHY:
            return self.process.state
        if self._healthy and time.monotonic() >= self._open_until:
            return HEALTHY
        return DOWN if self.served_model or self.process is not None else STARTING

    def describe(self) -> dict:
        described = {"server": self.vllm.url, "state": self.state, "model": self.served_model, "input": self.vllm.input}
        if self.process is not None:
            described |= {"pid": self.process.pid, "restarts": self.process.restarts, "launched": True}
        return described

    async def _watch(self) -> None:
        """Poll /health: often while the server is down, now and then while it serves."""
        while True:
            healthy = await self.client.health()
            if healthy and self.served_model is None:
                with contextlib.suppress(Exception):
                    self.served_model = (await self.client.models())[0]
                    log.info("vLLM at %s serves %s", self.vllm.url, self.served_model)
            if healthy != self._healthy:
                log.log(logging.INFO if healthy else logging.WARNING, "vLLM at %s is %s",
                        self.vllm.url, "healthy" if healthy else "not answering /health")
            self._healthy = healthy
            metrics.LLM_SERVER_UP.set(1 if self.state == HEALTHY else 0)
            await asyncio.sleep(self.vllm.health_interval_s if self.state == HEALTHY else self.vllm.probe_interval_s)

    def _trip(self, reason: str) -> None:
        self._open_until = time.monotonic() + self.vllm.breaker_open_s
        self._healthy = False  # only a /health answer closes the breaker again
        metrics.LLM_SERVER_UP.set(0)
        log.warning("vLLM failed (%s); turns go to the fallback for at least %.1fs", reason, self.vllm.breaker_open_s)

    # --- a turn -------------------------------------------------------------------------------------

    async def astream_reply(self, messages: list[ChatMessage]) -> AsyncIterator[str]:
        """Yield the reply's text pieces; raise ``ServerUnavailable`` if none can come from the server."""
        if self.state != HEALTHY or self.served_model is None:
            raise ServerUnavailable("server_down", f"vLLM at {self.vllm.url} is {self.state}")
        body = {
            "model": self.served_model,
            "messages": [self._message(m) for m in messages],
            "max_tokens": self.config.max_new_tokens,
            "temperature": self.config.temperature,
            "repetition_penalty": self.config.repetition_penalty,
        }
        try:
            async for piece in self.client.stream_chat(body, self.vllm.first_token_timeout_s):
                yield piece
        except ServerUnavailable as exc:
            if exc.reason != "http_4xx":  # a refused request says nothing about the next one
                self._trip(exc.reason)
            raise
        except StreamBroken as exc:
            # The words so far have been spoken; the reply ends there and the next turn finds out.
            metrics.ERRORS.labels(stage="llm_stream").inc()
            log.warning("vLLM stream broke mid-reply: %s", exc)
            self._trip("stream_broken")

    def _message(self, message: ChatMessage) -> dict:
        if message.role != "user" or not self.hears_audio or message.audio is None:
            return {"role": message.role, "content": message.text}
        audio = {"data": self._wav_base64(message.audio), "format": "wav"}
        return {"role": "user", "content": [{"type": "input_audio", "input_audio": audio}]}

    def _wav_base64(self, audio: np.ndarray) -> str:
        """The same WAV bytes for the same turn every time it is sent (the prefix cache needs them equal)."""
        key = id(audio)
        cached = self._wav_cache.get(key)
        if cached is not None and cached[0] is audio:
            return cached[1]
        buffer = io.BytesIO()
        with wave.open(buffer, "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(2)
            wav.setframerate(SAMPLE_RATE)
            wav.writeframes(to_int16(audio).astype("<i2").tobytes())
        encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
        self._wav_cache[key] = (audio, encoded)
        while len(self._wav_cache) > _WAV_CACHE_ENTRIES:
            del self._wav_cache[next(iter(self._wav_cache))]
        return encoded
