"""Audio intake: every accepted format decodes to 16 kHz; bad files, ZIPs, URLs and base64 are refused clearly.

Audio is generated here with PyAV (tones: one frequency per channel). Network tests talk only to an
aiohttp server on 127.0.0.1; every other address is refused before a connection is made, and the
tests check that no connection was attempted.
"""

from __future__ import annotations

import asyncio
import base64
import io
import stat
import struct
import wave
import zipfile
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from aiohttp import web

from agent.calls import audio_files, uploads
from agent.calls.audio_files import AudioError, decode_audio, mime_for, probe_duration
from agent.calls.uploads import (
    UploadRejected,
    ZipEntry,
    address_problem,
    decode_data_url,
    extract_entry,
    fetch_url,
    safe_entry_name,
    zip_entries,
)

LEFT_HZ, RIGHT_HZ = 440.0, 660.0
SECONDS = 1.5
TOLERANCE_S = 0.05

# (file name, PyAV container format, encoder, encoder rate, layouts it can write)
FORMATS = [
    ("tone.wav", "wav", "pcm_s16le", 44_100, ("mono", "stereo")),
    ("tone.mp3", "mp3", "libmp3lame", 44_100, ("mono", "stereo")),
    ("vorbis.ogg", "ogg", "vorbis", 44_100, ("stereo",)),  # FFmpeg's own Vorbis encoder writes stereo only
    ("opus.ogg", "ogg", "libopus", 48_000, ("mono", "stereo")),
    ("tone.opus", "opus", "libopus", 48_000, ("mono", "stereo")),
    ("tone.webm", "webm", "libopus", 48_000, ("mono", "stereo")),
    ("tone.flac", "flac", "flac", 44_100, ("mono", "stereo")),
    ("tone.aac", "adts", "aac", 44_100, ("mono", "stereo")),
    ("tone.m4a", "ipod", "aac", 44_100, ("mono", "stereo")),
    ("tone.mp4", "mp4", "aac", 44_100, ("mono", "stereo")),
]
CASES = [(name, fmt, codec, rate, layout) for name, fmt, codec, rate, layouts in FORMATS for layout in layouts]


def tones(rate: int, seconds: float, channels: int) -> np.ndarray:
    """int16 of shape (channels, n): 440 Hz on the left, 660 Hz on the right."""
    t = np.arange(int(rate * seconds)) / rate
    both = np.stack([np.sin(2 * np.pi * LEFT_HZ * t), np.sin(2 * np.pi * RIGHT_HZ * t)]) * 10_000
    return both[:channels].astype(np.int16)


def encode(path: Path, fmt: str, codec: str, rate: int, layout: str, seconds: float = SECONDS) -> Path:
    samples = tones(rate, seconds, 2 if layout == "stereo" else 1)
    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=rate, layout=layout)
        if codec == "vorbis":
            stream.codec_context.options = {"strict": "experimental"}
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples.T).reshape(1, -1), format="s16", layout=layout)
        frame.sample_rate = rate
        frame.time_base = Fraction(1, rate)
        frame.pts = 0
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    return path


def wav_bytes(seconds: float = 0.5, rate: int = 16_000) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(tones(rate, seconds, 1).tobytes())
    return buffer.getvalue()


def dominant_hz(signal: np.ndarray, rate: int = 16_000) -> float:
    spectrum = np.abs(np.fft.rfft(signal))
    return float(np.fft.rfftfreq(signal.size, 1 / rate)[int(np.argmax(spectrum))])


@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("audio")


# --- decoding -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "fmt", "codec", "rate", "layout"), CASES, ids=[f"{c[0]}-{c[4]}" for c in CASES])
def test_every_accepted_format_decodes_to_16khz_with_its_duration_and_channels(
    audio_dir, name, fmt, codec, rate, layout
):
    path = encode(audio_dir / f"{layout}-{name}", fmt, codec, rate, layout)

    audio = decode_audio(path, max_seconds=60)

    channels = 2 if layout == "stereo" else 1
    assert audio.sample_rate == 16_000
    assert audio.samples.dtype == np.float32 and audio.samples.shape[0] == channels
    assert abs(audio.duration_s - SECONDS) <= TOLERANCE_S
    assert audio.samples.shape[1] == round(audio.duration_s * 16_000)
    assert audio.format_name
    middle = audio.samples[:, 4_000:20_000]
    assert abs(dominant_hz(middle[0]) - LEFT_HZ) < 5
    if channels == 2:  # kept apart: one speaker per channel
        assert abs(dominant_hz(middle[1]) - RIGHT_HZ) < 5


