"""The records API: list, search, upload, read, retag, export, play and delete calls, and their totals.

Routes are thin: validate (pydantic, through the view signatures), call the store or the intake, answer
a model. A record that is not the viewer's is answered 404, exactly like one that does not exist.
"""

from __future__ import annotations

import asyncio
import binascii
import csv
import io
import tempfile
import uuid
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Annotated, Literal

from aiohttp import web
from aiohttp_pydantic.injectors import Group
from aiohttp_pydantic.oas.typing import r200, r202, r204, r400, r404, r409, r413, r503
from pydantic import BaseModel, Field

from agent.calls import intake
from agent.calls.audio_files import AudioError
from agent.calls.store import Analytics, CallDetail, CallFilter, CallSummary
from agent.calls.uploads import UploadRejected, decode_data_url, fetch_url
from agent.server.api import ApiView
from agent.server.auth import ErrorReply
from agent.server.errors import ApiError
from agent.server.multipart import MULTIPART_OVERHEAD_BYTES, receive_file, scratch_dir, too_large

EXPORT_PAGE = 500
CallId = Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]


class Filters(Group):
    tag: Annotated[str | None, Field(max_length=200)] = None
    start_date: date | datetime | None = None
    end_date: date | datetime | None = None
    q: Annotated[str | None, Field(max_length=500)] = None
    language: Annotated[str | None, Field(max_length=16)] = None
    source: Literal["live", "upload"] | None = None
    status: Literal["pending", "processing", "done", "failed"] | None = None


