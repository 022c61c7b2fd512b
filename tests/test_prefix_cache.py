"""Reusing a conversation's KV cache must change speed, never the words."""

from __future__ import annotations

import threading

import pytest

from agent.config import Config
from agent.conversation.memory import ConversationMemory
from agent.languages import system_prompt
from agent.models.base import ChatMessage
from agent.models.prefix_cache import PrefixCaches, common_prefix_length
from agent.models.smollm_chat import SmolLMChatModel

QUESTIONS = ["What is the capital of France?", "How many legs does a spider have?", "Who wrote Hamlet?"]


class FakeCache:
    def __init__(self, length: int) -> None:
        self.length = length

    def get_seq_length(self) -> int:
        return self.length

    def crop(self, n: int) -> None:
        assert n < 0
        self.length += n


def test_the_entry_sharing_the_longest_prefix_is_taken_and_cropped_to_it():
    caches = PrefixCaches(capacity=4)
    caches.put([1, 2, 3, 4, 5], FakeCache(5))
    other = FakeCache(3)
    caches.put([1, 2, 9], other)
    cache, reused = caches.take([1, 2, 3, 4, 7, 8])
    assert reused == 4 and cache.get_seq_length() == 4
    # taken entries leave the store; the other one is next best
    assert caches.take([1, 2, 3, 4, 7, 8]) == (other, 2)
    assert caches.take([1, 2, 3, 4, 7, 8]) == (None, 0)


def test_the_last_prompt_token_is_always_left_to_prefill_and_capacity_is_bounded():
    caches = PrefixCaches(capacity=1)
    caches.put([1, 2, 3], FakeCache(3))
    caches.put([4, 5, 6], FakeCache(3))
    assert caches.take([1, 2, 3]) == (None, 0)  # evicted
    cache, reused = caches.take([4, 5, 6])
    assert reused == 2 and cache.get_seq_length() == 2
    assert common_prefix_length([1, 2], [1, 2, 3]) == 2


def converse(model: SmolLMChatModel, config: Config) -> tuple[list[str], list[int]]:
    memory = ConversationMemory(system_prompt(config), config.memory.max_turns)
    replies, prefilled = [], []
    for question in QUESTIONS:
        context = memory.context_for(ChatMessage("user", question))
        reply = "".join(model.stream_reply(context, threading.Event()))
        prefilled.append(model.last_prefill_tokens)
        memory.remember(ChatMessage("user", question), reply)
        replies.append(reply)
    return replies, prefilled


@pytest.fixture(scope="module")
def float32_config() -> Config:
    config = Config()
    config.llm.dtype = "float32"  # exact arithmetic comparison; bf16 rounding differs between batch and step
    return config


def test_reused_cache_gives_the_same_replies_as_a_full_prefill_and_prefills_only_new_tokens(float32_config):
    with_reuse = SmolLMChatModel(float32_config)
    float32_config.llm.prefix_cache_entries = 0
    without = SmolLMChatModel(float32_config)
    cached_replies, cached_prefill = converse(with_reuse, float32_config)
    full_replies, full_prefill = converse(without, float32_config)
    assert cached_replies == full_replies
    assert all(r.strip() for r in cached_replies)
    assert cached_prefill[0] == full_prefill[0]
    for cached, full in zip(cached_prefill[1:], full_prefill[1:], strict=True):
        assert cached < full / 2  # only the new turn, not the whole history