def test_more_than_two_channels_are_mixed_to_mono(tmp_path):
    rate, n = 16_000, 16_000
    samples = np.tile(tones(rate, 1.0, 1), (6, 1))
    path = tmp_path / "surround.flac"
    with av.open(str(path), "w", format="flac") as container:
        stream = container.add_stream("flac", rate=rate, layout="5.1")
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples.T).reshape(1, -1), format="s16", layout="5.1")
        frame.sample_rate = rate
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)

    audio = decode_audio(path, max_seconds=60)

    assert audio.samples.shape == (1, n)
    assert abs(dominant_hz(audio.samples[0]) - LEFT_HZ) < 5


def test_declared_duration_and_mime_are_known_without_decoding(audio_dir):
    path = encode(audio_dir / "probe.flac", "flac", "flac", 44_100, "mono")
    assert probe_duration(path) == pytest.approx(SECONDS, abs=TOLERANCE_S)
    assert mime_for(path) == "audio/flac"
    assert mime_for(Path("x.M4A")) == "audio/mp4" and mime_for(Path("x.mp3")) == "audio/mpeg"
    assert mime_for(Path("x.txt")) == "application/octet-stream"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"hello, this is a shopping list, not a song\n" * 20, "not audio in an accepted format"),
        (b"", "the file is empty"),
        (np.random.default_rng(7).bytes(5_000), "not audio in an accepted format"),
        (b"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\nhttp://127.0.0.1:9/a.mp3\n#EXT-X-ENDLIST\n", "decode"),
    ],
    ids=["text", "empty", "random-bytes", "playlist"],
)
def test_a_file_that_is_not_audio_but_named_mp3_is_refused_with_a_clear_message(tmp_path, content, expected):
    path = tmp_path / "song.mp3"
    path.write_bytes(content)
    with pytest.raises(AudioError, match=expected) as refused:
        decode_audio(path, max_seconds=60)
    assert "song.mp3" in str(refused.value)


def test_a_format_outside_the_accepted_list_is_refused_even_though_ffmpeg_reads_it(tmp_path):
    path = tmp_path / "sound.wav"
    encode(path, "aiff", "pcm_s16be", 16_000, "mono")  # AIFF content under a .wav name
    with pytest.raises(AudioError, match="not an accepted audio format"):
        decode_audio(path, max_seconds=60)


def test_a_video_without_sound_is_not_an_audio_file(tmp_path):
    path = tmp_path / "silent.mp4"
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width = stream.height = 16
        stream.pix_fmt = "yuv420p"
        frame = av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), dtype=np.uint8), format="rgb24")
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    with pytest.raises(AudioError, match="not an audio file: no audio stream found"):
        decode_audio(path, max_seconds=60)


