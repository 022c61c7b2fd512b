"""Fuzzing the WebSocket protocols' client side with Hypothesis (/v1/realtime and /ws): whatever a client
sends, the protocol answers with events (an ``error`` naming the problem, or the event's own answer) and
never raises, nor falls back on the catch-all ``server_error``.

The session behind it is a stand-in that records the calls; the real one is driven by tests/test_websocket.py.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.config import Config
from agent.session import InputError
from agent.transport.websocket.realtime import CLIENT_EVENTS, NOT_IMPLEMENTED, RealtimeProtocol
from agent.transport.websocket.simple import SimpleProtocol


class RecordingSession:
    """Answers like a session in a random state: some calls succeed, others raise InputError."""

    def __init__(self) -> None:
        self.id = "fuzz"
        self.config = Config()
        self.outbound = SimpleNamespace(sample_rate=24_000)
        self.runtime = SimpleNamespace(stt=SimpleNamespace(name="stt"))
        self.memory = SimpleNamespace(system_prompt="prompt")
        self.language, self.listen_language = "en", "en"
        self.turn_detection, self.respond_at_turn_end, self.interrupt_response = "semantic_vad", True, True
        self.end_of_turn_silence_ms = 500
        self.calls: list[str] = []

    def __getattr__(self, name: str):
        def call(*args, **kwargs):
            self.calls.append(name)
            if len(self.calls) % 3 == 0:
                raise InputError("fuzz_state", f"{name} not now")
            return "item_fuzz" if name == "add_user_text" else None

        return call


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
keys = st.sampled_from(
    [
        "input",
        "output",
        "format",
        "type",
        "rate",
        "turn_detection",
        "transcription",
        "language",
        "voice",
        "silence_duration_ms",
        "create_response",
        "interrupt_response",
        "content",
        "text",
        "role",
    ]
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.sampled_from(
        ["audio/pcm", "pcm16", "server_vad", "semantic_vad", "realtime", "message", "user", "input_text"]
    ),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(keys | st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
field_names = st.sampled_from(
    ["session", "audio", "item", "item_id", "audio_end_ms", "content_index", "event_id", "response", "type"]
) | st.text(max_size=12)
events = st.fixed_dictionaries(
    {"type": st.sampled_from([*CLIENT_EVENTS, *NOT_IMPLEMENTED]) | st.text(max_size=30)},
    optional={"event_id": json_values},
).flatmap(lambda base: st.dictionaries(field_names, json_values, max_size=5).map(lambda extra: {**extra, **base}))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(event=events, beta=st.booleans())
def test_any_client_event_is_answered_and_never_raises(event, beta):
    protocol = RealtimeProtocol(RecordingSession(), "voice-agent", beta)
    replies = protocol.receive(json.dumps(event))
    assert isinstance(replies, list)
    for reply in replies:
        assert isinstance(reply["type"], str) and reply["event_id"]
        if reply["type"] == "error":
            assert reply["error"]["message"] and reply["error"]["code"]
            assert reply["error"]["code"] != "server_error", reply  # a clear refusal, not the catch-all


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=200) | st.binary(max_size=200).map(lambda b: b.decode("latin-1")))
def test_any_text_frame_is_answered_and_never_raises(text):
    replies = RealtimeProtocol(RecordingSession(), "voice-agent", False).receive(text)
    assert isinstance(replies, list)


@settings(max_examples=200, deadline=None)
@given(
    update=st.dictionaries(
        st.sampled_from(
            [
                "type",
                "instructions",
                "audio",
                "turn_detection",
                "input_audio_format",
                "output_audio_format",
                "voice",
                "language",
                "modalities",
                "output_modalities",
                "input_audio_transcription",
            ]
        ),
        json_values,
        max_size=6,
    )
)
def test_any_session_update_is_applied_or_refused_with_an_error(update):
    replies = RealtimeProtocol(RecordingSession(), "voice-agent", False).receive(
        json.dumps({"type": "session.update", "session": update})
    )
    assert [r["type"] for r in replies] in (["session.updated"], ["error"])
    assert replies[0].get("error", {}).get("code") != "server_error", replies


@settings(max_examples=300, deadline=None)
@given(message=st.dictionaries(st.sampled_from(["type", "data", "text"]), json_values, max_size=3))
def test_any_simple_ws_message_is_answered_and_never_raises(message):
    replies = SimpleProtocol(RecordingSession()).receive(json.dumps(message))
    assert all(reply["type"] == "error" and reply["message"] for reply in replies)
