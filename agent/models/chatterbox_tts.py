"""Chatterbox text to speech (Resemble AI), streamed while it is generated.

Chatterbox has no streaming API: ``generate()`` samples every speech token of a phrase with its T3
model, then vocodes them all at once with S3Gen. Here the phrase is decoded by our own loop, the
same steps as ``T3.inference`` (prefill once, then one token at a time against the KV cache, with
classifier-free guidance and, for the multilingual model, its alignment checks that stop
hallucinated tails), and every few tokens the new ones are vocoded:

- S3Gen's flow decoder runs on the new tokens plus ``chatterbox_context_tokens`` before them, so a
  chunk starts in context; ``finalize=False`` leaves the last 3 tokens (its look-ahead) for the next
  chunk. Only the mel frames of tokens not yet heard go to the HiFT vocoder, plus two frames before
  them that overlap the previous chunk's held-back last 40 ms, and the two are cross-faded.
- The first chunk is small (``chatterbox_first_chunk_tokens``, 0.4 s of speech), later ones larger,
  so the first audio comes early and later chunks cost less vocoding per second of speech.

Audio comes out at Chatterbox's native 24 kHz; the session resamples each chunk once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import torch

from agent.config import Config, ConfigError
from agent.models.base import NEUTRAL, SpeechChunk, SpeechStyle
from agent.models.production import cuda_or_cpu, hub_cache_dir, local_folder
from agent.models.speech_style import NEUTRAL_VOICE, VoiceStyle, voice_style

log = logging.getLogger(__name__)

SAMPLE_RATE = 24_000  # S3Gen's output rate
TOKENS_PER_SECOND = 25
MEL_FRAMES_PER_TOKEN = 2
SAMPLES_PER_MEL_FRAME = SAMPLE_RATE // (TOKENS_PER_SECOND * MEL_FRAMES_PER_TOKEN)  # 480
LOOKAHEAD_TOKENS = 3  # S3Gen's flow encoder looks this far ahead; an unfinished chunk leaves them out
CROSSFADE_FRAMES = 2  # 40 ms of audio shared by two chunks and cross-faded
# A phrase gets at most this much speech per character of text (plus one second), so a model that
# never samples its stop token still ends; chatterbox_max_seconds caps it in any case.
MAX_SECONDS_PER_CHAR = 0.2
# Sampling, as chatterbox's own generate(): the multilingual model's repetition penalty is 2.0.
REPETITION_PENALTY = {"multilingual": 2.0, "english": 1.2}
MIN_P = 0.05
TOP_P = 1.0
# The multilingual model's alignment checks read attention heads of these layers (chatterbox's own choice).
_ALIGNMENT_LAYER = 9
# The files each variant loads from a hub snapshot or local folder (chatterbox's from_pretrained lists).
HUB_FILES = {
    "multilingual": [
        "ve.pt",
        "t3_mtl23ls_v2.safetensors",
        "s3gen.pt",
        "grapheme_mtl_merged_expanded_v1.json",
        "conds.pt",
        "Cangjie5_TC.json",
    ],
    "english": ["ve.safetensors", "t3_cfg.safetensors", "s3gen.safetensors", "tokenizer.json", "conds.pt"],
}
_OPTIONAL_FILES = {"Cangjie5_TC.json"}


def model_folder(config: Config) -> Path:
    """The folder holding ``tts.chatterbox_model``: a local folder, or a hub id read from the model cache."""
    tts = config.tts
    source = tts.chatterbox_model
    folder = local_folder(source, "tts.chatterbox_model", "a Chatterbox") or _cached_snapshot(source, config)
    missing = [name for name in HUB_FILES[tts.chatterbox_variant] if not (folder / name).is_file()]
    if missing := [name for name in missing if name not in _OPTIONAL_FILES]:
        raise ConfigError(
            f"tts.chatterbox_model {source!r} lacks {', '.join(missing)} for the "
            f"{tts.chatterbox_variant} model (tts.chatterbox_variant)"
        )
    return folder


def _cached_snapshot(repo_id: str, config: Config) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(
            snapshot_download(
                repo_id,
                cache_dir=str(hub_cache_dir(config)),
                allow_patterns=HUB_FILES[config.tts.chatterbox_variant],
                local_files_only=True,
            )
        )
    except LocalEntryNotFoundError as exc:
        raise ConfigError(
            f"tts.chatterbox_model {repo_id!r} is not in the model cache; fetch it first with "
            "scripts/download_models.py on a machine with internet, or give a local folder"
        ) from exc


def load_model(config: Config) -> Any:
    """``ChatterboxMultilingualTTS`` or ``ChatterboxTTS`` through its own ``from_local``."""
    try:
        from chatterbox.mtl_tts import ChatterboxMultilingualTTS
        from chatterbox.tts import ChatterboxTTS
    except ImportError as exc:
        raise ConfigError(
            f"tts: chatterbox is not installed ({exc}); run scripts/install.sh --chatterbox"
        ) from exc
    from chatterbox.models.tokenizers import tokenizer

    folder = model_folder(config)
    device = cuda_or_cpu(config.tts.chatterbox_device, "tts.chatterbox_device")
    model_class = ChatterboxMultilingualTTS if config.tts.chatterbox_variant == "multilingual" else ChatterboxTTS

    def from_folder(repo_id: str, filename: str, **_: Any) -> str:
        # The multilingual tokenizer asks the hub for Cangjie5_TC.json even when loading from a folder.
        path = folder / filename
        if not path.is_file():
            raise FileNotFoundError(f"{filename} is not in {folder}")
        return str(path)

    with mock.patch.object(tokenizer, "hf_hub_download", from_folder):
        return model_class.from_local(folder, device)


class ChatterboxTextToSpeech:
    """A Chatterbox model shared by every session; each phrase streams in chunks as it is generated."""

    name = "chatterbox"
    sample_rate = SAMPLE_RATE

    def __init__(self, config: Config, model: Any | None = None) -> None:
        tts = config.tts
        if min(tts.chatterbox_first_chunk_tokens, tts.chatterbox_chunk_tokens) < 1:
            raise ConfigError("tts.chatterbox_first_chunk_tokens and chatterbox_chunk_tokens must be at least 1")
        if tts.chatterbox_context_tokens < 1:
            raise ConfigError("tts.chatterbox_context_tokens must be at least 1 (chunks join over it)")
        started = time.perf_counter()
        self._model = load_model(config) if model is None else model
        self.variant = tts.chatterbox_variant
        self.multilingual = self.variant == "multilingual"
        if self.multilingual:
            from chatterbox.mtl_tts import SUPPORTED_LANGUAGES

            self.languages = frozenset(SUPPORTED_LANGUAGES)
        else:
            self.languages = frozenset({"en"})
        if tts.chatterbox_voice:
            voice = Path(tts.chatterbox_voice).expanduser()
            if not voice.is_file():
                raise ConfigError(f"tts.chatterbox_voice {tts.chatterbox_voice!r} is not a file")
            self._model.prepare_conditionals(str(voice), exaggeration=NEUTRAL_VOICE.exaggeration)
        if self._model.conds is None:
            raise ConfigError("tts: this Chatterbox folder has no conds.pt; set tts.chatterbox_voice to a WAV file")
        self._first_chunk = tts.chatterbox_first_chunk_tokens
        self._chunk = tts.chatterbox_chunk_tokens
        self._context = tts.chatterbox_context_tokens
        self._cfm_steps = tts.chatterbox_cfm_steps
        self._max_tokens = max(1, int(tts.chatterbox_max_seconds * TOKENS_PER_SECOND))
        self._watermark = tts.chatterbox_watermark
        self._language = config.language
        # One model step at a time: sessions' phrases interleave token by token, never inside one.
        self._lock = threading.Lock()
        log.info(
            "chatterbox %s loaded on %s in %.2fs", self.variant, self._model.device, time.perf_counter() - started
        )

    @property
    def device(self) -> str:
        return str(self._model.device)

    def synthesize(
        self,
        text: str,
        language: str,
        style: SpeechStyle = NEUTRAL,
        *,
        cancel: threading.Event | None = None,
        max_tokens: int | None = None,
    ) -> Iterator[SpeechChunk]:
        """Yield the phrase's audio in chunks as its speech tokens are sampled; stop between two tokens on ``cancel``.

        ``style`` sets Chatterbox's exaggeration, cfg_weight and temperature (agent/models/speech_style.py).
        """
        if language not in self.languages:
            raise ValueError(f"chatterbox {self.variant} does not speak {language!r}")
        voice = voice_style(style)
        limit = min(self._max_tokens, int((1 + len(text) * MAX_SECONDS_PER_CHAR) * TOKENS_PER_SECOND))
        if max_tokens is not None:
            limit = min(limit, max_tokens)
        vocoder = _StreamingVocoder(self, self._model.conds.gen)
        size = self._first_chunk
        for token in self.speech_tokens(text, language, voice, limit, cancel):
            vocoder.add(token)
            if vocoder.pending() >= size + LOOKAHEAD_TOKENS:
                audio = vocoder.vocode(final=False)
                size = self._chunk
                if audio.size:
                    yield SpeechChunk(audio, SAMPLE_RATE)
        if cancel is not None and cancel.is_set():
            return
        audio = vocoder.vocode(final=True)
        if audio.size:
            yield SpeechChunk(audio, SAMPLE_RATE)

    def speech_tokens(
        self, text: str, language: str, voice: VoiceStyle, limit: int, cancel: threading.Event | None = None
    ) -> Iterator[int]:
        """The phrase's speech tokens one at a time, as ``T3.inference`` samples them (its stop token not included)."""
        from transformers.generation.logits_process import (
            MinPLogitsWarper,
            RepetitionPenaltyLogitsProcessor,
            TopPLogitsWarper,
        )

        t3 = self._model.t3
        hp = t3.hp
        device = t3.device
        repetition = RepetitionPenaltyLogitsProcessor(penalty=REPETITION_PENALTY[self.variant])
        min_p, top_p = MinPLogitsWarper(min_p=MIN_P), TopPLogitsWarper(top_p=TOP_P)
        cfg_weight = voice.cfg_weight
        with self._lock, torch.inference_mode():
            text_tokens = self._text_tokens(text, language).to(device)
            embeds, len_cond = t3.prepare_input_embeds(
                t3_cond=self._conditioning(voice.exaggeration),
                text_tokens=text_tokens,
                speech_tokens=hp.start_speech_token * torch.ones_like(text_tokens[:, :1]),
                cfg_weight=cfg_weight,
            )
            bos = torch.tensor([[hp.start_speech_token]], dtype=torch.long, device=device)
            bos_embed = t3.speech_emb(bos) + t3.speech_pos_emb.get_fixed_embedding(0)
            inputs = torch.cat([embeds, torch.cat([bos_embed, bos_embed])], dim=1)
            analyzer, hooks = self._alignment_analyzer(len_cond, text_tokens.size(-1))
        generated = bos
        cache = None
        try:
            for step in range(limit):
                if cancel is not None and cancel.is_set():
                    return
                with self._lock, torch.inference_mode():
                    out = t3.tfmr(
                        inputs_embeds=inputs,
                        past_key_values=cache,
                        use_cache=True,
                        output_attentions=analyzer is not None,
                    )
                    cache = out.past_key_values
                    logits = t3.speech_head(out.last_hidden_state[:, -1, :])
                    cond, uncond = logits[0:1], logits[1:2]
                    logits = cond + cfg_weight * (cond - uncond)
                    if analyzer is not None:
                        logits = analyzer.step(logits, next_token=int(generated[0, -1]))
                    logits = repetition(generated, logits)
                    logits = top_p(generated, min_p(generated, logits / voice.temperature))
                    token = torch.multinomial(torch.softmax(logits, dim=-1), num_samples=1)
                    if int(token) == hp.stop_speech_token:
                        return
                    generated = torch.cat([generated, token], dim=1)
                    embed = t3.speech_emb(token) + t3.speech_pos_emb.get_fixed_embedding(step + 1)
                    inputs = torch.cat([embed, embed])
                yield int(token)
        finally:
            for hook in hooks:
                hook.remove()

    def warm_up(self) -> None:
        language = self._language if self._language in self.languages else "en"
        for _ in self.synthesize("Hello.", language, max_tokens=self._first_chunk + LOOKAHEAD_TOKENS + 1):
            pass

    # ---- pieces ---------------------------------------------------------------------------------

    def _text_tokens(self, text: str, language: str) -> torch.Tensor:
        """Both CFG rows of the phrase's text tokens, between T3's start and stop tokens."""
        from chatterbox.mtl_tts import punc_norm

        hp = self._model.t3.hp
        normalized = punc_norm(text)
        if self.multilingual:
            tokens = self._model.tokenizer.text_to_tokens(normalized, language_id=language)
        else:
            tokens = self._model.tokenizer.text_to_tokens(normalized)
        tokens = torch.cat([tokens, tokens], dim=0)
        tokens = torch.nn.functional.pad(tokens, (1, 0), value=hp.start_text_token)
        return torch.nn.functional.pad(tokens, (0, 1), value=hp.stop_text_token)

    def _conditioning(self, exaggeration: float) -> Any:
        """The voice's T3 conditioning with this phrase's exaggeration (a new object: the shared one stays)."""
        from chatterbox.models.t3.modules.cond_enc import T3Cond

        voice = self._model.conds.t3
        return T3Cond(
            speaker_emb=voice.speaker_emb,
            cond_prompt_speech_tokens=voice.cond_prompt_speech_tokens,
            emotion_adv=exaggeration * torch.ones(1, 1, 1),
        ).to(device=self._model.t3.device)

    def _alignment_analyzer(self, len_cond: int, text_length: int) -> tuple[Any, list[Any]]:
        """The multilingual model's alignment checks for one phrase, and the hooks to remove after it."""
        if not self.multilingual:
            return None, []
        from chatterbox.models.t3.inference.alignment_stream_analyzer import (
            LLAMA_ALIGNED_HEADS,
            AlignmentStreamAnalyzer,
        )

        tfmr = self._model.t3.tfmr
        attentions = [tfmr.layers[layer].self_attn for layer, _ in LLAMA_ALIGNED_HEADS]
        before = [set(module._forward_hooks) for module in attentions]
        analyzer = AlignmentStreamAnalyzer(
            tfmr,
            None,
            text_tokens_slice=(len_cond, len_cond + text_length),
            alignment_layer_idx=_ALIGNMENT_LAYER,
            eos_idx=self._model.t3.hp.stop_speech_token,
        )
        hooks = [
            _Hook(module, key)
            for module, known in zip(attentions, before, strict=True)
            for key in set(module._forward_hooks) - known
        ]
        return analyzer, hooks

    def _vocode(self, tokens: list[int], ref: dict, final: bool, skip_frames: int) -> np.ndarray:
        """Mel frames of ``tokens`` from ``skip_frames`` on, as 24 kHz audio."""
        s3gen = self._model.s3gen
        with self._lock, torch.inference_mode():
            speech = torch.tensor([tokens], dtype=torch.long, device=s3gen.device)
            # finalize=False is broken in chatterbox 0.1.7 (its mask keeps the look-ahead frames it cuts),
            # so the flow always finalizes and an unfinished chunk drops its look-ahead tokens' frames here.
            mels = s3gen.flow_inference(speech, ref_dict=ref, n_cfm_timesteps=self._cfm_steps, finalize=True)
            end = mels.size(2) if final else mels.size(2) - MEL_FRAMES_PER_TOKEN * LOOKAHEAD_TOKENS
            wav, _ = s3gen.hift_inference(mels[:, :, skip_frames:end].to(dtype=s3gen.dtype), None)
            return wav[0].float().cpu().numpy()

    def _finish(self, audio: np.ndarray, first: bool) -> np.ndarray:
        """What every emitted chunk gets: the fade-in of the phrase's start, and the watermark."""
        if first:
            fade = self._model.s3gen.trim_fade.cpu().numpy()
            n = min(len(fade), len(audio))
            audio[:n] *= fade[:n]
        if self._watermark and audio.size:
            audio = self._model.watermarker.apply_watermark(audio, sample_rate=SAMPLE_RATE)
        return np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0)


