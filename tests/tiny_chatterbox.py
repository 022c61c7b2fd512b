"""Random-weight Chatterbox models saved the way the hub snapshot ``ResembleAI/chatterbox`` is laid out.

Chatterbox's ``from_local`` builds its modules at full size from constants in its code. Inside
``small_chatterbox()`` those constants are smaller, for building and for loading alike: a T3 Llama
of hidden size 64 (14 layers, enough for the multilingual alignment heads in layers 9, 12 and 13),
a 1-block flow encoder and decoder and a 1-layer speech tokenizer; the voice encoder, the speaker
encoder and the HiFT vocoder keep their real size. Outside it (the benchmark) the build is full size.
The text tokenizer is a character vocabulary with chatterbox's special and language tokens; the
built-in voice (conds.pt) is random too.
"""

from __future__ import annotations

import contextlib
import functools
import json
import string
from collections.abc import Iterator
from pathlib import Path

import torch

# A voice prompt as long as the real conds.pt holds: 150 T3 prompt tokens, 6 s of S3Gen prompt.
_PROMPT_T3_TOKENS = 150
_PROMPT_GEN_TOKENS = 150
_SPEAKER_EMBED = 256
_XVECTOR = 192
_MEL_BINS = 80
_LANGUAGES = (
    "ar da de el en es fi fr he hi it ja ko ms nl no pl pt ru sv sw tr zh".split()
)
# Chinese characters spelled in Cangjie codes, in the format of the real Cangjie5_TC.json.
_CANGJIE = ["你\tonf", "好\tvnd", "中\tl", "文\tyk"]
TINY_LLAMA = dict(
    vocab_size=8,
    max_position_embeddings=4096,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=14,
    num_attention_heads=16,  # the alignment heads go up to head 15
    num_key_value_heads=16,
    head_dim=4,
    attn_implementation="sdpa",
    tie_word_embeddings=False,
    hidden_act="silu",
    attention_bias=False,
    attention_dropout=0.0,
    mlp_bias=False,
    model_type="llama",
    rms_norm_eps=1e-05,
    rope_theta=500000.0,
    use_cache=True,
)


@contextlib.contextmanager
def small_chatterbox() -> Iterator[None]:
    """Chatterbox's module constructors at test size, for as long as the block runs."""
    from chatterbox.models.s3gen import s3gen
    from chatterbox.models.t3 import llama_configs
    from chatterbox.models.t3.modules import cond_enc
    from s3tokenizer.model_v2 import S3TokenizerV2

    patch = pytest_free_patch()
    patch.setitem(llama_configs.LLAMA_CONFIGS, "Llama_520M", TINY_LLAMA)
    patch.setattr(
        cond_enc,
        "Perceiver",
        functools.partial(cond_enc.Perceiver, pre_attention_query_size=64, embedding_dim=64, num_attn_heads=4),
    )
    patch.setattr(
        s3gen,
        "UpsampleConformerEncoder",
        _with(s3gen.UpsampleConformerEncoder, num_blocks=1, linear_units=64, attention_heads=2),
    )
    patch.setattr(
        s3gen,
        "ConditionalDecoder",
        _with(s3gen.ConditionalDecoder, channels=[32], n_blocks=1, num_mid_blocks=1, num_heads=2),
    )
    # S3TokenizerV2 takes its size from a default ModelConfig instance bound at definition time;
    # its rotary embedding wants heads of 64.
    tokenizer_config = S3TokenizerV2.__init__.__defaults__[0]
    for name, value in {"n_audio_state": 128, "n_audio_head": 2, "n_audio_layer": 1}.items():
        patch.setattr(tokenizer_config, name, value)
    try:
        yield
    finally:
        patch.undo()


def pytest_free_patch() -> object:
    """pytest's MonkeyPatch, usable outside a test (the benchmark does not import pytest fixtures)."""
    from _pytest.monkeypatch import MonkeyPatch

    return MonkeyPatch()


