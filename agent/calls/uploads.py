"""Recordings that come as a ZIP, a URL or base64, each within its limits, onto our disk under our names.

Nothing the sender chose becomes a path: a ZIP entry is written to a generated name keeping only
its suffix, and a download to the path the caller gives. Sizes are counted as bytes really arrive,
never taken from what a header or an archive declares. A URL is fetched only if every address its
host resolves to is public (unless private URLs are allowed), and the connection goes to exactly
the vetted addresses, hop by hop, so a DNS answer that changes between check and connect (DNS
rebinding) or a redirect cannot reach the local network.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import copy
import ipaddress
import socket
import stat
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from agent.calls.audio_files import sniff_suffix, suffix_for_mime

ACCEPTED_SUFFIXES = {".wav", ".mp3", ".ogg", ".oga", ".opus", ".webm", ".flac", ".aac", ".m4a", ".mp4"}
CHUNK_BYTES = 1 << 16
MAX_REDIRECTS = 5
REDIRECT_STATUSES = {301, 302, 303, 307, 308}
SNIFF_BYTES = 16
# Compression methods Python's zipfile inflates: stored, deflated, bzip2, lzma.
_READABLE_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}
_UNIX = 3  # ZipInfo.create_system of archives made on Unix: external_attr holds the st_mode


class UploadRejected(Exception):
    """An upload refused before any record exists: ``status`` 400 (bad input) or 413 (too large)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _too_large(message: str) -> UploadRejected:
    return UploadRejected(413, message)


# --- ZIP archives -------------------------------------------------------------------------------------


@dataclass
class ZipEntry:
    name: str  # the base name shown to the user and kept as the record's file name
    size: int  # uncompressed size as the archive declares it
    is_audio: bool
    reason: str | None = None  # why a non-audio entry is not accepted
    member: str = ""  # the entry's name in the archive, to find it again


def safe_entry_name(name: str) -> str | None:
    """The base name of an archive entry; None for a directory, an empty name, an absolute path, a drive letter
    or a ``..`` step (such an entry is never extracted)."""
    if not name or name.endswith(("/", "\\")):
        return None
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":") or ".." in parts:
        return None
    base = PurePosixPath(parts[-1]).name
    return base if base not in ("", ".") and "\x00" not in base else None


def _refusal(info: zipfile.ZipInfo, base: str | None) -> str | None:
    """Why an entry is not extracted, or None if it is an audio file we take."""
    if base is None:
        return "unsafe path in the archive (absolute, a drive, or '..'): not extracted"
    if info.create_system == _UNIX and stat.S_ISLNK(info.external_attr >> 16):
        return "a symbolic link, not a file: not accepted"
    if info.flag_bits & 0x1:
        return "encrypted entries are not accepted"
    suffix = PurePosixPath(base).suffix.lower()
    if suffix == ".zip":
        return "a ZIP inside the ZIP is not accepted"
    if suffix not in ACCEPTED_SUFFIXES:
        return f"not an audio file ({suffix or 'no extension'})"
    if info.compress_type not in _READABLE_METHODS:
        return f"compressed with an unsupported method ({info.compress_type})"
    return None