class _Hook:
    """A forward hook registered by code that kept no handle for it."""

    def __init__(self, module: torch.nn.Module, key: int) -> None:
        self._module, self._key = module, key

    def remove(self) -> None:
        self._module._forward_hooks.pop(self._key, None)


class _StreamingVocoder:
    """One phrase's speech tokens turned into audio a chunk at a time, each chunk joined to the last."""

    def __init__(self, tts: ChatterboxTextToSpeech, ref: dict) -> None:
        self._tts = tts
        self._ref = ref
        self._tokens: list[int] = []
        self._done = 0  # tokens whose audio has gone out (but for the held-back tail)
        self._tail: np.ndarray | None = None  # last CROSSFADE_FRAMES of audio, to fade into the next chunk

    def add(self, token: int) -> None:
        from chatterbox.models.s3tokenizer import SPEECH_VOCAB_SIZE

        if token < SPEECH_VOCAB_SIZE:  # T3's special tokens have no sound
            self._tokens.append(token)

    def pending(self) -> int:
        return len(self._tokens) - self._done

    def vocode(self, final: bool) -> np.ndarray:
        """Audio of the tokens not heard yet; an unfinished phrase keeps its last 3 tokens and 40 ms back."""
        end = len(self._tokens) if final else len(self._tokens) - LOOKAHEAD_TOKENS
        if end <= self._done:
            return self._flush() if final else np.zeros(0, dtype=np.float32)
        start = max(0, self._done - self._tts._context)
        overlap = CROSSFADE_FRAMES if self._tail is not None else 0
        skip = MEL_FRAMES_PER_TOKEN * (self._done - start) - overlap
        audio = self._tts._vocode(self._tokens[start:], self._ref, final, skip)
        first = self._tail is None and self._done == 0
        if self._tail is not None:
            n = min(len(self._tail), len(audio))
            fade_in = np.linspace(0.0, 1.0, n, dtype=np.float32)
            audio[:n] = self._tail[:n] * (1.0 - fade_in) + audio[:n] * fade_in
        self._done = end
        hold = 0 if final else min(CROSSFADE_FRAMES * SAMPLES_PER_MEL_FRAME, len(audio))
        self._tail = audio[len(audio) - hold :].copy() if hold else None
        return self._tts._finish(audio[: len(audio) - hold].copy(), first)

    def _flush(self) -> np.ndarray:
        tail, self._tail = self._tail, None
        return self._tts._finish(tail, False) if tail is not None else np.zeros(0, dtype=np.float32)
