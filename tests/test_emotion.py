"""Emotion from keywords: the rules a reader of the module would expect, in several languages."""

import pytest

from agent.conversation.emotion import LEXICONS, MAX_INTENSITY, MIN_INTENSITY, detect


@pytest.mark.parametrize(
    "text, language, emotion",
    [
        ("I am so happy today, thank you!", "en", "happy"),
        ("I'm really sad, I miss my dog.", "en", "sad"),
        ("This is ridiculous, I am furious.", "en", "angry"),
        ("Wow, that is amazing!", "en", "excited"),
        ("What time is it?", "en", "neutral"),
        ("Estoy muy feliz, gracias.", "es", "happy"),
        ("Estoy triste.", "es", "sad"),
        ("Je suis furieux.", "fr", "angry"),
        ("Ich bin total begeistert!", "de", "excited"),
        ("मैं बहुत खुश हूँ", "hi", "happy"),
        ("मैं उदास हूँ", "hi", "sad"),
        ("Sono molto felice.", "it", "happy"),
        ("Estou com raiva.", "pt", "angry"),
    ],
)
def test_keywords_name_the_emotion(text, language, emotion):
    assert detect(text, language).emotion == emotion


def test_a_negator_flips_happy_into_sad_and_cancels_anger():
    assert detect("I am not happy with this.", "en").emotion == "sad"
    assert detect("I am never angry.", "en").emotion == "neutral"
    assert detect("No estoy feliz.", "es").emotion == "sad"
    assert detect("मैं खुश नहीं हूँ", "hi").emotion == "sad"  # Hindi puts the negator after the word


def test_intensifiers_and_exclamation_marks_raise_the_intensity_within_bounds():
    plain = detect("I am happy.", "en")
    very = detect("I am very happy.", "en")
    shouted = detect("I am extremely happy!!!!!!!!", "en")
    calm = detect("I am slightly annoyed.", "en")
    assert plain.intensity == 1.0
    assert very.intensity > plain.intensity
    assert shouted.intensity == MAX_INTENSITY
    assert MIN_INTENSITY <= calm.intensity < 1.0


def test_confidence_grows_with_evidence_and_falls_with_mixed_feelings():
    one = detect("I am happy.", "en")
    two = detect("I am happy and so glad.", "en")
    mixed = detect("I am happy but also sad.", "en")
    assert 0 < one.confidence < two.confidence <= 1
    assert mixed.confidence < one.confidence
    assert detect("Just the facts.", "en").confidence == 1.0  # nothing emotional: surely neutral


def test_a_language_without_word_lists_is_read_with_english_ones():
    assert detect("I am so happy", "ja").emotion == "happy"


def test_at_least_five_languages_have_word_lists_for_every_emotion():
    full = [lang for lang, lexicon in LEXICONS.items() if len(lexicon.emotions) == 4 and lexicon.negators]
    assert {"en", "es", "fr", "de", "hi"} <= set(full)


def test_an_emotion_becomes_a_speech_style():
    style = detect("Wow, amazing!", "en").as_style()
    assert style.emotion == "excited" and style.intensity > 1.0
