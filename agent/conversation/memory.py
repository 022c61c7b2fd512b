"""A session's memory: the system prompt plus its last N exchanges (user turn + agent reply)."""

from __future__ import annotations

import collections
from dataclasses import dataclass

from agent.models.base import ChatMessage


@dataclass
class Exchange:
    user: ChatMessage
    agent: ChatMessage


class ConversationMemory:
    def __init__(self, system_prompt: str, max_turns: int) -> None:
        self.system_prompt = system_prompt
        self.max_turns = max_turns
        self._exchanges: collections.deque[Exchange] = collections.deque(maxlen=max_turns)

    @property
    def exchanges(self) -> list[Exchange]:
        return list(self._exchanges)

    def context_for(self, user: ChatMessage, pending: Exchange | None = None) -> list[ChatMessage]:
        """What the chat model is given to answer ``user``: system prompt, remembered turns, the new turn.

        ``pending`` is an exchange about to be remembered (an interrupted reply, cut to what was heard).
        """
        messages = [ChatMessage("system", self.system_prompt)] if self.system_prompt else []
        exchanges = list(self._exchanges)
        if pending is not None:
            exchanges = [*exchanges, pending][-self.max_turns :]
        for exchange in exchanges:
            messages.append(exchange.user)
            if exchange.agent.text:
                messages.append(exchange.agent)
        messages.append(user)
        return messages

    def revise(self, user: ChatMessage, agent_text: str) -> bool:
        """Replace the remembered reply to ``user`` (a client said how much of it was played); False if gone."""
        for exchange in self._exchanges:
            if exchange.user is user:
                exchange.agent = ChatMessage("assistant", agent_text)
                return True
        return False

    def remember(self, user: ChatMessage, agent_text: str) -> None:
        """Store a finished exchange; ``agent_text`` is what the user actually heard. The oldest falls out."""
        self._exchanges.append(Exchange(user, ChatMessage("assistant", agent_text)))
