import numpy as np
import pytest

from agent.audio.turns import PauseDetected, SpeechStarted, TurnDetector, TurnEnded, frame_dbfs
from agent.config import VadConfig
from tests.speech import silence, speak, trim

FRAME = 320  # 20 ms at 16 kHz


def run(detector: TurnDetector, audio: np.ndarray) -> list[tuple[float, object]]:
    events = []
    for i in range(0, len(audio) - FRAME + 1, FRAME):
        now = i / 16_000
        events += [(now, e) for e in detector.process(audio[i : i + FRAME], now)]
    return events


@pytest.fixture(scope="module")
def question() -> np.ndarray:
    return trim(speak("What is the capital of France?"))


def test_one_sentence_is_one_turn_that_keeps_the_padding_before_speech(question):
    config = VadConfig()
    audio = np.concatenate([silence(1.0), question, silence(1.0)])
    events = run(TurnDetector(config), audio)
    starts = [e for _, e in events if isinstance(e, SpeechStarted)]
    ends = [(t, e) for t, e in events if isinstance(e, TurnEnded)]
    assert len(starts) == 1 and len(ends) == 1
    decided, turn = ends[0]
    speech_onset_ms = 1000
    # the turn starts padding_ms before the first voiced frame
    assert speech_onset_ms - 360 <= turn.audio_start_ms <= speech_onset_ms - 200
    assert len(turn.audio) >= len(question) * 0.9
    # ends after the configured silence, not before
    assert decided - turn.speech_ended_at == pytest.approx(config.end_of_turn_silence_ms / 1000, abs=0.03)


def test_a_pause_shorter_than_end_of_turn_silence_does_not_split_the_turn(question):
    audio = np.concatenate([silence(0.5), question, silence(0.3), question, silence(1.0)])
    events = run(TurnDetector(VadConfig(end_of_turn_silence_ms=500)), audio)
    assert sum(isinstance(e, TurnEnded) for _, e in events) == 1


def test_a_pause_longer_than_end_of_turn_silence_makes_two_turns(question):
    audio = np.concatenate([silence(0.5), question, silence(0.8), question, silence(1.0)])
    events = run(TurnDetector(VadConfig(end_of_turn_silence_ms=500)), audio)
    assert sum(isinstance(e, TurnEnded) for _, e in events) == 2


def test_low_background_noise_below_the_energy_floor_is_not_speech():
    rng = np.random.default_rng(0)
    noise = (rng.standard_normal(16_000 * 3) * 60).astype(np.int16)  # about -55 dBFS
    assert frame_dbfs(noise) < -45
    assert run(TurnDetector(VadConfig(energy_floor_dbfs=-45)), noise) == []


def test_a_click_shorter_than_min_speech_does_not_start_a_turn(question):
    click = question[np.argmax(np.abs(question) > 2000) :][: 16 * 60]  # 60 ms of a voiced sound
    audio = np.concatenate([silence(0.5), click, silence(1.0)])
    assert run(TurnDetector(VadConfig(min_speech_ms=120)), audio) == []


def test_frames_of_the_wrong_size_are_refused():
    with pytest.raises(ValueError, match="320 samples"):
        TurnDetector(VadConfig()).process(np.zeros(100, dtype=np.int16), 0.0)


def test_a_short_pause_starts_speculation_and_speaking_again_cancels_it_within_one_turn(question):
    config = VadConfig(speculative_silence_ms=200, end_of_turn_silence_ms=500)
    audio = np.concatenate([silence(0.5), question, silence(0.3), question, silence(1.0)])
    kinds = [type(e).__name__ for _, e in run(TurnDetector(config), audio)]
    assert kinds == ["SpeechStarted", "PauseDetected", "SpeechResumed", "PauseDetected", "TurnEnded"]


def test_the_speculative_audio_is_the_audio_the_turn_ends_with(question):
    events = [e for _, e in run(TurnDetector(VadConfig()), np.concatenate([silence(0.5), question, silence(1.0)]))]
    pause = next(e for e in events if isinstance(e, PauseDetected))
    turn = next(e for e in events if isinstance(e, TurnEnded))
    assert np.array_equal(pause.audio, turn.audio)
    assert pause.audio_end_ms == turn.audio_end_ms


def test_speculation_off_emits_no_pause_events(question):
    config = VadConfig(speculative_silence_ms=0)
    events = run(TurnDetector(config), np.concatenate([silence(0.5), question, silence(1.0)]))
    assert [type(e).__name__ for _, e in events] == ["SpeechStarted", "TurnEnded"]
