"""A live call's stereo recording: user left, agent right, on time, on disk as it goes, readable after a crash."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from agent.calls import recording as recording_module
from agent.calls.audio_files import decode_audio
from agent.calls.recording import CallRecording

RATE = 16_000
FRAME = 320  # 20 ms, as the live path hands them over
USER_HZ, AGENT_HZ = 440.0, 660.0
FORMATS = ["flac", "ogg"]
ENCODER_HOLDBACK_S = 0.3
REPO_ROOT = Path(__file__).resolve().parents[1]


def tone(hz: float, seconds: float, start_s: float = 0.0) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE + start_s
    return (np.sin(2 * np.pi * hz * t) * 12_000).astype(np.int16)


def feed(write, samples: np.ndarray, at_sample: int) -> None:
    for offset in range(0, samples.size, FRAME):
        write(samples[offset : offset + FRAME], at_sample + offset)


def level(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2))) if samples.size else 0.0


def dominant_hz(samples: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(samples))
    return float(np.fft.rfftfreq(samples.size, 1 / RATE)[int(np.argmax(spectrum))])


def seconds(a: float, b: float) -> slice:
    return slice(int(a * RATE), int(b * RATE))


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_user_is_on_the_left_and_the_agent_on_the_right_each_at_its_time(tmp_path, fmt):
    recording = CallRecording(tmp_path / f"call.{fmt}", fmt=fmt, flush_seconds=0.2)
    feed(recording.write_user, tone(USER_HZ, 2.0), 0)
    feed(recording.write_agent, tone(AGENT_HZ, 1.0), int(0.5 * RATE))  # the agent answers from 0.5 s to 1.5 s
    recording.close()

    audio = decode_audio(tmp_path / f"call.{fmt}", max_seconds=60)

    assert recording.error is None and recording.duration_s == pytest.approx(2.0)
    assert audio.samples.shape[0] == 2 and audio.duration_s == pytest.approx(2.0, abs=0.03)
    left, right = audio.samples
    assert abs(dominant_hz(left[seconds(0.1, 1.9)]) - USER_HZ) < 3
    assert abs(dominant_hz(right[seconds(0.6, 1.4)]) - AGENT_HZ) < 3
    assert level(right[seconds(0.0, 0.45)]) < 0.01 and level(right[seconds(1.55, 2.0)]) < 0.01
    assert level(right[seconds(0.6, 1.4)]) > 0.2


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_pause_in_the_audio_is_recorded_as_silence_in_its_place(tmp_path, fmt):
    path = tmp_path / f"gap.{fmt}"
    recording = CallRecording(path, fmt=fmt, flush_seconds=0.2)
    feed(recording.write_user, tone(USER_HZ, 0.5), 0)
    feed(recording.write_user, tone(USER_HZ, 0.5), int(1.5 * RATE))  # nothing from 0.5 s to 1.5 s
    recording.close()

    left, right = decode_audio(path, max_seconds=60).samples

    assert left.size == pytest.approx(2 * RATE, abs=0.03 * RATE)
    assert level(left[seconds(0.6, 1.4)]) < 0.01
    assert level(left[seconds(0.05, 0.45)]) > 0.2 and level(left[seconds(1.55, 1.95)]) > 0.2
    assert level(right) < 0.01  # the agent said nothing: its channel is silence of the same length


def test_a_channel_that_fell_behind_is_padded_with_silence_while_the_call_goes_on(tmp_path):
    path = tmp_path / "behind.flac"
    recording = CallRecording(path, flush_seconds=0.1)
    feed(recording.write_user, tone(USER_HZ, 3.0), 0)  # the agent has sent nothing at all
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # written while still open: the user's audio is not held back
        time.sleep(0.1)
        if path.exists() and path.stat().st_size > 0 and decode_audio(path, max_seconds=60).duration_s >= 1.8:
            break
    else:
        pytest.fail("the user's audio was not written while the agent's channel was silent")
    recording.close()

    left, right = decode_audio(path, max_seconds=60).samples
    assert left.size == 3 * RATE and level(right) == 0.0 and level(left) > 0.2


def test_writing_a_frame_is_cheap_enough_for_the_event_loop(tmp_path):
    recording = CallRecording(tmp_path / "cheap.flac", flush_seconds=0.5)
    frame = tone(USER_HZ, FRAME / RATE)
    started = time.perf_counter()
    for index in range(5_000):  # 100 s of call, both channels
        recording.write_user(frame, index * FRAME)
        recording.write_agent(frame, index * FRAME)
    per_frame_s = (time.perf_counter() - started) / 10_000
    recording.close()
    assert per_frame_s < 100e-6
    assert decode_audio(tmp_path / "cheap.flac", max_seconds=600).duration_s == pytest.approx(100.0, abs=0.03)


def test_the_caller_may_reuse_its_frame_buffer(tmp_path):
    recording = CallRecording(tmp_path / "reuse.flac", flush_seconds=0.1)
    buffer = tone(USER_HZ, FRAME / RATE)
    recording.write_user(buffer, 0)
    buffer[:] = 0
    recording.write_user(buffer, FRAME)
    recording.close()
    left, _ = decode_audio(tmp_path / "reuse.flac", max_seconds=60).samples
    assert level(left[:FRAME]) > 0.2 and level(left[FRAME:]) == 0.0


def test_close_is_idempotent_and_later_writes_are_ignored(tmp_path):
    recording = CallRecording(tmp_path / "twice.flac", flush_seconds=0.1)
    feed(recording.write_user, tone(USER_HZ, 1.0), 0)
    recording.close()
    recording.close()
    recording.write_user(tone(USER_HZ, 1.0), RATE)
    assert recording.duration_s == pytest.approx(1.0)
    assert decode_audio(tmp_path / "twice.flac", max_seconds=60).duration_s == pytest.approx(1.0)


def test_a_recording_that_cannot_be_created_reports_it_and_the_call_goes_on(tmp_path):
    recording = CallRecording(tmp_path / "missing" / "folder" / "call.flac", flush_seconds=0.1)
    feed(recording.write_user, tone(USER_HZ, 1.0), 0)  # must not raise
    recording.close()
    recording.write_agent(tone(AGENT_HZ, 0.1), 0)
    assert recording.error is not None
    assert "stopped at 0:00:00" in recording.error and "lost" in recording.error


def test_a_disk_that_fills_up_midway_keeps_what_was_written_and_says_from_when_audio_was_lost(tmp_path, monkeypatch):
    real_encode = CallRecording._encode
    blocks = []

    def encode_until_full(self, block):
        if self._written >= 2 * RATE:
            raise OSError(28, "No space left on device")
        blocks.append(block.shape[0])
        real_encode(self, block)

    monkeypatch.setattr(CallRecording, "_encode", encode_until_full)
    monkeypatch.setattr(recording_module, "MAX_BLOCK_SECONDS", 1.0)
    path = tmp_path / "full.flac"
    recording = CallRecording(path, flush_seconds=0.1)
    feed(recording.write_user, tone(USER_HZ, 4.0), 0)
    feed(recording.write_agent, tone(AGENT_HZ, 4.0), 0)
    recording.close()

    assert recording.error.startswith("the recording stopped at 0:00:02 (")
    assert "No space left on device" in recording.error and "lost" in recording.error
    recording.write_user(tone(USER_HZ, 1.0), 4 * RATE)  # dropped without a word
    assert recording.duration_s == pytest.approx(2.0)
    assert decode_audio(path, max_seconds=60).duration_s == pytest.approx(2.0, abs=0.1)


CHILD = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from agent.calls.recording import CallRecording

    path, fmt = sys.argv[1], sys.argv[2]
    rate, frame = 16000, 320
    recording = CallRecording(path, fmt=fmt, flush_seconds=0.5)
    t = np.arange(rate * 6) / rate
    user = (np.sin(2 * np.pi * 440 * t) * 12000).astype(np.int16)
    agent = (np.sin(2 * np.pi * 660 * t) * 12000).astype(np.int16)
    for offset in range(0, user.size, frame):  # 6 s of call, already under way
        recording.write_user(user[offset : offset + frame], offset)
        recording.write_agent(agent[offset : offset + frame], offset)
    time.sleep(1.5)  # a flush or three: the 6 s are on disk
    print("flushed", flush=True)
    position = user.size
    while True:  # the call goes on, frame by frame, until the process is killed
        recording.write_user(user[:frame], position)
        recording.write_agent(agent[:frame], position)
        position += frame
        time.sleep(frame / rate)
    """
)


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_recording_killed_with_sigkill_keeps_everything_flushed_and_decodes(tmp_path, fmt):
    path = tmp_path / f"killed.{fmt}"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), fmt], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout.readline().strip() == "flushed"
        time.sleep(0.3)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    assert child.returncode == -signal.SIGKILL

    audio = decode_audio(path, max_seconds=60)

    assert audio.samples.shape[0] == 2
    # All 6 s were flushed, less what the encoder keeps back for its next packet: part of one codec frame (and, in
    # Ogg, one short page). What came after the flush may or may not be there.
    assert 6.0 - ENCODER_HOLDBACK_S <= audio.duration_s < 8.0
    left, right = audio.samples
    assert abs(dominant_hz(left[seconds(0.5, 5.5)]) - USER_HZ) < 3
    assert abs(dominant_hz(right[seconds(0.5, 5.5)]) - AGENT_HZ) < 3
    assert level(left - right) > 0.2  # two different signals, not one copied
