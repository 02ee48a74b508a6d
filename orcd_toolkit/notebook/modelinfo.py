"""The facts a model card shows, gathered from the core objects (no widget code here).

Three sources, as much as each can tell:

- a GGUF file (``orcd inspect``'s report, ``orcd_toolkit.commands.inspect.build_report``):
  architecture, hyper-parameters, tokenizer, tensor types; "not loaded";
- a :class:`~orcd_toolkit.notebook.sessions.LocalSession`: all of the file's facts plus the
  runtime's ``ModelInfo`` (residency, context) and the engine's KV cache;
- a :class:`~orcd_toolkit.notebook.sessions.RemoteSession`: what the server's ``/health``
  reports (no tensor table: the server does not expose one).

"Memory by category" counts each tensor's bytes as stored in the GGUF file, which is what
stays resident in VRAM on the GPU backend (weights are kept quantized, DESIGN.md §1); the
NumPy reference backend instead holds dequantized f32 copies in host RAM, which the card
says instead of pretending to show VRAM.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def tensor_category(name: str) -> str:
    """The card's category of a GGUF tensor name (llama.cpp names, src/llama-arch.cpp)."""
    if name.startswith(("token_embd", "position_embd")):
        return "embeddings"
    if "_norm." in name or name.endswith("_norm"):
        return "norms"
    if name.startswith("output."):
        return "output head"
    if "_exps" in name or "ffn_gate_inp" in name:
        return "experts (MoE)"
    if ".attn_" in name:
        return "attention"
    if ".ffn_" in name:
        return "feed-forward"
    return "other"


def bytes_by_category(tensors: Mapping[str, Any]) -> dict[str, int]:
    """Stored bytes per category, largest first."""
    out: dict[str, int] = {}
    for t in tensors.values():
        cat = tensor_category(t.name)
        out[cat] = out.get(cat, 0) + int(t.nbytes)
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def file_facts(source: Any) -> dict[str, Any]:
    """Facts from a GGUF file alone (a path, a registry name, or a loaded ``GGUFFile``)."""
    from orcd_toolkit import gguf
    from orcd_toolkit.commands.inspect import build_report

    if isinstance(source, gguf.GGUFFile):
        gf = source
    else:
        from orcd_toolkit.store import resolve_model

        gf = gguf.load(resolve_model(str(source), allow_pull=False))
    report = build_report(gf)
    return {
        "source": "file",
        "name": report["name"] or Path(str(report["file"])).stem,
        "file": report["file"],
        "file_bytes": report["file_bytes"],
        "architecture": report["architecture"],
        "parameters": report["parameters"],
        "hyperparameters": report["hyperparameters"],
        "tokenizer": {k: v for k, v in report["tokenizer"].items() if k != "special_tokens"}
        | {"special_tokens": {k: v["id"] for k, v in report["tokenizer"]["special_tokens"].items()}},
        "tensor_types": report["totals_by_type"],
        "memory_by_category": bytes_by_category(gf.tensors),
        "resident": "not loaded",
        "residency_note": "file only: not loaded in this notebook",
        "kv_cache_bytes": None,
        "context_length": None,
    }


def local_facts(session: Any) -> dict[str, Any]:
    """A loaded in-process model: file facts + runtime residency + KV cache."""
    model = session.model
    info = session.info
    facts = file_facts(model.gguf_file)
    kv = session.runtime.engine.kv_cache
    kv_bytes = sum(int(layer.k.nbytes) + int(layer.v.nbytes) for layer in kv.layers)
    facts["memory_by_category"]["KV cache"] = kv_bytes
    hp = dataclasses.asdict(model.hparams)
    facts.update(
        source="local",
        name=info.name,
        resident=info.resident,
        backend=getattr(model.backend, "name", type(model.backend).__name__),
        quant_kind=info.quant_kind,
        context_length=info.context_length,
        kv_cache_bytes=kv_bytes,
        kv_blocks=(kv.num_blocks, kv.block_size),
        vram_bytes_used=info.vram_bytes_used,
        model_hparams={k: v for k, v in hp.items() if v not in (0, (), None)},
        load_seconds=session.load_seconds,
    )
    facts["tokenizer"] = {**facts["tokenizer"], **session.tokenizer.describe()}
    if info.resident == "gpu":
        facts["residency_note"] = (
            f"GPU: weights kept quantized in VRAM, KV cache f16; {fmt_bytes(info.vram_bytes_used)}"
            " of VRAM in use"
        )
    else:
        facts["residency_note"] = (
            "CPU (NumPy reference backend): no VRAM used; weights dequantized to f32 in host "
            "RAM, KV cache f32. The categories show the GGUF bytes the GPU backend would keep "
            "in VRAM."
        )
    return facts


def remote_facts(session: Any) -> dict[str, Any]:
    """A server's model as ``/health`` reports it (refreshed now)."""
    h = session.fetch_health()
    vram = h.get("vram_bytes_used") or 0
    resident = h.get("resident") or h.get("status")
    return {
        "source": "remote",
        "url": session.url,
        "name": h.get("model"),
        "status": h.get("status"),
        "architecture": h.get("arch"),
        "quant_kind": h.get("quant_kind"),
        "context_length": h.get("context_length"),
        "tokenizer": {"kind": h.get("tokenizer_kind"), "vocab_size": h.get("vocab_size")},
        "resident": resident,
        "vram_bytes_used": vram,
        "kv_blocks_used": (h.get("kv_blocks_used"), h.get("kv_blocks_total")),
        "hyperparameters": {},
        "tensor_types": {},
        "memory_by_category": {"VRAM in use (server)": vram} if vram else {},
        "residency_note": (
            f"server at {session.url}: resident={resident}, {fmt_bytes(vram)} of VRAM in use; "
            "the server does not expose its tensor table (pass the GGUF path to ModelCard "
            "to see it)"
        ),
    }
