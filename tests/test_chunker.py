from agent.config import ChunkerConfig
from agent.conversation.chunker import PhraseChunker, speakable


def stream(text: str, config: ChunkerConfig | None = None) -> list[list[str]]:
    """Feed ``text`` token by token; return the phrases completed after each token (flush last)."""
    chunker = PhraseChunker(config or ChunkerConfig())
    tokens = [t + " " for t in text.split(" ")]
    return [chunker.push(t) for t in tokens] + [chunker.flush()]


def test_first_phrase_is_released_at_the_first_comma_before_the_sentence_ends():
    steps = stream("Paris is the capital, and it is lovely in spring. It has museums.")
    first_release = next(i for i, s in enumerate(steps) if s)
    assert steps[first_release] == ["Paris is the capital,"]
    assert first_release == 3  # right after the token carrying the comma
    assert [p for s in steps for p in s] == [
        "Paris is the capital,",
        "and it is lovely in spring.",
        "It has museums.",
    ]


def test_a_long_first_sentence_without_punctuation_is_cut_after_the_configured_word_count():
    config = ChunkerConfig(first_phrase_max_words=5)
    phrases = [p for s in stream("one two three four five six seven eight nine ten", config) for p in s]
    assert phrases[0] == "one two three four five"


def test_later_phrases_follow_sentence_ends_not_commas():
    phrases = [p for s in stream("Yes. Rome, Milan, and Naples are big. Done.") for p in s]
    assert phrases == ["Yes.", "Rome, Milan, and Naples are big.", "Done."]


def test_decimals_and_markdown_are_not_spoken_as_breaks_or_symbols():
    phrases = [p for s in stream("It costs **3.50** euros. Ok") for p in s]
    assert phrases == ["It costs 3.50 euros.", "Ok"]
    assert speakable("# Title\n- *item*") == "Title - item"


def test_nothing_but_punctuation_is_never_sent_to_speech():
    assert [p for s in stream("... !") for p in s] == []
