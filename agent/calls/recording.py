"""A live call recorded in stereo (user left, agent right), written as it goes so that a crash keeps it.

The session's audio path only appends frames to a buffer under a lock. A thread of the recording
wakes every ``flush_seconds``, mixes what is due into stereo blocks (silence where nobody sent
anything), encodes them and pushes them to the file. The writer is PyAV with ``flush_packets``:
every encoded packet reaches the operating system at once, and both FLAC (no sample count in its
header until the end) and Ogg (short pages) decode up to the last packet written, so a process
killed with SIGKILL loses about ``flush_seconds`` of audio. (libsndfile's FLAC does as well; its
Opus keeps a second of pages back, so PyAV is used for both formats.) ``close`` writes the rest and
finishes the file (the FLAC header gets its length and checksum).
"""

from __future__ import annotations

import logging
import threading
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from agent.calls.audio_files import format_duration

log = logging.getLogger(__name__)

FORMATS = {"flac": ("flac", "flac"), "ogg": ("ogg", "libopus")}  # fmt -> (container, encoder)
OPUS_BIT_RATE = 48_000  # two speech channels at 16 kHz: clear speech, about 360 kB a minute
OGG_PAGE_MICROSECONDS = 100_000  # an Ogg page is written once it holds this much audio: at most this is held back
# A channel that stopped sending (a muted microphone, a stalled track) is waited for this long before its
# part of the recording is written as silence; samples arriving later than that are dropped.
CHANNEL_SLACK_SECONDS = 1.0
MAX_BLOCK_SECONDS = 10.0  # a long gap is written as several blocks of silence, not one huge array
USER, AGENT = 0, 1


class CallRecording:
    def __init__(self, path: Path, sample_rate: int = 16_000, fmt: str = "flac", flush_seconds: float = 2.0) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"recording format must be one of {sorted(FORMATS)}, not {fmt!r}")
        self.path = Path(path)
        self.sample_rate = sample_rate
        self.fmt = fmt
        self.flush_seconds = flush_seconds
        self.error: str | None = None  # set by the writer thread: what was lost, from when
        self._lock = threading.Lock()
        self._pending: tuple[list[tuple[int, np.ndarray]], ...] = ([], [])  # (position, int16 samples) per channel
        self._ends = [0, 0]  # one past the last sample each channel has sent
        self._written = 0  # samples per channel already handed to the encoder
        self._closing = False
        self._closed = False
        self._close_lock = threading.Lock()
        self._wake = threading.Event()
        self._container: av.container.OutputContainer | None = None
        self._stream: av.AudioStream | None = None
        self._thread = threading.Thread(target=self._run, name=f"recording:{self.path.name}", daemon=True)
        self._thread.start()

    # --- the event loop's side: cheap, never blocking on I/O -------------------------------------------

    def write_user(self, samples: np.ndarray, at_sample: int) -> None:
        """Mono int16 microphone samples starting ``at_sample`` samples after the call began."""
        self._append(USER, samples, at_sample)

    def write_agent(self, samples: np.ndarray, at_sample: int) -> None:
        """Mono int16 samples the agent sent, starting ``at_sample`` samples after the call began."""
        self._append(AGENT, samples, at_sample)

    def _append(self, channel: int, samples: np.ndarray, at_sample: int) -> None:
        if self.error is not None or self._closing:
            return
        chunk = np.array(samples, dtype=np.int16).reshape(-1)  # a copy: the caller may reuse its buffer
        if not chunk.size:
            return
        with self._lock:
            self._pending[channel].append((at_sample, chunk))
            self._ends[channel] = max(self._ends[channel], at_sample + chunk.size)

    @property
    def duration_s(self) -> float:
        """Seconds the recording holds: what was sent so far (all of it is in the file once closed), or up to the
        failure when writing failed."""
        if self.error is not None:
            return self._written / self.sample_rate
        return max(self._written, *self._ends) / self.sample_rate

    def close(self) -> None:
        """Blocking (run it in an executor): write what is left and finish the file. Safe to call twice."""
        with self._close_lock:
            if self._closed:
                return
            self._closing = True
            self._wake.set()
            self._thread.join()
            self._closed = True

    # --- the writer thread ------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._open()
        except Exception as exc:
            self._fail(exc)
            return
        while True:
            final = self._wake.wait(self.flush_seconds)
            try:
                self._write_due(final)
                if final:
                    self._finish()
                    return
            except Exception as exc:
                self._fail(exc)
                return

    def _open(self) -> None:
        container_format, codec = FORMATS[self.fmt]
        options = {"flush_packets": "1"}
        if container_format == "ogg":
            options["page_duration"] = str(OGG_PAGE_MICROSECONDS)
        self._container = av.open(str(self.path), mode="w", format=container_format, options=options)
        self._stream = self._container.add_stream(codec, rate=self.sample_rate, layout="stereo")
        if codec == "libopus":
            self._stream.bit_rate = OPUS_BIT_RATE

    def _write_due(self, final: bool) -> None:
        start = self._written
        with self._lock:
            ends = self._ends
            due = max(ends) if final else max(min(ends), max(ends) - int(CHANNEL_SLACK_SECONDS * self.sample_rate))
            if due <= start:
                return
            taken = tuple(self._split(channel, start, due) for channel in (USER, AGENT))
        block_samples = max(1, int(MAX_BLOCK_SECONDS * self.sample_rate))
        for block_start in range(start, due, block_samples):
            block_end = min(due, block_start + block_samples)
            block = np.zeros((block_end - block_start, 2), dtype=np.int16)
            for channel, chunks in enumerate(taken):
                for at, chunk in chunks:
                    lo, hi = max(at, block_start), min(at + chunk.size, block_end)
                    if lo < hi:
                        block[lo - block_start : hi - block_start, channel] = chunk[lo - at : hi - at]
            self._encode(block)
            self._written = block_end

    def _split(self, channel: int, start: int, due: int) -> list[tuple[int, np.ndarray]]:
        """Under the lock: the channel's samples in [start, due) out of the buffer; later ones stay; earlier ones
        (arrived after their place was written) are dropped."""
        taken, kept = [], []
        for at, chunk in self._pending[channel]:
            end = at + chunk.size
            if end <= start:
                continue
            if at < due:
                taken.append((at, chunk[: due - at]))
            if end > due:
                kept.append((max(at, due), chunk[max(0, due - at) :]))
        self._pending[channel][:] = kept
        return taken

    def _encode(self, block: np.ndarray) -> None:
        frame = av.AudioFrame.from_ndarray(block.reshape(1, -1), format="s16", layout="stereo")
        frame.sample_rate = self.sample_rate
        frame.time_base = Fraction(1, self.sample_rate)
        frame.pts = self._written
        for packet in self._stream.encode(frame):
            self._container.mux(packet)

    def _finish(self) -> None:
        for packet in self._stream.encode(None):
            self._container.mux(packet)
        self._container.close()
        self._container = None

    def _fail(self, exc: Exception) -> None:
        at = format_duration(self._written / self.sample_rate)
        self.error = f"the recording stopped at {at} ({exc}); the audio after that was lost"
        log.error("recording %s: %s", self.path, self.error)
        with self._lock:
            for pending in self._pending:
                pending.clear()
        if self._container is not None:
            try:
                self._container.close()
            except Exception:  # the file is already broken; what was flushed stays readable
                log.debug("recording %s: closing after the failure failed too", self.path, exc_info=True)
            self._container = None
