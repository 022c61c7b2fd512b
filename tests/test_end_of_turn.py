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
