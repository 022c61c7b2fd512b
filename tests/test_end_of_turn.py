"""Adaptive end of turn: what was said decides how much silence ends the turn."""

import numpy as np
import pytest

from agent.audio.turns import PauseDetected, TurnDetector, TurnEnded
from agent.config import VadConfig
from agent.conversation.end_of_turn import Completeness, end_of_turn_silence_ms, judge
from tests.speech import silence, speak, trim
from tests.test_turns import FRAME


@pytest.mark.parametrize(
    "transcript, language, expected",
    [
        ("What is the capital of France?", "en", Completeness.COMPLETE),
        ("Tell me a joke.", "en", Completeness.COMPLETE),
        ("What time is it.", "en", Completeness.COMPLETE),
        ("Can you help me?", "en", Completeness.COMPLETE),
        ("I want to", "en", Completeness.INCOMPLETE),
        ("I want to.", "en", Completeness.INCOMPLETE),  # Whisper's full stop does not make it complete
        ("Paris and", "en", Completeness.INCOMPLETE),
        ("Can you tell me about the weather in?", "en", Completeness.INCOMPLETE),
        ("So, um...", "en", Completeness.INCOMPLETE),
        ("The weather in Paris,", "en", Completeness.INCOMPLETE),
        ("Quiero reservar una mesa para", "es", Completeness.INCOMPLETE),
        ("¿Cuál es la capital de Francia?", "es", Completeness.COMPLETE),
        ("Ich möchte einen Tisch und", "de", Completeness.INCOMPLETE),
        ("hello there", "en", Completeness.UNSURE),
        ("", "en", Completeness.UNSURE),
    ],
)
def test_a_transcript_is_judged_complete_incomplete_or_unsure(transcript, language, expected):
    assert judge(transcript, language) is expected


def test_the_silence_follows_the_judgement_within_the_configured_bounds():
    config = VadConfig(end_of_turn_silence_ms=500, complete_turn_silence_ms=250, incomplete_turn_silence_ms=900)
    assert end_of_turn_silence_ms("Where is the station?", "en", config) == 250
    assert end_of_turn_silence_ms("I would like to", "en", config) == 900
    assert end_of_turn_silence_ms("hello there", "en", config) == 500
    config.adaptive_end_of_turn = False
    assert end_of_turn_silence_ms("I would like to", "en", config) == 500


def feed(detector: TurnDetector, audio: np.ndarray, on_pause=None) -> list:
    events = []
    for i in range(0, len(audio) - FRAME + 1, FRAME):
        for event in detector.process(audio[i : i + FRAME], i / 16_000):
            events.append(event)
            if isinstance(event, PauseDetected) and on_pause is not None:
                on_pause(detector, i / 16_000)
    return events


@pytest.fixture(scope="module")
def words() -> np.ndarray:
    return trim(speak("I want to book a table"))


def test_a_longer_silence_set_during_a_pause_keeps_a_trailing_sentence_one_turn(words):
    audio = np.concatenate([silence(0.5), words, silence(0.7), words, silence(1.5)])
    config = VadConfig(end_of_turn_silence_ms=500)
    assert sum(isinstance(e, TurnEnded) for e in feed(TurnDetector(config), audio)) == 2

    def trails_off(detector: TurnDetector, now: float) -> None:
        detector.set_end_of_turn_silence(900)

    assert sum(isinstance(e, TurnEnded) for e in feed(TurnDetector(config), audio, trails_off)) == 1


def test_a_shorter_silence_ends_the_turn_at_once_when_enough_silence_has_passed(words):
    detector = TurnDetector(VadConfig(end_of_turn_silence_ms=500, speculative_silence_ms=200))
    audio = np.concatenate([silence(0.5), words, silence(0.3)])
    events = feed(detector, audio)
    assert any(isinstance(e, PauseDetected) for e in events)
    assert not any(isinstance(e, TurnEnded) for e in events)
    assert detector.end_turn_if_silent_enough(9.0) is None  # 300 ms of silence < 500
    detector.set_end_of_turn_silence(250)
    ended = detector.end_turn_if_silent_enough(9.0)
    assert isinstance(ended, TurnEnded) and ended.decided_at == 9.0
    assert not detector.in_turn


def test_the_shortened_silence_does_not_outlive_its_turn(words):
    detector = TurnDetector(VadConfig(end_of_turn_silence_ms=500))
    feed(detector, np.concatenate([silence(0.5), words, silence(0.1)]))
    detector.set_end_of_turn_silence(100)
    feed(detector, silence(0.2))  # the turn ends on the short silence
    events = feed(detector, np.concatenate([words, silence(0.3), words, silence(1.0)]))
    assert sum(isinstance(e, TurnEnded) for e in events) == 1  # the next turn is back to 500 ms


@pytest.mark.parametrize(
    "model, transcript, probability, expected",
    [
        ("rules", "I want to", 0.99, "incomplete"),  # the model is not asked
        ("smart_turn", "I want to", 0.99, "complete"),  # the transcript is not read
        ("smart_turn", "What is the capital of France?", 0.1, "incomplete"),
        ("smart_turn", "I want to", None, "incomplete"),  # no verdict: the rules decide
        ("both", "I want to", 0.99, "incomplete"),  # either one saying "not done" waits
        ("both", "What is the capital of France?", 0.1, "incomplete"),
        ("both", "hello there", 0.9, "complete"),  # the rules unsure, the model sure
        ("both", "What is the capital of France?", 0.9, "complete"),
        ("none", "What is the capital of France?", 0.9, "default"),
    ],
)
def test_the_end_of_turn_model_setting_chooses_who_decides(model, transcript, probability, expected):
    vad = VadConfig(end_of_turn_model=model)
    silence_ms = {"complete": 250, "incomplete": 900, "default": 500}[expected]
    assert end_of_turn_silence_ms(transcript, "en", vad, probability) == silence_ms


def test_smart_turn_loads_from_the_pipecat_wheel_and_hears_a_trailing_phrase_as_unfinished():
    from agent.audio.resample import resample_once, to_int16
    from agent.config import Config
    from agent.models.piper_tts import PiperTextToSpeech
    from agent.models.smart_turn import SmartTurnModel, bundled_model_path

    assert bundled_model_path().name == "smart-turn-v3.2-cpu.onnx"
    model, piper = SmartTurnModel(), PiperTextToSpeech(Config())

    def said(text: str) -> np.ndarray:
        chunks = list(piper.synthesize(text, "en"))
        return resample_once(to_int16(np.concatenate([c.audio for c in chunks])), chunks[0].sample_rate, 16_000)

    # Piper's voice varies from one synthesis to the next (its noise); these stay far from the threshold.
    finished = model.probability_complete(said("What is the capital of France?"))
    trailing = model.probability_complete(said("So I was thinking that maybe we could"))
    assert 0.0 <= trailing < 0.5 <= finished <= 1.0
