"""What every architecture shares: construction from a GGUF file and the forward contract.

``CausalLM.forward(batch, kv_cache) -> logits [N, vocab]`` runs one step of a ragged batch
(CONTRACTS.md §3). Architectures differ only in ``_load`` (which tensors, which shapes) and
``_layers`` (the graph); both are written against ``Backend`` so the NumPy reference and the
GPU run the same code.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from orcd_toolkit.backends.base import Backend, ForwardBatch, KVCache, RopeParams
from orcd_toolkit.models.hparams import HParams
from orcd_toolkit.models.weights import WeightLoader


class CausalLM:
    """A decoder-only language model bound to one backend."""

    architectures: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self, hparams: HParams, tensors: dict[str, Any], backend: Backend, *, n_ctx: int = 0
    ) -> None:
        self.hparams = hparams
        self.backend = backend
        # the context the model is run with decides e.g. phi3's long/short rope factors
        self.n_ctx = n_ctx or hparams.n_ctx_train
        self.weights = WeightLoader(tensors, backend)
        self._load(self.weights)

    # -- subclass hooks ---------------------------------------------------------------

    def _load(self, w: WeightLoader) -> None:
        raise NotImplementedError

    def _hidden(self, batch: ForwardBatch, kv_cache: KVCache) -> Any:
        """Final hidden states (after the output norm) for the rows in logits_indices."""
        raise NotImplementedError

    # -- shared -----------------------------------------------------------------------

    @property
    def arch(self) -> str:
        return self.hparams.arch

    @property
    def vocab_size(self) -> int:
        return self.hparams.vocab_size

    @property
    def num_layers(self) -> int:
        return self.hparams.n_layer

    def new_kv_cache(self, num_blocks: int, block_size: int) -> KVCache:
        """A KV cache with room for ``num_blocks * block_size`` tokens in total."""
        h = self.hparams
        return self.backend.allocate_kv_cache(
            h.n_layer, num_blocks, block_size, h.n_head_kv, h.head_dim
        )

    def forward(self, batch: ForwardBatch, kv_cache: KVCache) -> Any:
        """Run one step; returns logits [len(batch.logits_indices), vocab] (backend array)."""
        if len(kv_cache) != self.hparams.n_layer:
            raise ValueError(
                f"KV cache has {len(kv_cache)} layers, model has {self.hparams.n_layer}"
            )
        hidden = self._hidden(batch, kv_cache)
        return self.backend.linear(hidden, self.output, getattr(self, "output_b", None))

    def rope_params(self, layer: int, freq_factors: Any = None) -> RopeParams:
        h = self.hparams
        swa = bool(h.swa_layers) and h.swa_layers[layer]
        return RopeParams(
            n_rot=h.n_rot,
            mode=h.rope_mode,
            freq_base=h.rope_freq_base_swa if swa else h.rope_freq_base,
            freq_scale=h.rope_freq_scale,
            ext_factor=h.rope_ext_factor,
            attn_factor=h.rope_attn_factor,
            beta_fast=h.rope_beta_fast,
            beta_slow=h.rope_beta_slow,
            n_ctx_orig=h.n_ctx_orig_yarn,
            freq_factors=freq_factors,
        )

    def _load_output(self, w: WeightLoader) -> None:
        """``output.weight``, or the token embedding when tied (llama.cpp TENSOR_DUPLICATED)."""
        h = self.hparams
        shape = (h.vocab_size, h.n_embd)
        self.output = w.matrix(
            "output.weight" if w.has("output.weight") else "token_embd.weight", shape
        )

    def _attend(
        self,
        il: int,
        q: Any,
        k: Any,
        v: Any,
        batch: ForwardBatch,
        kv_cache: KVCache,
        *,
        sinks: Any = None,
        sliding_window: int = 0,
    ) -> Any:
        """Store this step's K/V for layer ``il`` and attend; q/k/v are [T, H*, D]."""
        layer = kv_cache.layers[il]
        self.backend.write_kv(layer, k, v, batch.slot_mapping)
        out = self.backend.attention(
            q, layer, batch, scale=self.hparams.kq_scale, sinks=sinks, sliding_window=sliding_window
        )
        return out.reshape(out.shape[0], -1)


def logits_rows(batch: ForwardBatch) -> np.ndarray:
    return np.asarray(batch.logits_indices, dtype=np.int64)
