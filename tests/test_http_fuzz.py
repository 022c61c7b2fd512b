"""Fuzzing the HTTP entry points with Hypothesis: random bodies, JSON shapes, query strings and tokens get a
4xx with a message, never a 5xx, and the server keeps serving.

The server runs with scripted models on its own event loop in a thread, so each example is a plain
blocking request, as from any client.
"""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.config import Config
from tests.conftest import running_server
from tests.fakes import scripted_runtime

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=25,
)
sdp_like = st.lists(
    st.sampled_from(
        [
            "v=0",
            "o=- 0 0 IN IP4 127.0.0.1",
            "s=-",
            "t=0 0",
            "m=audio 9 UDP/TLS/RTP/SAVPF 111",
            "a=rtpmap:111 opus/48000/2",
            "a=ice-ufrag:x",
            "a=fingerprint:sha-256 00",
            "c=IN IP4 0.0.0.0",
            "a=setup:actpass",
            "a=mid:0",
            "m=video 9 RTP/AVP 96",
        ]
    )
    | st.text(max_size=40),
    max_size=12,
).map("\r\n".join)
offers = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries({"type": st.sampled_from(["offer", "answer", 1]), "sdp": sdp_like | json_values}).map(
        lambda v: json.dumps(v).encode()
    ),
)
API_BODIES = [
    ("POST", "/api/auth/register"),
    ("POST", "/api/auth/login"),
    ("PUT", "/api/calls/abc/tags"),
    ("POST", "/api/calls"),
    ("POST", "/v1/audio/speech"),
    ("POST", "/v1/audio/transcriptions"),
]
QUERIES = ["/api/calls", "/api/calls/analytics", "/api/calls/export"]


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    config = Config()
    config.records.data_dir = str(__import__("tempfile").mkdtemp(prefix="fuzz-records-"))
    loop = asyncio.new_event_loop()
    ready: dict = {}
    stop = threading.Event()

    async def serve() -> None:
        async with running_server(config, scripted_runtime()) as (url, _):
            ready["url"] = url
            while not stop.is_set():
                await asyncio.sleep(0.05)

    thread = threading.Thread(target=lambda: loop.run_until_complete(serve()), daemon=True)
    thread.start()
    while "url" not in ready and thread.is_alive():
        threading.Event().wait(0.05)
    yield ready["url"]
    stop.set()
    thread.join(10)


def request(
    url: str, method: str, path: str, body: bytes | None = None, headers: dict | None = None
) -> tuple[int, bytes]:
    req = urllib.request.Request(url + path, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=20) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def assert_refused_clearly(status: int, body: bytes) -> None:
    assert status < 500, (status, body[:300])
    if status >= 400:
        assert json.loads(body).get("error"), body[:300]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=offers)
def test_any_offer_body_gets_a_4xx_with_a_message(server, body):
    status, answer = request(server, "POST", "/offer", body, {"Content-Type": "application/json"})
    assert 400 <= status < 500, (status, answer[:300])
    assert json.loads(answer)["error"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    route=st.sampled_from(API_BODIES),
    body=json_values,
    content_type=st.sampled_from(
        ["application/json", "text/plain", "multipart/form-data; boundary=x", "application/x-www-form-urlencoded"]
    ),
)
def test_any_api_body_gets_an_answer_not_a_5xx(server, route, body, content_type):
    method, path = route
    assert_refused_clearly(*request(server, method, path, json.dumps(body).encode(), {"Content-Type": content_type}))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    path=st.sampled_from(QUERIES),
    params=st.dictionaries(
        st.sampled_from(["limit", "offset", "cursor", "tag", "q", "from", "to", "status", "source", "language", "x"]),
        st.text(max_size=30),
        max_size=5,
    ),
)
def test_any_query_string_gets_an_answer_not_a_5xx(server, path, params):
    query = urllib.parse.urlencode(params)
    assert_refused_clearly(*request(server, "GET", f"{path}?{query}"))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    token=st.text(
        alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=80
    )
)
def test_any_bearer_token_gets_an_answer_not_a_5xx(server, token):
    assert_refused_clearly(*request(server, "GET", "/api/calls", headers={"Authorization": f"Bearer {token}"}))


def test_the_server_still_serves_after_the_fuzzing(server):
    status, body = request(server, "GET", "/health")
    assert status == 200 and json.loads(body)["status"] == "alive"
