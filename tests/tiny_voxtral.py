"""A tiny random Voxtral and its tekken.json tokenizer, saved the way a hub snapshot is laid out.

Built offline in a fraction of a second: a 1-layer audio encoder (its 1500 positions must stay, the
real processor cuts audio into 30 s windows of 3000 mel frames), a 2-layer Llama decoder and a
byte-level vocabulary of 256 tokens after 100 special ones (the real Voxtral's ids for the audio
tokens). Loaded back with the same ``from_pretrained`` calls production uses.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import torch

NUM_SPECIAL_TOKENS = 100
BYTE_TOKENS = 256
AUDIO_TOKEN_ID = 24
# Special ranks of mistral-common's v7 tokenizers beyond its built-in list (which ends at 19).
_EXTRA_SPECIAL_TOKENS = {20: "[ARGS]", 21: "[CALL_ID]", 24: "[AUDIO]", 25: "[BEGIN_AUDIO]", 34: "[TRANSCRIBE]"}
_AUDIO_SECTION = {
    "sampling_rate": 16_000,
    "frame_rate": 12.5,
    "chunk_length_s": 30.0,
    "audio_encoding_config": {"num_mel_bins": 128, "hop_length": 160, "window_size": 400},
}
# The pre-tokenizer pattern of Mistral's tekken vocabularies.
_PATTERN = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|"
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}|"
    r" ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def tekken_json() -> dict:
    from mistral_common.tokens.tokenizers.tekken import Tekkenizer

    names = {rank: str(token["token_str"]) for rank, token in enumerate(Tekkenizer.DEPRECATED_SPECIAL_TOKENS)}
    names |= _EXTRA_SPECIAL_TOKENS
    return {
        "config": {
            "pattern": _PATTERN,
            "num_vocab_tokens": BYTE_TOKENS,
            "default_vocab_size": BYTE_TOKENS + NUM_SPECIAL_TOKENS,
            "default_num_special_tokens": NUM_SPECIAL_TOKENS,
            "version": "v7",
        },
        "vocab": [
            {"rank": i, "token_bytes": base64.b64encode(bytes([i])).decode(), "token_str": chr(i)}
            for i in range(BYTE_TOKENS)
        ],
        "special_tokens": [
            {"rank": i, "token_str": names.get(i, f"<SPECIAL_{i}>"), "is_control": True}
            for i in range(NUM_SPECIAL_TOKENS)
        ],
        "audio": _AUDIO_SECTION,
    }


def processor_for(folder: Path) -> Any:
    """A ``VoxtralProcessor`` over the ``tekken.json`` in ``folder``, with Voxtral's Whisper features."""
    from transformers import VoxtralProcessor, WhisperFeatureExtractor
    from transformers.tokenization_mistral_common import MistralCommonBackend

    features = WhisperFeatureExtractor(feature_size=128, sampling_rate=16_000, hop_length=160, chunk_length=30)
    return VoxtralProcessor(features, MistralCommonBackend.from_pretrained(folder))


def build_tiny_voxtral(folder: Path, seed: int = 0) -> Path:
    """Write config.json, model.safetensors, tekken.json and the processor config into ``folder``."""
    from transformers import LlamaConfig, VoxtralConfig, VoxtralEncoderConfig, VoxtralForConditionalGeneration

    folder.mkdir(parents=True, exist_ok=True)
    text = LlamaConfig(  # an object, not a dict: a dict would be merged onto the 3B defaults
        vocab_size=BYTE_TOKENS + NUM_SPECIAL_TOKENS,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=8192,
        rope_theta=1e8,
        bos_token_id=1,
        eos_token_id=2,
    )
    audio = VoxtralEncoderConfig(
        hidden_size=32, intermediate_size=128, num_hidden_layers=1, num_attention_heads=2, num_mel_bins=128
    )
    torch.manual_seed(seed)
    model = VoxtralForConditionalGeneration(VoxtralConfig(audio_config=audio, text_config=text, audio_token_id=24))
    with torch.no_grad():
        # Only printable ASCII can score above zero, so replies are readable text that runs to max_new_tokens.
        printable = [NUM_SPECIAL_TOKENS + byte for byte in range(ord(" "), ord("~") + 1)]
        keep = torch.zeros(text.vocab_size, dtype=torch.bool)
        keep[printable] = True
        model.lm_head.weight[~keep] = 0.0
    model.save_pretrained(folder)
    # config.json must sit beside tekken.json, or the processor picks the wrong tokenizer class.
    (folder / "tekken.json").write_text(json.dumps(tekken_json()))
    processor_for(folder).save_pretrained(folder)
    return folder
