"""``orcd inspect FILE [--json]``: a GGUF file's metadata and tensor table, after validation.

FILE is a path or a model store name. The file is validated first (``orcd_toolkit.gguf.load``),
so a malformed file gives one error line and exit status 1, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

HELP = "show a GGUF file's metadata and tensor table"

# metadata shown in the tokenizer section rather than with the other keys
_TOKENIZER_PREFIX = "tokenizer."
_LONG_STRING = 200


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="a GGUF path or a model store name (orcd models list)")
    p.add_argument("--json", action="store_true", help="one JSON document on stdout")
    p.add_argument(
        "--no-tensors", action="store_true", help="omit the per-tensor table (totals stay)"
    )


def run(args: argparse.Namespace) -> int:
    from orcd_toolkit.gguf import load
    from orcd_toolkit.store import resolve_model

    path = resolve_model(args.file, allow_pull=False)
    f = load(path)
    report = build_report(f)
    if args.no_tensors:
        report.pop("tensors")
    if args.json:
        text = json.dumps(report, indent=2, ensure_ascii=True)
    else:
        # metadata strings keep invalid UTF-8 as surrogate escapes (reader.py); show those
        # bytes as \xNN instead of failing to encode them on a strict UTF-8 stdout
        text = render_text(report).encode("utf-8", "surrogateescape")
        text = text.decode("utf-8", "backslashreplace")
    try:
        print(text)
        sys.stdout.flush()
    except BrokenPipeError:
        # `orcd inspect F | head`: the reader left; not an error. Point stdout at devnull so
        # the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def _json_value(value: Any, kind: Any) -> Any:
    """Scalars as they are; arrays summarized (a 151k vocabulary is not a report)."""
    import numpy as np

    if isinstance(value, str):
        if len(value) > _LONG_STRING:
            return {"type": "STRING", "chars": len(value), "head": value[:80]}
        return value
    if isinstance(value, (list, np.ndarray)):
        items = list(value[:5]) if isinstance(value, list) else value[:5].tolist()
        return {"type": str(kind), "count": len(value), "head": items}
    return value


def build_report(f: Any) -> dict[str, Any]:
    """The inspect report as a JSON-able dict (also used by the notebook/model card)."""
    from orcd_toolkit.gguf import LAYOUTS
    from orcd_toolkit.gguf.checks import special_token_ids

    md, kinds = f.metadata, f.value_kinds
    arch = f.arch
    hparams = {
        k[len(arch) + 1 :]: _json_value(v, kinds[k])
        for k, v in md.items()
        if arch and k.startswith(arch + ".")
    }
    general = {
        k: _json_value(v, kinds[k])
        for k, v in md.items()
        if not k.startswith(_TOKENIZER_PREFIX) and not (arch and k.startswith(arch + "."))
    }
    tokens = md.get("tokenizer.ggml.tokens")
    vocab = len(tokens) if isinstance(tokens, list) else None
    specials = {}
    for name, tid in special_token_ids(f).items():
        piece = tokens[tid] if vocab is not None and 0 <= tid < vocab else None
        specials[name] = {"id": tid, "token": piece}
    tokenizer: dict[str, Any] = {
        "model": md.get("tokenizer.ggml.model"),
        "pre": md.get("tokenizer.ggml.pre"),
        "vocab_size": vocab,
        "merges": len(md["tokenizer.ggml.merges"]) if "tokenizer.ggml.merges" in md else None,
        "special_tokens": specials,
        "chat_template_chars": len(md["tokenizer.chat_template"])
        if isinstance(md.get("tokenizer.chat_template"), str)
        else None,
    }
    for k, v in md.items():
        if (
            k.startswith(_TOKENIZER_PREFIX)
            and k
            not in {
                "tokenizer.ggml.model",
                "tokenizer.ggml.pre",
                "tokenizer.ggml.tokens",
                "tokenizer.ggml.merges",
                "tokenizer.chat_template",
            }
            and not k.endswith("_token_id")
        ):
            tokenizer[k[len(_TOKENIZER_PREFIX) :]] = _json_value(v, kinds[k])

    tensors = []
    totals: dict[str, dict[str, int]] = {}
    for t in f.tensors.values():
        tensors.append(
            {"name": t.name, "type": t.qtype.name, "shape": list(t.shape), "bytes": t.nbytes}
        )
        tot = totals.setdefault(t.qtype.name, {"tensors": 0, "elements": 0, "bytes": 0})
        tot["tensors"] += 1
        tot["elements"] += t.n_elements
        tot["bytes"] += t.nbytes
    order = sorted(totals, key=lambda n: -totals[n]["bytes"])
    return {
        "file": str(f.path) if f.path is not None else None,
        "file_bytes": f.file_size,
        "gguf_version": f.version,
        "alignment": f.alignment,
        "data_offset": f.data_offset,
        "architecture": arch,
        "name": md.get("general.name"),
        "hyperparameters": hparams,
        "general": general,
        "tokenizer": tokenizer,
        "tensor_count": len(tensors),
        "parameters": sum(t["elements"] for t in totals.values()),
        "tensor_bytes": sum(t["bytes"] for t in totals.values()),
        "totals_by_type": {
            n: {**totals[n], "block_elems": LAYOUTS[_type(n)].block_elems} for n in order
        },
        "tensors": tensors,
    }


def _type(name: str) -> Any:
    from orcd_toolkit.gguf import GGMLType

    return GGMLType[name]


def _fmt_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def _fmt(v: Any) -> str:
    if isinstance(v, dict) and "count" in v:
        return f"{v['type']} x {v['count']}: {v['head']}..."
    if isinstance(v, dict) and "chars" in v:
        return f"string of {v['chars']} chars: {v['head']!r}..."
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def render_text(r: dict[str, Any]) -> str:
    """Human-readable form of :func:`build_report`."""
    lines = [
        f"file:          {r['file']} ({_fmt_bytes(r['file_bytes'])}, GGUF v{r['gguf_version']}, "
        f"alignment {r['alignment']}, data at byte {r['data_offset']})",
        f"architecture:  {r['architecture']}",
        f"name:          {r['name']}",
        f"parameters:    {r['parameters']:,} in {r['tensor_count']} tensors "
        f"({_fmt_bytes(r['tensor_bytes'])})",
        "",
        "hyper-parameters:",
    ]
    lines += [f"  {k:<40} {_fmt(v)}" for k, v in r["hyperparameters"].items()] or ["  (none)"]
    lines += ["", "general:"]
    lines += [f"  {k:<40} {_fmt(v)}" for k, v in r["general"].items()]
    tok = r["tokenizer"]
    lines += ["", "tokenizer:"]
    for k, v in tok.items():
        if k == "special_tokens":
            for name, s in v.items():
                lines.append(f"  {name + ' token':<40} {s['id']} {s['token']!r}")
        else:
            lines.append(f"  {k:<40} {_fmt(v)}")
    lines += ["", "totals by type:", f"  {'type':<8} {'tensors':>8} {'elements':>14} {'bytes':>12}"]
    for name, t in r["totals_by_type"].items():
        lines.append(
            f"  {name:<8} {t['tensors']:>8} {t['elements']:>14,} {_fmt_bytes(t['bytes']):>12}"
        )
    if "tensors" in r:
        width = max([len(t["name"]) for t in r["tensors"]] + [4])
        lines += ["", f"tensors ({r['tensor_count']}):"]
        lines.append(f"  {'name':<{width}} {'type':<6} {'shape':<18} {'bytes':>12}")
        for t in r["tensors"]:
            shape = "x".join(str(d) for d in t["shape"])
            lines.append(f"  {t['name']:<{width}} {t['type']:<6} {shape:<18} {t['bytes']:>12,}")
    return "\n".join(lines)
