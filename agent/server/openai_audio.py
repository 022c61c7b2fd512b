"""OpenAI-style audio endpoints, so that OpenAI's clients can use this server (``base_url`` ``.../v1``).

``POST /v1/audio/transcriptions`` transcribes with the multilingual Whisper that call uploads use,
``POST /v1/audio/speech`` speaks with the runtime's voices, ``GET /v1/models`` lists the loaded models.
Every error on ``/v1`` takes OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``: OpenAI
clients read ``error.message``.
"""

from __future__ import annotations

import asyncio
import io
import json
import math
import time
import uuid
from fractions import Fraction
from pathlib import Path
from typing import Annotated, Any, Literal

import av
import numpy as np
from aiohttp import web
from pydantic import BaseModel, Field, ValidationError

from agent.audio.resample import Resampler
from agent.calls.audio_files import AudioError, decode_audio
from agent.calls.transcription import whisper_segments
from agent.calls.uploads import UploadRejected, decode_data_url, fetch_url
from agent.config import Config, RecordsConfig
from agent.conversation.chunker import PhraseChunker
from agent.languages import answer_language, language_name
from agent.models.base import SpeechChunk
from agent.models.runtime import ModelRuntime
from agent.server.api import CONFIG_KEY
from agent.server.errors import ApiError, validation_message
from agent.server.multipart import MULTIPART_OVERHEAD_BYTES, receive_form, scratch_dir
from agent.server.state import STATE_KEY

SPEECH_RATE = 24_000  # OpenAI's pcm: 24 kHz, 16-bit, mono, little-endian; the other formats use the same rate
MAX_INPUT_CHARS = 4096  # OpenAI's limit on one speech request
SPEECH_BODY_BYTES = 64 * 1024
LANGUAGE_CODE = r"^[a-z]{2,3}$"
# response_format: the PyAV container and codec, and the Content-Type (pcm is written as it is).
SPEECH_FORMATS = {
    "mp3": ("mp3", "libmp3lame", "audio/mpeg"),
    "opus": ("ogg", "libopus", "audio/ogg"),
    "aac": ("adts", "aac", "audio/aac"),
    "flac": ("flac", "flac", "audio/flac"),
    "wav": ("wav", "pcm_s16le", "audio/wav"),
    "pcm": ("", "", "audio/pcm"),
}
ERROR_CODES = {401: "invalid_api_key", 403: "forbidden", 404: "not_found", 413: "request_too_large",
               429: "rate_limit_exceeded", 503: "models_loading"}
STARTED_KEY = web.AppKey("openai_started", int)


# --- errors -------------------------------------------------------------------------------------------


def invalid(message: str, param: str | None = None, status: int = 400, code: str | None = None) -> ApiError:
    """An error of a /v1 route; the error middleware answers it and ``openai_errors`` gives it OpenAI's shape."""
    return ApiError(status, message, {"param": param, "code": code})


def _validated(model: type[BaseModel], data: dict[str, Any]) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        param = str(exc.errors(include_url=False, include_input=False)[0]["loc"][0])
        raise invalid(validation_message(exc, "request"), param) from None


@web.middleware
async def openai_errors(request: web.Request, handler) -> web.StreamResponse:
    """Reshape the ``{"error": "...", "detail": ...}`` answers of /v1 routes (ours, auth's, aiohttp's) as OpenAI's."""
    if not request.path.startswith("/v1/"):
        return await handler(request)
    response = await handler(request)
    if response.status < 400 or not isinstance(response, web.Response):
        return response
    if response.content_type != "application/json" or not isinstance(response.body, bytes):
        return response
    body = json.loads(response.body)
    if not isinstance(body, dict) or not isinstance(body.get("error"), str):
        return response
    detail = body.get("detail") if isinstance(body.get("detail"), dict) else {}
    error = {
        "message": body["error"],
        "type": "server_error" if response.status >= 500 else "invalid_request_error",
        "param": detail.get("param"),
        "code": detail.get("code") or ERROR_CODES.get(response.status),
    }
    reshaped = web.json_response({"error": error}, status=response.status)
    for name in ("Allow", "WWW-Authenticate", "Retry-After"):
        if name in response.headers:
            reshaped.headers[name] = response.headers[name]
    return reshaped


