"""How much silence should end this turn, judged from what the user has said so far.

A transcript that reads as a finished sentence or question can end the turn quickly; one that trails
off (a conjunction, a preposition, a filler, a comma) means the user is probably still thinking.
The speculative transcript (taken on the first short pause) is what gets judged.
"""

from __future__ import annotations

import re
from enum import Enum

from agent.config import VadConfig


class Completeness(Enum):
    COMPLETE = "complete"
    INCOMPLETE = "incomplete"
    UNSURE = "unsure"


# Words after which a sentence cannot end: conjunctions, prepositions, articles, fillers, and
# the "I want to" family. Lower case, without punctuation.
TRAILING_WORDS: dict[str, frozenset[str]] = {
    "en": frozenset(
        "and or but so because if than which whose while whether although though to of in on at for with "
        "from by about into onto like as the a an my your his her their our some any um uh er erm hmm plus "
        "i we they he she want wanna gonna need would could should might must let very".split()
    ),
    "es": frozenset(
        "y o pero porque que si cuando donde como de del a al en con por para sin sobre el la los las un una "
        "unos unas mi tu su nuestro este esta ese esa quiero necesito puedo eh este pues entonces también "
        "muy más".split()
    ),
    "fr": frozenset(
        "et ou mais donc parce que qui si quand où comme de du des à au aux en dans avec pour par sans sur le "
        "la les un une mon ma mes ton ta son sa notre je tu il elle nous vous ils veux voudrais peux euh ben "
        "alors aussi très plus".split()
    ),
    "de": frozenset(
        "und oder aber weil dass wenn ob als wie wo der die das den dem des ein eine einen einem mein dein "
        "sein ihr unser zu von in an auf mit für bei nach über ich du er sie wir möchte will kann ähm äh "
        "also auch sehr mehr".split()
    ),
    "it": frozenset(
        "e o ma perché che se quando dove come di del della a al in con per su il lo la i gli le un una mio "
        "tuo suo voglio vorrei posso ehm allora anche molto più".split()
    ),
    "pt": frozenset(
        "e ou mas porque que se quando onde como de do da dos das a ao em no na com por para sem o os as um "
        "uma meu minha seu sua quero preciso posso hum então também muito mais".split()
    ),
}

_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?", re.UNICODE)


def judge(transcript: str, language: str) -> Completeness:
    """Whether ``transcript`` reads as a finished utterance in ``language``."""
    text = transcript.strip()
    if not text:
        return Completeness.UNSURE
    if text.endswith(("...", "…", ",", ";", ":", "-", "—")):
        return Completeness.INCOMPLETE
    # Whisper ends nearly everything with a full stop or, if it sounds like a question, a question
    # mark: "I want to." and "the weather in?" both trail off. The last word decides first; waiting
    # a little longer after "Where are you from?" costs less than cutting a user off.
    words = _WORD.findall(text.lower())
    if words and words[-1] in TRAILING_WORDS.get(language, frozenset()):
        return Completeness.INCOMPLETE
    if text.endswith((".", "。", "।", "?", "!", "？", "！")):
        return Completeness.COMPLETE
    return Completeness.UNSURE


def end_of_turn_silence_ms(
    transcript: str, language: str, config: VadConfig, complete_probability: float | None = None
) -> int:
    """The silence that should end a turn whose speech so far reads ``transcript``.

    ``complete_probability`` is the audio end-of-turn model's verdict (``vad.end_of_turn_model``
    smart_turn or both), None where it did not run.
    """
    if not config.adaptive_end_of_turn or config.end_of_turn_model == "none":
        return config.end_of_turn_silence_ms
    rules = judge(transcript, language)
    heard = Completeness.UNSURE
    if complete_probability is not None:
        complete = complete_probability >= config.smart_turn_threshold
        heard = Completeness.COMPLETE if complete else Completeness.INCOMPLETE
    if config.end_of_turn_model == "smart_turn":
        completeness = heard if complete_probability is not None else rules
    elif config.end_of_turn_model == "both":  # wait if either says the speaker is not done
        if Completeness.INCOMPLETE in (rules, heard):
            completeness = Completeness.INCOMPLETE
        elif Completeness.COMPLETE in (rules, heard):
            completeness = Completeness.COMPLETE
        else:
            completeness = Completeness.UNSURE
    else:
        completeness = rules
    if completeness is Completeness.COMPLETE:
        return config.complete_turn_silence_ms
    if completeness is Completeness.INCOMPLETE:
        return config.incomplete_turn_silence_ms
    return config.end_of_turn_silence_ms