def _with(constructor: type, **overrides: object) -> object:
    def build(*args: object, **kwargs: object) -> object:
        return constructor(*args, **(kwargs | overrides))

    return build


def build_chatterbox(folder: Path, variant: str = "multilingual", seed: int = 0) -> Path:
    """Random Chatterbox weights for ``variant`` in ``folder``, in the layout its ``from_local`` reads.

    The size is whatever the constructors say: full size, or small inside ``small_chatterbox()``.
    """
    from chatterbox.models.s3gen import S3Gen
    from chatterbox.models.t3 import T3
    from chatterbox.models.t3.modules.t3_config import T3Config
    from chatterbox.models.voice_encoder import VoiceEncoder
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    multilingual = variant == "multilingual"
    hp = T3Config.multilingual() if multilingual else T3Config.english_only()
    t3 = T3(hp)
    s3gen = S3Gen()
    ve = VoiceEncoder()
    t3_state = {k: v.contiguous() for k, v in t3.state_dict().items()}
    if multilingual:
        save_file(t3_state, folder / "t3_mtl23ls_v2.safetensors")
        torch.save(ve.state_dict(), folder / "ve.pt")
        torch.save(s3gen.state_dict(), folder / "s3gen.pt")
        _text_tokenizer(hp.text_tokens_dict_size, _LANGUAGES).save(str(folder / "grapheme_mtl_merged_expanded_v1.json"))
        (folder / "Cangjie5_TC.json").write_text(json.dumps(_CANGJIE), encoding="utf-8")
    else:
        save_file(t3_state, folder / "t3_cfg.safetensors")
        save_file({k: v.contiguous() for k, v in ve.state_dict().items()}, folder / "ve.safetensors")
        s3gen_state = {k: v.contiguous() for k, v in s3gen.state_dict().items() if not k.startswith("tokenizer.")}
        save_file(s3gen_state, folder / "s3gen.safetensors")
        _text_tokenizer(hp.text_tokens_dict_size, ()).save(str(folder / "tokenizer.json"))
    _voice(hp).save(folder / "conds.pt")
    return folder


def _text_tokenizer(vocabulary_size: int, languages: tuple[str, ...] | list[str]) -> object:
    """A character-level ``tokenizers`` vocabulary with chatterbox's special tokens and [xx] language tokens."""
    from chatterbox.models.tokenizers.tokenizer import SPACE, SPECIAL_TOKENS
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers

    specials = [*SPECIAL_TOKENS, *(f"[{language}]" for language in languages)]
    characters = [c for c in string.ascii_lowercase + string.digits + ".,!?'-\"" if c not in specials]
    vocabulary = {token: i for i, token in enumerate([*specials, *characters])}
    assert len(vocabulary) <= vocabulary_size
    tokenizer = Tokenizer(models.WordLevel(vocabulary, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tokenizer.add_special_tokens([*specials, SPACE])
    return tokenizer


def _voice(hp: object) -> object:
    """A random built-in voice: T3 speaker embedding and prompt tokens, S3Gen prompt mel and x-vector."""
    from chatterbox.models.t3.modules.cond_enc import T3Cond
    from chatterbox.mtl_tts import Conditionals

    t3 = T3Cond(
        speaker_emb=torch.randn(1, _SPEAKER_EMBED),
        cond_prompt_speech_tokens=torch.randint(0, hp.start_speech_token, (1, _PROMPT_T3_TOKENS)),
        emotion_adv=0.5 * torch.ones(1, 1, 1),
    )
    gen = {
        "prompt_token": torch.randint(0, hp.start_speech_token, (1, _PROMPT_GEN_TOKENS)),
        "prompt_token_len": torch.tensor([_PROMPT_GEN_TOKENS]),
        "prompt_feat": torch.randn(1, 2 * _PROMPT_GEN_TOKENS, _MEL_BINS),
        "prompt_feat_len": None,
        "embedding": torch.randn(1, _XVECTOR),
    }
    return Conditionals(t3, gen)
