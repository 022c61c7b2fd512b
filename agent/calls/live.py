"""A live conversation's record, written as it happens: the call, each exchange, and a stereo recording.

The session hands over audio frames and finished exchanges; nothing here blocks it. Audio goes to the
recording's own writer thread; store writes go through one queue per call, in order, by one task that
retries while the database is away, so a call goes on when PostgreSQL stops and its record is written
when it returns. ``close`` finishes the recording and the record whatever ended the session.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import numpy as np

from agent import metrics
from agent.audio.resample import Resampler
from agent.calls.recording import CallRecording
from agent.calls.store import RecordStore, StoreUnavailable, TurnIn

if TYPE_CHECKING:
    from agent.calls.records import CallRecords

log = logging.getLogger(__name__)

RECORDING_RATE = 16_000
StoreWrite = Callable[[RecordStore], Awaitable[None]]


class LiveCallRecord:
    def __init__(self, records: CallRecords, session_id: str, owner_id: int | None, language: str) -> None:
        self._records = records
        config = records.config.records
        self.session_id = session_id
        self.call_id: str | None = None
        self.started_at = datetime.now(UTC)
        self._t0 = time.monotonic()
        self._languages = [language]
        self._writes: asyncio.Queue[StoreWrite | None] = asyncio.Queue()
        self._retry_s = config.job_retry_seconds
        self.recording: CallRecording | None = None
        self.audio_path: str | None = None
        if config.store_audio:
            suffix = ".flac" if config.audio_format == "flac" else ".ogg"
            self.audio_path = f"audio/live-{self.started_at:%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:8]}{suffix}"
            path = config.data_path / self.audio_path
            path.parent.mkdir(parents=True, exist_ok=True)
            self.recording = CallRecording(path, RECORDING_RATE, config.audio_format, config.flush_seconds)
        self._user_at: int | None = None  # recording position of the next user sample
        self._agent_at: int | None = None
        self._agent_resampler: Resampler | None = None
        self._user_offset_ms = 0  # call start to the first microphone frame: the turn detector's zero
        self._closed = False
        self._writer = asyncio.create_task(self._write_in_order(), name=f"{session_id}:record")
        self._queue(self._create(owner_id))

    # --- from the session (event loop, audio path: cheap, never blocking) ------------------------

    def user_audio(self, samples: np.ndarray) -> None:
        """One 16 kHz microphone frame, in arrival order."""
        if self._user_at is None:
            self._user_at = self._position(time.monotonic()) - len(samples)
            self._user_offset_ms = max(0, self._user_at) * 1000 // RECORDING_RATE
        if self.recording is not None:
            self.recording.write_user(samples, max(0, self._user_at))
        self._user_at += len(samples)

    def agent_audio(self, samples: np.ndarray, sample_rate: int) -> None:
        """One outgoing frame as really sent (silence too), at the track's rate."""
        if self._agent_at is None:
            self._agent_at = self._position(time.monotonic())
        if sample_rate % RECORDING_RATE == 0 and len(samples) % (sample_rate // RECORDING_RATE) == 0:
            # 48 kHz -> 16 kHz by averaging: the speech band is below 8 kHz
            samples = samples.reshape(-1, sample_rate // RECORDING_RATE).mean(axis=1).astype(np.int16)
        elif sample_rate != RECORDING_RATE:  # 24 kHz over a WebSocket
            if self._agent_resampler is None:
                self._agent_resampler = Resampler(RECORDING_RATE)
            samples = self._agent_resampler.samples(samples, sample_rate)
        if self.recording is not None:
            self.recording.write_agent(samples, self._agent_at)
        self._agent_at += len(samples)

    def ms_since_start(self, monotonic: float) -> int:
        return int((monotonic - self._t0) * 1000)

    def exchange(self, user: TurnIn | None, agent: TurnIn | None) -> None:
        """A finished exchange; user times are on the turn detector's clock, shifted here to the call's."""
        turns = []
        if user is not None:
            user.start_ms += self._user_offset_ms
            user.end_ms += self._user_offset_ms
            turns.append(user)
        if agent is not None:
            turns.append(agent)
        if user is not None and user.language and user.language not in self._languages:
            self._languages.append(user.language)
        if turns:
            self._queue(self._add_turns(turns))

    def close(self, reason: str) -> None:
        if self._closed:
            return
        self._closed = True
        # The recording is finished at once, whether or not the store is there to hear about it.
        closing = asyncio.create_task(asyncio.to_thread(self.recording.close)) if self.recording else None
        self._queue(self._finish(reason, closing))
        self._writes.put_nowait(None)

    async def wait_written(self, timeout: float) -> bool:
        """Wait until every write has reached the store (shutdown); False if time ran out."""
        try:
            await asyncio.wait_for(asyncio.shield(self._writer), timeout)
            return True
        except TimeoutError:
            return False

    # --- the writer ---------------------------------------------------------------------------------

    def _position(self, monotonic: float) -> int:
        return int((monotonic - self._t0) * RECORDING_RATE)

    def _queue(self, write: StoreWrite) -> None:
        self._writes.put_nowait(write)
        metrics.RECORD_WRITES_PENDING.inc()

    async def _write_in_order(self) -> None:
        while (write := await self._writes.get()) is not None:
            while True:
                try:
                    await write(await self._records.wait_store())
                    break
                except StoreUnavailable as exc:
                    log.warning("call record of session %s waits for the database: %s", self.session_id, exc)
                    await asyncio.sleep(self._retry_s)
                except Exception:
                    metrics.ERRORS.labels(stage="records").inc()
                    log.exception("call record of session %s: a write failed and is dropped", self.session_id)
                    break
            metrics.RECORD_WRITES_PENDING.dec()

    def _create(self, owner_id: int | None) -> StoreWrite:
        async def create(store: RecordStore) -> None:
            self.call_id = await store.create_call(
                source="live",
                owner_id=owner_id,
                started_at=self.started_at,
                status="processing",
                languages=list(self._languages),
                audio_path=self.audio_path,
                audio_mime="audio/flac" if self.audio_path and self.audio_path.endswith(".flac") else "audio/ogg",
            )
            log.info("session %s is recorded as call %s", self.session_id, self.call_id)

        return create

    def _add_turns(self, turns: list[TurnIn]) -> StoreWrite:
        async def add(store: RecordStore) -> None:
            if self.call_id is not None:
                await store.add_turns(self.call_id, turns)

        return add

    def _finish(self, reason: str, closing: asyncio.Task | None) -> StoreWrite:
        ended_at = datetime.now(UTC)

        async def finish(store: RecordStore) -> None:
            error = None
            if closing is not None:
                await asyncio.shield(closing)
                error = self.recording.error
            if self.call_id is None:
                return
            await store.update_call(
                self.call_id,
                ended_at=ended_at,
                duration_s=(ended_at - self.started_at).total_seconds(),
                status="done",
                languages=list(self._languages),
                error=error,
            )
            await self._records.call_finished(self.call_id)
            log.info("call %s closed (%s)", self.call_id, reason)

        return finish

