"""How an emotion sounds in each voice: the table every text-to-speech backend reads its knobs from.

A ``SpeechStyle`` (emotion + intensity) becomes one ``VoiceStyle``: the emotion's row of
``EMOTION_VOICES``, moved away from the neutral row by ``intensity`` (1.0 = the row as written,
0.5 = half-way back to neutral, 2.0 = twice as far), then kept inside each knob's safe range.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

from agent.models.base import MAX_INTENSITY, MIN_INTENSITY, SpeechStyle


@dataclass(frozen=True)
class VoiceStyle:
    rate: float  # speaking-rate multiplier (piper length_scale, espeak words a minute)
    pitch: int  # espeak-ng pitch, 0..100 (50 is the voice's own)
    pitch_range: int  # espeak-ng intonation range, 0..100 (50 is the voice's own; 0 is monotone)
    noise: float  # piper noise_scale multiplier: more variation in delivery above 1
    exaggeration: float  # Chatterbox emotion exaggeration (0.5 is its neutral)
    cfg_weight: float  # Chatterbox classifier-free guidance: lower is looser, more expressive pacing
    temperature: float  # Chatterbox speech-token sampling temperature


NEUTRAL_VOICE = VoiceStyle(
    rate=1.0, pitch=50, pitch_range=50, noise=1.0, exaggeration=0.5, cfg_weight=0.5, temperature=0.8
)
# Chatterbox's own advice: expressive speech wants exaggeration ~0.7 and above with cfg_weight ~0.3.
EMOTION_VOICES: dict[str, VoiceStyle] = {
    "neutral": NEUTRAL_VOICE,
    "happy": VoiceStyle(
        rate=1.07, pitch=58, pitch_range=65, noise=1.1, exaggeration=0.65, cfg_weight=0.45, temperature=0.8
    ),
    "excited": VoiceStyle(
        rate=1.15, pitch=64, pitch_range=80, noise=1.2, exaggeration=0.85, cfg_weight=0.35, temperature=0.85
    ),
    "sad": VoiceStyle(
        rate=0.85, pitch=40, pitch_range=25, noise=0.8, exaggeration=0.35, cfg_weight=0.55, temperature=0.75
    ),
    "angry": VoiceStyle(
        rate=1.08, pitch=46, pitch_range=70, noise=1.15, exaggeration=0.9, cfg_weight=0.3, temperature=0.8
    ),
}
# Each knob's safe range, whatever intensity asks for.
_LIMITS: dict[str, tuple[float, float]] = {
    "rate": (0.6, 1.6),
    "pitch": (0, 100),
    "pitch_range": (0, 100),
    "noise": (0.5, 1.5),
    "exaggeration": (0.25, 1.5),
    "cfg_weight": (0.1, 1.0),
    "temperature": (0.5, 1.2),
}


def voice_style(style: SpeechStyle) -> VoiceStyle:
    """The knobs for ``style``; an emotion the table does not know sounds neutral."""
    target = EMOTION_VOICES.get(style.emotion, NEUTRAL_VOICE)
    intensity = min(max(style.intensity, MIN_INTENSITY), MAX_INTENSITY)
    values = {}
    for knob in fields(VoiceStyle):
        neutral, wanted = getattr(NEUTRAL_VOICE, knob.name), getattr(target, knob.name)
        low, high = _LIMITS[knob.name]
        value = min(max(neutral + (wanted - neutral) * intensity, low), high)
        values[knob.name] = round(value) if isinstance(neutral, int) else value
    return replace(NEUTRAL_VOICE, **values)