def _runtime(request: web.Request) -> ModelRuntime:
    runtime = request.app[STATE_KEY].runtime
    if runtime is None:
        raise invalid("models are still loading; retry when GET /ready returns 200", status=503)
    return runtime


async def _json_body(request: web.Request, limit: int) -> dict[str, Any]:
    too_large = invalid(f"the request body is over {limit} bytes", status=413)
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    body = await request.content.read(limit + 1)
    if len(body) > limit:
        raise too_large
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise invalid("the body is not JSON") from None
    if not isinstance(data, dict):
        raise invalid("the body must be a JSON object")
    return data


# --- transcriptions -----------------------------------------------------------------------------------


class TranscriptionRequest(BaseModel):
    model: str | None = None  # accepted, whatever it names: the server's Whisper answers
    language: Annotated[str | None, Field(pattern=LANGUAGE_CODE)] = None
    prompt: Annotated[str | None, Field(max_length=10_000)] = None
    response_format: Literal["json", "text", "srt", "verbose_json", "vtt"] = "json"
    timestamp_granularities: list[Literal["segment", "word"]] = ["segment"]
    temperature: Annotated[float, Field(ge=0, le=1)] = 0.0
    stream: bool = False
    url: str | None = None
    audio_base64: str | None = None


def _form_params(fields: dict[str, list[str]]) -> dict[str, Any]:
    """The last value of each text field, and the timestamp granularities OpenAI's clients send as name[]."""
    data: dict[str, Any] = {name: values[-1] for name, values in fields.items() if values[-1] != ""}
    data.pop("timestamp_granularities[]", None)
    granularities = fields.get("timestamp_granularities[]", []) + fields.get("timestamp_granularities", [])
    if granularities:
        data["timestamp_granularities"] = granularities
    return data


async def _received_audio(
    request: web.Request, config: RecordsConfig, scratch: Path
) -> tuple[Path, TranscriptionRequest]:
    """The audio to transcribe as a file of ours (uploaded, fetched or decoded from base64) and the parameters."""
    base64_limit = config.max_upload_bytes * 4 // 3 + MULTIPART_OVERHEAD_BYTES
    path: Path | None = None
    if request.content_type == "application/json":
        data = await _json_body(request, base64_limit)
        if "timestamp_granularities[]" in data:
            data["timestamp_granularities"] = data.pop("timestamp_granularities[]")
    elif request.content_type == "application/x-www-form-urlencoded":  # a url without a file: curl -d url=...
        data = {name: value for name, value in (await request.post()).items() if value != ""}
    else:
        try:
            form = await receive_form(request, config.max_upload_bytes, scratch, fields_limit=base64_limit)
        except ApiError as exc:
            raise invalid(exc.message, "file", exc.status) from None
        path = form.path
        if path is None and not ({"url", "audio_base64"} & form.fields.keys()):
            raise invalid("no file: send the audio in a multipart field named file, or give url or audio_base64",
                          "file")
        data = _form_params(form.fields)
    try:
        params = _validated(TranscriptionRequest, data)
        if params.stream:
            raise invalid("streamed transcriptions are not supported; leave stream out", "stream")
        if path is not None and (params.url or params.audio_base64):
            raise invalid("give the audio once: a file, a url or audio_base64", "file")
    except ApiError:
        if path is not None:
            path.unlink(missing_ok=True)
        raise
    return path or await _remote_audio(params, config, scratch), params


async def _remote_audio(params: TranscriptionRequest, config: RecordsConfig, scratch: Path) -> Path:
    if bool(params.url) == bool(params.audio_base64):
        raise invalid("no audio: send a multipart field named file, or a url, or audio_base64", "file")
    try:
        if params.url:
            return await fetch_url(params.url, scratch / uuid.uuid4().hex, max_bytes=config.max_upload_bytes,
                                   timeout_s=config.url_timeout_seconds, allow_private=config.allow_private_urls)
        return await asyncio.to_thread(decode_data_url, params.audio_base64, scratch, config.max_upload_bytes)
    except UploadRejected as exc:
        raise invalid(exc.message, "url" if params.url else "audio_base64", exc.status) from None


