from agent.conversation.heard import SpokenPhrase, heard_text
from agent.conversation.memory import ConversationMemory
from agent.models.base import ChatMessage


def test_context_is_system_prompt_then_remembered_turns_then_the_new_turn():
    memory = ConversationMemory("Be brief.", max_turns=5)
    memory.remember(ChatMessage("user", "Hi"), "Hello!")
    context = memory.context_for(ChatMessage("user", "And you?"))
    assert [(m.role, m.text) for m in context] == [
        ("system", "Be brief."),
        ("user", "Hi"),
        ("assistant", "Hello!"),
        ("user", "And you?"),
    ]


def test_the_window_keeps_the_last_five_exchanges_and_drops_the_oldest():
    memory = ConversationMemory("sys", max_turns=5)
    for i in range(7):
        memory.remember(ChatMessage("user", f"q{i}"), f"a{i}")
    texts = [m.text for m in memory.context_for(ChatMessage("user", "q7"))]
    assert texts == ["sys", "q2", "a2", "q3", "a3", "q4", "a4", "q5", "a5", "q6", "a6", "q7"]


def test_a_reply_nobody_heard_leaves_only_the_user_turn():
    memory = ConversationMemory("", max_turns=3)
    memory.remember(ChatMessage("user", "Tell me a story"), "")
    assert [(m.role, m.text) for m in memory.context_for(ChatMessage("user", "Stop"))] == [
        ("user", "Tell me a story"),
        ("user", "Stop"),
    ]


def test_heard_text_keeps_whole_played_phrases_and_the_played_share_of_a_cut_one():
    phrases = [
        SpokenPhrase("Paris is the capital,", 1000),
        SpokenPhrase("and it has many old museums.", 1200),
    ]
    assert heard_text(phrases, [1000, 1200]) == "Paris is the capital, and it has many old museums."
    assert heard_text(phrases, [1000, 600]) == "Paris is the capital, and it has"
    assert heard_text(phrases, [400, 0]) == "Paris"
    assert heard_text(phrases, [0, 0]) == ""
