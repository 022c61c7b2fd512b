"""The records service of one server: the store, its background jobs, retention, and live calls' records.

The server starts even when the database is not there: live calls go on (their records wait in
memory and are written when it comes), the records API answers 503, and the store is opened again
every ``records.job_retry_seconds`` until it answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime, timedelta

from agent.calls.audio_files import AudioError, decode_audio
from agent.calls.jobs import JobOut, JobRunner, PermanentJobError
from agent.calls.live import LiveCallRecord
from agent.calls.store import CallFilter, RecordStore, StoreUnavailable, Viewer
from agent.calls.transcription import transcribe_recording
from agent.config import Config

log = logging.getLogger(__name__)

# How long an API request waits for a store that is still opening before it is answered 503.
OPENING_WAIT_S = 10.0
# How often a job's progress is written to its record while it runs.
PROGRESS_EVERY_S = 1.0
# Live calls that were still open when the server stopped are closed with this reason at the next start.
INTERRUPTED = "the server stopped during the call; the record and recording end there"


class CallRecords:
    def __init__(self, config: Config) -> None:
        self.config = config
        self._store: RecordStore | None = None
        self._ready = asyncio.Event()
        self.runner = JobRunner(self.wait_store, config.records, {"transcribe": self._transcribe})
        self._live: set[LiveCallRecord] = set()
        self._tasks: list[asyncio.Task] = []
        self.last_error: str | None = None

    # --- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> None:
        self.config.records.data_path.mkdir(parents=True, exist_ok=True)
        self._tasks.append(asyncio.create_task(self._open(), name="records-open"))

    async def _open(self) -> None:
        url = self.config.records.url
        while True:
            try:
                store = await RecordStore.open(url)
                break
            except StoreUnavailable as exc:
                self.last_error = str(exc)
                log.warning("call records: %s; trying again in %.0f s", exc, self.config.records.job_retry_seconds)
                await asyncio.sleep(self.config.records.job_retry_seconds)
        self.last_error = None
        requeued = await store.requeue_running_jobs()
        closed = await self._close_interrupted_calls(store)
        self._store = store
        self._ready.set()
        log.info("call records at %s (%d jobs resumed, %d interrupted calls closed)", _safe(url), requeued, closed)
        self.runner.start()
        if self.config.records.retention_days > 0:
            self._tasks.append(asyncio.create_task(self._expire_old_records(), name="records-retention"))

    async def close(self, timeout_s: float) -> None:
        for record in list(self._live):
            record.close("server shutting down")
        waits = [record.wait_written(timeout_s) for record in self._live]
        if not all(await asyncio.gather(*waits)):
            log.warning("some live-call records were not written before shutdown")
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.runner.stop()
        if self._store is not None:
            await self._store.close()

    @property
    def store(self) -> RecordStore:
        if self._store is None:
            raise StoreUnavailable(self.last_error or "the records database is not open yet")
        return self._store

    async def opened(self, timeout_s: float) -> None:
        """Give a store that is opening (start-up, migrations) a moment before a request is refused with 503."""
        if self._store is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ready.wait(), timeout_s)

    async def wait_store(self) -> RecordStore:
        await self._ready.wait()
        return self._store

    # --- live calls ---------------------------------------------------------------------------------

    def live_call(self, session_id: str, owner_id: int | None, language: str) -> LiveCallRecord:
        record = LiveCallRecord(self, session_id, owner_id, language)
        self._live.add(record)
        return record

    async def call_finished(self, call_id: str) -> None:
        """A call's record is complete (live call closed, upload transcribed): where its analysis starts."""
        self._live = {record for record in self._live if record.call_id != call_id}

    async def _close_interrupted_calls(self, store: RecordStore) -> int:
        open_calls = await store.list_calls(CallFilter(source="live", status="processing", limit=1000), None)
        for call in open_calls:
            ended = call.started_at + timedelta(seconds=call.duration_s or 0)
            await store.update_call(call.id, status="done", error=INTERRUPTED, ended_at=ended)
        return len(open_calls)

    # --- jobs ---------------------------------------------------------------------------------------

    async def enqueue(self, call_id: str, kind: str) -> None:
        await self.store.enqueue_job(call_id, kind)
        self.runner.wake()

    async def _transcribe(self, job: JobOut) -> None:
        store = await self.wait_store()
        call = await store.get_call(job.call_id, None)
        if call is None or not call.audio_path:
            return  # deleted meanwhile
        records = self.config.records
        await store.update_call(call.id, status="processing", progress=0.0, error=None)
        try:
            audio = await self.runner.run_in_thread(decode_audio, records.data_path / call.audio_path,
                                                    records.max_audio_seconds)
        except AudioError as exc:
            raise PermanentJobError(str(exc)) from exc
        loop = asyncio.get_running_loop()
        last = [0.0]

        def progress(share: float) -> None:  # the job's thread
            now = time.monotonic()
            if now - last[0] >= PROGRESS_EVERY_S and not loop.is_closed():
                last[0] = now
                update = store.update_call(call.id, progress=round(share, 3))
                try:
                    asyncio.run_coroutine_threadsafe(update, loop)
                except RuntimeError:  # the loop closed meanwhile (shutdown): the progress does not matter
                    update.close()

        result = await self.runner.run_in_thread(transcribe_recording, audio, self.config, progress)
        await store.replace_turns(call.id, result.turns)
        await store.update_call(
            call.id,
            status="done",
            progress=1.0,
            languages=result.languages,
            duration_s=audio.duration_s,
            ended_at=call.started_at + timedelta(seconds=audio.duration_s),
            error=None if result.turns else "no speech was found in the recording",
        )
        await self.call_finished(call.id)

    # --- deletion and retention ---------------------------------------------------------------------

    async def delete_call(self, call_id: str, viewer: Viewer | None) -> bool:
        call = await self.store.get_call(call_id, viewer)
        if call is None:
            return False
        await self.store.delete_call(call_id, viewer)
        if call.audio_path:
            path = self.config.records.data_path / call.audio_path
            await asyncio.to_thread(path.unlink, missing_ok=True)
        return True

    async def _expire_old_records(self) -> None:
        records = self.config.records
        while True:
            with contextlib.suppress(StoreUnavailable):
                before = datetime.now(UTC) - timedelta(days=records.retention_days)
                expired = await self.store.expired_calls(before)
                for call in expired:
                    await self.delete_call(call.id, None)
                if expired:
                    log.info("retention: deleted %d records older than %d days", len(expired), records.retention_days)
            await asyncio.sleep(records.retention_check_minutes * 60)


def _safe(url: str) -> str:
    """The database URL without its password, for the log."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
