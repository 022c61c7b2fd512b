"""OpenAI's own Python client against the server's /v1 routes: transcriptions, speech and the model list.

The models are real: the runtime loads as the app loads it (Whisper, SmolLM2, the piper and espeak-ng
voices), transcriptions use the multilingual Whisper of call uploads, and the speech heard is espeak-ng's.
"""

from __future__ import annotations

import base64
import contextlib
import io
import re
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import av
import numpy as np
import openai
import pytest
from aiohttp import web

from agent.config import Config
from agent.models.runtime import ModelRuntime
from tests.conftest import running_server
from tests.speech import silence, speak, write_wav

SENTENCE = "The quick brown fox jumps over the lazy dog."
SPEECH_FORMATS = ["mp3", "opus", "aac", "flac", "wav", "pcm"]


@pytest.fixture(scope="module")
def speech_wav(tmp_path_factory) -> Path:
    audio = np.concatenate([silence(0.3), speak(SENTENCE), silence(0.3)])
    return write_wav(tmp_path_factory.mktemp("speech") / "fox.wav", audio, 16_000)


@contextlib.asynccontextmanager
async def openai_server(config: Config, runtime: ModelRuntime, api_key: str = "unused") -> AsyncIterator[tuple]:
    """The server, an OpenAI client pointed at it, and a plain HTTP session for what the client cannot send."""
    async with running_server(config, runtime) as (url, state):
        async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=api_key, max_retries=0) as client:
            async with aiohttp.ClientSession() as http:
                yield client, http, url, state


def words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


def decoded_seconds(data: bytes, response_format: str) -> tuple[float, float]:
    """How long the audio is and how loud (RMS of samples in [-1, 1])."""
    if response_format == "pcm":
        samples = np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768
        return samples.size / 24_000, float(np.sqrt(np.mean(samples**2)))
    with av.open(io.BytesIO(data)) as container:
        rate = container.streams.audio[0].rate
        samples = np.concatenate([frame.to_ndarray().reshape(-1) for frame in container.decode(audio=0)])
    if samples.dtype == np.int16:
        samples = samples.astype(np.float32) / 32768
    return samples.size / rate, float(np.sqrt(np.mean(samples**2)))


async def test_a_recording_is_transcribed_in_every_response_format(config, runtime, speech_wav):
    async with openai_server(config, runtime) as (client, http, url, state):
        create = client.audio.transcriptions.create
        plain = await create(model="whisper-1", file=speech_wav)
        text = await create(model="whisper-1", file=speech_wav, response_format="text", language="en")
        verbose = await create(model="whisper-1", file=speech_wav, response_format="verbose_json",
                               timestamp_granularities=["segment", "word"], prompt="Foxes and dogs.", temperature=0)
        srt = await create(model="whisper-1", file=speech_wav, response_format="srt")
        vtt = await create(model="whisper-1", file=speech_wav, response_format="vtt")

    for heard in (plain.text, text, verbose.text):
        assert {"quick", "brown", "fox", "lazy", "dog"} <= set(words(heard)), heard
    assert verbose.language == "english" and verbose.duration == pytest.approx(speech_wav.stat().st_size / 32_000, 0.05)
    assert verbose.segments and all(0 <= s.start < s.end <= verbose.duration + 0.1 for s in verbose.segments)
    assert verbose.segments[0].id == 0 and verbose.segments[0].avg_logprob < 0
    fox = next(w for w in verbose.words if w.word.lower().startswith("fox"))
    dog = next(w for w in verbose.words if w.word.lower().startswith("dog"))
    assert 0 < fox.start < fox.end <= dog.start < dog.end <= verbose.duration + 0.1
    assert re.match(r"1\n00:00:\d\d,\d{3} --> 00:00:\d\d,\d{3}\n\S", srt) and "fox" in srt.lower()
    assert re.match(r"WEBVTT\n\n00:00:\d\d\.\d{3} --> 00:00:\d\d\.\d{3}\n\S", vtt) and "fox" in vtt.lower()


async def test_a_recording_can_come_as_base64_or_from_a_url_but_not_from_a_private_address(config, runtime, speech_wav):
    data_url = "data:audio/wav;base64," + base64.b64encode(speech_wav.read_bytes()).decode()

    async def fox(request: web.Request) -> web.FileResponse:
        return web.FileResponse(speech_wav)

    files = web.Application()
    files.router.add_get("/fox.wav", fox)
    runner = web.AppRunner(files)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    file_url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/fox.wav"
    try:
        async with openai_server(config, runtime) as (client, http, url, state):
            endpoint = f"{url}/v1/audio/transcriptions"
            async with http.post(endpoint, json={"audio_base64": data_url, "response_format": "text"}) as response:
                by_base64 = response.status, await response.text()
            async with http.post(endpoint, data={"url": file_url}) as response:
                refused = response.status, await response.json()
            config.records.allow_private_urls = True
            form = aiohttp.FormData({"url": file_url, "response_format": "json"}, default_to_multipart=True)
            async with http.post(endpoint, data=form) as response:
                by_url = response.status, await response.json()
    finally:
        await runner.cleanup()

    assert by_base64[0] == 200 and "fox" in words(by_base64[1])
    assert refused[0] == 400 and refused[1]["error"]["param"] == "url"
    assert "private" in refused[1]["error"]["message"] or "loopback" in refused[1]["error"]["message"]
    assert by_url[0] == 200 and "fox" in words(by_url[1]["text"])


