"""Every Prometheus metric the agent exports, in one place. Names carry their unit.

Labels are few and of low cardinality (stage, status, backend); never a session id. Counters whose
label values are known up front are created at import, so they export 0 before the first event and
a dashboard's rate() has a series to work on. GPU memory is read at scrape time, and only from a
process that has already initialised CUDA: importing this module never imports torch.
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Iterator
from typing import Any, Protocol

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

# 10 ms to 5 s: the range a spoken exchange lives in.
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0)

TURNS = Counter("voice_agent_turns_total", "User turns answered, by how the reply ended", ["status"])
VOICE_TO_VOICE = Histogram(
    "voice_agent_voice_to_voice_seconds",
    "End of the user's speech to the first reply audio frame sent, by the chat backend that answered",
    ["llm_backend"],
    buckets=LATENCY_BUCKETS,
)
ENDPOINTING = Histogram(
    "voice_agent_endpointing_seconds",
    "End of the user's speech to the end-of-turn decision",
    buckets=LATENCY_BUCKETS,
)
ASR = Histogram(
    "voice_agent_asr_seconds", "Speech recognition time of a turn", ["backend"], buckets=LATENCY_BUCKETS
)
LLM_FIRST_TOKEN = Histogram(
    "voice_agent_llm_first_token_seconds",
    "Chat model: request to first token",
    ["backend"],
    buckets=LATENCY_BUCKETS,
)
LLM_FIRST_PHRASE = Histogram(
    "voice_agent_llm_first_phrase_seconds",
    "Chat model: request to the first phrase ready for speech",
    ["backend"],
    buckets=LATENCY_BUCKETS,
)
TTS_FIRST_AUDIO = Histogram(
    "voice_agent_tts_first_audio_seconds",
    "Text-to-speech: first phrase to its first audio",
    ["backend"],
    buckets=LATENCY_BUCKETS,
)
SPECULATIVE_REPLIES = Counter(
    "voice_agent_speculative_replies_total",
    "Replies started on a pause: hit (the turn had ended) or miss (the user went on)",
    ["outcome"],
)
INBOUND_FRAMES_DROPPED = Counter(
    "voice_agent_inbound_frames_dropped_total", "Microphone frames dropped because processing fell behind"
)
ERRORS = Counter("voice_agent_errors_total", "Failures, by pipeline stage", ["stage"])
LLM_FALLBACKS = Counter(
    "voice_agent_llm_fallbacks_total",
    "Turns the model server could not answer, answered by the embedded models instead, by why",
    ["reason"],
)
LLM_SERVER_UP = Gauge("voice_agent_llm_server_up", "1 while the model server (llm.backend vllm) answers /health")
ACTIVE_SESSIONS = Gauge("voice_agent_active_sessions", "Conversations currently connected")
SESSIONS_STARTED = Counter(
    "voice_agent_sessions_started_total",
    "Conversations opened, by transport: webrtc, realtime (OpenAI Realtime WebSocket) or ws (the simple one)",
    ["transport"],
)
MODELS_READY = Gauge("voice_agent_models_ready", "1 once every model is loaded and warmed up")
LLM_TIME_PER_TOKEN = Histogram(
    "voice_agent_llm_time_per_output_token_seconds",
    "Chat model: mean time between output tokens of a reply after the first",
    ["backend"],
    buckets=(0.002, 0.004, 0.006, 0.008, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5),
)
BARGE_IN = Histogram(
    "voice_agent_barge_in_seconds",
    "User speech onset detected while the agent speaks, to the outgoing audio actually stopped",
    buckets=(0.005, 0.01, 0.02, 0.03, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0),
)
TURNS_REOPENED = Counter(
    "voice_agent_turns_reopened_total",
    "Turns the user went on speaking after, before their reply was heard: the reply dropped, the speech joined",
)
REPLIES_OVER_USER = Counter(
    "voice_agent_replies_over_user_total", "Replies whose audio started while the user was speaking (should stay 0)"
)
INTERRUPTIONS = Counter("voice_agent_interruptions_total", "Replies the user interrupted by speaking over them")
FALSE_INTERRUPTIONS = Counter(
    "voice_agent_false_interruptions_total",
    "Interruptions that held no words (noise, a cough): the agent resumed its reply",
)
END_OF_TURN_SILENCE = Histogram(
    "voice_agent_end_of_turn_silence_seconds",
    "Silence required to end a turn, as chosen from what was said (adaptive end of turn)",
    buckets=(0.1, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.75, 0.9, 1.0, 1.2, 1.5, 2.0),
)
EMOTIONS = Counter("voice_agent_emotions_total", "Emotions detected in what was said", ["speaker", "emotion"])

MODEL_LOAD = Gauge("voice_agent_model_load_seconds", "Time it took to load every model at start-up")
MODEL_WARM_UP = Gauge("voice_agent_model_warm_up_seconds", "Time it took to warm up every model at start-up")

# --- what the page measured (agent.client.stats events) -------------------------------------------

MOUTH_TO_EAR = Histogram(
    "voice_agent_client_mouth_to_ear_seconds",
    "Browser: end of the user's speech (the page's microphone) to the first reply audio audible on the page",
    buckets=LATENCY_BUCKETS,
)
CLIENT_JITTER_BUFFER = Histogram(
    "voice_agent_client_jitter_buffer_delay_seconds",
    "Browser: mean time the agent's audio waited in the WebRTC jitter buffer since the previous report",
    buckets=(0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0),
)
CLIENT_ROUND_TRIP = Histogram(
    "voice_agent_client_round_trip_time_seconds",
    "Browser: current round-trip time of the selected ICE candidate pair",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0),
)
CLIENT_REPORTS = Counter(
    "voice_agent_client_reports_total",
    "agent.client.stats events: accepted (at least one value recorded) or rejected",
    ["result"],
)
# Payload field of agent.client.stats -> the histogram it feeds.
CLIENT_REPORT_FIELDS: dict[str, Histogram] = {
    "mouth_to_ear_s": MOUTH_TO_EAR,
    "jitter_buffer_delay_s": CLIENT_JITTER_BUFFER,
    "round_trip_time_s": CLIENT_ROUND_TRIP,
}
# A browser's value beyond this is a broken clock or a stale measurement, not a latency.
CLIENT_VALUE_MAX_S = 60.0

# Call records: background jobs (transcription of uploads), uploads, and live-call writes waiting for the store.
JOB_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
RECORD_JOBS = Counter("voice_agent_record_jobs_total", "Record jobs finished, by kind and outcome", ["kind", "outcome"])
RECORD_JOB_SECONDS = Histogram(
    "voice_agent_record_job_seconds", "Time one record job took, by kind", ["kind"], buckets=JOB_BUCKETS
)
UPLOADS = Counter("voice_agent_uploads_total", "Uploaded recordings, by result", ["result"])
RECORD_WRITES_PENDING = Gauge(
    "voice_agent_record_writes_pending", "Live-call record writes queued for the store (grows while it is down)"
)

for _status in ("completed", "cancelled", "failed"):
    TURNS.labels(status=_status)
for _stage in ("model_load", "asr", "reply", "records", "http"):
    ERRORS.labels(stage=_stage)
for _outcome in ("hit", "miss"):
    SPECULATIVE_REPLIES.labels(outcome=_outcome)
for _reason in ("server_down", "refused", "http_5xx", "http_4xx", "first_token_timeout", "stream_broken"):
    LLM_FALLBACKS.labels(reason=_reason)
for _result in ("accepted", "rejected"):
    CLIENT_REPORTS.labels(result=_result)


class _Named(Protocol):
    name: str


class _Runtime(Protocol):
    stt: _Named
    chat: _Named
    tts: _Named
    load_seconds: float
    warm_up_seconds: float


def models_ready(runtime: _Runtime) -> None:
    """Mark the models loaded and warm; create the per-backend series so they export from now on."""
    MODELS_READY.set(1)
    MODEL_LOAD.set(runtime.load_seconds)
    MODEL_WARM_UP.set(runtime.warm_up_seconds)
    ASR.labels(backend=runtime.stt.name)
    for histogram in (LLM_FIRST_TOKEN, LLM_FIRST_PHRASE, LLM_TIME_PER_TOKEN):
        histogram.labels(backend=runtime.chat.name)
    VOICE_TO_VOICE.labels(llm_backend=runtime.chat.name)
    TTS_FIRST_AUDIO.labels(backend=runtime.tts.name)


def observe_client_report(event: Any) -> None:
    """Record what the browser measured about playout, from an ``agent.client.stats`` event.

    Payload (every field optional, seconds as JSON numbers)::

        {"type": "agent.client.stats", "response_id": "resp_...",
         "mouth_to_ear_s": 1.21, "jitter_buffer_delay_s": 0.042, "round_trip_time_s": 0.003}

    A value that is not a finite number in [0, 60] is ignored, the rest of the report is kept.
    Nothing a client sends can make this raise.
    """
    recorded = 0
    if isinstance(event, dict):
        for name, histogram in CLIENT_REPORT_FIELDS.items():
            value = _seconds(event.get(name))
            if value is not None:
                histogram.observe(value)
                recorded += 1
    CLIENT_REPORTS.labels(result="accepted" if recorded else "rejected").inc()
    if not recorded:
        log.debug("ignored a client stats report with no usable value: %.200r", event)


def _seconds(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    if not math.isfinite(value) or not 0.0 <= value <= CLIENT_VALUE_MAX_S:
        return None
    return value


# --- GPU memory, read when Prometheus scrapes ------------------------------------------------------


def gpu_memory() -> dict[str, dict[str, int]]:
    """Memory this process holds on each CUDA device: {"cuda:0": {"allocated_bytes", "reserved_bytes"}}.

    Empty without CUDA, and when torch was never imported or CUDA never initialised: this never
    imports torch nor creates a CUDA context.
    """
    torch = sys.modules.get("torch")
    cuda = getattr(torch, "cuda", None)
    try:
        if cuda is None or not cuda.is_initialized():
            return {}
        return {
            f"cuda:{i}": {"allocated_bytes": cuda.memory_allocated(i), "reserved_bytes": cuda.memory_reserved(i)}
            for i in range(cuda.device_count())
        }
    except Exception:  # a broken driver must not break /metrics or /health
        log.exception("cannot read CUDA memory")
        return {}


def compute_device() -> str:
    """``cuda:0 (NVIDIA H100 80GB HBM3)`` when this process uses CUDA, else ``cpu``."""
    torch = sys.modules.get("torch")
    try:
        if torch is not None and torch.cuda.is_initialized():
            index = torch.cuda.current_device()
            return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    except Exception:
        log.exception("cannot read the CUDA device")
    return "cpu"


class GpuMemoryCollector(Collector):
    """``voice_agent_gpu_memory_{allocated,reserved}_bytes{device}``, read at scrape time."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        devices = gpu_memory()
        if not devices:
            return
        for kind, help_text in (
            ("allocated", "GPU memory held by tensors of this process"),
            ("reserved", "GPU memory reserved by this process's caching allocator (in use as seen by the GPU)"),
        ):
            family = GaugeMetricFamily(f"voice_agent_gpu_memory_{kind}_bytes", help_text, labels=["device"])
            for device, memory in devices.items():
                family.add_metric([device], memory[f"{kind}_bytes"])
            yield family

    def describe(self) -> list:
        return []  # the families depend on CUDA at scrape time; nothing to check at registration


REGISTRY.register(GpuMemoryCollector())