def _transcribe(path: Path, config: Config, params: TranscriptionRequest) -> tuple[list, Any, float]:
    """Blocking (a worker thread): decode to 16 kHz mono, then Whisper's segments, its info and the duration."""
    try:
        audio = decode_audio(path, config.records.max_audio_seconds)
    except AudioError as exc:
        raise invalid(str(exc), "file") from None
    signal = np.ascontiguousarray(audio.samples.mean(axis=0), dtype=np.float32)
    words = params.response_format == "verbose_json" and "word" in params.timestamp_granularities
    try:
        segments, info = whisper_segments(signal, config, language=params.language, prompt=params.prompt,
                                          temperature=params.temperature or None, word_timestamps=words)
    except ValueError as exc:  # faster-whisper refuses a language code it does not know
        raise invalid(str(exc), "language") from None
    return list(segments), info, audio.duration_s


def _timestamp(seconds: float, separator: str) -> str:
    millis = round(seconds * 1000)
    hours, minutes, whole = millis // 3_600_000, millis // 60_000 % 60, millis // 1000 % 60
    return f"{hours:02d}:{minutes:02d}:{whole:02d}{separator}{millis % 1000:03d}"


def _subtitles(segments: list, vtt: bool) -> str:
    cues = []
    for number, segment in enumerate(segments, start=1):
        start, end = (_timestamp(t, "." if vtt else ",") for t in (segment.start, segment.end))
        cues.append(("" if vtt else f"{number}\n") + f"{start} --> {end}\n{segment.text.strip()}\n")
    return ("WEBVTT\n\n" if vtt else "") + "\n".join(cues)


def _verbose(segments: list, info: Any, duration_s: float, params: TranscriptionRequest) -> dict[str, Any]:
    body: dict[str, Any] = {
        "task": "transcribe",
        "language": language_name(info.language).lower(),
        "duration": round(duration_s, 3),
        "text": "".join(segment.text for segment in segments).strip(),
    }
    if "segment" in params.timestamp_granularities:
        body["segments"] = [
            {
                "id": number, "seek": s.seek, "start": round(s.start, 3), "end": round(s.end, 3), "text": s.text,
                "tokens": list(s.tokens), "temperature": s.temperature, "avg_logprob": s.avg_logprob,
                "compression_ratio": s.compression_ratio, "no_speech_prob": s.no_speech_prob,
            }
            for number, s in enumerate(segments)
        ]
    if "word" in params.timestamp_granularities:
        body["words"] = [
            {"word": w.word.strip(), "start": round(w.start, 3), "end": round(w.end, 3)}
            for s in segments for w in s.words or []
        ]
    return body


async def transcriptions(request: web.Request) -> web.Response:
    config = request.app[CONFIG_KEY]
    path, params = await _received_audio(request, config.records, scratch_dir(config))
    try:
        segments, info, duration_s = await asyncio.to_thread(_transcribe, path, config, params)
    finally:
        path.unlink(missing_ok=True)
    text = "".join(segment.text for segment in segments).strip()
    usage = {"type": "duration", "seconds": math.ceil(duration_s)}
    match params.response_format:
        case "text":
            return web.Response(text=text + "\n", content_type="text/plain")
        case "srt" | "vtt":
            return web.Response(text=_subtitles(segments, params.response_format == "vtt"), content_type="text/plain")
        case "verbose_json":
            return web.json_response(_verbose(segments, info, duration_s, params) | {"usage": usage})
    return web.json_response({"text": text, "usage": usage})


# --- speech -------------------------------------------------------------------------------------------


class SpeechRequest(BaseModel):
    model: str | None = None  # accepted, whatever it names: the server's voices speak
    input: Annotated[str, Field(min_length=1, max_length=MAX_INPUT_CHARS)]
    voice: str | dict | None = None  # accepted; the voice is the one that speaks ``language``
    response_format: Literal["mp3", "opus", "aac", "flac", "wav", "pcm"] = "mp3"
    speed: Annotated[float, Field(ge=0.25, le=4.0)] = 1.0
    language: Annotated[str | None, Field(pattern=LANGUAGE_CODE)] = None
    instructions: str | None = None  # accepted and not followed: the voices take no instructions
    stream_format: Literal["audio"] = "audio"


