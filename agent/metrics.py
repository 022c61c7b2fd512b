"""Every Prometheus metric the agent exports, in one place. Names carry their unit."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# 10 ms to 5 s: the range a spoken exchange lives in.
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0)

TURNS = Counter("voice_agent_turns_total", "User turns answered, by how the reply ended", ["status"])
VOICE_TO_VOICE = Histogram(
    "voice_agent_voice_to_voice_seconds",
    "End of the user's speech to the first reply audio frame sent",
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
ACTIVE_SESSIONS = Gauge("voice_agent_active_sessions", "Conversations currently connected")
MODELS_READY = Gauge("voice_agent_models_ready", "1 once every model is loaded and warmed up")
