"""tts.backend auto: each phrase in its language by the best voice of tts.voices, and emotions in every voice."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from agent.config import Config, ConfigError
from agent.models import registry
from agent.models.base import NEUTRAL, SpeechChunk, SpeechStyle
from agent.models.espeak_tts import EspeakTextToSpeech
from agent.models.piper_tts import PiperTextToSpeech
from agent.models.speech_style import EMOTION_VOICES, NEUTRAL_VOICE, voice_style
from agent.models.voice_router import VoiceRouter

# The languages the original system spoke: every one must get a voice.
ORIGINAL_LANGUAGES = "en hi es fr de it pt ja ko zh ms ta te mr kn ml bn".split()
CHATTERBOX_LANGUAGES = frozenset(
    "ar da de el en es fi fr he hi it ja ko ms nl no pl pt ru sv sw tr zh".split()
)
GREETINGS = {
    "en": "Hello, how are you today?",
    "hi": "नमस्ते, आप कैसे हैं?",
    "es": "Hola, ¿cómo estás hoy?",
    "fr": "Bonjour, comment allez-vous?",
    "de": "Hallo, wie geht es dir?",
    "it": "Ciao, come stai oggi?",
    "pt": "Olá, como você está?",
    "ja": "こんにちは、お元気ですか？",
    "ko": "안녕하세요, 어떻게 지내세요?",
    "zh": "你好，你今天好吗？",
    "ms": "Helo, apa khabar hari ini?",
    "ta": "வணக்கம், எப்படி இருக்கிறீர்கள்?",
    "te": "నమస్కారం, మీరు ఎలా ఉన్నారు?",
    "mr": "नमस्कार, तुम्ही कसे आहात?",
    "kn": "ನಮಸ್ಕಾರ, ನೀವು ಹೇಗಿದ್ದೀರಿ?",
    "ml": "നമസ്കാരം, സുഖമാണോ?",
    "bn": "নমস্কার, আপনি কেমন আছেন?",
}


class StubChatterbox:
    """Stands in for a loaded multilingual Chatterbox in the routing table (its own tests load a real one)."""

    name = "chatterbox"
    languages = CHATTERBOX_LANGUAGES

    def synthesize(self, text: str, language: str, style: SpeechStyle = NEUTRAL) -> Iterator[SpeechChunk]:
        yield SpeechChunk(np.full(2400, 0.1, dtype=np.float32), 24_000)

    def warm_up(self) -> None: ...


@pytest.fixture(scope="module")
def piper() -> PiperTextToSpeech:
    return PiperTextToSpeech(Config())


@pytest.fixture(scope="module")
def espeak() -> EspeakTextToSpeech:
    return EspeakTextToSpeech(Config())


@pytest.fixture(scope="module")
def router(piper: PiperTextToSpeech, espeak: EspeakTextToSpeech) -> VoiceRouter:
    return VoiceRouter(Config(), [piper, espeak])


def seconds(chunks: list[SpeechChunk]) -> float:
    return sum(len(c.audio) for c in chunks) / chunks[0].sample_rate


def test_auto_is_the_default_and_builds_piper_then_espeak() -> None:
    tts = registry.build_text_to_speech(Config())

    assert isinstance(tts, VoiceRouter)
    assert [type(voice) for voice in tts.voices] == [PiperTextToSpeech, EspeakTextToSpeech]


@pytest.mark.parametrize("language", ORIGINAL_LANGUAGES)
def test_without_chatterbox_english_goes_to_piper_and_the_rest_to_espeak(router: VoiceRouter, language: str) -> None:
    expected = PiperTextToSpeech if language == "en" else EspeakTextToSpeech

    assert type(router.voice_for(language)) is expected


@pytest.mark.parametrize("language", ORIGINAL_LANGUAGES)
def test_with_chatterbox_its_languages_go_to_it_and_the_rest_to_espeak(
    piper: PiperTextToSpeech, espeak: EspeakTextToSpeech, language: str
) -> None:
    router = VoiceRouter(Config(), [StubChatterbox(), piper, espeak])

    expected = StubChatterbox if language in CHATTERBOX_LANGUAGES else EspeakTextToSpeech

    assert type(router.voice_for(language)) is expected


def test_english_only_chatterbox_leaves_the_other_languages_to_espeak(
    piper: PiperTextToSpeech, espeak: EspeakTextToSpeech
) -> None:
    english = StubChatterbox()
    english.languages = frozenset({"en"})
    router = VoiceRouter(Config(), [english, piper, espeak])

    assert router.voice_for("en") is english
    assert router.voice_for("es") is espeak


@pytest.mark.parametrize("language", ORIGINAL_LANGUAGES)
def test_every_language_of_the_original_system_is_spoken_audibly(router: VoiceRouter, language: str) -> None:
    chunks = list(router.synthesize(GREETINGS[language], language))

    audio = np.concatenate([c.audio for c in chunks])
    assert audio.dtype == np.float32
    assert len(audio) > 0.5 * chunks[0].sample_rate
    assert np.sqrt(np.mean(audio**2)) > 0.02


def test_auto_sounds_exactly_like_the_old_piper_default(router: VoiceRouter, piper: PiperTextToSpeech) -> None:
    # The old default was piper: joe for English, and the same espeak-ng voices for other languages.
    routed = list(router.synthesize(GREETINGS["es"], "es"))
    old = list(piper.synthesize(GREETINGS["es"], "es"))

    assert router.voice_for("en") is piper
    assert routed[0].sample_rate == old[0].sample_rate
    assert seconds(routed) == pytest.approx(seconds(old), abs=0.01)


def test_an_unknown_voice_name_is_a_config_error() -> None:
    config = Config()
    config.tts.voices = ["piper", "kokoro"]

    with pytest.raises(ConfigError, match=r"'kokoro'.*allowed values: .*espeak"):
        VoiceRouter(config)


# ---- emotion → voice -------------------------------------------------------------------------------


def test_intensity_moves_a_style_away_from_neutral_and_back() -> None:
    calm, normal, strong = (voice_style(SpeechStyle("excited", i)).exaggeration for i in (0.5, 1.0, 2.0))

    assert NEUTRAL_VOICE.exaggeration < calm < normal < strong
    assert normal == EMOTION_VOICES["excited"].exaggeration
    assert voice_style(SpeechStyle("bored", 2.0)) == NEUTRAL_VOICE


def test_intense_emotions_get_more_chatterbox_exaggeration_and_less_guidance() -> None:
    for emotion in ("happy", "excited", "angry"):
        style = voice_style(SpeechStyle(emotion, 1.5))
        assert style.exaggeration > NEUTRAL_VOICE.exaggeration
        assert style.cfg_weight < NEUTRAL_VOICE.cfg_weight
    assert voice_style(SpeechStyle("angry", 2.0)).exaggeration > voice_style(SpeechStyle("angry", 1.0)).exaggeration


def test_an_excited_phrase_is_faster_than_a_sad_one_in_piper(piper: PiperTextToSpeech) -> None:
    text = "We are going to the beach this weekend with all of our friends."

    excited = seconds(list(piper.synthesize(text, "en", SpeechStyle("excited", 1.5))))
    sad = seconds(list(piper.synthesize(text, "en", SpeechStyle("sad", 1.5))))

    assert excited < 0.85 * sad


def test_an_excited_phrase_is_faster_and_higher_than_a_sad_one_in_espeak(espeak: EspeakTextToSpeech) -> None:
    text = "Nous allons à la plage ce week-end avec tous nos amis."

    excited = list(espeak.synthesize(text, "fr", SpeechStyle("excited", 1.5)))
    sad = list(espeak.synthesize(text, "fr", SpeechStyle("sad", 1.5)))

    assert seconds(excited) < 0.85 * seconds(sad)
    assert pitch_hz(excited) > 1.1 * pitch_hz(sad)


def pitch_hz(chunks: list[SpeechChunk]) -> float:
    """Median fundamental frequency of the voiced 40 ms frames, by autocorrelation (60..400 Hz)."""
    audio = np.concatenate([c.audio for c in chunks])
    rate = chunks[0].sample_rate
    frame = int(0.04 * rate)
    estimates = []
    for start in range(0, len(audio) - frame, frame):
        x = audio[start : start + frame] - audio[start : start + frame].mean()
        if np.sqrt(np.mean(x**2)) < 0.05:
            continue
        correlation = np.correlate(x, x, "full")[frame - 1 :]
        low, high = rate // 400, rate // 60
        estimates.append(rate / (low + int(np.argmax(correlation[low:high]))))
    return float(np.median(estimates))
