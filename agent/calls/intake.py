"""Turning what a user sent (a file, a ZIP, a URL, base64) into records with a transcription job each.

A file is checked to be audio before its record exists (a 400 leaves nothing behind); then it is
moved into the data folder under a name of ours, its record is written and its job queued. Work
on files runs in threads.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import shutil
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from agent import metrics
from agent.calls.audio_files import AudioError, format_duration, mime_for, probe_duration
from agent.calls.records import CallRecords
from agent.calls.uploads import ACCEPTED_SUFFIXES, UploadRejected, extract_entry, zip_entries

log = logging.getLogger(__name__)

HASH_CHUNK_BYTES = 1 << 20


@dataclass
class EntryResult:
    name: str
    id: str | None = None
    error: str | None = None


def probe_audio(path: Path, max_seconds: float) -> None:
    """Blocking: raise AudioError unless the file opens as audio no longer than ``max_seconds`` (headers only)."""
    seconds = probe_duration(path)
    if seconds is not None and seconds > max_seconds:
        raise AudioError(
            f"recording is {format_duration(seconds)} long, over the {format_duration(max_seconds)} limit "
            "(records.max_audio_seconds)"
        )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def suffix_for(file_name: str) -> str:
    suffix = Path(file_name).suffix.lower()
    return suffix if suffix in ACCEPTED_SUFFIXES else ""


async def add_recording(records: CallRecords, path: Path, file_name: str, owner_id: int | None) -> str:
    """A recording on disk (ours to move) becomes a pending record; returns its id. AudioError if not audio."""
    config = records.config.records
    try:
        await asyncio.to_thread(probe_audio, path, config.max_audio_seconds)
    except AudioError:
        metrics.UPLOADS.labels(result="rejected").inc()
        raise
    content_hash = await asyncio.to_thread(_sha256, path)
    audio_path = f"audio/upload-{uuid.uuid4().hex}{suffix_for(file_name) or path.suffix}"
    target = config.data_path / audio_path
    target.parent.mkdir(parents=True, exist_ok=True)
    await asyncio.to_thread(shutil.move, path, target)
    try:
        call_id = await records.store.create_call(
            source="upload",
            owner_id=owner_id,
            file_name=file_name,
            content_hash=content_hash,
            started_at=datetime.now(UTC),
            status="pending",
            audio_path=audio_path,
            audio_mime=mime_for(target),
            job="transcribe",
        )
        records.runner.wake()
    except Exception:
        target.unlink(missing_ok=True)
        raise
    metrics.UPLOADS.labels(result="accepted").inc()
    return call_id


async def add_zip(records: CallRecords, archive: Path, owner_id: int | None, scratch: Path) -> list[EntryResult]:
    """One record per audio entry of the archive; every other entry is reported with its reason."""
    config = records.config.records
    entries = await asyncio.to_thread(zip_entries, archive, config.max_zip_entries, config.max_zip_uncompressed_bytes)
    results = []
    for entry in entries:
        if not entry.is_audio:
            results.append(EntryResult(entry.name, error=entry.reason))
            continue
        try:
            path = await asyncio.to_thread(extract_entry, archive, entry, scratch, config.max_upload_bytes)
            results.append(EntryResult(entry.name, id=await add_recording(records, path, entry.name, owner_id)))
        except (AudioError, UploadRejected) as exc:
            results.append(EntryResult(entry.name, error=getattr(exc, "message", None) or str(exc)))
    return results
