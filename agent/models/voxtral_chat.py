"""Voxtral as the chat model: it hears the user's audio and answers, with a decode loop of our own.

One model per process, driven by one thread of its own (the "scheduler"): every session's request is
queued to it; it prefills new requests first, then advances every active reply by one token in turn
(round robin). One thread owns the model because CUDA graphs recorded by ``torch.compile`` belong to
the thread that recorded them, and because a single owner needs no locks around the caches.

Each session slot has a static KV cache allocated once at start-up; a turn prefills only the tokens
the slot does not hold yet (see ``voxtral_cache``), then decodes one token at a time with a compiled
step, checking for cancellation between any two tokens.
"""

from __future__ import annotations

import importlib.util
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from agent.config import Config, ConfigError
from agent.languages import system_prompt
from agent.models.base import SAMPLE_RATE, ChatMessage
from agent.models.production import cuda_or_cpu, hub_cache_dir, local_folder
from agent.models.sampling import pick_token
from agent.models.voxtral_cache import (
    Segment,
    Slot,
    TurnEncoder,
    build_segments,
    choose_slot,
    conversation_keys,
    shared_prefix,
)

log = logging.getLogger(__name__)

DEFAULT_MODEL = "mistralai/Voxtral-Mini-3B-2507"
# cudagraph trees run a compiled function eagerly once, record it on the second call and replay from the
# third: warming up each slot with this many decode steps leaves nothing to record on a user's turn.
_WARM_UP_TOKENS = 4
_WARM_UP_AUDIO_SECONDS = 1.0
_END = object()


@dataclass(frozen=True)
class Placement:
    device: str
    dtype: torch.dtype
    attention: str


def choose_placement(device: str) -> Placement:
    """bf16 on CUDA (fp16 where bf16 is missing), fp32 on CPU; flash-attention 2 on CUDA when installed."""
    if cuda_or_cpu(device, "llm.device") == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        attention = "flash_attention_2" if importlib.util.find_spec("flash_attn") else "sdpa"
        return Placement("cuda", dtype, attention)
    return Placement("cpu", torch.float32, "sdpa")


@dataclass
class TurnStats:
    slot: int
    reused_tokens: int  # already in the slot's cache
    prefill_tokens: int  # fed in this turn's prefill
    audio_tokens: int  # of the prefill, [AUDIO] placeholders
    window_slid: bool  # the oldest turn was dropped and the rest prefilled again
    prefill_seconds: float
    prompt_ids: list[int] = field(repr=False)  # everything the cache holds once prefilled
    generated: list[int] = field(default_factory=list)


@dataclass
class _Request:
    messages: list[ChatMessage]
    cancel: threading.Event
    generate: bool = True  # False: only bring the slot's cache to ``messages`` (a rollback)
    max_new_tokens: int = 0
    ignore_stop: bool = False  # warm-up: always decode max_new_tokens
    slot_index: int | None = None  # warm-up: this slot
    out: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)
    abandoned: threading.Event = field(default_factory=threading.Event)
    slot: Slot | None = None
    user: str = ""  # key of the user turn being answered
    pending: int | None = None  # picked, not yet fed to the cache
    stats: TurnStats | None = None

    @property
    def stopped(self) -> bool:
        return self.cancel.is_set() or self.abandoned.is_set()