def test_a_truncated_mp3_gives_the_part_that_is_there_and_a_stub_is_refused(audio_dir, tmp_path):
    whole = encode(audio_dir / "whole.mp3", "mp3", "libmp3lame", 44_100, "mono", seconds=2.0).read_bytes()
    half = tmp_path / "half.mp3"
    half.write_bytes(whole[: len(whole) // 2])
    stub = tmp_path / "stub.mp3"
    stub.write_bytes(whole[:60])

    assert 0.8 < decode_audio(half, max_seconds=60).duration_s < 1.2
    with pytest.raises(AudioError, match="cannot decode stub.mp3"):
        decode_audio(stub, max_seconds=60)


def test_a_recording_over_the_duration_limit_is_refused_from_its_header(tmp_path):
    path = encode(tmp_path / "long.flac", "flac", "flac", 16_000, "mono", seconds=63.0)
    with pytest.raises(AudioError) as refused:
        decode_audio(path, max_seconds=60)
    assert str(refused.value) == "recording is 0:01:03 long, over the 0:01:00 limit (records.max_audio_seconds)"


def test_a_recording_whose_header_hides_its_length_stops_decoding_at_the_limit(tmp_path, monkeypatch):
    path = encode(tmp_path / "streamed.flac", "flac", "flac", 16_000, "mono", seconds=30.0)
    data = bytearray(path.read_bytes())
    # STREAMINFO's 36-bit total sample count (as a live FLAC stream has it) set to 0: "unknown".
    data[21] &= 0xF0
    data[22:26] = b"\0\0\0\0"
    path.write_bytes(bytes(data))
    assert probe_duration(path) is None
    resampled = []
    real_resampler = av.AudioResampler

    class CountingResampler:
        def __init__(self, **kwargs):
            self._resampler = real_resampler(**kwargs)

        def resample(self, frame):
            resampled.append(frame.samples if frame is not None else 0)
            return self._resampler.resample(frame)

    monkeypatch.setattr(audio_files.av, "AudioResampler", CountingResampler)

    with pytest.raises(AudioError, match=r"recording is longer than the 0:00:02 limit \(records.max_audio_seconds\)"):
        decode_audio(path, max_seconds=2)
    assert sum(resampled) < 3 * 16_000  # the other 27 seconds were never decoded


# --- ZIP archives -------------------------------------------------------------------------------------


def make_zip(path: Path, entries: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, content in entries.items():
            archive.writestr(zipfile.ZipInfo(name), content, compress_type=compression)
    return path


def patch_central_entry(path: Path, name: str, offset: int, fmt: str, value: int, *, or_bits: bool = False) -> None:
    """Overwrite one field of ``name``'s central-directory record (what zipfile trusts), e.g. a size or the flags."""
    data = bytearray(path.read_bytes())
    start = data.find(b"PK\x01\x02")
    while start >= 0:
        name_length = struct.unpack_from("<H", data, start + 28)[0]
        if data[start + 46 : start + 46 + name_length] == name.encode():
            old = struct.unpack_from(fmt, data, start + offset)[0]
            struct.pack_into(fmt, data, start + offset, (old | value) if or_bits else value)
            path.write_bytes(bytes(data))
            return
        start = data.find(b"PK\x01\x02", start + 4)
    raise AssertionError(f"{name} not in the central directory")


CENTRAL_FLAGS, CENTRAL_UNCOMPRESSED_SIZE = 8, 24


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("call.wav", "call.wav"),
        ("calls/2024/monday.mp3", "monday.mp3"),
        ("calls\\windows.flac", "windows.flac"),
        ("../../etc/passwd.wav", None),
        ("calls/../../up.wav", None),
        ("/abs.wav", None),
        ("C:\\x.wav", None),
        ("C:x.wav", None),
        ("", None),
        ("calls/", None),
    ],
)
def test_safe_entry_name_keeps_only_a_base_name_and_refuses_traversal(name, expected):
    assert safe_entry_name(name) == expected


def test_traversal_names_in_a_zip_are_reported_and_never_reach_outside_dest(tmp_path):
    names = ["../../etc/passwd.wav", "/abs.wav", "C:\\x.wav", "in/ok.wav"]
    archive = make_zip(tmp_path / "evil.zip", dict.fromkeys(names, wav_bytes()))
    dest = tmp_path / "dest"
    dest.mkdir()

    entries = {entry.member: entry for entry in zip_entries(archive, max_entries=10, max_uncompressed=10**7)}

    for unsafe in ("../../etc/passwd.wav", "/abs.wav", "C:\\x.wav"):
        assert not entries[unsafe].is_audio and "unsafe path" in entries[unsafe].reason
    assert entries["in/ok.wav"].is_audio and entries["in/ok.wav"].name == "ok.wav"
    assert extract_entry(archive, entries["in/ok.wav"], dest, max_bytes=10**7).parent == dest
    # Even an entry forced through by hand is written under a generated name in dest.
    forced = ZipEntry("passwd.wav", entries["../../etc/passwd.wav"].size, True, None, "../../etc/passwd.wav")
    written = extract_entry(archive, forced, dest, max_bytes=10**7)
    assert written.parent == dest and written.suffix == ".wav" and written.read_bytes() == wav_bytes()
    assert sorted(p.parent for p in tmp_path.rglob("*.wav")) == [dest, dest]


def test_a_zip_bomb_is_refused_with_413_before_anything_is_extracted(tmp_path):
    archive = make_zip(tmp_path / "bomb.zip", {"zeros.wav": bytes(50_000_000)})
    assert archive.stat().st_size < 200_000
    with pytest.raises(UploadRejected) as refused:
        zip_entries(archive, max_entries=10, max_uncompressed=10_000_000)
    assert refused.value.status == 413 and "records.max_zip_uncompressed_bytes" in refused.value.message
    assert [p.name for p in tmp_path.iterdir()] == ["bomb.zip"]


def test_a_zip_with_too_many_entries_is_refused_with_413(tmp_path):
    archive = make_zip(tmp_path / "many.zip", {f"call{i}.wav": wav_bytes(0.05) for i in range(6)})
    with pytest.raises(UploadRejected) as refused:
        zip_entries(archive, max_entries=5, max_uncompressed=10**7)
    assert refused.value.status == 413 and "6 files, over the limit of 5" in refused.value.message


def test_an_entry_that_inflates_past_its_declared_size_is_caught_while_extracting(tmp_path):
    archive = make_zip(tmp_path / "liar.zip", {"liar.wav": bytes(1_000_000)})
    patch_central_entry(archive, "liar.wav", CENTRAL_UNCOMPRESSED_SIZE, "<I", 1_000)
    dest = tmp_path / "dest"
    dest.mkdir()

    [entry] = zip_entries(archive, max_entries=10, max_uncompressed=10_000)  # its declared size passes the checks
    with pytest.raises(UploadRejected) as refused:
        extract_entry(archive, entry, dest, max_bytes=10_000)

    assert refused.value.status == 413 and "1000 bytes it declares" in refused.value.message
    assert list(dest.iterdir()) == []  # the partial file is gone


def test_an_entry_over_max_bytes_is_refused_with_413(tmp_path):
    archive = make_zip(tmp_path / "big.zip", {"big.wav": bytes(100_000)})
    [entry] = zip_entries(archive, max_entries=10, max_uncompressed=10**7)
    with pytest.raises(UploadRejected) as refused:
        extract_entry(archive, entry, tmp_path, max_bytes=50_000)
    assert refused.value.status == 413


def test_non_audio_nested_zip_symlink_and_encrypted_entries_are_reported_beside_the_audio(tmp_path):
    archive = tmp_path / "mixed.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("calls/monday.wav", wav_bytes())
        zf.writestr("calls/tuesday.mp3", b"mp3 bytes (not checked until decoding)")
        zf.writestr("notes.txt", b"call notes")
        zf.writestr("README", b"no extension")
        zf.writestr("more.zip", b"PK\x05\x06" + bytes(18))
        link = zipfile.ZipInfo("link.wav")
        link.create_system = 3
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc/passwd")
        zf.writestr("secret.wav", wav_bytes())
        zf.writestr("calls/", b"")  # a directory entry: not reported
        zf.writestr("__MACOSX/calls/._monday.wav", b"finder metadata")
    patch_central_entry(archive, "secret.wav", CENTRAL_FLAGS, "<H", 0x1, or_bits=True)

    entries = {entry.name: entry for entry in zip_entries(archive, max_entries=20, max_uncompressed=10**7)}

    assert {name for name, entry in entries.items() if entry.is_audio} == {"monday.wav", "tuesday.mp3"}
    assert entries["notes.txt"].reason == "not an audio file (.txt)"
    assert entries["README"].reason == "not an audio file (no extension)"
    assert entries["more.zip"].reason == "a ZIP inside the ZIP is not accepted"
    assert "symbolic link" in entries["link.wav"].reason
    assert "encrypted" in entries["secret.wav"].reason
    assert set(entries) == {"monday.wav", "tuesday.mp3", "notes.txt", "README", "more.zip", "link.wav", "secret.wav"}
    extracted = extract_entry(archive, entries["monday.wav"], tmp_path, max_bytes=10**7)
    assert decode_audio(extracted, max_seconds=60).duration_s == pytest.approx(0.5)


def test_a_file_that_is_not_a_zip_is_refused_with_400(tmp_path):
    path = tmp_path / "calls.zip"
    path.write_bytes(wav_bytes())
    with pytest.raises(UploadRejected) as refused:
        zip_entries(path, max_entries=10, max_uncompressed=10**7)
    assert (refused.value.status, refused.value.message) == (400, "not a ZIP archive")


# --- URLs -----------------------------------------------------------------------------------------------


@pytest.fixture
def no_connections(monkeypatch):
    """Fails the test if fetch_url gets as far as opening a connection."""

    def refuse(*args, **kwargs):
        raise AssertionError("fetch_url tried to connect")

    monkeypatch.setattr(uploads.aiohttp, "TCPConnector", refuse)


async def rejected(url: str, tmp_path: Path, **kwargs) -> UploadRejected:
    options = {"max_bytes": 10**6, "timeout_s": 5.0, "allow_private": False} | kwargs
    with pytest.raises(UploadRejected) as refused:
        await fetch_url(url, tmp_path / "download", **options)
    assert refused.value.status == 400
    return refused.value


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://ftp.example.com/call.wav", "gopher://x/", "call.wav"])
async def test_only_http_and_https_urls_are_fetched(tmp_path, no_connections, url):
    assert "only http and https" in (await rejected(url, tmp_path, allow_private=True)).message


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/call.wav",
        "http://localhost:8080/call.wav",
        "http://[::1]/call.wav",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/call.wav",
        "http://0.0.0.0/call.wav",
        "http://[::ffff:127.0.0.1]/call.wav",
        "http://[fe80::1]/call.wav",
        "http://100.64.0.1/call.wav",
    ],
)
async def test_private_and_local_addresses_are_refused_before_connecting(tmp_path, no_connections, url):
    refusal = await rejected(url, tmp_path)
    assert "only public addresses" in refusal.message and "records.allow_private_urls" in refusal.message


