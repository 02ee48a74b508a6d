"""Hyper-parameters read from GGUF metadata, with llama.cpp's defaults and derived values.

Keys are ``{arch}.<name>`` (gguf-py/gguf/constants.py). Defaults follow
llama-model.cpp ``load_hparams`` and llama-context.cpp (RoPE/YaRN factors), so a file that
llama.cpp accepts gives the same numbers here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from orcd_toolkit.backends.cpu.ops import ROPE_NEOX, ROPE_NORM
from orcd_toolkit.models.errors import InvalidMetadata, MissingMetadata

_MISSING = object()

# llama_model_rope_type(): which pairing each architecture's RoPE uses (none for gpt2).
ROPE_MODE = {"llama": ROPE_NORM, "qwen2": ROPE_NEOX, "phi3": ROPE_NEOX, "gpt-oss": ROPE_NEOX}


class Metadata:
    """Typed access to ``{arch}.*`` keys with errors that name the key."""

    def __init__(self, metadata: dict[str, Any], arch: str) -> None:
        self.raw = metadata
        self.arch = arch

    def _get(self, key: str, default: Any) -> Any:
        if key in self.raw:
            return self.raw[key]
        if default is _MISSING:
            raise MissingMetadata(key)
        return default

    def int(self, name: str, default: Any = _MISSING) -> int:
        key = f"{self.arch}.{name}"
        value = self._get(key, default)
        if isinstance(value, np.ndarray) and value.size:
            # per-layer arrays (head counts): llama.cpp accepts them; all entries must agree here
            if not (value == value.flat[0]).all():
                raise InvalidMetadata(f"{key}: per-layer values {value.tolist()} are not supported")
            value = value.flat[0]
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise InvalidMetadata(f"{key} must be an integer, got {value!r}")
        if value < 0:
            raise InvalidMetadata(f"{key} must be >= 0, got {value}")
        return int(value)

    def float(self, name: str, default: Any = _MISSING) -> float:
        key = f"{self.arch}.{name}"
        value = self._get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise InvalidMetadata(f"{key} must be a number, got {value!r}")
        return float(value)

    def str(self, name: str, default: Any = _MISSING) -> str:
        key = f"{self.arch}.{name}"
        value = self._get(key, default)
        if not isinstance(value, str):
            raise InvalidMetadata(f"{key} must be a string, got {value!r}")
        return value


@dataclass(frozen=True, slots=True)
class HParams:
    """Everything the architectures need, resolved from metadata."""

    arch: str
    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_ff: int
    n_ctx_train: int
    vocab_size: int
    norm_eps: float
    # RoPE (ggml_rope_ext parameters, as llama-context.cpp resolves them)
    n_rot: int = 0
    rope_mode: int = ROPE_NORM
    rope_freq_base: float = 10000.0
    rope_freq_base_swa: float = 10000.0
    rope_freq_scale: float = 1.0
    rope_ext_factor: float = 0.0
    rope_attn_factor: float = 1.0
    rope_beta_fast: float = 32.0
    rope_beta_slow: float = 1.0
    n_ctx_orig_yarn: int = 0
    attention_scale: float = 0.0
    # mixture of experts
    n_expert: int = 0
    n_expert_used: int = 0
    n_ff_exp: int = 0
    # sliding window (gpt-oss): window size and which layers use it
    sliding_window: int = 0
    swa_layers: tuple[bool, ...] = field(default=())

    @property
    def n_embd_q(self) -> int:
        return self.n_head * self.head_dim

    @property
    def n_embd_kv(self) -> int:
        return self.n_head_kv * self.head_dim

    @property
    def kq_scale(self) -> float:
        return self.attention_scale or 1.0 / math.sqrt(self.head_dim)


def _rope_scaling(md: Metadata, n_ctx_train: int) -> dict[str, Any]:
    """llama-model.cpp load_hparams + llama-context.cpp constructor, for the default context."""
    scaling_type = md.str("rope.scaling.type", "linear")
    if scaling_type not in ("none", "linear", "yarn", "longrope"):
        raise InvalidMetadata(f"{md.arch}.rope.scaling.type {scaling_type!r} is not supported")
    factor = md.float("rope.scaling.factor", 0.0)
    freq_scale = 1.0 if factor == 0.0 else 1.0 / factor
    if scaling_type == "none":
        freq_scale = 1.0
    ext_factor = 1.0 if scaling_type == "yarn" else 0.0
    attn_factor = 1.0
    if ext_factor != 0.0:

        def get_mscale(scale: float, mscale: float) -> float:
            return 1.0 if scale <= 1.0 else 0.1 * mscale * math.log(scale) + 1.0

        scale = 1.0 / freq_scale
        log_mul = md.float("rope.scaling.yarn_log_multiplier", 0.0)
        if log_mul != 0.0:
            attn_factor = get_mscale(scale, 1.0) / get_mscale(scale, log_mul)
        else:
            attn_factor = get_mscale(scale, 1.0)
        # ggml's rope_yarn multiplies by (1 + 0.1 ln(1/freq_scale)) again; llama.cpp cancels it.
        attn_factor *= 1.0 / (1.0 + 0.1 * math.log(scale))
    attn_factor *= md.float("rope.scaling.attn_factor", 1.0)
    return {
        "rope_freq_scale": freq_scale,
        "rope_ext_factor": ext_factor,
        "rope_attn_factor": attn_factor,
        "rope_beta_fast": md.float("rope.scaling.yarn_beta_fast", 32.0),
        "rope_beta_slow": md.float("rope.scaling.yarn_beta_slow", 1.0),
        "n_ctx_orig_yarn": md.int("rope.scaling.original_context_length", n_ctx_train),
    }


def read_hparams(metadata: dict[str, Any], arch: str, vocab_size: int) -> HParams:
    """Resolve an architecture's hyper-parameters from GGUF metadata."""
    md = Metadata(metadata, arch)
    n_layer = md.int("block_count")
    n_embd = md.int("embedding_length")
    n_head = md.int("attention.head_count")
    n_head_kv = md.int("attention.head_count_kv", n_head)
    if n_layer == 0 or n_embd == 0 or n_head == 0 or n_head_kv == 0:
        raise InvalidMetadata(f"{arch}: block_count, embedding_length and head counts must be > 0")
    if n_head % n_head_kv:
        raise InvalidMetadata(
            f"{arch}.attention.head_count {n_head} is not a multiple of head_count_kv {n_head_kv}"
        )
    head_dim = md.int("attention.key_length", n_embd // n_head)
    if md.int("attention.value_length", head_dim) != head_dim:
        raise InvalidMetadata(f"{arch}: key_length != value_length is not supported")
    n_ctx_train = md.int("context_length")
    common: dict[str, Any] = dict(
        arch=arch,
        n_layer=n_layer,
        n_embd=n_embd,
        n_head=n_head,
        n_head_kv=n_head_kv,
        head_dim=head_dim,
        n_ctx_train=n_ctx_train,
        vocab_size=vocab_size,
    )
    if arch == "gpt2":
        return HParams(
            n_ff=md.int("feed_forward_length"),
            norm_eps=md.float("attention.layer_norm_epsilon"),
            **common,
        )
    rope = _rope_scaling(md, n_ctx_train)
    n_rot = md.int("rope.dimension_count", head_dim)
    if n_rot > head_dim or n_rot % 2:
        raise InvalidMetadata(
            f"{arch}.rope.dimension_count {n_rot} invalid for head size {head_dim}"
        )
    if arch == "llama" and n_rot != head_dim:
        raise InvalidMetadata(f"invalid n_rot: {n_rot}, expected {head_dim}")
    freq_base = md.float("rope.freq_base", 10000.0)
    extra: dict[str, Any] = {}
    if arch == "gpt-oss":
        n_expert = md.int("expert_count")
        n_expert_used = md.int("expert_used_count")
        if not 0 < n_expert_used <= n_expert:
            raise InvalidMetadata(
                f"gpt-oss: expert_used_count {n_expert_used} not in [1, {n_expert}]"
            )
        window = md.int("attention.sliding_window")
        # load_swa_pattern(ml, 2): layer il uses the window iff il % 2 < 1 (even layers)
        pattern = md.int("attention.sliding_window_pattern", 2)
        swa = tuple(pattern == 0 or (il % pattern) < (pattern - 1) for il in range(n_layer))
        extra = dict(
            n_ff=md.int("expert_feed_forward_length"),
            n_expert=n_expert,
            n_expert_used=n_expert_used,
            n_ff_exp=md.int("expert_feed_forward_length"),
            sliding_window=window,
            swa_layers=swa,
            rope_freq_base_swa=md.float("rope.freq_base_swa", freq_base),
        )
    else:
        # phi3's sliding_window key is ignored by llama.cpp ("Phi SWA is currently disabled")
        extra = dict(n_ff=md.int("feed_forward_length"), rope_freq_base_swa=freq_base)
    return HParams(
        norm_eps=md.float("attention.layer_norm_rms_epsilon"),
        n_rot=n_rot,
        rope_mode=ROPE_MODE[arch],
        rope_freq_base=freq_base,
        attention_scale=md.float("attention.scale", 0.0),
        **rope,
        **common,
        **extra,
    )