def _bound(value: date | datetime | None, end: bool) -> datetime | None:
    """A date means the whole day: from its midnight, to the last instant before the next midnight."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    start = datetime.combine(value, time.min, tzinfo=UTC)
    return start + timedelta(days=1) - timedelta(microseconds=1) if end else start


def call_filter(filters: Filters, limit: int = 100, skip: int = 0) -> CallFilter:
    start, end = _bound(filters.start_date, end=False), _bound(filters.end_date, end=True)
    if start and end and start > end:
        raise ApiError(400, "start_date is after end_date")
    return CallFilter(
        tag=filters.tag or None, start_date=start, end_date=end, q=(filters.q or "").strip() or None,
        language=filters.language or None, source=filters.source, status=filters.status, limit=limit, skip=skip,
    )


class CallList(BaseModel):
    calls: list[CallSummary]
    total: int
    limit: int
    skip: int


class Accepted(BaseModel):
    ids: list[str]


class ZipEntryResult(BaseModel):
    name: str
    id: str | None = None
    error: str | None = None


class ZipAccepted(BaseModel):
    ids: list[str]
    entries: list[ZipEntryResult]


class RemoteAudio(BaseModel):
    """Instead of a multipart file: a URL to fetch, or the audio itself as a (data URL) base64 string."""

    url: Annotated[str | None, Field(max_length=4096)] = None
    audio_base64: str | None = None
    file_name: Annotated[str | None, Field(max_length=255)] = None


class TagsIn(BaseModel):
    tags: Annotated[list[Annotated[str, Field(min_length=1, max_length=64)]], Field(max_length=50)]


def _json(model: BaseModel, status: int = 200) -> web.Response:
    return web.json_response(model.model_dump(mode="json"), status=status)


class CallsView(ApiView):
    async def get(
        self, filters: Filters, limit: Annotated[int, Field(ge=1, le=1000)] = 100,
        skip: Annotated[int, Field(ge=0)] = 0,
    ) -> r200[CallList] | r400[ErrorReply] | r503[ErrorReply]:
        """Calls newest first, filtered by tag, dates (YYYY-MM-DD, inclusive), words said, language, source."""
        f = call_filter(filters, limit, skip)
        store = self.records.store
        calls, total = await asyncio.gather(store.list_calls(f, self.viewer), store.count_calls(f, self.viewer))
        return _json(CallList(calls=calls, total=total, limit=limit, skip=skip))

    async def post(self) -> r202[Accepted] | r400[ErrorReply] | r413[ErrorReply] | r503[ErrorReply]:
        """Upload a recording: a multipart field ``file``, or JSON ``{"url": ...}`` / ``{"audio_base64": ...}``.

        Answers 202 with the new record's id; decoding and transcription run as a background job.
        """
        config = self.config.records
        self.records.store  # noqa: B018 - 503 before reading a body the store cannot take
        scratch = scratch_dir(self.config)
        if self.request.content_type == "application/json":
            path, name = await _remote_audio(self.request, config, scratch)
        else:
            path, name = await receive_file(self.request, config.max_upload_bytes, scratch)
        try:
            call_id = await intake.add_recording(self.records, path, name, self.owner_id)
        except AudioError as exc:
            raise ApiError(400, f"{name}: {exc}") from None
        finally:
            path.unlink(missing_ok=True)
        return _json(Accepted(ids=[call_id]), status=202)


class ZipView(ApiView):
    async def post(self) -> r202[ZipAccepted] | r400[ErrorReply] | r413[ErrorReply] | r503[ErrorReply]:
        """Upload a ZIP of recordings (multipart field ``file``): one record per audio entry, each with its own job."""
        self.records.store  # noqa: B018
        scratch = scratch_dir(self.config)
        archive, _ = await receive_file(self.request, self.config.records.max_upload_bytes, scratch)
        try:
            with tempfile.TemporaryDirectory(dir=scratch) as entries_dir:
                results = await intake.add_zip(self.records, archive, self.owner_id, Path(entries_dir))
        except UploadRejected as exc:
            raise ApiError(exc.status, exc.message) from None
        finally:
            archive.unlink(missing_ok=True)
        entries = [ZipEntryResult(name=r.name, id=r.id, error=r.error) for r in results]
        return _json(ZipAccepted(ids=[r.id for r in results if r.id], entries=entries), status=202)


class CallView(ApiView):
    async def get(self, call_id: CallId, /) -> r200[CallDetail] | r404[ErrorReply]:
        """One call: status and progress, turns by speaker, tags, analysis."""
        return _json(await _call(self, call_id))

    async def delete(self, call_id: CallId, /) -> r204 | r404[ErrorReply]:
        """Delete the record, its turns, tags and files."""
        if not await self.records.delete_call(call_id, self.viewer):
            raise _not_found(call_id)
        return web.Response(status=204)


class TagsView(ApiView):
    async def put(self, call_id: CallId, /, body: TagsIn) -> r200[CallDetail] | r400[ErrorReply] | r404[ErrorReply]:
        """Set the user's tags; they override the AI's tags, which stay visible as ``ai_tags``."""
        await _call(self, call_id)
        tags = list(dict.fromkeys(tag.strip() for tag in body.tags if tag.strip()))
        await self.records.store.set_tags(call_id, tags, "user")
        return _json(await _call(self, call_id))


class RetryView(ApiView):
    async def post(self, call_id: CallId, /) -> r202[CallDetail] | r404[ErrorReply] | r409[ErrorReply]:
        """Run a failed call's jobs again (after the cause, say a missing model, is fixed); 409 unless it failed."""
        call = await _call(self, call_id)
        if not await self.records.store.retry_failed(call_id, self.viewer):
            raise ApiError(409, f"call {call_id} is {call.status}; only a failed call can be retried")
        self.records.runner.wake()
        return _json(await _call(self, call_id), status=202)


class ExportOneView(ApiView):
    async def get(self, call_id: CallId, /) -> r200[CallDetail] | r404[ErrorReply]:
        """The whole record as a JSON file."""
        call = await _call(self, call_id)
        return web.Response(
            text=call.model_dump_json(indent=2),
            content_type="application/json",
            headers={"Content-Disposition": f'attachment; filename="call-{call_id}.json"'},
        )


class ExportListView(ApiView):
    async def get(self, filters: Filters, format: Literal["csv", "jsonl"] = "csv") -> r200[str] | r400[ErrorReply]:
        """Every call matching the filters, as CSV (one row a call) or JSON lines (one whole record a line)."""
        f = call_filter(filters, EXPORT_PAGE, 0)
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/csv; charset=utf-8" if format == "csv" else "application/x-ndjson",
                "Content-Disposition": f'attachment; filename="calls-{stamp}.{format}"',
            }
        )
        await response.prepare(self.request)
        if format == "csv":
            await response.write(_csv_row(CSV_COLUMNS))
        store = self.records.store
        while calls := await store.list_calls(f, self.viewer):
            for summary in calls:
                call = await store.get_call(summary.id, self.viewer)
                if call is None:
                    continue
                await response.write(_csv_row(_csv_values(call)) if format == "csv" else
                                     (call.model_dump_json() + "\n").encode())
            f.skip += EXPORT_PAGE
        await response.write_eof()
        return response