async def test_a_host_with_any_private_address_among_public_ones_is_refused(tmp_path, no_connections, monkeypatch):
    async def resolve(host, port):
        return [uploads.ipaddress.ip_address("93.184.216.34"), uploads.ipaddress.ip_address("10.1.2.3")]

    monkeypatch.setattr(uploads, "resolve_host", resolve)
    assert "10.1.2.3" in (await rejected("https://mixed.invalid/call.wav", tmp_path)).message


@pytest.mark.parametrize(
    ("address", "problem"),
    [
        ("8.8.8.8", None),
        ("2001:4860:4860::8888", None),
        ("10.0.0.1", "private"),
        ("192.168.1.1", "private"),
        ("172.16.0.1", "private"),
        ("127.0.0.53", "loopback"),
        ("::1", "loopback"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("::ffff:10.0.0.1", "private"),
        ("fc00::1", "private"),
        ("100.64.0.1", "not public"),
    ],
)
def test_address_problem_names_what_is_not_public(address, problem):
    assert address_problem(uploads.ipaddress.ip_address(address)) == problem


@pytest.fixture
async def server():
    """An aiohttp server on 127.0.0.1 with the answers the tests need; yields its base URL."""
    body = wav_bytes()

    async def wav(request):
        return web.Response(body=body, content_type="audio/wav")

    async def big(request):
        return web.Response(body=bytes(2_000_000), content_type="audio/wav")

    async def big_streamed(request):  # no Content-Length: only counting the bytes tells
        response = web.StreamResponse()
        response.content_type = "audio/mpeg"
        await response.prepare(request)
        for _ in range(40):
            await response.write(bytes(50_000))
        return response

    async def slow(request):
        await asyncio.sleep(5)
        return web.Response(body=body)

    async def redirect(request):
        raise web.HTTPFound(request.query.get("to", "/call.wav"))

    async def loop(request):
        raise web.HTTPFound("/loop")

    async def download(request):  # no suffix in the URL: the Content-Type decides
        return web.Response(body=body, content_type="audio/x-wav")

    app = web.Application()
    app.router.add_get("/call.wav", wav)
    app.router.add_get("/download", download)
    app.router.add_get("/big.wav", big)
    app.router.add_get("/streamed", big_streamed)
    app.router.add_get("/slow.wav", slow)
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/loop", loop)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def fetch(url: str, tmp_path: Path, **kwargs) -> Path:
    options = {"max_bytes": 1_000_000, "timeout_s": 5.0, "allow_private": True} | kwargs
    return await fetch_url(url, tmp_path / "download", **options)


async def test_a_wav_at_an_allowed_url_is_downloaded_and_decodes(server, tmp_path):
    path = await fetch(f"{server}/call.wav", tmp_path)
    assert path == tmp_path / "download.wav" and path.read_bytes() == wav_bytes()
    assert decode_audio(path, max_seconds=60).duration_s == pytest.approx(0.5)


async def test_the_suffix_comes_from_the_content_type_when_the_url_has_none(server, tmp_path):
    assert (await fetch(f"{server}/download", tmp_path)).suffix == ".wav"


async def test_a_redirect_is_followed_and_each_hop_checked(server, tmp_path):
    path = await fetch(f"{server}/redirect?to=/call.wav", tmp_path)
    assert path.read_bytes() == wav_bytes()
    assert "more than 5 times" in (await rejected(f"{server}/loop", tmp_path, allow_private=True)).message


async def test_a_redirect_from_a_public_host_to_a_private_address_is_refused(server, tmp_path, monkeypatch):
    # There is no public server here: the test server on 127.0.0.1 is made to count as public, nothing else.
    real = uploads.address_problem
    monkeypatch.setattr(uploads, "address_problem", lambda a: None if str(a) == "127.0.0.1" else real(a))
    assert (await fetch(f"{server}/call.wav", tmp_path, allow_private=False)).exists()

    for target in ("http://169.254.169.254/latest/meta-data/", "http://[::1]/x.wav", "http://10.0.0.1/x.wav"):
        refusal = await rejected(f"{server}/redirect?to={target}", tmp_path)
        assert "only public addresses" in refusal.message


async def test_a_host_name_is_connected_to_at_the_address_that_was_vetted(server, tmp_path, monkeypatch):
    """The connection uses the addresses the check saw (no second DNS lookup that could answer differently)."""
    port = int(server.rsplit(":", 1)[1])
    looked_up = []

    async def resolve(host, port):
        looked_up.append(host)
        return [uploads.ipaddress.ip_address("127.0.0.1")]

    monkeypatch.setattr(uploads, "resolve_host", resolve)
    monkeypatch.setattr(uploads, "address_problem", lambda address: None)

    path = await fetch(f"http://calls.invalid:{port}/call.wav", tmp_path, allow_private=False)

    assert path.read_bytes() == wav_bytes() and looked_up == ["calls.invalid"]


async def test_a_body_over_max_bytes_is_refused_by_its_length_or_while_reading(server, tmp_path):
    for url in (f"{server}/big.wav", f"{server}/streamed"):
        refusal = await rejected(url, tmp_path, allow_private=True, max_bytes=1_000_000)
        assert refusal.message == "the file at the URL is over 1000000 bytes"
    assert list(tmp_path.iterdir()) == []  # the partial download is removed


async def test_a_slow_server_times_out_with_400(server, tmp_path):
    refusal = await rejected(f"{server}/slow.wav", tmp_path, allow_private=True, timeout_s=0.3)
    assert refusal.message == "the URL did not answer within 0.3 s"


async def test_an_error_status_is_a_400_that_names_it(server, tmp_path):
    assert "HTTP 404" in (await rejected(f"{server}/missing.wav", tmp_path, allow_private=True)).message


# --- base64 ---------------------------------------------------------------------------------------------


def test_a_data_url_with_a_wav_becomes_a_wav_file(tmp_path):
    value = "data:audio/wav;base64," + base64.b64encode(wav_bytes()).decode()
    path = decode_data_url(value, tmp_path, max_bytes=10**6)
    assert path.parent == tmp_path and path.suffix == ".wav" and path.read_bytes() == wav_bytes()


def test_bare_base64_gets_its_suffix_from_the_bytes(audio_dir, tmp_path):
    flac = encode(audio_dir / "bare.flac", "flac", "flac", 16_000, "mono").read_bytes()
    path = decode_data_url(base64.b64encode(flac).decode(), tmp_path, max_bytes=10**6)
    assert path.suffix == ".flac" and decode_audio(path, max_seconds=60).duration_s == pytest.approx(SECONDS)


@pytest.mark.parametrize("value", ["data:audio/wav;base64,not*base64!", "%%%%", "data:audio/wav,plain-text"])
def test_invalid_base64_is_refused_with_400(tmp_path, value):
    with pytest.raises(UploadRejected) as refused:
        decode_data_url(value, tmp_path, max_bytes=10**6)
    assert refused.value.status == 400


def test_oversized_base64_is_refused_with_413_before_decoding(tmp_path, monkeypatch):
    monkeypatch.setattr(uploads.base64, "b64decode", lambda *a, **k: pytest.fail("decoded an oversized value"))
    value = "data:audio/wav;base64," + base64.b64encode(bytes(3_000)).decode()
    with pytest.raises(UploadRejected) as refused:
        decode_data_url(value, tmp_path, max_bytes=2_000)
    assert refused.value.status == 413
    assert list(tmp_path.iterdir()) == []
