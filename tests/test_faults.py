"""Injected faults in the model workers: the speech recogniser, the chat model or the voice raising in the
middle of a turn. The user gets an ``error`` event, the turn ends, and the next turn of the same call
works. The models are the real embedded ones; each is wrapped to raise once, where asked."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from agent.client.peer import TalkClient
from agent.client.talk import run_turn
from agent.config import Config
from tests.conftest import running_server
from tests.speech import utterance

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


class InjectedFault(RuntimeError):
    pass


class FailOnce:
    """Wraps a model; its next call raises ``InjectedFault`` after ``after`` items (tokens, audio chunks)."""

    def __init__(self, inner, method: str, after: int = 0) -> None:
        self.inner, self.method, self.after = inner, method, after
        self.name = inner.name
        self.armed = False
        self.raised = 0

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def _maybe_fail(self, produced: int) -> None:
        if self.armed and produced >= self.after:
            self.armed = False
            self.raised += 1
            raise InjectedFault(f"injected fault in {self.name}.{self.method}")

    def transcribe(self, audio, language):
        self._maybe_fail(0)
        return self.inner.transcribe(audio, language)

    def stream_reply(self, messages, cancel: threading.Event) -> Iterator[str]:
        for produced, piece in enumerate(self.inner.stream_reply(messages, cancel)):
            self._maybe_fail(produced)
            yield piece

    def synthesize(self, text, language, style, *, cancel=None):
        for produced, chunk in enumerate(self.inner.synthesize(text, language, style, cancel=cancel)):
            self._maybe_fail(produced)
            yield chunk


@pytest.mark.parametrize(
    ("stage", "method", "after", "error_type"),
    [
        ("stt", "transcribe", 0, "asr_error"),
        ("chat", "stream_reply", 3, "reply_error"),  # three tokens in: mid-reply
        ("tts", "synthesize", 0, "reply_error"),
    ],
)
async def test_a_model_worker_raising_mid_turn_ends_that_turn_with_an_error_and_the_next_turn_works(
    runtime, stage, method, after, error_type
):
    original = getattr(runtime, stage)
    faulty = FailOnce(original, method, after)
    setattr(runtime, stage, faulty)
    try:
        async with running_server(Config(), runtime) as (url, state):
            async with TalkClient() as client:
                await client.connect(url)
                faulty.armed = True
                start = len(client.events)
                await client.say(utterance("What is the capital of France?"), 16_000)
                await client.wait_for_event("error", 60, after_index=start)
                await client.wait_until_quiet(1.0, timeout=60)
                errors = [e for e in client.events[start:] if e["type"] == "error"]
                done = [e["response"]["status"] for e in client.events[start:] if e["type"] == "response.done"]
                after_fault = await run_turn(client, utterance("How many legs does a spider have?"), 16_000, timeout=60)
                sessions_after = len(state.sessions)
    finally:
        setattr(runtime, stage, original)

    assert faulty.raised == 1, "the fault was injected once"
    assert [e["error"]["type"] for e in errors] == [error_type], errors
    assert "Injected" not in str(errors) and "Traceback" not in str(errors), "no internals reach the client"
    assert done == ([] if stage == "stt" else ["failed"]), "a reply that broke is reported failed, not completed"
    assert after_fault.error is None, after_fault.error
    assert after_fault.status == "completed" and after_fault.reply_text
    assert after_fault.first_audio_at is not None, "the next turn is answered out loud"
    assert sessions_after == 1, "the call survived the fault"
