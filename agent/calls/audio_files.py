"""Any accepted audio file to 16 kHz float32 samples, with PyAV (its own FFmpeg, no system tools).

Only the demuxers of the accepted formats may open a file and only local files may be read, so a
crafted upload (a playlist, a concat script) cannot make FFmpeg fetch URLs or read other files.
Every failure is an ``AudioError`` whose message can be shown to the user as it is. Blocking: call
these in a thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

SAMPLE_RATE = 16_000
# The demuxers FFmpeg may pick for an upload: wav, mp3, ogg (Vorbis, Opus), matroska (webm), flac, aac (ADTS),
# mov (m4a, mp4). Anything else is refused even if FFmpeg could read it.
_OPEN_OPTIONS = {"format_whitelist": "wav,mp3,ogg,matroska,flac,aac,mov", "protocol_whitelist": "file"}
_TOO_MANY_BAD_PACKETS = 50  # consecutive undecodable packets after which the rest of the file is given up

MIME_BY_SUFFIX = {
    ".wav": "audio/wav",
    ".mp3": "audio/mpeg",
    ".ogg": "audio/ogg",
    ".oga": "audio/ogg",
    ".opus": "audio/ogg",
    ".webm": "audio/webm",
    ".flac": "audio/flac",
    ".aac": "audio/aac",
    ".m4a": "audio/mp4",
    ".mp4": "audio/mp4",
}
SUFFIX_BY_MIME = {
    "audio/wav": ".wav",
    "audio/x-wav": ".wav",
    "audio/wave": ".wav",
    "audio/vnd.wave": ".wav",
    "audio/mpeg": ".mp3",
    "audio/mp3": ".mp3",
    "audio/ogg": ".ogg",
    "audio/opus": ".opus",
    "application/ogg": ".ogg",
    "audio/webm": ".webm",
    "video/webm": ".webm",
    "audio/flac": ".flac",
    "audio/x-flac": ".flac",
    "audio/aac": ".aac",
    "audio/aacp": ".aac",
    "audio/mp4": ".m4a",
    "audio/x-m4a": ".m4a",
    "audio/m4a": ".m4a",
    "video/mp4": ".mp4",
}


class AudioError(ValueError):
    """What was wrong with a file, in words for the user (the API answers it with a 400)."""


@dataclass
class DecodedAudio:
    samples: np.ndarray  # float32, shape (channels, n) at 16 kHz, channels 1 or 2 (stereo: one speaker each)
    sample_rate: int
    duration_s: float
    format_name: str  # the container as PyAV names it


def mime_for(path: Path) -> str:
    return MIME_BY_SUFFIX.get(path.suffix.lower(), "application/octet-stream")


def suffix_for_mime(mime: str) -> str:
    """The file suffix of an audio MIME type (parameters ignored), or "" when it is not one we accept."""
    return SUFFIX_BY_MIME.get(mime.split(";")[0].strip().lower(), "")


def sniff_suffix(head: bytes) -> str:
    """The suffix of an accepted format recognised by its first bytes (at least 12 of them), or ""."""
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return ".wav"
    if head[:4] == b"fLaC":
        return ".flac"
    if head[:4] == b"OggS":
        return ".ogg"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return ".webm"
    if head[4:8] == b"ftyp":
        return ".m4a"
    if head[:3] == b"ID3":
        return ".mp3"
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xF0 == 0xF0 and head[1] & 0x06 == 0:
        return ".aac"  # ADTS: sync word 0xFFF and layer 0
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:
        return ".mp3"  # an MPEG audio frame without an ID3 tag
    return ""


def format_duration(seconds: float) -> str:
    """H:MM:SS, as the limits are written in messages."""
    whole = int(seconds)
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def _open(path: Path) -> av.container.InputContainer:
    if not path.is_file():
        raise AudioError(f"cannot decode {path.name}: the file is missing")
    if path.stat().st_size == 0:
        raise AudioError(f"cannot decode {path.name}: the file is empty")
    try:
        return av.open(str(path), options=_OPEN_OPTIONS)
    except av.error.ArgumentError as exc:  # FFmpeg recognised a format that is not on our list
        raise AudioError(f"cannot decode {path.name}: not an accepted audio format") from exc
    except av.error.InvalidDataError as exc:
        raise AudioError(
            f"cannot decode {path.name}: its data is not audio in an accepted format, or the file is cut short"
        ) from exc
    except (av.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise AudioError(f"cannot decode {path.name}: {_reason(exc)}") from exc


def _reason(exc: Exception) -> str:
    if isinstance(exc, av.FFmpegError) and exc.strerror:
        return exc.strerror[0].lower() + exc.strerror[1:]
    return str(exc)


def _declared_seconds(container: av.container.InputContainer, stream: av.AudioStream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def probe_duration(path: Path) -> float | None:
    """The duration the file declares (headers only, nothing decoded); None when it declares none.

    Raises AudioError when the file cannot be opened or holds no audio stream."""
    with _open(path) as container:
        if not container.streams.audio:
            raise AudioError("not an audio file: no audio stream found")
        return _declared_seconds(container, container.streams.audio[0])


def _too_long(seconds: float | None, max_seconds: float) -> AudioError:
    """``seconds`` None: the file does not say how long it is and decoding stopped at the limit."""
    length = "longer than" if seconds is None else f"{format_duration(seconds)} long, over"
    return AudioError(f"recording is {length} the {format_duration(max_seconds)} limit (records.max_audio_seconds)")


def decode_audio(path: Path, max_seconds: float) -> DecodedAudio:
    """The whole file as float32 at 16 kHz, mono or stereo as recorded (more channels are mixed to mono).

    A file longer than ``max_seconds`` is refused as soon as that is known: from its header, or
    while decoding once the limit is passed. A damaged or truncated file gives what decodes."""
    with _open(path) as container:
        if not container.streams.audio:
            raise AudioError("not an audio file: no audio stream found")
        stream = container.streams.audio[0]
        declared = _declared_seconds(container, stream)
        if declared is not None and declared > max_seconds:
            raise _too_long(declared, max_seconds)
        chunks, error = _decode_stream(container, stream, int(max_seconds * SAMPLE_RATE))
        format_name = container.format.name
    if not chunks:
        if error is not None:
            raise AudioError(f"cannot decode {path.name}: {error}")
        raise AudioError("the file holds no audio samples")
    samples = np.concatenate(chunks, axis=1)
    if samples.shape[1] > max_seconds * SAMPLE_RATE:
        raise _too_long(None, max_seconds)  # its header said less than it holds
    return DecodedAudio(samples, SAMPLE_RATE, samples.shape[1] / SAMPLE_RATE, format_name)


def _decode_stream(
    container: av.container.InputContainer, stream: av.AudioStream, max_samples: int
) -> tuple[list[np.ndarray], str | None]:
    """Resampled chunks of (channels, n) float32, and the last error met (None if none). Stops one chunk past
    ``max_samples``, so that the caller can tell the file is too long without decoding the rest."""
    chunks: list[np.ndarray] = []
    total = 0
    resampler: av.AudioResampler | None = None
    layout = ""
    error: str | None = None
    bad_in_a_row = 0

    def add(frames: list[av.AudioFrame]) -> None:
        nonlocal total
        for frame in frames:
            array = frame.to_ndarray()
            chunks.append(array)
            total += array.shape[1]

    try:
        for packet in container.demux(stream):
            try:
                frames = packet.decode()
                bad_in_a_row = 0
            except (av.FFmpegError, ValueError) as exc:  # one damaged packet: skip it, keep the rest
                error = _reason(exc)
                bad_in_a_row += 1
                if bad_in_a_row >= _TOO_MANY_BAD_PACKETS:
                    break
                continue
            for frame in frames:
                if resampler is None:
                    layout = "stereo" if frame.layout.nb_channels == 2 else "mono"
                    resampler = av.AudioResampler(format="fltp", layout=layout, rate=SAMPLE_RATE)
                frame.pts = None  # timestamps of damaged files jump; the resampler only needs the samples
                try:
                    add(resampler.resample(frame))
                except ValueError:  # the stream changed rate or layout midway (chained Ogg): a fresh resampler
                    add(resampler.resample(None))
                    resampler = av.AudioResampler(format="fltp", layout=layout, rate=SAMPLE_RATE)
                    add(resampler.resample(frame))
            if total > max_samples:
                return chunks, error
    except (av.FFmpegError, OSError) as exc:  # the container itself ends badly (a truncated file)
        error = _reason(exc)
    if resampler is not None:
        add(resampler.resample(None))
    return chunks, error
