"""Language codes the agent knows by name, and the system prompt written for one of them."""

from __future__ import annotations

from agent.config import AUTO_LANGUAGE, Config

LANGUAGE_NAMES = {
    "ar": "Arabic", "bn": "Bengali", "da": "Danish", "de": "German", "el": "Greek", "en": "English",
    "es": "Spanish", "fi": "Finnish", "fr": "French", "he": "Hebrew", "hi": "Hindi", "it": "Italian",
    "ja": "Japanese", "kn": "Kannada", "ko": "Korean", "ml": "Malayalam", "mr": "Marathi", "ms": "Malay",
    "nl": "Dutch", "no": "Norwegian", "pl": "Polish", "pt": "Portuguese", "ru": "Russian", "sv": "Swedish",
    "sw": "Swahili", "ta": "Tamil", "te": "Telugu", "tr": "Turkish", "zh": "Chinese",
}


def language_name(code: str) -> str:
    return LANGUAGE_NAMES.get(code, code)


# The languages the agent must be able to speak, whatever is installed (the original system's list).
REQUIRED_LANGUAGES = tuple("en hi es fr de it pt ja ko zh ms ta te mr kn ml bn".split())


def answer_language(config: Config) -> str:
    """The language a session answers in before it hears anything: English when the config says auto."""
    return "en" if config.language == AUTO_LANGUAGE else config.language


def system_prompt(config: Config, language: str | None = None, instructions: str | None = None) -> str:
    """``llm.system_prompt`` (or a client's ``instructions``) with ``{language}`` replaced by the name of
    ``language`` (default: the config's).

    Small models drift into other languages unless told which one to answer in.
    """
    template = config.llm.system_prompt if instructions is None else instructions
    return template.replace("{language}", language_name(language or answer_language(config)))