class VoxtralChatModel:
    """``VoxtralForConditionalGeneration`` from a hub id or a local folder, shared by every session."""

    name = "voxtral"
    hears_audio = True  # the session passes each user turn's audio; the transcript may come later

    def __init__(self, config: Config, loaded: tuple[Any, Any] | None = None) -> None:
        """Load ``llm.model``; ``loaded`` (a model and its processor, already placed) skips loading (benchmarks)."""
        llm = config.llm
        self.placement = choose_placement(llm.device)
        if self.placement.device == "cpu":
            torch.set_num_threads(llm.cpu_threads)  # process-wide: torch has one intra-op pool
        self.source = llm.model if llm.model != "embedded" else DEFAULT_MODEL
        started = time.perf_counter()
        self._model, self._processor = loaded or self._load(config)
        self._model.to(self.placement.device).eval()
        self._text_model = self._model.model.language_model
        self._embed = self._model.get_input_embeddings()
        self._mel_frames = 2 * self._model.config.audio_config.max_source_positions
        self._encoder = TurnEncoder(self._processor.tokenizer.tokenizer.instruct_tokenizer)
        self._stop_ids = _stop_token_ids(self._encoder.eos, self._model.generation_config.eos_token_id)
        self._instructions = system_prompt(config)
        self._max_new_tokens = llm.max_new_tokens
        self._temperature = llm.temperature
        self._repetition_penalty = llm.repetition_penalty
        self.max_cache_tokens = llm.max_cache_tokens
        self.max_concurrent_replies = llm.session_slots
        self.slots = [Slot(index, self._allocate_cache()) for index in range(llm.session_slots)]
        self.compiled = llm.compile
        self._compile_mode = "reduce-overhead" if self.placement.device == "cuda" else "default"
        self._step = (
            torch.compile(self._decode_step, fullgraph=True, dynamic=False, mode=self._compile_mode)
            if llm.compile
            else self._decode_step
        )
        self.last_turn: TurnStats | None = None
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._waiting: list[_Request] = []
        self._active: list[_Request] = []
        self._thread = threading.Thread(target=self._serve, name="voxtral-scheduler", daemon=True)
        self._thread.start()
        log.info(
            "voxtral loaded from %s in %.2fs: device=%s dtype=%s attention=%s compile=%s slots=%d cache=%d tokens",
            self.source,
            time.perf_counter() - started,
            self.placement.device,
            str(self.placement.dtype).removeprefix("torch."),
            self.placement.attention,
            self._compile_mode if llm.compile else "off",
            llm.session_slots,
            llm.max_cache_tokens,
        )

    def _load(self, config: Config) -> tuple[Any, Any]:
        from transformers import VoxtralForConditionalGeneration, VoxtralProcessor

        location, options = _locate(self.source, config)
        try:
            processor = VoxtralProcessor.from_pretrained(location, **options)
            model = VoxtralForConditionalGeneration.from_pretrained(
                location, dtype=self.placement.dtype, attn_implementation=self.placement.attention, **options
            )
        except OSError as exc:
            raise ConfigError(
                f"llm.model {self.source!r} could not be loaded ({exc}); fetch it first with "
                "scripts/download_models.py on a machine with internet, or give a local folder"
            ) from exc
        return model, processor

    # ---- the API sessions use -------------------------------------------------------------------

    def stream_reply(self, messages: list[ChatMessage], cancel: threading.Event) -> Iterator[str]:
        """Yield the reply as text pieces as tokens are produced; stop at most one token after ``cancel``."""
        generated: list[int] = []
        emitted = ""
        for token in self.stream_ids(messages, cancel):
            generated.append(token)
            # Decoding the whole reply, not the token alone, keeps spaces and multi-byte characters right;
            # a trailing U+FFFD is a character whose remaining bytes are still to come.
            text = self._encoder.decode(generated)
            if len(text) > len(emitted) and not text.endswith("\ufffd"):
                yield text[len(emitted) :]
                emitted = text

    def stream_ids(
        self, messages: list[ChatMessage], cancel: threading.Event, max_new_tokens: int | None = None
    ) -> Iterator[int]:
        """The reply's token ids as they are produced (``stream_reply`` decodes them; benchmarks time them)."""
        tokens = self._max_new_tokens if max_new_tokens is None else max_new_tokens
        yield from self._stream(_Request(list(messages), cancel, max_new_tokens=tokens))

    def rollback(self, messages: list[ChatMessage]) -> int:
        """Bring the cache to ``messages``, which end with the reply as the user heard it; tokens kept.

        After a barge-in the cache holds the whole generated reply; this cuts it back to the generated
        tokens whose text the heard reply covers. The next ``stream_reply`` does the same on its own,
        so calling this is only needed to free the cache early.
        """
        request = _Request(list(messages), threading.Event(), generate=False)
        for _ in self._stream(request):
            pass
        return request.stats.reused_tokens + request.stats.prefill_tokens if request.stats else 0

    def warm_up(self) -> None:
        """Compile the decode step and run every slot once (prefill, audio encoder, recorded CUDA graphs)."""
        started = time.perf_counter()
        clip = np.zeros(int(SAMPLE_RATE * _WARM_UP_AUDIO_SECONDS), dtype=np.float32)
        for slot in self.slots:
            request = _Request(
                [ChatMessage("user", "", audio=clip)],
                threading.Event(),
                max_new_tokens=_WARM_UP_TOKENS,
                ignore_stop=True,
                slot_index=slot.index,
            )
            for _ in self._stream(request):
                pass
        self._call(self._clear_slots)
        log.info("voxtral warmed up in %.2fs (%d slots)", time.perf_counter() - started, len(self.slots))

    def describe(self) -> dict[str, Any]:
        """Where and how the model runs, for ``/ready``."""
        return {
            "model": self.source,
            "device": self.placement.device,
            "dtype": str(self.placement.dtype).removeprefix("torch."),
            "attention": self.placement.attention,
            "compiled": self._compile_mode if self.compiled else False,
            "session_slots": len(self.slots),
            "max_cache_tokens": self.max_cache_tokens,
        }

    def close(self) -> None:
        self._inbox.put(None)
        self._thread.join(timeout=5)

    # ---- the caller's side of a request ---------------------------------------------------------

    def _stream(self, request: _Request) -> Iterator[int]:
        if request.stopped:
            return
        self._inbox.put(request)
        try:
            while (item := request.out.get()) is not _END:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            request.abandoned.set()

    def _call(self, function: Callable[[], Any]) -> Any:
        """Run ``function`` on the scheduler thread, where the caches live."""
        future: Future = Future()
        self._inbox.put((function, future))
        return future.result()

    # ---- the scheduler thread -------------------------------------------------------------------

    def _serve(self) -> None:
        with torch.inference_mode():  # caches filled under inference mode must only be touched under it
            while self._admit():
                for request in list(self._active):
                    self._advance(request)

    def _admit(self) -> bool:
        """Take new requests and prefill those that get a slot; False once closed."""
        while True:
            try:
                block = not self._active and not self._waiting
                item = self._inbox.get() if block else self._inbox.get_nowait()
            except queue.Empty:
                break
            if item is None:
                return False
            if isinstance(item, tuple):
                function, future = item
                try:
                    future.set_result(function())
                except BaseException as exc:
                    future.set_exception(exc)
                continue
            self._waiting.append(item)
        for request in list(self._waiting):
            if request.stopped:
                self._waiting.remove(request)
                request.out.put(_END)
                continue
            if request.slot_index is not None:
                slot = self.slots[request.slot_index]
                slot = None if slot.busy else slot
            else:
                slot = choose_slot(self.slots, conversation_keys(request.messages))
            if slot is None:
                continue
            self._waiting.remove(request)
            try:
                self._start(request, slot)
            except BaseException as exc:
                log.exception("voxtral prefill failed")
                self._reset(slot)
                slot.busy = False
                request.out.put(exc)
                request.out.put(_END)
        if self._waiting and not self._active:
            time.sleep(0.001)  # every slot is held by a reply being cancelled elsewhere: let it finish
        return True

    def _start(self, request: _Request, slot: Slot) -> None:
        slot.busy = True
        request.slot = slot
        reserve = request.max_new_tokens if request.generate else 0
        messages = request.messages
        while True:
            segments = build_segments(
                messages, self._instructions, self._encoder, slot.replies, close_last_reply=request.generate
            )
            total = sum(len(segment.ids) for segment in segments)
            if total + reserve <= self.max_cache_tokens:
                break
            messages = _without_oldest_exchange(messages, self.max_cache_tokens)
        request.user = next((s.user for s in reversed(segments) if s.user), "")
        started = time.perf_counter()
        shared = min(shared_prefix(slot.segments, segments), slot.length)
        if request.generate:
            shared = min(shared, total - 1)  # the last token is fed again: its logits pick the first reply token
        wanted_users = {segment.user for segment in segments if segment.user}
        slid = shared <= 1 and bool(wanted_users & set(slot.replies))
        slot.segments, slot.length = segments, shared
        self._set_length(slot, shared)
        logits, audio_tokens = self._prefill(slot, segments, shared)
        slot.length = total
        slot.last_used = time.monotonic()
        request.stats = TurnStats(
            slot.index,
            shared,
            total - shared,
            audio_tokens,
            slid,
            time.perf_counter() - started,
            [token for segment in segments for token in segment.ids],
        )
        log.info(
            "voxtral prefill slot=%d reused=%d prefill_tokens=%d audio_tokens=%d window_slid=%s seconds=%.3f",
            slot.index,
            shared,
            total - shared,
            audio_tokens,
            slid,
            request.stats.prefill_seconds,
        )
        if not request.generate or logits is None:
            self._finish(request)
            return
        self._active.append(request)
        self._emit(request, self._pick(logits, []))

    def _advance(self, request: _Request) -> None:
        """One decode step for ``request``, unless it was cancelled since its last token."""
        if request.stopped:
            self._finish(request)
            return
        slot = request.slot
        assert slot is not None and request.pending is not None
        try:
            token = torch.tensor([[request.pending]], device=self.placement.device)
            logits = self._step(token, slot.cache)
            slot.length += 1
            self._emit(request, self._pick(logits, request.stats.generated))
        except BaseException as exc:
            log.exception("voxtral decode step failed")
            request.out.put(exc)
            self._reset(slot)
            self._finish(request)

    def _emit(self, request: _Request, token: int) -> None:
        generated = request.stats.generated
        if token in self._stop_ids and not request.ignore_stop:
            self._finish(request)
            return
        generated.append(token)
        request.out.put(token)
        if len(generated) >= request.max_new_tokens:
            self._finish(request)
        else:
            request.pending = token

    def _finish(self, request: _Request) -> None:
        if request in self._active:
            self._active.remove(request)
        slot = request.slot
        if slot is not None and slot.busy:
            if request.generate and request.stats is not None and slot.length:
                slot.replies[request.user] = list(request.stats.generated)
                slot.segments = [*slot.segments, Segment("assistant:" + request.user, list(request.stats.generated))]
            slot.forget_dropped_turns()
            slot.busy = False
            slot.last_used = time.monotonic()
        if request.stats is not None:
            self.last_turn = request.stats
        request.out.put(_END)

    # ---- the model path -------------------------------------------------------------------------

    def _prefill(self, slot: Slot, segments: list[Segment], start: int) -> tuple[torch.Tensor | None, int]:
        """Feed the segments' tokens from ``start`` on; logits for the next token, and audio tokens fed."""
        pieces, offset, audio_tokens = [], 0, 0
        for segment in segments:
            end = offset + len(segment.ids)
            if end > start:
                skip = max(start - offset, 0)
                ids = torch.tensor(segment.ids[skip:], device=self.placement.device)
                embeds = self._embed(ids)
                audio_end = segment.audio_start + segment.audio_tokens
                if segment.audio is not None and skip < audio_end:
                    audio = self._audio_embeds(slot, segment)
                    first = max(segment.audio_start - skip, 0)
                    embeds[first : audio_end - skip] = audio[max(skip - segment.audio_start, 0) :]
                    audio_tokens += audio_end - skip - first
                pieces.append(embeds)
            offset = end
        if not pieces:
            return None, 0
        inputs = torch.cat(pieces).unsqueeze(0)
        positions = torch.arange(start, start + inputs.shape[1], device=self.placement.device).unsqueeze(0)
        hidden = self._text_model(
            inputs_embeds=inputs, past_key_values=slot.cache, position_ids=positions, use_cache=True
        ).last_hidden_state
        return self._model.lm_head(hidden[:, -1]).float(), audio_tokens

    def _decode_step(self, token: torch.Tensor, cache: Any) -> torch.Tensor:
        """Logits after feeding one token; the compiled function (its shapes never change)."""
        position = cache.layers[0].cumulative_length.view(1, 1)
        hidden = self._text_model(
            inputs_embeds=self._embed(token), past_key_values=cache, position_ids=position, use_cache=True
        ).last_hidden_state
        return self._model.lm_head(hidden[:, -1]).float()

    def _audio_embeds(self, slot: Slot, segment: Segment) -> torch.Tensor:
        if segment.user not in slot.embeds:
            features = self._processor.feature_extractor(
                segment.audio,
                sampling_rate=SAMPLE_RATE,
                padding=True,
                truncation=False,
                return_tensors="pt",
                device=self.placement.device,
            )["input_features"]
            # One row per 30 s chunk, as VoxtralProcessor lays them out.
            features = features.reshape(features.shape[1], -1, self._mel_frames).transpose(0, 1)
            features = features.to(self.placement.device, self.placement.dtype)
            embeds = self._model.get_audio_features(features).pooler_output
            if embeds.shape[0] != segment.audio_tokens:
                raise RuntimeError(f"{embeds.shape[0]} audio embeddings for {segment.audio_tokens} [AUDIO] tokens")
            slot.embeds[segment.user] = embeds
        return slot.embeds[segment.user]

    def _pick(self, logits: torch.Tensor, generated: list[int]) -> int:
        return pick_token(logits, generated, self._temperature, self._repetition_penalty)

    def _allocate_cache(self) -> Any:
        from transformers import StaticCache

        text = self._model.config.text_config
        cache = StaticCache(config=text, max_cache_len=self.max_cache_tokens)
        head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
        with torch.inference_mode():
            cache.early_initialization(
                1, text.num_key_value_heads, head_dim, self.placement.dtype, torch.device(self.placement.device)
            )
        return cache

    @staticmethod
    def _set_length(slot: Slot, length: int) -> None:
        """Roll the cache back to its first ``length`` tokens; later entries are masked, then overwritten."""
        for layer in slot.cache.layers:
            layer.cumulative_length.fill_(length)

    def _reset(self, slot: Slot) -> None:
        with torch.inference_mode():
            self._set_length(slot, 0)
        slot.segments, slot.length, slot.replies, slot.embeds = [], 0, {}, {}

    def _clear_slots(self) -> None:
        for slot in self.slots:
            self._reset(slot)


