"""The embedded models, for real: Whisper, SmolLM2, Piper and espeak-ng, all loaded from their wheels."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from agent.audio.resample import resample_once, to_float, to_int16
from agent.config import Config, ConfigError
from agent.models import registry, smollm_chat
from agent.models.base import ChatMessage, SpeechChunk
from agent.models.espeak_tts import EspeakTextToSpeech
from agent.models.piper_tts import PiperTextToSpeech
from agent.models.smollm_chat import SmolLMChatModel
from agent.models.whisper_stt import WhisperSpeechToText
from tests.speech import speak


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh model cache for these tests, whatever MODEL_CACHE_DIR the environment holds."""
    path = tmp_path_factory.mktemp("model-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MODEL_CACHE_DIR", str(path))
        yield path


@pytest.fixture(scope="module")
def english_stt(cache_dir: Path) -> WhisperSpeechToText:
    return WhisperSpeechToText(Config(language="en"))


@pytest.fixture(scope="module")
def chat(cache_dir: Path) -> SmolLMChatModel:
    return SmolLMChatModel(Config())


@pytest.fixture(scope="module")
def tts(cache_dir: Path) -> PiperTextToSpeech:
    return PiperTextToSpeech(Config())


def words(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))


def heard(stt: WhisperSpeechToText, chunks: list[SpeechChunk]) -> str:
    """What Whisper understands of synthesized speech."""
    audio = np.concatenate([chunk.audio for chunk in chunks])
    speech = resample_once(to_int16(audio), chunks[0].sample_rate, 16_000)
    return words(stt.transcribe(to_float(speech), "en").text)


def test_whisper_transcribes_english_speech(english_stt: WhisperSpeechToText) -> None:
    transcript = english_stt.transcribe(to_float(speak("Please turn on the kitchen lights.")), "en")

    assert words(transcript.text) == "please turn on the kitchen lights"
    assert transcript.language == "en"


def test_whisper_base_transcribes_spanish_from_its_joined_cache(cache_dir: Path) -> None:
    stt = WhisperSpeechToText(Config())  # set up for English: Spanish loads Whisper base on first use

    speech = speak("Buenos días, me llamo Carlos.", voice="es", words_per_minute=175)

    transcript = stt.transcribe(to_float(speech), "es")

    assert "me llamo carlos" in words(transcript.text)
    assert transcript.language == "es"
    # The halves were joined into the cache, and no scratch folder is left behind.
    assert [p.name for p in cache_dir.iterdir() if p.name.startswith("whisper")] == ["whisper-base"]
    assert not [p for p in cache_dir.iterdir() if p.name.startswith(".")]


def test_chat_streams_an_english_reply_in_pieces(chat: SmolLMChatModel) -> None:
    question = [ChatMessage("user", "What is the capital of France?")]

    pieces = list(chat.stream_reply(question, threading.Event()))

    assert len(pieces) >= 3
    assert all(pieces)
    assert "paris" in words("".join(pieces))


def test_chat_stops_within_one_piece_once_cancelled(chat: SmolLMChatModel) -> None:
    cancel = threading.Event()
    pieces = []
    for piece in chat.stream_reply([ChatMessage("user", "Tell me a long story about a dragon.")], cancel):
        pieces.append(piece)
        cancel.set()

    assert 1 <= len(pieces) <= 2


def test_chat_keeps_the_history_it_is_given(chat: SmolLMChatModel) -> None:
    history = [
        ChatMessage("user", "My name is Alice."),
        ChatMessage("assistant", "Nice to meet you, Alice."),
        ChatMessage("user", "What is my name?"),
    ]

    reply = "".join(chat.stream_reply(history, threading.Event()))

    assert "alice" in words(reply)


def test_second_chat_model_loads_from_the_safetensors_cache(
    chat: SmolLMChatModel, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_conversion(*args: object) -> None:
        raise AssertionError("the GGUF was converted again")

    monkeypatch.setattr(smollm_chat, "convert_gguf", no_conversion)

    again = SmolLMChatModel(Config())

    assert again.folder == chat.folder == cache_dir / "smollm2-135m-instruct"
    assert (again.folder / "model.safetensors").is_file()
    assert not [p for p in cache_dir.iterdir() if p.name.startswith(".")]


def test_piper_speech_is_understood_by_whisper(
    tts: PiperTextToSpeech, english_stt: WhisperSpeechToText
) -> None:
    sentence = "I would like to book a table for two. Tomorrow evening would be great."
    chunks = list(tts.synthesize(sentence, "en"))

    assert len(chunks) == 2  # one chunk per sentence
    assert all(c.sample_rate == 22_050 and c.audio.dtype == np.float32 for c in chunks)
    # Piper's synthesis is random (VITS noise), so tiny.en may mishear a word now and then:
    # intelligible means nearly every word comes through, not an exact transcript.
    expected = words(sentence).split()
    recognised = set(heard(english_stt, chunks).split())
    assert sum(word in recognised for word in expected) >= 0.85 * len(expected)


def test_piper_speaking_rate_override_speeds_up_one_call(tts: PiperTextToSpeech) -> None:
    text = "This sentence is spoken at two speeds."

    # Piper's durations vary from one synthesis to the next (its noise): compare totals over a few.
    normal = sum(len(c.audio) for _ in range(3) for c in tts.synthesize(text, "en"))
    fast = sum(len(c.audio) for _ in range(3) for c in tts.synthesize(text, "en", speaking_rate=1.5))

    assert fast < 0.8 * normal


@pytest.mark.parametrize(("language", "text"), [("es", "Hola, ¿cómo estás?"), ("hi", "नमस्ते, आप कैसे हैं?")])
def test_piper_falls_back_to_espeak_for_other_languages(
    tts: PiperTextToSpeech, language: str, text: str
) -> None:
    chunks = list(tts.synthesize(text, language))

    audio = np.concatenate([c.audio for c in chunks])
    assert chunks[0].sample_rate == 22_050
    assert audio.dtype == np.float32
    assert len(audio) > 0.5 * 22_050
    assert np.sqrt(np.mean(audio**2)) > 0.02


def test_espeak_rejects_a_language_it_has_no_voice_for() -> None:
    with pytest.raises(ValueError, match="'xx'"):
        list(EspeakTextToSpeech(Config()).synthesize("hello", "xx"))


@pytest.mark.parametrize(
    ("section", "build"),
    [
        ("stt", registry.build_speech_to_text),
        ("llm", registry.build_chat_model),
        ("tts", registry.build_text_to_speech),
    ],
)
def test_registry_rejects_an_unknown_backend(section: str, build: object) -> None:
    config = Config()
    getattr(config, section).backend = "nonexistent"

    with pytest.raises(ConfigError, match=rf"{section}\.backend 'nonexistent'.*allowed values: \w+"):
        build(config)


def test_registry_builds_backends_by_name() -> None:
    config = Config()
    config.tts.backend = "espeak"

    assert isinstance(registry.build_text_to_speech(config), EspeakTextToSpeech)


def test_whisper_rejects_a_model_folder_that_is_not_ctranslate2(tmp_path: Path) -> None:
    config = Config()
    config.stt.model = str(tmp_path)

    with pytest.raises(ConfigError, match="stt.model"):
        WhisperSpeechToText(config)
