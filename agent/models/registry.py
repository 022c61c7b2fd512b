"""Backends by name: the names config.stt.backend, llm.backend and tts.backend may take.

A new backend is one class taking the whole Config, added to the matching dict.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TypeVar

from agent.config import Config, ConfigError, with_llm_model
from agent.models.base import ChatModel, SpeechToText, TextToSpeech
from agent.models.espeak_tts import EspeakTextToSpeech
from agent.models.piper_tts import PiperTextToSpeech
from agent.models.remote.vllm_chat import VllmChatModel
from agent.models.smollm_chat import SmolLMChatModel
from agent.models.voice_router import VoiceRouter
from agent.models.whisper_stt import WhisperSpeechToText

T = TypeVar("T")

SPEECH_TO_TEXT: dict[str, Callable[[Config], SpeechToText]] = {"whisper": WhisperSpeechToText}


def _voxtral(config: Config) -> ChatModel:
    from agent.models.voxtral_chat import VoxtralChatModel  # imported on use: it needs mistral-common

    return VoxtralChatModel(config)


CHAT_MODELS: dict[str, Callable[[Config], ChatModel]] = {
    "smollm2": SmolLMChatModel,
    "voxtral": _voxtral,
    "vllm": VllmChatModel,
}


def _chatterbox(config: Config) -> TextToSpeech:
    from agent.models.chatterbox_tts import ChatterboxTextToSpeech  # imported on use: scripts/install.sh --chatterbox

    return ChatterboxTextToSpeech(config)


TEXT_TO_SPEECH: dict[str, Callable[[Config], TextToSpeech]] = {
    "auto": VoiceRouter,
    "chatterbox": _chatterbox,
    "piper": PiperTextToSpeech,
    "espeak": EspeakTextToSpeech,
}


def build_speech_to_text(config: Config) -> SpeechToText:
    return _build(SPEECH_TO_TEXT, "stt.backend", config.stt.backend, config)


def build_chat_model(config: Config) -> ChatModel:
    return _build(CHAT_MODELS, "llm.backend", config.llm.backend, config)


def build_fallback_chat_model(config: Config) -> ChatModel | None:
    """The local chat model that answers when the model server cannot (llm.backend vllm), or None."""
    if config.llm.backend != "vllm" or config.llm.vllm.fallback == "none":
        return None
    return SmolLMChatModel(with_llm_model(config, config.llm.vllm.fallback_model))


def build_text_to_speech(config: Config) -> TextToSpeech:
    return _build(TEXT_TO_SPEECH, "tts.backend", config.tts.backend, config)


def _build(backends: Mapping[str, Callable[[Config], T]], key: str, name: str, config: Config) -> T:
    try:
        backend = backends[name]
    except KeyError:
        raise ConfigError(f"unknown {key} {name!r}; allowed values: {', '.join(sorted(backends))}") from None
    return backend(config)
