"""The Chatterbox backend on random-weight models built here, loaded through chatterbox's own ``from_local``.

The models are small (tests/tiny_chatterbox.py) but every module is Chatterbox's own code: T3's Llama
with its conditioning encoder and perceiver, the multilingual alignment checks, S3Gen's flow decoder,
the real-size HiFT vocoder, the voice encoder and the speech tokenizer. Random weights make random
sound, so these tests check what streaming promises: chunks as tokens come, at 24 kHz, finite, the
whole phrase's audio exactly once, limits and cancellation kept, the style reaching the model.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("chatterbox", reason="Chatterbox is installed by scripts/install.sh --chatterbox (and --test)")

from agent.config import Config, ConfigError  # noqa: E402
from agent.models import registry  # noqa: E402
from agent.models.base import NEUTRAL, SpeechStyle  # noqa: E402
from agent.models.chatterbox_tts import (  # noqa: E402
    SAMPLE_RATE,
    TOKENS_PER_SECOND,
    ChatterboxTextToSpeech,
    model_folder,
)
from tests.tiny_chatterbox import build_chatterbox, small_chatterbox  # noqa: E402

SAMPLES_PER_TOKEN = SAMPLE_RATE // TOKENS_PER_SECOND
LONG_PHRASE = "This phrase is long enough to be spoken in several chunks of audio."


def chatterbox_config(folder: Path, variant: str = "multilingual", **tts: Any) -> Config:
    config = Config()
    config.tts.backend = "chatterbox"
    config.tts.chatterbox_model = str(folder)
    config.tts.chatterbox_variant = variant
    config.tts.chatterbox_device = "cpu"
    config.tts.chatterbox_cfm_steps = 2
    config.tts.chatterbox_max_seconds = 3.0
    config.tts.chatterbox_watermark = False  # Perth's first call compiles for ~10 s on a CPU
    for key, value in tts.items():
        setattr(config.tts, f"chatterbox_{key}", value)
    return config


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    with small_chatterbox():
        return {
            variant: build_chatterbox(tmp_path_factory.mktemp(variant), variant)
            for variant in ("multilingual", "english")
        }


@pytest.fixture(scope="module")
def tts(folders: dict[str, Path]) -> ChatterboxTextToSpeech:
    with small_chatterbox():
        return registry.build_text_to_speech(chatterbox_config(folders["multilingual"]))


class Counted:
    """Wraps ``tts.speech_tokens`` to count the tokens sampled so far, and those that sound."""

    def __init__(self, tts: ChatterboxTextToSpeech, monkeypatch: pytest.MonkeyPatch) -> None:
        from chatterbox.models.s3tokenizer import SPEECH_VOCAB_SIZE

        self.sampled = 0
        self.audible = 0  # T3's special tokens have no sound
        original = tts.speech_tokens

        def counting(*args: Any, **kwargs: Any) -> Iterator[int]:
            for token in original(*args, **kwargs):
                self.sampled += 1
                self.audible += token < SPEECH_VOCAB_SIZE
                yield token

        monkeypatch.setattr(tts, "speech_tokens", counting)


def test_the_multilingual_model_loads_from_its_folder_and_speaks_23_languages(tts: ChatterboxTextToSpeech) -> None:
    assert type(tts._model).__name__ == "ChatterboxMultilingualTTS"
    assert len(tts.languages) == 23
    assert {"en", "es", "fr", "de", "hi", "ja", "ko", "zh", "ms"} <= tts.languages
    assert tts.sample_rate == 24_000


def test_a_long_phrase_streams_its_first_chunk_before_the_phrase_is_generated(
    tts: ChatterboxTextToSpeech, monkeypatch: pytest.MonkeyPatch
) -> None:
    counter = Counted(tts, monkeypatch)
    stream = tts.synthesize(LONG_PHRASE, "en")

    first = next(stream)
    sampled_at_first_chunk = counter.sampled
    rest = list(stream)

    assert len(rest) >= 2
    assert sampled_at_first_chunk < counter.sampled
    # The first chunk holds the first 10 tokens' speech, less the 40 ms kept back to join the next one.
    assert len(first.audio) == 10 * SAMPLES_PER_TOKEN - 2 * 480
    for chunk in [first, *rest]:
        assert chunk.sample_rate == 24_000
        assert chunk.audio.dtype == np.float32
        assert np.isfinite(chunk.audio).all()
        assert np.abs(chunk.audio).max() <= 1.0


def test_the_chunks_hold_every_token_s_audio_exactly_once(
    tts: ChatterboxTextToSpeech, monkeypatch: pytest.MonkeyPatch
) -> None:
    counter = Counted(tts, monkeypatch)

    chunks = list(tts.synthesize(LONG_PHRASE, "es"))

    assert sum(len(c.audio) for c in chunks) == counter.audible * SAMPLES_PER_TOKEN


def test_a_phrase_never_gets_more_audio_than_chatterbox_max_seconds(folders: dict[str, Path]) -> None:
    with small_chatterbox():
        tts = ChatterboxTextToSpeech(chatterbox_config(folders["multilingual"], max_seconds=1.0))

    audio = np.concatenate([c.audio for c in tts.synthesize(LONG_PHRASE * 3, "fr")])

    assert len(audio) <= 1.0 * SAMPLE_RATE


def test_cancel_stops_sampling_between_two_tokens(tts: ChatterboxTextToSpeech, monkeypatch: pytest.MonkeyPatch) -> None:
    counter = Counted(tts, monkeypatch)
    cancel = threading.Event()
    stream = tts.synthesize(LONG_PHRASE, "de", cancel=cancel)

    next(stream)
    cancel.set()
    sampled_at_cancel = counter.sampled
    rest = list(stream)

    assert rest == []
    assert counter.sampled == sampled_at_cancel


@pytest.mark.parametrize(("emotion", "intensity"), [("excited", 1.5), ("angry", 1.0), ("sad", 1.0)])
def test_the_style_reaches_chatterbox_as_exaggeration_cfg_weight_and_temperature(
    tts: ChatterboxTextToSpeech, monkeypatch: pytest.MonkeyPatch, emotion: str, intensity: float
) -> None:
    seen: list[dict[str, float]] = []
    t3 = tts._model.t3
    prepare = t3.prepare_input_embeds

    def spy(**kwargs: Any) -> Any:
        seen.append({"exaggeration": float(kwargs["t3_cond"].emotion_adv.flatten()[0]), "cfg": kwargs["cfg_weight"]})
        return prepare(**kwargs)

    monkeypatch.setattr(t3, "prepare_input_embeds", spy)
    for style in (NEUTRAL, SpeechStyle(emotion, intensity)):
        list(tts.synthesize("Hi.", "en", style, max_tokens=4))

    neutral, styled = seen
    assert neutral == {"exaggeration": 0.5, "cfg": 0.5}
    if emotion == "sad":
        assert styled["exaggeration"] < neutral["exaggeration"]
    else:
        assert styled["exaggeration"] > neutral["exaggeration"]
        assert styled["cfg"] < neutral["cfg"]


def test_the_english_model_loads_through_chatterbox_tts_and_speaks_only_english(folders: dict[str, Path]) -> None:
    with small_chatterbox():
        tts = ChatterboxTextToSpeech(chatterbox_config(folders["english"], "english"))

    chunks = list(tts.synthesize("Hello there, how are you?", "en"))

    assert type(tts._model).__name__ == "ChatterboxTTS"
    assert chunks and all(c.sample_rate == 24_000 and np.isfinite(c.audio).all() for c in chunks)
    with pytest.raises(ValueError, match="'es'"):
        list(tts.synthesize("Hola.", "es"))


def test_a_reference_voice_file_replaces_the_built_in_voice(folders: dict[str, Path], tmp_path: Path) -> None:
    import soundfile

    rng = np.random.default_rng(0)
    t = np.arange(3 * 16_000) / 16_000
    speechlike = (0.3 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t)) / 2).astype(np.float32)
    soundfile.write(tmp_path / "voice.wav", speechlike + 0.01 * rng.standard_normal(len(t)).astype(np.float32), 16_000)
    with small_chatterbox():
        built_in = ChatterboxTextToSpeech(chatterbox_config(folders["multilingual"]))
        cloned = ChatterboxTextToSpeech(chatterbox_config(folders["multilingual"], voice=str(tmp_path / "voice.wav")))

    speaker = cloned._model.conds.t3.speaker_emb
    assert not np.allclose(speaker.numpy(), built_in._model.conds.t3.speaker_emb.numpy())
    assert list(cloned.synthesize("Hello.", "en", max_tokens=6))


def test_a_folder_without_the_model_s_files_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="lacks .*t3_mtl23ls_v2.safetensors"):
        model_folder(chatterbox_config(tmp_path))


def test_a_hub_id_not_in_the_model_cache_says_to_download_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODEL_CACHE_DIR", str(tmp_path))
    config = chatterbox_config(tmp_path)
    config.tts.chatterbox_model = "ResembleAI/chatterbox"

    with pytest.raises(ConfigError, match="download_models.py"):
        model_folder(config)