def _open_zip(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as exc:
        raise UploadRejected(400, "not a ZIP archive") from exc


def zip_entries(path: Path, max_entries: int, max_uncompressed: int) -> list[ZipEntry]:
    """Every file of the archive, audio or not (with the reason), checked against the limits before anything is
    extracted: 413 for more entries than ``max_entries`` or a declared total above ``max_uncompressed``."""
    with _open_zip(path) as archive:
        infos = [info for info in archive.infolist() if not info.is_dir() and not _is_mac_metadata(info.filename)]
    if len(infos) > max_entries:
        raise _too_large(f"the ZIP holds {len(infos)} files, over the limit of {max_entries} (records.max_zip_entries)")
    total = sum(info.file_size for info in infos)
    if total > max_uncompressed:
        raise _too_large(
            f"the ZIP would unpack to {total} bytes, over the limit of {max_uncompressed} bytes "
            "(records.max_zip_uncompressed_bytes)"
        )
    entries = []
    for info in infos:
        base = safe_entry_name(info.filename)
        reason = _refusal(info, base)
        entries.append(ZipEntry(base or info.filename, info.file_size, reason is None, reason, info.filename))
    return entries


def _is_mac_metadata(name: str) -> bool:
    """macOS Finder's resource forks (``__MACOSX/``), which nobody put in the archive on purpose."""
    return name.startswith("__MACOSX/")


def extract_entry(path: Path, entry: ZipEntry, dest: Path, max_bytes: int) -> Path:
    """The entry's bytes in a new file under ``dest`` with a generated name (the entry's suffix kept).

    Inflated bytes are counted as they come: 413 once they pass the declared size or ``max_bytes``."""
    if not entry.is_audio:
        raise UploadRejected(400, f"{entry.name}: {entry.reason}")
    if entry.size > max_bytes:
        raise _too_large(f"{entry.name} unpacks to {entry.size} bytes, over the limit of {max_bytes} bytes")
    target = dest / f"{uuid.uuid4().hex}{PurePosixPath(entry.name).suffix.lower()}"
    with _open_zip(path) as archive:
        try:
            info = archive.getinfo(entry.member or entry.name)
        except KeyError:
            raise UploadRejected(400, f"{entry.name}: not in the archive") from None
        # zipfile stops at the declared size (and fails its CRC check there, before handing over the bytes it
        # read): letting it read a chunk past either limit shows us an entry that inflates past what it declared.
        reading = copy.copy(info)
        reading.file_size = max(info.file_size, max_bytes) + CHUNK_BYTES + 1
        written = 0
        try:
            with archive.open(reading) as source, open(target, "xb") as out:
                while chunk := source.read(CHUNK_BYTES):
                    written += len(chunk)
                    if written > info.file_size:
                        raise _too_large(f"{entry.name} unpacks to more than the {info.file_size} bytes it declares")
                    if written > max_bytes:
                        raise _too_large(f"{entry.name} unpacks to more than {max_bytes} bytes")
                    out.write(chunk)
        except UploadRejected:
            target.unlink(missing_ok=True)
            raise
        except Exception as exc:  # BadZipFile (its CRC), zlib.error, lzma.LZMAError, EOFError: a damaged entry
            target.unlink(missing_ok=True)
            raise UploadRejected(400, f"{entry.name}: the entry is damaged ({exc})") from exc
    return target


# --- URLs ---------------------------------------------------------------------------------------------

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def address_problem(address: IpAddress) -> str | None:
    """Why a connection to ``address`` could reach something that is not the public internet, or None."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    for kind in ("unspecified", "loopback", "link_local", "multicast", "reserved", "private"):
        if getattr(address, f"is_{kind}"):
            return kind.replace("_", "-")
    if not address.is_global:  # shared (carrier-grade NAT) space and the like
        return "not public"
    return None


async def resolve_host(host: str, port: int) -> list[IpAddress]:
    """Every address ``host`` resolves to (an IP literal is its own answer). 400 if it does not resolve."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise UploadRejected(400, f"cannot resolve the URL's host {host}: {exc}") from exc
    # getaddrinfo can answer a scoped IPv6 address ("fe80::1%eth0"); the scope is not part of the address.
    addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos))
    if not addresses:
        raise UploadRejected(400, f"cannot resolve the URL's host {host}")
    return addresses