def _locate(source: str, config: Config) -> tuple[str, dict[str, Any]]:
    """A local folder as it is; a hub id read from the model cache (downloaded by scripts/download_models.py)."""
    folder = local_folder(source, "llm.model", "a Voxtral model")
    if folder is not None:
        if not (folder / "config.json").is_file():
            raise ConfigError(f"llm.model {source!r} is a folder without config.json; give a Voxtral model folder")
        return str(folder), {}
    return source, {"cache_dir": str(hub_cache_dir(config))}


def _without_oldest_exchange(messages: list[ChatMessage], limit: int) -> list[ChatMessage]:
    """``messages`` less their oldest user turn and its reply, for a conversation the cache cannot hold."""
    head = messages[:1] if messages and messages[0].role == "system" else []
    body = messages[len(head) :]
    users = [i for i, message in enumerate(body) if message.role == "user"]
    if len(users) < 2:
        raise RuntimeError(f"the last turn alone does not fit llm.max_cache_tokens={limit}")
    log.warning("conversation longer than llm.max_cache_tokens=%d: its oldest turn is left out", limit)
    return head + body[users[1] :]


def _stop_token_ids(eos: int, configured: int | list[int] | None) -> frozenset[int]:
    ids = {eos}
    if configured is not None:
        ids.update(configured if isinstance(configured, list) else [configured])
    return frozenset(ids)
