"""Every call on record, through the real server: live calls recorded, uploads transcribed, the records API.

Live conversations use a real WebRTC peer with scripted models; uploads go through the real decoder and
the real Whisper model. The suite runs on SQLite and on a real PostgreSQL server.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import time
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import numpy as np
import pytest

from agent.calls.audio_files import decode_audio
from agent.client.peer import TalkClient
from agent.client.talk import run_turn
from agent.config import Config
from tests.conftest import running_server
from tests.fakes import ScriptedChatModel, SpeechToTextByLength, ToneTextToSpeech, scripted_runtime
from tests.postgres import postgres_server, postgres_url, running_postgres  # noqa: F401 - fixtures
from tests.speech import silence, speak, write_wav

UPLOAD_SENTENCES = "Hello, I am calling about my invoice. It was charged twice this month."
JOB_TIMEOUT_S = 120.0


@pytest.fixture(params=["sqlite", "postgres"])
def records_config(request, tmp_path) -> Config:
    config = Config()
    config.records.data_dir = str(tmp_path / "data")
    if request.param == "postgres":
        config.records.database_url = request.getfixturevalue("postgres_url")
    config.records.job_poll_seconds = 0.2
    return config


@pytest.fixture
def sqlite_config(tmp_path) -> Config:
    config = Config()
    config.records.data_dir = str(tmp_path / "data")
    config.records.job_poll_seconds = 0.2
    return config


@pytest.fixture(scope="module")
def speech_wav(tmp_path_factory) -> Path:
    audio = np.concatenate([silence(0.3), speak(UPLOAD_SENTENCES), silence(0.3)])
    return write_wav(tmp_path_factory.mktemp("speech") / "invoice call.wav", audio, 16_000)


class Api:
    """A client of the records API, as a script would use it."""

    def __init__(self, http: aiohttp.ClientSession, url: str, token: str | None = None) -> None:
        self.http, self.url, self.token = http, url, token

    def headers(self, extra: dict | None = None) -> dict:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return headers | (extra or {})

    async def request(self, method: str, path: str, **kwargs) -> tuple[int, object]:
        headers = self.headers(kwargs.pop("headers", None))
        async with self.http.request(method, self.url + path, headers=headers, **kwargs) as response:
            body = await response.read()
            if response.content_type == "application/json" and body:
                return response.status, json.loads(body)
            return response.status, body

    async def upload(self, path: Path, endpoint: str = "/api/calls", name: str | None = None) -> tuple[int, object]:
        form = aiohttp.FormData()
        form.add_field("file", path.read_bytes(), filename=name or path.name)
        return await self.request("POST", endpoint, data=form)

    async def wait_done(self, call_id: str, timeout: float = JOB_TIMEOUT_S) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status, call = await self.request("GET", f"/api/calls/{call_id}")
            assert status == 200, call
            if call["status"] in ("done", "failed"):
                return call
            await asyncio.sleep(0.25)
        raise TimeoutError(f"call {call_id} still {call['status']} after {timeout} s")

    async def list(self, **filters) -> dict:
        status, body = await self.request("GET", "/api/calls", params=filters)
        assert status == 200, body
        return body


async def open_api(url: str) -> tuple[aiohttp.ClientSession, Api]:
    http = aiohttp.ClientSession()
    return http, Api(http, url)


# --- live calls -------------------------------------------------------------------------------------


async def wait_for_live_call(api: Api, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        calls = (await api.list(source="live"))["calls"]
        if calls and calls[0]["status"] == "done":
            status, call = await api.request("GET", f"/api/calls/{calls[0]['id']}")
            return call
        await asyncio.sleep(0.1)
    raise TimeoutError("the live call was not recorded")


def decode_stereo(data: bytes, folder: Path) -> np.ndarray:
    path = folder / "recording.flac"
    path.write_bytes(data)
    return decode_audio(path, max_seconds=3600).samples


async def test_a_conversation_is_recorded_with_both_sides_words_and_a_stereo_recording(records_config, tmp_path):
    question = np.concatenate([silence(0.3), speak("What is the capital of France?"), silence(0.2)])
    runtime = scripted_runtime(reply="Paris is the capital of France.")
    async with running_server(records_config, runtime) as (url, state):
        async with TalkClient() as client:
            await client.connect(url)
            turn = await run_turn(client, question, 16_000, timeout=20)
            assert turn.status == "completed"
        http, api = await open_api(url)
        async with http:
            call = await wait_for_live_call(api)
            status, recording = await api.request("GET", f"/api/calls/{call['id']}/audio")

    assert call["source"] == "live" and call["ended_at"] is not None and call["duration_s"] > 1
    user, agent = call["turns"]
    assert (user["speaker"], user["role"], user["text"]) == ("user", "user", "hello there")
    assert (agent["speaker"], agent["role"], agent["text"]) == ("agent", "assistant", "Paris is the capital of France.")
    assert agent["heard_text"] is None  # heard whole
    assert 0 < user["start_ms"] < user["end_ms"] <= agent["start_ms"] < agent["end_ms"]
    assert agent["latency"]["voice_to_voice_s"] > 0

    assert status == 200 and call["has_audio"]
    audio = decode_stereo(recording, tmp_path)
    assert audio.shape[0] == 2
    rate = 16_000

    def loudness(channel: int, start_ms: int, end_ms: int) -> float:
        return float(np.abs(audio[channel, start_ms * rate // 1000 : end_ms * rate // 1000]).mean())

    # The user's words on the left while they spoke, the agent's voice on the right while it spoke.
    assert loudness(0, user["start_ms"], user["end_ms"]) > 5 * loudness(1, user["start_ms"], user["end_ms"]) + 1e-4
    assert loudness(1, agent["start_ms"], agent["end_ms"]) > 5 * loudness(0, agent["start_ms"], agent["end_ms"]) + 1e-4


async def test_an_interrupted_reply_is_recorded_with_what_was_said_and_what_was_heard(sqlite_config):
    question = np.concatenate([silence(0.3), speak("What is the capital of France and what is it known for?"),
                               silence(0.2)])
    interruption = np.concatenate([speak("Stop, wait."), silence(0.2)])
    long_reply = " ".join(f"word{i}" for i in range(40)) + "."
    stt = SpeechToTextByLength([(0.0, "Stop, wait."), (1.6, "What is the capital of France?")])
    runtime = scripted_runtime()
    runtime.stt, runtime.chat, runtime.tts = stt, ScriptedChatModel(long_reply, 0.002), ToneTextToSpeech(0.1)
    async with running_server(sqlite_config, runtime) as (url, state):
        async with TalkClient() as client:
            await client.connect(url)
            await client.say(question, 16_000)
            await client.wait_for_event("agent.state", 20, predicate=lambda e: e["state"] == "speaking")
            await asyncio.sleep(1.0)
            await run_turn(client, interruption, 16_000, timeout=20)
        http, api = await open_api(url)
        async with http:
            call = await wait_for_live_call(api)

    cut = call["turns"][1]
    assert cut["text"] == long_reply
    heard = cut["heard_text"]
    assert heard and long_reply.startswith(heard.rstrip(".")) and heard != long_reply
    assert cut["latency"]["status"] == "cancelled"
    assert [t["text"] for t in call["turns"] if t["role"] == "user"][1] == "Stop, wait."


async def test_a_session_that_vanishes_still_closes_its_record(sqlite_config):
    question = np.concatenate([silence(0.3), speak("Hello there."), silence(0.2)])
    sqlite_config.server.inbound_timeout_seconds = 1.0
    async with running_server(sqlite_config, scripted_runtime()) as (url, state):
        client = TalkClient()
        await client.connect(url)
        await run_turn(client, question, 16_000, timeout=20)
        client._mic.recv = asyncio.Event().wait  # gone without a word: its packets just stop
        http, api = await open_api(url)
        async with http:
            call = await wait_for_live_call(api, timeout=15)
        await client.close()
    assert call["status"] == "done" and call["turns"]


# --- uploads ----------------------------------------------------------------------------------------


async def test_an_uploaded_recording_is_transcribed_and_found_by_the_words_said(records_config, speech_wav):
    async with running_server(records_config, scripted_runtime()) as (url, state):
        http, api = await open_api(url)
        async with http:
            status, body = await api.upload(speech_wav)
            assert status == 202, body
            [call_id] = body["ids"]
            call = await api.wait_done(call_id)
            found = await api.list(q="invoice")
            not_found = await api.list(q="zebra")
            by_language = await api.list(language="en", source="upload")
            status, audio = await api.request("GET", f"/api/calls/{call_id}/audio",
                                              headers={"Range": "bytes=0-99"})

    assert call["status"] == "done" and call["error"] is None and call["progress"] == 1
    assert call["file_name"] == "invoice call.wav" and call["languages"] == ["en"]
    words = " ".join(turn["text"] for turn in call["turns"]).lower()
    assert "invoice" in words and "twice" in words
    assert all(turn["end_ms"] > turn["start_ms"] for turn in call["turns"])
    assert abs(call["duration_s"] - (len(speak(UPLOAD_SENTENCES)) / 16_000 + 0.6)) < 0.2
    assert [c["id"] for c in found["calls"]] == [call_id] and found["total"] == 1
    assert not_found["calls"] == [] and not_found["total"] == 0
    assert [c["id"] for c in by_language["calls"]] == [call_id]
    assert status == 206 and len(audio) == 100


async def test_a_zip_of_recordings_becomes_one_record_per_audio_entry_and_reports_the_rest(sqlite_config, speech_wav,
                                                                                             tmp_path):
    archive = tmp_path / "day.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(speech_wav, "calls/first.wav")
        zf.write(speech_wav, "../../escape.wav")
        zf.writestr("notes.txt", "not audio")
        zf.writestr("broken.wav", b"RIFF but nothing else")
    async with running_server(sqlite_config, scripted_runtime()) as (url, state):
        http, api = await open_api(url)
        async with http:
            status, body = await api.upload(archive, "/api/calls/zip")
            assert status == 202, body
            calls = [await api.wait_done(call_id) for call_id in body["ids"]]
    entries = {entry["name"]: entry for entry in body["entries"]}
    assert len(body["ids"]) == 1 and calls[0]["status"] == "done" and entries["first.wav"]["id"] == body["ids"][0]
    assert "unsafe path" in entries["../../escape.wav"]["error"] and entries["../../escape.wav"]["id"] is None
    assert entries["notes.txt"]["error"] and entries["notes.txt"]["id"] is None
    assert entries["broken.wav"]["error"] and entries["broken.wav"]["id"] is None
    assert "/" not in entries["broken.wav"]["error"].replace("../", "")  # no server paths in messages
    assert not (Path(sqlite_config.records.data_dir).parent / "escape.wav").exists()
    data = Path(sqlite_config.records.data_dir).resolve()
    assert all(p.resolve().is_relative_to(data) for p in data.rglob("*"))


async def test_audio_sent_as_base64_is_accepted_like_a_file(sqlite_config, speech_wav):
    import base64

    data_url = "data:audio/wav;base64," + base64.b64encode(speech_wav.read_bytes()).decode()
    async with running_server(sqlite_config, scripted_runtime()) as (url, state):
        http, api = await open_api(url)
        async with http:
            status, body = await api.request("POST", "/api/calls", json={"audio_base64": data_url})
            assert status == 202, body
            call = await api.wait_done(body["ids"][0])
    assert "invoice" in " ".join(t["text"] for t in call["turns"]).lower()


# --- the database away, a crash, a failed job -------------------------------------------------------


async def test_when_postgresql_stops_the_call_goes_on_the_api_answers_503_and_the_record_is_written_later(tmp_path):
    question = np.concatenate([silence(0.3), speak("What is the capital of France?"), silence(0.2)])
    with running_postgres() as database:
        config = Config()
        config.records.data_dir = str(tmp_path / "data")
        config.records.database_url = database.create_database()
        config.records.job_retry_seconds = 0.5
        async with running_server(config, scripted_runtime(reply="Paris.")) as (url, state):
            http, api = await open_api(url)
            async with http, TalkClient() as client:
                await client.connect(url)
                first = await run_turn(client, question, 16_000, timeout=20)
                database.stop()
                second = await run_turn(client, question, 16_000, timeout=20)  # the outage does not reach the call
                status_down, down = await api.request("GET", "/api/calls")
                await client.close()
                await asyncio.sleep(1.0)  # the hang-up is queued behind the writes that wait for the database
                database.start()
                call = await wait_for_live_call(api, timeout=30)
                status_up, _ = await api.request("GET", "/api/calls")

    assert first.status == second.status == "completed"
    assert status_down == 503 and "database" in down["error"].lower()
    assert status_up == 200
    assert [turn["role"] for turn in call["turns"]] == ["user", "assistant", "user", "assistant"]
    assert call["ended_at"] is not None and call["has_audio"]


async def test_a_job_a_crash_left_running_resumes_at_the_next_start(sqlite_config, speech_wav):
    from agent.calls.store import RecordStore

    data = sqlite_config.records.data_path
    (data / "audio").mkdir(parents=True)
    (data / "audio" / "crashed.wav").write_bytes(speech_wav.read_bytes())
    store = await RecordStore.open(sqlite_config.records.url)
    try:
        call_id = await store.create_call(source="upload", owner_id=None, file_name="crashed.wav",
                                          started_at=datetime.now(UTC), audio_path="audio/crashed.wav",
                                          audio_mime="audio/wav", job="transcribe")
        claimed = await store.claim_job(["transcribe"], datetime.now(UTC))  # the server that claimed it died here
        await store.update_call(call_id, status="processing", progress=0.4)
    finally:
        await store.close()
    assert claimed is not None and claimed.call_id == call_id

    async with running_server(sqlite_config, scripted_runtime()) as (url, state):
        http, api = await open_api(url)
        async with http:
            call = await api.wait_done(call_id)
    assert call["status"] == "done" and "invoice" in " ".join(t["text"] for t in call["turns"]).lower()


async def test_a_failed_job_keeps_its_reason_and_can_be_retried(sqlite_config, speech_wav, monkeypatch):
    from agent.calls import records as records_module

    real = records_module.transcribe_recording
    failures = ["the speech model folder is missing"]

    def transcribe_failing_once(*args):
        if failures:
            raise FileNotFoundError(failures.pop())
        return real(*args)

    monkeypatch.setattr(records_module, "transcribe_recording", transcribe_failing_once)
    sqlite_config.records.job_max_attempts = 1
    async with running_server(sqlite_config, scripted_runtime()) as (url, state):
        http, api = await open_api(url)
        async with http:
            [call_id] = (await api.upload(speech_wav))[1]["ids"]
            failed = await api.wait_done(call_id)
            status_retry, retried = await api.request("POST", f"/api/calls/{call_id}/retry")
            done = await api.wait_done(call_id)
            status_again, again = await api.request("POST", f"/api/calls/{call_id}/retry")

    assert failed["status"] == "failed" and "speech model folder is missing" in failed["error"]
    assert status_retry == 202 and retried["status"] in ("pending", "processing", "done")
    assert done["status"] == "done" and done["error"] is None and done["turns"]
    assert status_again == 409 and "only a failed call" in again["error"]


# --- the records API --------------------------------------------------------------------------------


async def test_tags_export_analytics_and_delete(records_config, speech_wav):
    async with running_server(records_config, scripted_runtime()) as (url, state):
        http, api = await open_api(url)
        async with http:
            ids = [(await api.upload(speech_wav, name=f"call{i}.wav"))[1]["ids"][0] for i in range(2)]
            for call_id in ids:
                await api.wait_done(call_id)
            status, tagged = await api.request("PUT", f"/api/calls/{ids[0]}/tags", json={"tags": ["refund", "vip"]})
            assert status == 200, tagged
            by_tag = await api.list(tag="refund")
            status, one = await api.request("GET", f"/api/calls/{ids[0]}/export")
            status_csv, listed_csv = await api.request("GET", "/api/calls/export", params={"format": "csv"})
            status_jl, listed_jl = await api.request("GET", "/api/calls/export",
                                                     params={"format": "jsonl", "tag": "vip"})
            status_a, analytics = await api.request("GET", "/api/calls/analytics")
            status_d, _ = await api.request("DELETE", f"/api/calls/{ids[0]}")
            status_gone, gone = await api.request("GET", f"/api/calls/{ids[0]}")
            remaining = await api.list()
            audio_files = list((Path(records_config.records.data_dir) / "audio").iterdir())

    assert tagged["tags"] == ["refund", "vip"] and tagged["user_tags"] == ["refund", "vip"]
    assert [c["id"] for c in by_tag["calls"]] == [ids[0]]
    assert status == 200 and one["id"] == ids[0] and one["turns"]
    rows = list(csv.DictReader(io.StringIO(listed_csv.decode())))
    assert status_csv == 200 and {row["id"] for row in rows} == set(ids) and "invoice" in rows[0]["transcript"].lower()
    lines = [json.loads(line) for line in listed_jl.decode().splitlines()]
    assert status_jl == 200 and [line["id"] for line in lines] == [ids[0]]
    assert status_a == 200 and analytics["total_calls"] == 2 and analytics["calls_with_transcript"] == 2
    assert analytics["tag_distribution"] == {"refund": 1, "vip": 1} and analytics["calls_per_language"] == {"en": 2}
    assert status_d == 204 and status_gone == 404 and gone["error"]
    assert [c["id"] for c in remaining["calls"]] == [ids[1]] and len(audio_files) == 1


@pytest.mark.parametrize(
    "params, message",
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"skip": "-1"}, "skip"),
        ({"start_date": "yesterday"}, "start_date"),
        ({"start_date": "2026-12-02", "end_date": "2026-12-01"}, "after"),
        ({"source": "phone"}, "source"),
    ],
)
async def test_bad_filters_are_answered_400_naming_the_parameter(sqlite_config, params, message):
    async with running_server(sqlite_config, scripted_runtime()) as (url, state):
        http, api = await open_api(url)
        async with http:
            status, body = await api.request("GET", "/api/calls", params=params)
    assert status == 400 and message in body["error"]


async def test_bad_uploads_get_a_clear_error_and_leave_no_record(sqlite_config, tmp_path):
    sqlite_config.records.max_upload_bytes = 50_000
    text = tmp_path / "notes.mp3"
    text.write_text("this is not audio at all")
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    big = tmp_path / "big.wav"
    big.write_bytes(b"\0" * 60_000)
    async with running_server(sqlite_config, scripted_runtime()) as (url, state):
        http, api = await open_api(url)
        async with http:
            results = {
                "not audio": await api.upload(text),
                "empty": await api.upload(empty),
                "too large": await api.upload(big),
                "no file": await api.request("POST", "/api/calls", data=aiohttp.FormData({"other": "x"})),
                "file url": await api.request("POST", "/api/calls", json={"url": "file:///etc/passwd"}),
                "loopback url": await api.request("POST", "/api/calls", json={"url": "http://127.0.0.1:1/a.wav"}),
                "bad base64": await api.request("POST", "/api/calls",
                                                json={"audio_base64": "data:audio/wav;base64,@@"}),
                "unknown id": await api.request("GET", "/api/calls/" + "0" * 32),
                "malformed id": await api.request("GET", "/api/calls/nope"),
            }
            listed = await api.list()
    statuses = {name: status for name, (status, _) in results.items()}
    assert statuses == {
        "not audio": 400, "empty": 400, "too large": 413, "no file": 400, "file url": 400, "loopback url": 400,
        "bad base64": 400, "unknown id": 404, "malformed id": 400,
    }
    for name, (_, body) in results.items():
        assert isinstance(body, dict) and body["error"], name
    assert "notes.mp3" in results["not audio"][1]["error"]
    assert listed["calls"] == []
    assert not any((Path(sqlite_config.records.data_dir) / "audio").glob("*"))


async def test_a_zip_bomb_and_an_archive_with_too_many_entries_are_refused(sqlite_config, tmp_path):
    sqlite_config.records.max_zip_uncompressed_bytes = 1_000_000
    sqlite_config.records.max_zip_entries = 3
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("zeros.wav", b"\0" * 20_000_000)
    crowd = tmp_path / "crowd.zip"
    with zipfile.ZipFile(crowd, "w") as zf:
        for i in range(5):
            zf.writestr(f"{i}.wav", b"x")
    async with running_server(sqlite_config, scripted_runtime()) as (url, state):
        http, api = await open_api(url)
        async with http:
            bomb_status, bomb_body = await api.upload(bomb, "/api/calls/zip")
            crowd_status, crowd_body = await api.upload(crowd, "/api/calls/zip")
            listed = await api.list()
    assert bomb_status == 413 and bomb_body["error"]
    assert crowd_status == 413 and crowd_body["error"]
    assert listed["calls"] == []


async def test_the_api_is_described_by_a_generated_openapi_document_with_a_docs_page(sqlite_config):
    async with running_server(sqlite_config, scripted_runtime()) as (url, state):
        http, api = await open_api(url)
        async with http:
            status, spec = await api.request("GET", "/api/openapi.json")
            docs_status, docs = await api.request("GET", "/api/docs")
            ui_status, _ = await api.request("GET", "/api/docs/static/swagger-ui-bundle.js")
    assert status == 200 and spec["openapi"].startswith("3")
    for path in ("/api/calls", "/api/calls/{call_id}", "/api/calls/{call_id}/tags", "/api/calls/zip",
                 "/api/calls/analytics", "/api/auth/login"):
        assert path in spec["paths"], path
    assert docs_status == 200 and b"swagger-ui" in docs and ui_status == 200


# --- accounts ---------------------------------------------------------------------------------------


@pytest.fixture
def token_config(records_config) -> Config:
    records_config.auth.mode = "token"
    return records_config


async def login(api: Api, name: str, password: str = "correct horse battery") -> Api:
    status, body = await api.request("POST", "/api/auth/register", json={"name": name, "password": password})
    assert status == 201, body
    status, body = await api.request("POST", "/api/auth/login", json={"name": name, "password": password})
    assert status == 200, body
    return Api(api.http, api.url, body["token"])


async def test_with_token_auth_a_user_sees_and_changes_only_their_own_calls(token_config, speech_wav):
    async with running_server(token_config, scripted_runtime()) as (url, state):
        http, anonymous = await open_api(url)
        async with http:
            alice = await login(anonymous, "alice")
            bob = await login(anonymous, "bob")
            status, body = await alice.upload(speech_wav)
            [call_id] = body["ids"]
            await alice.wait_done(call_id)
            results = {
                "anonymous list": await anonymous.request("GET", "/api/calls"),
                "anonymous offer": await anonymous.request("POST", "/offer", json={"sdp": "v=0", "type": "offer"}),
                "bob get": await bob.request("GET", f"/api/calls/{call_id}"),
                "bob audio": await bob.request("GET", f"/api/calls/{call_id}/audio"),
                "bob export": await bob.request("GET", f"/api/calls/{call_id}/export"),
                "bob tags": await bob.request("PUT", f"/api/calls/{call_id}/tags", json={"tags": ["mine"]}),
                "bob delete": await bob.request("DELETE", f"/api/calls/{call_id}"),
                "alice audio by query token": await anonymous.request(
                    "GET", f"/api/calls/{call_id}/audio", params={"access_token": alice.token}),
            }
            bob_list = await bob.list()
            alice_list = await alice.list()
            status_out, _ = await alice.request("POST", "/api/auth/logout")
            status_after, _ = await alice.request("GET", "/api/calls")

    statuses = {name: status for name, (status, _) in results.items()}
    assert statuses == {
        "anonymous list": 401, "anonymous offer": 401, "bob get": 404, "bob audio": 404, "bob export": 404,
        "bob tags": 404, "bob delete": 404, "alice audio by query token": 200,
    }
    assert bob_list["calls"] == [] and [c["id"] for c in alice_list["calls"]] == [call_id]
    assert status_out == 204 and status_after == 401


async def test_an_admin_sees_every_call_and_the_shell_creates_accounts(sqlite_config, speech_wav):
    import subprocess
    import sys

    sqlite_config.auth.mode = "token"
    env_config = Path(sqlite_config.records.data_dir).parent / "config.yaml"
    env_config.write_text(f"auth: {{mode: token}}\nrecords: {{data_dir: '{sqlite_config.records.data_dir}'}}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOICE_AGENT_")}
    added = subprocess.run(
        [sys.executable, "-m", "agent", "user", "add", "boss", "--admin", "--password-stdin", "--config", env_config],
        input="a long admin password\n", capture_output=True, text=True, timeout=60, env=env,
    )
    assert added.returncode == 0, added.stderr
    assert "admin boss" in added.stdout
    async with running_server(sqlite_config, scripted_runtime()) as (url, state):
        http, anonymous = await open_api(url)
        async with http:
            carol = await login(anonymous, "carol")
            [call_id] = (await carol.upload(speech_wav))[1]["ids"]
            status, body = await anonymous.request("POST", "/api/auth/login",
                                                   json={"name": "boss", "password": "a long admin password"})
            boss = Api(http, url, body["token"])
            seen = await boss.list()
    assert [c["id"] for c in seen["calls"]] == [call_id]


async def test_logins_are_rate_limited_and_registration_can_be_closed(sqlite_config):
    sqlite_config.auth.mode = "token"
    sqlite_config.auth.login_attempts = 3
    async with running_server(sqlite_config, scripted_runtime()) as (url, state):
        http, api = await open_api(url)
        async with http:
            await login(api, "dave")
            wrong = [await api.request("POST", "/api/auth/login", json={"name": "dave", "password": "guess"})
                     for _ in range(4)]
            right_too_soon = await api.request("POST", "/api/auth/login",
                                               json={"name": "dave", "password": "correct horse battery"})
            sqlite_config.auth.allow_registration = False
            closed = await api.request("POST", "/api/auth/register", json={"name": "eve", "password": "long enough pw"})
            weak = await api.request("POST", "/api/auth/login", json={"name": "bad name!", "password": "x"})
    assert [status for status, _ in wrong] == [401, 401, 401, 429]
    assert right_too_soon[0] == 429 and "try again" in right_too_soon[1]["error"]
    assert closed[0] == 403
    assert weak[0] == 400


async def test_cross_origin_requests_are_refused_unless_allowed(sqlite_config):
    sqlite_config.server.allowed_origins = ["https://review.example.org"]
    async with running_server(sqlite_config, scripted_runtime()) as (url, state):
        http, api = await open_api(url)
        async with http:
            evil = await api.request("GET", "/api/calls", headers={"Origin": "https://evil.example.com"})
            evil_offer = await api.request("POST", "/offer", json={"sdp": "v=0", "type": "offer"},
                                           headers={"Origin": "https://evil.example.com"})
            allowed = await api.request("GET", "/api/calls", headers={"Origin": "https://review.example.org"})
            same = await api.request("GET", "/api/calls", headers={"Origin": url})
    assert evil[0] == 403 and evil_offer[0] == 403 and "allowed_origins" in evil[1]["error"]
    assert allowed[0] == 200 and same[0] == 200
