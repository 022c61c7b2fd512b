"""Voxtral as the chat model, on a tiny random Voxtral loaded through the production ``from_pretrained`` path.

What is checked is the decode path, not what the random model says: the per-turn cache gives exactly
the tokens of a full recomputation, a barge-in rollback leaves exactly the heard part, cancel stops
within one token, the five-turn window drops the oldest turn, replies of concurrent sessions
interleave, and ``voice-agent serve`` answers a real WebRTC turn with it.
"""

from __future__ import annotations

import base64
import io
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import numpy as np
import pytest
import torch
import yaml

from agent.client.peer import TalkClient, wait_until_ready
from agent.client.talk import run_turn
from agent.config import Config
from agent.models.base import ChatMessage
from agent.models.voxtral_cache import TurnEncoder, build_segments
from agent.models.voxtral_chat import VoxtralChatModel
from tests.conftest import serve_in_subprocess
from tests.speech import silence, speak
from tests.tiny_voxtral import build_tiny_voxtral

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

INSTRUCTIONS = "Answer briefly."
REPLY_TOKENS = 10


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_voxtral(tmp_path_factory.mktemp("voxtral") / "tiny-voxtral")


def voxtral_config(folder: Path, **llm: object) -> Config:
    config = Config()
    config.llm.backend = "voxtral"
    config.llm.model = str(folder)
    config.llm.device = "cpu"
    config.llm.compile = False  # compiling takes ~20 s on two cores; scripts/bench_voxtral.py measures it
    config.llm.session_slots = 2
    config.llm.max_new_tokens = REPLY_TOKENS
    config.llm.repetition_penalty = 1.0  # transformers' generate would also penalise the prompt's tokens
    for key, value in llm.items():
        setattr(config.llm, key, value)
    return config


@pytest.fixture
def model(tiny_folder: Path) -> Iterator[VoxtralChatModel]:
    model = VoxtralChatModel(voxtral_config(tiny_folder))
    model.warm_up()
    yield model
    model.close()


def clip(seed: int, seconds: float = 1.5) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(int(16_000 * seconds)) * 0.1).astype(np.float32)


def reply(model: VoxtralChatModel, messages: list[ChatMessage]) -> str:
    return "".join(model.stream_reply(messages, threading.Event()))


def full_recomputation(model: VoxtralChatModel, prompt_ids: list[int], clips: list[np.ndarray]) -> list[int]:
    """transformers' own ``generate`` on the whole conversation at once, no cache kept from earlier turns."""
    features = model._processor.feature_extractor(
        clips, sampling_rate=16_000, padding=True, truncation=False, pad_to_multiple_of=480_000, return_tensors="pt"
    )["input_features"]
    with torch.inference_mode():
        output = model._model.generate(
            input_ids=torch.tensor([prompt_ids]),
            input_features=features,
            max_new_tokens=REPLY_TOKENS,
            do_sample=False,
            eos_token_id=model._encoder.eos,
        )
    return [token for token in output[0, len(prompt_ids) :].tolist() if token != model._encoder.eos]


def test_a_turn_is_laid_out_exactly_as_mistral_common_encodes_the_request(model):
    import soundfile
    from mistral_common.protocol.instruct.chunk import AudioChunk, RawAudio, TextChunk
    from mistral_common.protocol.instruct.messages import AssistantMessage, UserMessage
    from mistral_common.protocol.instruct.request import InstructRequest

    def audio_chunk(audio: np.ndarray) -> AudioChunk:
        wav = io.BytesIO()
        soundfile.write(wav, audio, 16_000, format="wav", subtype="FLOAT")
        return AudioChunk(input_audio=RawAudio(data=base64.b64encode(wav.getvalue()).decode(), format="wav"))

    first, second = clip(1), clip(2, seconds=31)  # the second needs two 30 s windows
    messages = [
        ChatMessage("system", INSTRUCTIONS),
        ChatMessage("user", "", audio=first),
        ChatMessage("assistant", "Paris."),
        ChatMessage("user", "", audio=second),
    ]
    tokenizer = model._processor.tokenizer.tokenizer.instruct_tokenizer
    expected = tokenizer.encode_instruct(
        InstructRequest(
            messages=[
                UserMessage(content=[TextChunk(text=INSTRUCTIONS + "\n\n"), audio_chunk(first)]),
                AssistantMessage(content="Paris."),
                UserMessage(content=[audio_chunk(second)]),
            ]
        )
    ).tokens
    segments = build_segments(messages, "unused", TurnEncoder(tokenizer), replies={})
    assert [token for segment in segments for token in segment.ids] == expected
    assert [segment.audio_tokens for segment in segments if segment.audio is not None] == [375, 750]


