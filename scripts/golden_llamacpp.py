#!/usr/bin/env python3
"""Produce llama.cpp goldens for the model parity tests (tests/models/goldens/*.npz).

Runs in its own venv with the pinned reference stack, never the project venv:

    python3 -m venv /root/.cache/orcd-build/venv-golden
    /root/.cache/orcd-build/venv-golden/bin/pip install llama_cpp_python==0.3.36 gguf==0.19.0
    /root/.cache/orcd-build/venv-golden/bin/python scripts/golden_llamacpp.py \
        --model PATH --name NAME [--name-suffix] [--prompts-file tests/models/golden_prompts.json]

For each prompt it stores: the prompt ids (llama.cpp's tokenizer, BOS as the vocabulary
says), the top-K logits at every prompt position (ids int32, values float32 — float16 is
too coarse above 32, where one step is 0.03) with the exact log-sum-exp of each row (float32),
so top-K log-probs are exact, the
full last row (float32, first prompt only, to keep the files small), and the greedy
continuation of N tokens (argmax of llama.cpp's logits, one token at a time, KV cached).
Settings (threads, context, batch, KV type) are recorded in the file.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

PINNED = {"llama_cpp_python": "0.3.36", "gguf": "0.19.0"}
TOP_K = 32
N_GREEDY = 32


def _check_pins() -> dict[str, str]:
    from importlib.metadata import version

    found = {"llama_cpp_python": version("llama_cpp_python"), "gguf": version("gguf")}
    if found != PINNED:
        sys.exit(f"golden stack must be {PINNED}, found {found}")
    return found


def _logsumexp(rows: np.ndarray) -> np.ndarray:
    r = rows.astype(np.float64)
    m = r.max(axis=-1, keepdims=True)
    return (m[:, 0] + np.log(np.exp(r - m).sum(axis=-1))).astype(np.float32)


def _disable_extra_buffer_types() -> None:
    """Load weights without ggml's extra CPU buffer types (AMX / repacked layouts).

    On this machine's CPU (AMX-capable, in a container) ggml_backend_amx_mul_mat segfaults
    in llama_decode; the plain CPU path is llama.cpp's reference computation anyway.
    ``Llama`` has no argument for ``use_extra_bufts``, so wrap the default-params factory.
    """
    import llama_cpp
    import llama_cpp.llama as llama_mod

    original = llama_cpp.llama_cpp.llama_model_default_params

    def params():  # noqa: ANN202 - ctypes struct
        p = original()
        p.use_extra_bufts = False
        return p

    llama_mod.llama_cpp.llama_model_default_params = params


def _sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _kl(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    p = a.astype(np.float64) - _logsumexp(a)[:, None]
    q = b.astype(np.float64) - _logsumexp(b)[:, None]
    return (np.exp(p) * (p - q)).sum(-1)


def run(model: Path, prompts: list[str], n_ctx: int, n_greedy: int) -> dict[str, np.ndarray]:
    import llama_cpp

    _disable_extra_buffer_types()

    def make(**kw: int) -> llama_cpp.Llama:
        return llama_cpp.Llama(
            model_path=str(model),
            n_ctx=n_ctx,
            n_batch=512,
            n_threads=1,
            logits_all=True,
            verbose=False,
            seed=0,
            **kw,
        )

    # The reference run keeps K/V in f32 (GGML_TYPE_F32 = 0), so the only rounding llama.cpp
    # adds to exact f32 arithmetic is its Q8 quantization of activations inside quantized
    # matmuls. (On F32 weights this run matches the NumPy reference to ~1e-11 KL.)
    llm = make(type_k=0, type_v=0)
    # llama.cpp's default f16 KV cache: its KL to the reference is llama.cpp's own noise
    # floor on this file, which the parity tolerance is measured against.
    noisy = make()
    out: dict[str, np.ndarray] = {}
    for i, text in enumerate(prompts):
        ids = llm.tokenize(text.encode("utf-8"), add_bos=True, special=False)
        llm.reset()
        llm.eval(ids)
        logits = np.array(llm.scores[: len(ids)], dtype=np.float32)  # [n, vocab]
        top = np.argsort(-logits, axis=-1, kind="stable")[:, :TOP_K].astype(np.int32)
        out[f"p{i}_ids"] = np.array(ids, dtype=np.int32)
        out[f"p{i}_top_ids"] = top
        out[f"p{i}_top_logits"] = np.take_along_axis(logits, top, axis=-1)
        out[f"p{i}_lse"] = _logsumexp(logits)
        if i == 0:
            out[f"p{i}_last_row"] = logits[-1].copy()
        noisy.reset()
        noisy.eval(ids)
        noisy_logits = np.array(noisy.scores[: len(ids)], dtype=np.float32)
        out[f"p{i}_self_kl"] = _kl(logits, noisy_logits).astype(np.float32)
        out[f"p{i}_self_top1"] = (logits.argmax(-1) == noisy_logits.argmax(-1)).astype(np.int8)
        out[f"p{i}_self_maxdiff"] = np.abs(logits - noisy_logits).max(-1).astype(np.float32)
        greedy: list[int] = []
        margins: list[float] = []
        row = logits[-1]
        for _ in range(n_greedy):
            top2 = np.sort(row)[-2:]
            greedy.append(int(np.argmax(row)))
            margins.append(float(top2[1] - top2[0]))
            if len(greedy) == n_greedy:
                break
            llm.eval([greedy[-1]])
            row = np.asarray(llm.scores[llm.n_tokens - 1], dtype=np.float32)
        out[f"p{i}_greedy"] = np.array(greedy, dtype=np.int32)
        # llama.cpp's own greedy continuation under its f16 KV cache: how far llama.cpp agrees
        # with itself when only its rounding changes (the bar a bit-inexact implementation
        # can be held to)
        self_greedy: list[int] = []
        row = noisy_logits[-1]
        for _ in range(n_greedy):
            self_greedy.append(int(np.argmax(row)))
            if len(self_greedy) == n_greedy:
                break
            noisy.eval([self_greedy[-1]])
            row = np.asarray(noisy.scores[noisy.n_tokens - 1], dtype=np.float32)
        out[f"p{i}_self_greedy"] = np.array(self_greedy, dtype=np.int32)
        # top-1 minus top-2 logit at each greedy step: where it is below llama.cpp's own
        # noise, any correct implementation may pick the other token
        out[f"p{i}_greedy_margin"] = np.array(margins, dtype=np.float32)
    out["n_prompts"] = np.array(len(prompts))
    out["vocab_size"] = np.array(llm.n_vocab())
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--name", required=True, help="golden name, e.g. qwen2.5-0.5b")
    ap.add_argument(
        "--prompts-file",
        type=Path,
        default=Path(__file__).parent.parent / "tests/models/golden_prompts.json",
    )
    ap.add_argument(
        "--out-dir", type=Path, default=Path(__file__).parent.parent / "tests/models/goldens"
    )
    ap.add_argument("--n-ctx", type=int, default=512)
    ap.add_argument("--n-greedy", type=int, default=N_GREEDY)
    ap.add_argument("--prompt-set", default="default", help="key in the prompts file")
    args = ap.parse_args()
    versions = _check_pins()
    prompts = json.loads(args.prompts_file.read_text())[args.prompt_set]
    t0 = time.time()
    data = run(args.model, prompts, args.n_ctx, args.n_greedy)
    meta = {
        "model_file": args.model.name,
        "model_bytes": args.model.stat().st_size,
        "model_sha256": _sha256(args.model),
        "prompts": prompts,
        "settings": {
            "n_ctx": args.n_ctx,
            "n_batch": 512,
            "n_threads": 1,
            "kv_type": "f32 (reference); f16 (default) for the self_* noise-floor run",
            "use_extra_bufts": False,
            "top_k": TOP_K,
            "logits_all": True,
        },
        "versions": versions,
        "seconds": round(time.time() - t0, 1),
    }
    data["meta_json"] = np.array(json.dumps(meta))
    args.out_dir.mkdir(parents=True, exist_ok=True)
    dest = args.out_dir / f"{args.name}.npz"
    np.savez_compressed(dest, **data)
    print(f"wrote {dest} ({dest.stat().st_size / 1024:.0f} KiB) in {meta['seconds']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