def _tempo(samples: np.ndarray, speed: float) -> np.ndarray:
    """Faster or slower at the same pitch: FFmpeg's atempo (one filter takes 0.5 to 100, so two below 0.5)."""
    graph = av.filter.Graph()
    last = graph.add_abuffer(format="s16", sample_rate=SPEECH_RATE, layout="mono", time_base=Fraction(1, SPEECH_RATE))
    for factor in [0.5, speed / 0.5] if speed < 0.5 else [speed]:
        node = graph.add("atempo", f"{factor:.6f}")
        last.link_to(node)
        last = node
    sink = graph.add("abuffersink")
    last.link_to(sink)
    graph.configure()
    graph.push(_frame(samples))
    graph.push(None)
    out = []
    while True:
        try:
            out.append(graph.pull().to_ndarray().reshape(-1))
        except (av.BlockingIOError, av.EOFError):
            break
    return np.concatenate(out) if out else samples[:0]


def _frame(samples: np.ndarray) -> av.AudioFrame:
    frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = SPEECH_RATE
    frame.time_base = Fraction(1, SPEECH_RATE)
    frame.pts = 0
    return frame


def encode_speech(chunks: list[SpeechChunk], response_format: str, speed: float = 1.0) -> bytes:
    """Blocking (a worker thread): the voice's chunks at 24 kHz mono, at ``speed``, in ``response_format``."""
    resampler = Resampler(SPEECH_RATE)
    samples = np.concatenate([resampler.samples(c.audio, c.sample_rate) for c in chunks] + [resampler.flush()])
    if speed != 1.0 and samples.size:
        samples = _tempo(samples, speed)
    if response_format == "pcm":
        return samples.astype("<i2").tobytes()
    container_format, codec, _ = SPEECH_FORMATS[response_format]
    out = io.BytesIO()
    with av.open(out, mode="w", format=container_format) as container:
        stream = container.add_stream(codec, rate=SPEECH_RATE, layout="mono")
        for packet in [*stream.encode(_frame(samples)), *stream.encode(None)]:
            container.mux(packet)
    return out.getvalue()


async def speech(request: web.Request) -> web.Response:
    config = request.app[CONFIG_KEY]
    runtime = _runtime(request)
    params = _validated(SpeechRequest, await _json_body(request, SPEECH_BODY_BYTES))
    language = params.language or answer_language(config)
    chunker = PhraseChunker(config.chunker)
    phrases = chunker.push(params.input) + chunker.flush()
    if not phrases:
        raise invalid("the input has nothing to speak (no letters or digits)", "input")
    try:
        chunks = [chunk for phrase in phrases async for chunk in runtime.synthesize(phrase, language)]
    except ValueError as exc:  # no voice speaks the language (the router, espeak-ng)
        raise invalid(str(exc), "language") from None
    body = await asyncio.to_thread(encode_speech, chunks, params.response_format, params.speed)
    return web.Response(body=body, content_type=SPEECH_FORMATS[params.response_format][2])


# --- models -------------------------------------------------------------------------------------------


async def models(request: web.Request) -> web.Response:
    runtime = _runtime(request)
    loaded = [("speech_to_text", runtime.stt.name), ("chat", runtime.chat.name), ("text_to_speech", runtime.tts.name)]
    loaded += [("voice", voice.name) for voice in getattr(runtime.tts, "voices", [])]
    kinds: dict[str, str] = {}
    for kind, name in loaded:
        kinds.setdefault(name, kind)
    created = request.app[STARTED_KEY]
    data = [
        {"id": name, "object": "model", "created": created, "owned_by": "voice-agent", "kind": kind}
        for name, kind in kinds.items()
    ]
    return web.json_response({"object": "list", "data": data})


def add_routes(app: web.Application) -> None:
    app.middlewares.insert(0, openai_errors)  # outermost: it sees every answer, the other middlewares' included
    app[STARTED_KEY] = int(time.time())
    app.router.add_post("/v1/audio/transcriptions", transcriptions)
    app.router.add_post("/v1/audio/speech", speech)
    app.router.add_get("/v1/models", models)
