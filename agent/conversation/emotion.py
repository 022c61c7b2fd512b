"""The emotion of what was said, from keywords: happy, sad, angry, excited or neutral.

Each emotion word found scores 1 for its emotion. An intensifier just before it ("very", "really")
raises that hit's weight and the intensity; a downtoner ("a bit") lowers them; a negator within a
few words before it ("not", "never") flips happy into sad and cancels the others ("not angry" is no
anger). Exclamation marks add intensity. The word lists are data: ``emotion_words.yaml`` beside this
module. The winner's share of all scores, tempered by how much
evidence there is, is the confidence.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from agent.models.base import MAX_INTENSITY, MIN_INTENSITY, SpeechStyle

EMOTIONS = ("happy", "sad", "angry", "excited", "neutral")
INTENSIFIER_GAIN = 1.5
DOWNTONER_GAIN = 0.7
EXCLAMATION_GAIN = 0.25  # added to the intensity per "!", up to MAX_INTENSITY
NEGATION_REACH = 3  # words before an emotion word in which a negator applies
FLIPPED = {"happy": "sad", "sad": None, "angry": None, "excited": None}  # None: the negator cancels


@dataclass(frozen=True)
class Lexicon:
    emotions: dict[str, frozenset[str]]
    intensifiers: frozenset[str]
    downtoners: frozenset[str]
    negators: frozenset[str]
    # Hindi puts the negator after the word it negates ("खुश नहीं हूँ"): look that way too.
    negator_follows: bool = False


WORDS_FILE = Path(__file__).with_name("emotion_words.yaml")


def load_lexicons(path: Path = WORDS_FILE) -> dict[str, Lexicon]:
    """The word lists of every language in ``path`` (see its header for the format)."""
    lexicons = {}
    for language, entry in yaml.safe_load(path.read_text(encoding="utf-8")).items():
        words = {key: frozenset(str(value).split()) for key, value in entry.items() if key != "negator_follows"}
        lexicons[language] = Lexicon(
            emotions={emotion: words[emotion] for emotion in FLIPPED},
            intensifiers=words["intensifiers"],
            downtoners=words["downtoners"],
            negators=words["negators"],
            negator_follows=bool(entry.get("negator_follows", False)),
        )
    return lexicons


LEXICONS = load_lexicons()

_TOKEN = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?|[^\s\w]", re.UNICODE)
# Devanagari vowel signs are "marks" (\p{M}), which \w leaves out: keep them inside words.
_DEVANAGARI_WORD = re.compile(r"[\u0900-\u097F]+")


@dataclass(frozen=True)
class Emotion:
    emotion: str
    confidence: float  # 0..1
    intensity: float  # 0.5..2.0

    def as_style(self) -> SpeechStyle:
        return SpeechStyle(self.emotion, self.intensity)


NEUTRAL_EMOTION = Emotion("neutral", 1.0, 1.0)


def _tokens(text: str, language: str) -> list[str]:
    if language == "hi":
        return _DEVANAGARI_WORD.findall(text) + [t for t in _TOKEN.findall(text.lower()) if t.isascii()]
    return _TOKEN.findall(text.lower())


def detect(text: str, language: str) -> Emotion:
    """The emotion of ``text``, read with ``language``'s word lists (English's when it has none)."""
    lexicon = LEXICONS.get(language, LEXICONS["en"])
    words = [t.replace("’", "'") for t in _tokens(text, language) if t[0].isalnum() or t == "'"]
    scores = dict.fromkeys(FLIPPED, 0.0)
    strength = dict.fromkeys(FLIPPED, 0.0)
    for i, word in enumerate(words):
        emotion = next((e for e, vocabulary in lexicon.emotions.items() if word in vocabulary), None)
        if emotion is None:
            continue
        weight = 1.0
        before = words[max(0, i - NEGATION_REACH) : i]
        if before and before[-1] in lexicon.intensifiers:
            weight *= INTENSIFIER_GAIN
        elif before and before[-1] in lexicon.downtoners:
            weight *= DOWNTONER_GAIN
        after = words[i + 1 : i + 1 + NEGATION_REACH] if lexicon.negator_follows else []
        if any(w in lexicon.negators for w in (*before, *after)):
            emotion = FLIPPED[emotion]
            if emotion is None:
                continue
        scores[emotion] += 1.0
        strength[emotion] += weight
    total = sum(scores.values())
    if total == 0:
        return NEUTRAL_EMOTION
    winner = max(scores, key=lambda e: (scores[e], strength[e]))
    share = scores[winner] / total
    evidence = 1.0 - 0.5 ** scores[winner]  # one hit 0.5, two 0.75, three 0.875
    intensity = strength[winner] / scores[winner] + EXCLAMATION_GAIN * text.count("!")
    return Emotion(
        winner,
        round(share * evidence, 3),
        round(min(MAX_INTENSITY, max(MIN_INTENSITY, intensity)), 3),
    )