def test_three_cached_turns_give_exactly_the_tokens_of_a_full_recomputation(model):
    messages = [ChatMessage("system", INSTRUCTIONS)]
    clips = []
    for turn in range(3):
        clips.append(clip(10 + turn))
        messages.append(ChatMessage("user", "", audio=clips[-1]))
        text = reply(model, messages)
        stats = model.last_turn
        assert stats.generated == full_recomputation(model, stats.prompt_ids, clips), f"turn {turn + 1}"
        if turn:
            # Only the new turn is prefilled: the previous reply's last token and </s>, then [INST] audio [/INST].
            assert stats.prefill_tokens == 2 + 1 + 1 + 375 + 1
            assert stats.reused_tokens == len(stats.prompt_ids) - stats.prefill_tokens
        messages.append(ChatMessage("assistant", text))
    assert model.last_turn.prompt_ids.count(model._encoder.eos) == 2, "each earlier reply closed by </s> once"


def test_rollback_after_a_cancel_leaves_the_cache_equal_to_a_fresh_prefill_of_the_heard_part(model, tiny_folder):
    messages = [ChatMessage("system", INSTRUCTIONS), ChatMessage("user", "", audio=clip(20))]
    full = reply(model, messages)
    generated = model.last_turn.generated
    prompt = model.last_turn.prompt_ids
    heard_tokens = 4
    heard = model._encoder.decode(generated[:heard_tokens])
    assert heard and full.startswith(heard) and len(full) > len(heard)

    kept = model.rollback([*messages, ChatMessage("assistant", heard)])

    assert kept == len(prompt) + heard_tokens
    slot = model.slots[model.last_turn.slot]
    fresh = VoxtralChatModel(voxtral_config(tiny_folder, session_slots=1))
    try:
        fresh.rollback([*messages, ChatMessage("assistant", heard)])  # an empty slot: everything prefilled
        reference = fresh.slots[0]
        assert reference.ids[:kept] == slot.ids[:kept] == prompt + generated[:heard_tokens]
        for mine, theirs in zip(slot.cache.layers, reference.cache.layers, strict=True):
            assert int(mine.cumulative_length) == int(theirs.cumulative_length) == kept
            torch.testing.assert_close(mine.keys[:, :, :kept], theirs.keys[:, :, :kept])
            torch.testing.assert_close(mine.values[:, :, :kept], theirs.values[:, :, :kept])
    finally:
        fresh.close()

    # The next turn continues from the heard part, exactly as a full recomputation would.
    messages += [ChatMessage("assistant", heard), ChatMessage("user", "", audio=clip(21))]
    reply(model, messages)
    assert model.last_turn.reused_tokens == kept
    assert model.last_turn.prompt_ids[kept] == model._encoder.eos
    assert model.last_turn.generated == full_recomputation(model, model.last_turn.prompt_ids, [clip(20), clip(21)])