class _PinnedResolver(AbstractResolver):
    """Answers the one host being fetched with the addresses already vetted, and nothing else."""

    def __init__(self, host: str, addresses: list[IpAddress]) -> None:
        self._host = host
        self._addresses = addresses

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET) -> list[ResolveResult]:
        if host != self._host:
            raise OSError(f"{host} was not vetted")
        return [
            ResolveResult(
                hostname=host,
                host=str(address),
                port=port,
                family=socket.AF_INET6 if address.version == 6 else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for address in self._addresses
            if family in (socket.AF_UNSPEC, 0) or (family == socket.AF_INET6) == (address.version == 6)
        ]

    async def close(self) -> None:
        return None


async def _vet(url: URL, allow_private: bool) -> list[IpAddress]:
    if url.scheme not in ("http", "https"):
        raise UploadRejected(400, f"only http and https URLs are accepted, not {url.scheme or 'a bare path'}")
    if not url.raw_host:
        raise UploadRejected(400, "the URL has no host")
    host = url.raw_host.strip("[]")
    addresses = await resolve_host(host, url.port or 0)
    if not allow_private:
        for address in addresses:
            if (problem := address_problem(address)) is not None:
                raise UploadRejected(
                    400, f"the URL's host {host} is a {problem} address ({address}); only public addresses are "
                    "fetched (records.allow_private_urls)"
                )
    return addresses


async def fetch_url(url: str, dest: Path, *, max_bytes: int, timeout_s: float, allow_private: bool) -> Path:
    """Download ``url`` to ``dest`` (plus a suffix from the URL, its Content-Type or its first bytes, unless
    ``dest`` has one); returns that path. Every problem is a 400: scheme, address, status, size, time."""
    written: list[Path] = []
    try:
        async with asyncio.timeout(timeout_s):
            return await _fetch(url, dest, max_bytes, allow_private, written)
    except TimeoutError:
        _remove(written)
        raise UploadRejected(400, f"the URL did not answer within {timeout_s:g} s") from None
    except UploadRejected:
        _remove(written)
        raise
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        _remove(written)
        raise UploadRejected(400, f"cannot fetch the URL: {exc or type(exc).__name__}") from exc


def _remove(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


async def _fetch(url: str, dest: Path, max_bytes: int, allow_private: bool, written: list[Path]) -> Path:
    current = URL(url)
    for _ in range(MAX_REDIRECTS + 1):
        addresses = await _vet(current, allow_private)
        resolver = _PinnedResolver(current.raw_host.strip("[]"), addresses)
        connector = aiohttp.TCPConnector(resolver=resolver, use_dns_cache=False, force_close=True)
        async with aiohttp.ClientSession(connector=connector, trust_env=False) as session:
            async with session.get(
                current, allow_redirects=False, headers={"Accept": "audio/*, */*", "Accept-Encoding": "identity"}
            ) as response:
                if response.status in REDIRECT_STATUSES:
                    location = response.headers.get("Location")
                    if not location:
                        raise UploadRejected(400, f"the URL answered HTTP {response.status} without a Location")
                    current = current.join(URL(location))
                    continue
                if not 200 <= response.status < 300:
                    status = f"{response.status} {response.reason or ''}".strip()
                    raise UploadRejected(400, f"the URL answered HTTP {status}")
                if response.content_length is not None and response.content_length > max_bytes:
                    raise UploadRejected(400, f"the file at the URL is over {max_bytes} bytes")
                return await _save(response, current, dest, max_bytes, written)
    raise UploadRejected(400, f"the URL redirected more than {MAX_REDIRECTS} times")


async def _save(response: aiohttp.ClientResponse, url: URL, dest: Path, max_bytes: int, written: list[Path]) -> Path:
    head = await response.content.read(SNIFF_BYTES)
    suffix = dest.suffix.lower()
    if suffix not in ACCEPTED_SUFFIXES:
        suffix = PurePosixPath(url.path).suffix.lower()
        if suffix not in ACCEPTED_SUFFIXES:
            suffix = suffix_for_mime(response.headers.get("Content-Type", "")) or sniff_suffix(head)
        dest = dest.with_name(dest.name + suffix)
    out = await asyncio.to_thread(open, dest, "xb")
    written.append(dest)
    try:
        total = len(head)
        await asyncio.to_thread(out.write, head)
        async for chunk in response.content.iter_chunked(CHUNK_BYTES):
            total += len(chunk)
            if total > max_bytes:
                raise UploadRejected(400, f"the file at the URL is over {max_bytes} bytes")
            await asyncio.to_thread(out.write, chunk)
    finally:
        await asyncio.to_thread(out.close)
    if total == 0:
        raise UploadRejected(400, "the URL answered an empty body")
    return dest


# --- base64 -------------------------------------------------------------------------------------------


def decode_data_url(value: str, dest_dir: Path, max_bytes: int) -> Path:
    """``data:audio/wav;base64,...`` or bare base64 to a new file under ``dest_dir``; 400 if it is not base64,
    413 if it holds more than ``max_bytes`` (told from its length, before decoding)."""
    value = value.strip()
    mime = ""
    if value[:5].lower() == "data:":
        header, comma, value = value[5:].partition(",")
        if not comma:
            raise UploadRejected(400, "a data URL needs a comma between its header and its data")
        params = [part.strip().lower() for part in header.split(";")]
        if "base64" not in params[1:]:
            raise UploadRejected(400, "only base64 data URLs are accepted (data:audio/wav;base64,...)")
        mime = params[0]
    data = "".join(value.split())
    if len(data) > 4 * ((max_bytes + 2) // 3):
        raise _too_large(f"the audio is over {max_bytes} bytes")
    if "-" in data or "_" in data:
        data = data.translate(str.maketrans("-_", "+/"))
    data += "=" * (-len(data) % 4)
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise UploadRejected(400, f"audio_base64 is not valid base64: {exc}") from exc
    if not raw:
        raise UploadRejected(400, "audio_base64 holds no data")
    if len(raw) > max_bytes:
        raise _too_large(f"the audio is over {max_bytes} bytes")
    suffix = suffix_for_mime(mime) or sniff_suffix(raw[:SNIFF_BYTES])
    target = dest_dir / f"{uuid.uuid4().hex}{suffix}"
    with open(target, "xb") as out:
        out.write(raw)
    return target
