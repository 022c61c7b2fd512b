"""Background jobs of the records store: claimed from the database, run with bounded concurrency.

Job state lives in the store, so a job survives a crash: at start-up jobs left ``running`` go back
to ``queued``. A failure is retried with exponential backoff up to ``records.job_max_attempts``; a
``PermanentJobError`` (a file that cannot be decoded) fails at once. Job work runs in threads whose
nice value is raised, so the kernel serves live turns' threads first.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

from agent import metrics
from agent.calls.store import JobOut, RecordStore, StoreUnavailable
from agent.config import RecordsConfig

log = logging.getLogger(__name__)

JobHandler = Callable[[JobOut], Awaitable[None]]


class PermanentJobError(Exception):
    """A job that no retry can fix; its message is the reason the record shows."""


def _lower_priority(niceness: int) -> Callable[[], None]:
    def lower() -> None:
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)  # this thread only, on Linux
        except (AttributeError, OSError, PermissionError):
            log.debug("cannot lower the priority of the job thread")

    return lower


class JobRunner:
    def __init__(
        self, store_getter: Callable[[], Awaitable[RecordStore]], config: RecordsConfig,
        handlers: dict[str, JobHandler],
    ) -> None:
        self._store = store_getter
        self._config = config
        self._handlers = handlers
        self._wake = asyncio.Event()
        self._workers: list[asyncio.Task] = []
        self.executor = ThreadPoolExecutor(
            max_workers=config.job_concurrency,
            thread_name_prefix="records-job",
            initializer=_lower_priority(config.job_niceness),
        )

    def start(self) -> None:
        self._workers = [
            asyncio.create_task(self._work(), name=f"records-job-{n}") for n in range(self._config.job_concurrency)
        ]

    def wake(self) -> None:
        """A job was queued here: look now rather than at the next poll."""
        self._wake.set()

    async def stop(self) -> None:
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self.executor.shutdown(wait=False, cancel_futures=True)

    async def run_in_thread(self, work: Callable, *args):
        return await asyncio.get_running_loop().run_in_executor(self.executor, work, *args)

    async def _work(self) -> None:
        while True:
            try:
                store = await self._store()
                job = await store.claim_job(list(self._handlers), datetime.now(UTC))
            except StoreUnavailable:
                job = None
            if job is None:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), self._config.job_poll_seconds)
                except TimeoutError:
                    pass
                continue
            await self._run(store, job)

    async def _run(self, store: RecordStore, job: JobOut) -> None:
        started = time.perf_counter()
        try:
            await self._handlers[job.kind](job)
        except asyncio.CancelledError:
            raise  # shutting down: the job stays running and is requeued at the next start
        except Exception as exc:
            permanent = isinstance(exc, PermanentJobError) or job.attempts >= self._config.job_max_attempts
            reason = str(exc) if isinstance(exc, PermanentJobError) else f"{type(exc).__name__}: {exc}"
            if not isinstance(exc, PermanentJobError):
                log.exception("job %d (%s of call %s) failed, attempt %d", job.id, job.kind, job.call_id, job.attempts)
            retry_at = None
            if not permanent:
                delay = self._config.job_retry_seconds * 2 ** (job.attempts - 1)
                retry_at = datetime.now(UTC) + timedelta(seconds=delay)
            await self._finish(store, job, reason, retry_at)
            metrics.RECORD_JOBS.labels(kind=job.kind, outcome="failed" if permanent else "retry").inc()
            return
        await self._finish(store, job, None, None)
        metrics.RECORD_JOBS.labels(kind=job.kind, outcome="done").inc()
        metrics.RECORD_JOB_SECONDS.labels(kind=job.kind).observe(time.perf_counter() - started)

    async def _finish(self, store: RecordStore, job: JobOut, error: str | None, retry_at: datetime | None) -> None:
        try:
            await store.finish_job(job.id, error, retry_at)
            if error is not None:
                status = "pending" if retry_at is not None else "failed"
                message = error if retry_at is None else f"attempt {job.attempts} failed ({error}); retrying"
                await store.update_call(job.call_id, status=status, error=message)
        except StoreUnavailable:
            log.warning("job %d: the database went away; the job is requeued at the next start", job.id)