def test_cancel_stops_generation_within_one_token(model):
    cancel = threading.Event()
    steps = 0
    step = model._step

    def step_that_is_cancelled_midway(token, cache):
        nonlocal steps
        steps += 1
        if steps == 3:
            cancel.set()  # arrives while the fourth token is being computed
        return step(token, cache)

    model._step = step_that_is_cancelled_midway
    pieces = list(model.stream_reply([ChatMessage("user", "", audio=clip(30))], cancel))
    assert steps == 3, "no decode step after the cancel"
    assert len(model.last_turn.generated) == 4 == len(pieces)  # the token in flight, nothing after it


def test_the_five_turn_window_drops_the_oldest_turn_and_prefills_the_rest_again(model):
    system = ChatMessage("system", INSTRUCTIONS)
    exchanges: list[tuple[ChatMessage, ChatMessage]] = []
    clips = [clip(40 + turn) for turn in range(6)]
    for turn in range(6):
        window = exchanges[-4:] if turn == 5 else exchanges  # memory keeps 5 turns: the sixth drops the first
        user = ChatMessage("user", "", audio=clips[turn])
        text = reply(model, [system, *(m for pair in window for m in pair), user])
        exchanges.append((user, ChatMessage("assistant", text)))

    stats = model.last_turn
    assert stats.window_slid
    assert stats.reused_tokens == 1  # only <s>: every position after it moved
    assert stats.prefill_tokens == len(stats.prompt_ids) - 1
    assert stats.audio_tokens == 5 * 375
    assert stats.generated == full_recomputation(model, stats.prompt_ids, clips[1:])
    slot = model.slots[stats.slot]
    assert len(slot.replies) == 5 and len(slot.embeds) == 5, "the dropped turn is forgotten"


def test_replies_of_concurrent_sessions_interleave_token_by_token(tiny_folder):
    model = VoxtralChatModel(voxtral_config(tiny_folder, max_new_tokens=30))
    step = model._step

    def gpu_paced_step(token, cache):
        time.sleep(0.005)  # a decode step's time on a GPU: both replies are in flight at once
        return step(token, cache)

    model._step = gpu_paced_step
    arrivals: dict[int, list[float]] = {0: [], 1: []}

    def converse(session: int) -> None:
        messages = [ChatMessage("user", "", audio=clip(50 + session))]
        for _ in model.stream_reply(messages, threading.Event()):
            arrivals[session].append(time.perf_counter())

    threads = [threading.Thread(target=converse, args=(session,)) for session in (0, 1)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
    finally:
        model.close()
    assert len(arrivals[0]) == len(arrivals[1]) == 30
    assert arrivals[1][0] < arrivals[0][-1] and arrivals[0][0] < arrivals[1][-1]
    assert {slot.index for slot in model.slots if slot.replies} == {0, 1}


async def test_voice_agent_serve_with_voxtral_answers_a_real_webrtc_turn(tiny_folder, tmp_path):
    config_path = tmp_path / "voxtral.yaml"
    config_path.write_text(
        yaml.safe_dump({"llm": {"backend": "voxtral", "model": str(tiny_folder), "compile": False, "session_slots": 2}})
    )
    server, url = serve_in_subprocess("--config", str(config_path))
    try:
        await wait_until_ready(url, timeout=120)
        async with aiohttp.ClientSession() as http, http.get(f"{url}/ready") as response:
            ready = await response.json()
        async with TalkClient() as client:
            await client.connect(url)
            question = np.concatenate([silence(0.3), speak("What is the capital of France?"), silence(0.2)])
            turn = await run_turn(client, question, 16_000, timeout=60)
    finally:
        server.terminate()
        log = server.communicate(timeout=30)[1]
    assert turn.error is None, turn.error
    assert turn.status == "completed" and turn.reply_text, log
    assert ready["models"]["chat"] == "voxtral"
    assert ready["chat"] | {"model": None} == {
        "model": None,
        "device": "cpu",
        "dtype": "float32",
        "attention": "sdpa",
        "compiled": False,
        "session_slots": 2,
        "max_cache_tokens": 4096,
    }
    assert "voxtral prefill slot=" in log and "audio_tokens=375" in log
