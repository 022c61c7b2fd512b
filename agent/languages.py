"""Language codes the agent knows by name, and the system prompt written for one of them."""

from __future__ import annotations

from agent.config import Config

LANGUAGE_NAMES = {
    "ar": "Arabic", "bn": "Bengali", "da": "Danish", "de": "German", "el": "Greek", "en": "English",
    "es": "Spanish", "fi": "Finnish", "fr": "French", "he": "Hebrew", "hi": "Hindi", "it": "Italian",
    "ja": "Japanese", "kn": "Kannada", "ko": "Korean", "ml": "Malayalam", "mr": "Marathi", "ms": "Malay",
    "nl": "Dutch", "no": "Norwegian", "pl": "Polish", "pt": "Portuguese", "ru": "Russian", "sv": "Swedish",
    "sw": "Swahili", "ta": "Tamil", "te": "Telugu", "tr": "Turkish", "zh": "Chinese",
}


def language_name(code: str) -> str:
    return LANGUAGE_NAMES.get(code, code)


def system_prompt(config: Config) -> str:
    """``llm.system_prompt`` with ``{language}`` replaced by the configured language's name.

    Small models drift into other languages unless told which one to answer in.
    """
    return config.llm.system_prompt.replace("{language}", language_name(config.language))