class AudioView(ApiView):
    async def get(self, call_id: CallId, /) -> r200[bytes] | r404[ErrorReply]:
        """The recording (live) or the upload, with HTTP range requests so a player can seek."""
        call = await _call(self, call_id)
        path = self.config.records.data_path / call.audio_path if call.audio_path else None
        if path is None or not await asyncio.to_thread(path.is_file):
            raise ApiError(404, f"call {call_id} has no audio")
        return web.FileResponse(path, headers={"Content-Type": call.audio_mime or "application/octet-stream"})


class AnalyticsView(ApiView):
    async def get(self, filters: Filters) -> r200[Analytics] | r400[ErrorReply]:
        """Totals over the calls matching the filters: tags, transcripts, calls per day and language, emotions."""
        return _json(await self.records.store.analytics(call_filter(filters), self.viewer))


CSV_COLUMNS = ["id", "started_at", "source", "file_name", "duration_s", "languages", "status", "tags", "ai_tags",
               "turns", "transcript"]


def _csv_values(call: CallDetail) -> list:
    transcript = " | ".join(f"{turn.speaker}: {turn.text}" for turn in call.turns)
    return [call.id, call.started_at.isoformat(), call.source, call.file_name or "", call.duration_s or "",
            " ".join(call.languages), call.status, ";".join(call.tags), ";".join(call.ai_tags), len(call.turns),
            transcript]


def _csv_row(values: list) -> bytes:
    out = io.StringIO()
    csv.writer(out).writerow(values)
    return out.getvalue().encode()


def _not_found(call_id: str) -> ApiError:
    return ApiError(404, f"no call {call_id}")


async def _call(view: ApiView, call_id: str) -> CallDetail:
    call = await view.records.store.get_call(call_id, view.viewer)
    if call is None:
        raise _not_found(call_id)
    return call


async def _remote_audio(request: web.Request, config, scratch: Path) -> tuple[Path, str]:
    base64_limit = config.max_upload_bytes * 4 // 3 + MULTIPART_OVERHEAD_BYTES
    if request.content_length is not None and request.content_length > base64_limit:
        raise too_large(config.max_upload_bytes)
    body = await request.content.read(base64_limit + 1)
    if len(body) > base64_limit:
        raise too_large(config.max_upload_bytes)
    try:
        remote = RemoteAudio.model_validate_json(body)
    except ValueError as exc:
        raise ApiError(400, 'expected JSON {"url": "https://..."} or {"audio_base64": "data:audio/wav;base64,..."}',
                       str(exc)[:500]) from None
    if bool(remote.url) == bool(remote.audio_base64):
        raise ApiError(400, "give exactly one of url and audio_base64")
    try:
        if remote.url:
            path = await fetch_url(remote.url, scratch / uuid.uuid4().hex, max_bytes=config.max_upload_bytes,
                                   timeout_s=config.url_timeout_seconds, allow_private=config.allow_private_urls)
            name = remote.file_name or Path(remote.url.split("?")[0]).name or "download"
        else:
            path = await asyncio.to_thread(decode_data_url, remote.audio_base64, scratch, config.max_upload_bytes)
            name = remote.file_name or f"upload{path.suffix}"
    except UploadRejected as exc:
        raise ApiError(exc.status, exc.message) from None
    except (binascii.Error, ValueError) as exc:
        raise ApiError(400, f"audio_base64 is not valid base64: {exc}") from None
    return path, Path(name).name


def add_routes(app: web.Application) -> None:
    # The fixed paths before /api/calls/{call_id}: the router tries resources in the order they are added.
    app.router.add_view("/api/calls", CallsView)
    app.router.add_view("/api/calls/zip", ZipView)
    app.router.add_view("/api/calls/export", ExportListView)
    app.router.add_view("/api/calls/analytics", AnalyticsView)
    app.router.add_view("/api/calls/{call_id}", CallView)
    app.router.add_view("/api/calls/{call_id}/tags", TagsView)
    app.router.add_view("/api/calls/{call_id}/retry", RetryView)
    app.router.add_view("/api/calls/{call_id}/export", ExportOneView)
    app.router.add_view("/api/calls/{call_id}/audio", AudioView)


