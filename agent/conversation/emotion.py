"""The emotion of what was said, from keywords: happy, sad, angry, excited or neutral.

Each emotion word found scores 1 for its emotion. An intensifier just before it ("very", "really")
raises that hit's weight and the intensity; a downtoner ("a bit") lowers them; a negator within a
few words before it ("not", "never") flips happy into sad and cancels the others ("not angry" is no
anger). Exclamation marks add intensity. The winner's share of all scores, tempered by how much
evidence there is, is the confidence.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from agent.models.base import SpeechStyle

EMOTIONS = ("happy", "sad", "angry", "excited", "neutral")
MIN_INTENSITY, MAX_INTENSITY = 0.5, 2.0
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


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


LEXICONS: dict[str, Lexicon] = {
    "en": Lexicon(
        emotions={
            "happy": _words(
                "happy glad pleased delighted joy joyful love lovely wonderful great good nice thanks thank "
                "grateful cheerful smile smiling fun enjoy enjoyed fantastic beautiful perfect"
            ),
            "sad": _words(
                "sad unhappy sorry miss missed lonely depressed upset cry crying tears disappointed hurt "
                "heartbroken unfortunately terrible awful lost grief tired"
            ),
            "angry": _words(
                "angry mad furious annoyed annoying hate hated irritated outraged ridiculous stupid unacceptable "
                "rude frustrated frustrating sick"
            ),
            "excited": _words(
                "excited exciting amazing awesome incredible wow thrilled cant wait brilliant fantastic "
                "unbelievable yay hooray finally"
            ),
        },
        intensifiers=_words("very really so extremely totally absolutely incredibly super truly deeply too"),
        downtoners=_words("slightly somewhat bit little kinda fairly"),
        negators=_words("not no never dont don't isn't wasn't aren't didn't doesn't cannot can't nothing hardly"),
    ),
    "es": Lexicon(
        emotions={
            "happy": _words("feliz contento contenta alegre encanta gracias genial bueno buena maravilloso bonito"),
            "sad": _words("triste tristeza lamento siento solo sola deprimido llorar desafortunadamente terrible"),
            "angry": _words("enojado enojada enfadado furioso odio molesto molesta ridículo harto harta"),
            "excited": _words("emocionado emocionada increíble asombroso fantástico guau ilusión"),
        },
        intensifiers=_words("muy realmente tan súper extremadamente totalmente demasiado"),
        downtoners=_words("poco algo ligeramente"),
        negators=_words("no nunca jamás tampoco nada"),
    ),
    "fr": Lexicon(
        emotions={
            "happy": _words("heureux heureuse content contente joie ravi ravie merci super bien génial adore"),
            "sad": _words("triste malheureux malheureuse désolé désolée pleurer seul seule déprimé dommage"),
            "angry": _words("fâché fâchée furieux furieuse colère énervé énervée déteste marre ridicule"),
            "excited": _words("excité excitée incroyable formidable fantastique génial waouh impatient"),
        },
        intensifiers=_words("très vraiment tellement trop super extrêmement totalement"),
        downtoners=_words("peu légèrement assez"),
        negators=_words("ne pas jamais non rien plus"),
    ),
    "de": Lexicon(
        emotions={
            "happy": _words("glücklich froh freue freut danke schön toll gut wunderbar liebe fröhlich"),
            "sad": _words("traurig unglücklich leider vermisse einsam weinen enttäuscht schade"),
            "angry": _words("wütend sauer ärgerlich hasse genervt nervt lächerlich frech"),
            "excited": _words("aufgeregt begeistert unglaublich fantastisch wahnsinn wow spannend"),
        },
        intensifiers=_words("sehr wirklich so total extrem absolut echt ganz"),
        downtoners=_words("etwas bisschen leicht ziemlich"),
        negators=_words("nicht nie kein keine keinen niemals nichts"),
    ),
    "hi": Lexicon(
        emotions={
            "happy": _words("खुश ख़ुश प्रसन्न आनंद धन्यवाद शुक्रिया अच्छा अच्छी बढ़िया प्यार"),
            "sad": _words("दुखी उदास दुख दुःख अफ़सोस अफसोस रोना अकेला निराश"),
            "angry": _words("गुस्सा ग़ुस्सा नाराज़ नाराज क्रोध नफ़रत नफरत चिढ़"),
            "excited": _words("उत्साहित रोमांचित ज़बरदस्त जबरदस्त शानदार वाह अद्भुत"),
        },
        intensifiers=_words("बहुत बेहद काफ़ी काफी ज़्यादा ज्यादा अत्यंत"),
        downtoners=_words("थोड़ा थोड़ी ज़रा"),
        negators=_words("नहीं न मत कभी"),
        negator_follows=True,
    ),
    "it": Lexicon(
        emotions={
            "happy": _words("felice contento contenta grazie bello bella bene meraviglioso adoro"),
            "sad": _words("triste infelice purtroppo piangere solo sola deluso delusa"),
            "angry": _words("arrabbiato arrabbiata furioso odio irritato ridicolo stufo"),
            "excited": _words("emozionato emozionata incredibile fantastico wow entusiasta"),
        },
        intensifiers=_words("molto davvero così troppo estremamente totalmente"),
        downtoners=_words("poco leggermente"),
        negators=_words("non mai niente nessuno"),
    ),
    "pt": Lexicon(
        emotions={
            "happy": _words("feliz contente alegre obrigado obrigada ótimo bom boa maravilhoso adoro"),
            "sad": _words("triste infeliz infelizmente chorar sozinho sozinha deprimido saudade"),
            "angry": _words("bravo brava irritado irritada furioso odeio raiva ridículo"),
            "excited": _words("animado animada empolgado empolgada incrível fantástico uau"),
        },
        intensifiers=_words("muito realmente tão super extremamente totalmente demais"),
        downtoners=_words("pouco levemente"),
        negators=_words("não nunca jamais nada"),
    ),
}

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