async def test_speech_comes_back_in_every_format_and_is_the_text_spoken(config, runtime):
    async with openai_server(config, runtime) as (client, http, url, state):
        spoken = {
            fmt: (await client.audio.speech.create(model="tts-1", voice="alloy", input=SENTENCE, response_format=fmt))
            for fmt in SPEECH_FORMATS
        }
        fast = await client.audio.speech.create(model="tts-1", voice="alloy", input=SENTENCE, response_format="wav",
                                                speed=2.0)
        wav = io.BytesIO(spoken["wav"].content)
        heard = await client.audio.transcriptions.create(model="whisper-1", file=("speech.wav", wav))

    seconds = {}
    for fmt, response in spoken.items():
        seconds[fmt], loudness = decoded_seconds(response.content, fmt)
        assert 1.5 < seconds[fmt] < 6 and loudness > 0.01, (fmt, seconds[fmt], loudness)
    assert spoken["mp3"].response.headers["content-type"] == "audio/mpeg"
    usual = sum(seconds.values()) / len(seconds)  # piper samples its durations: each take is a little different
    assert decoded_seconds(fast.content, "wav")[0] / usual == pytest.approx(0.5, abs=0.1)
    assert {"quick", "brown", "fox", "lazy", "dog"} <= set(words(heard.text)), heard.text


async def test_the_model_list_names_the_loaded_models(config, runtime):
    async with openai_server(config, runtime) as (client, http, url, state):
        listed = [model async for model in client.models.list()]
    ids = [model.id for model in listed]
    assert {runtime.stt.name, runtime.chat.name, "piper", "espeak"} <= set(ids)
    assert all(model.object == "model" and model.owned_by for model in listed)


async def test_bad_requests_get_openais_error_shape_naming_the_field(config, runtime, speech_wav, tmp_path):
    config.records.max_upload_bytes = 20_000
    not_audio = tmp_path / "notes.wav"
    not_audio.write_text("these are not the samples you are looking for")
    speech_body = {"model": "tts-1", "voice": "alloy", "input": SENTENCE}
    async with openai_server(config, runtime) as (client, http, url, state):
        failures = {}

        async def expect_failure(name: str, call) -> None:
            with pytest.raises(openai.APIStatusError) as caught:
                await call
            failures[name] = caught.value

        transcribe = client.audio.transcriptions.create
        await expect_failure("not audio", transcribe(model="whisper-1", file=not_audio))
        await expect_failure("too large", transcribe(model="whisper-1", file=speech_wav))
        await expect_failure("format", transcribe(model="whisper-1", file=not_audio, response_format="diarized_json"))
        await expect_failure("speech format", client.audio.speech.create(**speech_body, response_format="ogg"))
        await expect_failure("speed", client.audio.speech.create(**speech_body, speed=9))
        await expect_failure("empty input", client.audio.speech.create(**speech_body | {"input": "?!"}))
        await expect_failure("language", client.audio.speech.create(**speech_body, extra_body={"language": "qq"}))
        async with http.post(f"{url}/v1/audio/transcriptions", data={"model": "whisper-1"}) as response:
            no_file = response.status, await response.json()
        state.runtime = None  # as while the models load
        await expect_failure("loading", client.audio.speech.create(**speech_body))
        state.runtime = runtime

    expected = {"not audio": (400, "file"), "too large": (413, "file"), "format": (400, "response_format"),
                "speech format": (400, "response_format"), "speed": (400, "speed"), "empty input": (400, "input"),
                "language": (400, "language"), "loading": (503, None)}
    assert {name: (error.status_code, error.body["param"]) for name, error in failures.items()} == expected
    assert "records.max_upload_bytes" in failures["too large"].message
    assert "still loading" in failures["loading"].message
    assert no_file[0] == 400 and no_file[1]["error"]["param"] == "file" and no_file[1]["error"]["message"]
    assert no_file[1]["error"]["type"] == "invalid_request_error"


async def test_with_token_auth_v1_needs_a_bearer_token_and_an_allowed_origin(config, runtime):
    config.auth.mode = "token"
    credentials = {"name": "olga", "password": "correct horse battery"}
    async with openai_server(config, runtime, api_key="not-a-token") as (client, http, url, state):
        with pytest.raises(openai.AuthenticationError) as refused:
            await client.models.list()
        async with http.get(f"{url}/v1/models") as response:
            anonymous = response.status, await response.json()
        async with http.post(f"{url}/api/auth/register", json=credentials) as response:
            assert response.status == 201
        async with http.post(f"{url}/api/auth/login", json=credentials) as response:
            token = (await response.json())["token"]
        listed = await client.with_options(api_key=token).models.list()
        async with http.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {token}",
                                                          "Origin": "https://evil.example.com"}) as response:
            cross_origin = response.status, await response.json()

    assert refused.value.status_code == 401 and "log in again" in refused.value.message
    assert anonymous[0] == 401 and anonymous[1]["error"]["code"] == "invalid_api_key"
    assert runtime.chat.name in [model.id for model in listed.data]
    assert cross_origin[0] == 403 and "allowed_origins" in cross_origin[1]["error"]["message"]
