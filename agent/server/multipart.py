"""Receiving a multipart upload: its file streamed to a scratch file of ours, its text fields kept.

Sizes are checked before reading when the request declares them, and while reading when it does not
(a chunked body), so that nothing over the limits is ever held or written.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

from aiohttp import web

from agent.calls import intake
from agent.server.errors import ApiError

# Multipart framing around the file (boundaries, part headers) allowed on top of records.max_upload_bytes.
MULTIPART_OVERHEAD_BYTES = 16 * 1024
WRITE_CHUNK_BYTES = 1 << 20
FIELD_CHUNK_BYTES = 1 << 16
FIELDS_LIMIT_BYTES = 64 * 1024
FILE_FIELD = "file"


@dataclass
class ReceivedForm:
    path: Path | None = None  # the file, ours to move or delete
    file_name: str | None = None
    fields: dict[str, list[str]] = field(default_factory=dict)  # every text field, in order, repeated names kept


def scratch_dir(config) -> Path:
    """Where uploads land before they are checked: inside the data folder, so a move into it is a rename."""
    path = config.records.data_path / "incoming"
    path.mkdir(parents=True, exist_ok=True)
    return path


def too_large(limit: int) -> ApiError:
    return ApiError(413, f"the upload is over {limit} bytes (records.max_upload_bytes)")


async def receive_form(request: web.Request, limit: int, scratch: Path,
                       fields_limit: int = FIELDS_LIMIT_BYTES) -> ReceivedForm:
    """The whole form: the field ``file`` streamed to ``scratch`` (413 past ``limit``, 400 if empty), the text
    fields up to ``fields_limit`` bytes together (413 past it). No file is not an error here."""
    if request.content_length is not None and request.content_length > limit + fields_limit + MULTIPART_OVERHEAD_BYTES:
        raise too_large(limit)
    if not request.content_type.startswith("multipart/"):
        raise ApiError(400, f"send the recording as multipart/form-data with a field named {FILE_FIELD}")
    form = ReceivedForm()
    fields_size = 0
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not hasattr(part, "read_chunk"):
                continue  # a nested multipart: nothing we take
            if part.name == FILE_FIELD and form.path is None and part.filename is not None:
                form.file_name = Path(unquote(part.filename or "upload")).name[:255]
                form.path = await _stream_to_file(part, scratch, form.file_name, limit)
            elif part.filename is None:
                value = bytearray()
                while chunk := await part.read_chunk(FIELD_CHUNK_BYTES):
                    fields_size += len(chunk)
                    if fields_size > fields_limit:
                        raise ApiError(413, f"the form's text fields are over {fields_limit} bytes")
                    value += chunk
                form.fields.setdefault(part.name or "", []).append(value.decode("utf-8", errors="replace"))
    except (ValueError, AssertionError) as exc:  # aiohttp's reader on a body that is not the multipart it claims
        if form.path is not None:
            form.path.unlink(missing_ok=True)
        raise ApiError(400, f"the body is not valid multipart/form-data ({exc}); send the file in a field "
                            f"named {FILE_FIELD}") from None
    except BaseException:
        if form.path is not None:
            form.path.unlink(missing_ok=True)
        raise
    return form


async def receive_file(request: web.Request, limit: int, scratch: Path) -> tuple[Path, str]:
    """The field ``file`` as a file of ours and its name; 400 without one."""
    form = await receive_form(request, limit, scratch)
    if form.path is None:
        raise ApiError(400, f"no file: send the recording in a multipart field named {FILE_FIELD}")
    return form.path, form.file_name or "upload"


async def _stream_to_file(part, scratch: Path, name: str, limit: int) -> Path:
    path = scratch / f"{uuid.uuid4().hex}{intake.suffix_for(name)}"
    size = 0
    try:
        with open(path, "wb") as file:
            while chunk := await part.read_chunk(WRITE_CHUNK_BYTES):
                size += len(chunk)
                if size > limit:
                    raise too_large(limit)
                await asyncio.to_thread(file.write, chunk)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    if size == 0:
        path.unlink(missing_ok=True)
        raise ApiError(400, f"the file {name} is empty")
    return path
