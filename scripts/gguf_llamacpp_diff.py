#!/usr/bin/env python
"""Differential check of our GGUF validation against llama.cpp's own parser.

Runs in the golden venv (llama-cpp-python 0.3.36 wheel; never the project venv):

    /root/.cache/orcd-build/venv-golden/bin/python scripts/gguf_llamacpp_diff.py [--mutants N]

llama.cpp's ``gguf_init_from_buffer`` (libggml-base, called through ctypes with
``no_alloc=true, ctx=NULL``) parses each input; ``orcd_toolkit.gguf.load_bytes`` parses the
same bytes. Inputs: files written by ``orcd_toolkit.gguf.writer`` for every tensor type and
value kind (llama.cpp must accept them and see the same tensors), the hostile corpus of
``scripts/gguf_reader_hostile.py``, and ``--mutants`` mutations of real and synthetic headers.

It prints every disagreement class with a count and an example. "we reject, llama.cpp accepts"
is expected for rules llama.cpp leaves to later stages or does not have (data ranges with
ctx=NULL, UTF-8, bool bytes, resource limits, zero dims); "llama.cpp rejects, we accept" is
what to look at (a check we might be missing).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))


class _InitParams(ctypes.Structure):
    _fields_ = [("no_alloc", ctypes.c_bool), ("ctx", ctypes.c_void_p)]


def _libggml() -> ctypes.CDLL:
    import llama_cpp

    lib = ctypes.CDLL(str(Path(llama_cpp.__file__).parent / "lib" / "libggml-base.so"))
    lib.gguf_init_from_buffer.restype = ctypes.c_void_p
    lib.gguf_init_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_size_t, _InitParams]
    for name, res in [
        ("gguf_get_n_kv", ctypes.c_int64),
        ("gguf_get_n_tensors", ctypes.c_int64),
        ("gguf_get_alignment", ctypes.c_size_t),
        ("gguf_get_data_offset", ctypes.c_size_t),
    ]:
        getattr(lib, name).restype = res
        getattr(lib, name).argtypes = [ctypes.c_void_p]
    lib.gguf_get_tensor_offset.restype = ctypes.c_size_t
    lib.gguf_get_tensor_offset.argtypes = [ctypes.c_void_p, ctypes.c_int64]
    lib.gguf_get_tensor_type.restype = ctypes.c_int
    lib.gguf_get_tensor_type.argtypes = [ctypes.c_void_p, ctypes.c_int64]
    lib.gguf_get_tensor_name.restype = ctypes.c_char_p
    lib.gguf_get_tensor_name.argtypes = [ctypes.c_void_p, ctypes.c_int64]
    lib.gguf_free.argtypes = [ctypes.c_void_p]
    return lib


class LlamaCpp:
    def __init__(self) -> None:
        self.lib = _libggml()
        self.devnull = os.open(os.devnull, os.O_WRONLY)

    def parse(self, blob: bytes) -> dict | None:
        """llama.cpp's view of ``blob`` (None if it rejects); its error log is silenced."""
        buf = ctypes.create_string_buffer(blob, len(blob))
        saved = os.dup(2)
        os.dup2(self.devnull, 2)
        try:
            ctx = self.lib.gguf_init_from_buffer(buf, len(blob), _InitParams(True, None))
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        if not ctx:
            return None
        try:
            n_t = self.lib.gguf_get_n_tensors(ctx)
            return {
                "n_kv": self.lib.gguf_get_n_kv(ctx),
                "alignment": self.lib.gguf_get_alignment(ctx),
                "data_offset": self.lib.gguf_get_data_offset(ctx) if n_t else None,
                "tensors": [
                    (
                        self.lib.gguf_get_tensor_name(ctx, i).decode("utf-8", "replace"),
                        self.lib.gguf_get_tensor_type(ctx, i),
                        self.lib.gguf_get_tensor_offset(ctx, i),
                    )
                    for i in range(n_t)
                ],
            }
        finally:
            self.lib.gguf_free(ctx)


def ours(blob: bytes) -> tuple[dict | None, str]:
    from orcd_toolkit import gguf

    try:
        f = gguf.load_bytes(blob)
    except gguf.GGUFError as exc:
        return None, exc.rule
    expected, packed = 0, True
    for t in f.tensors.values():
        packed = packed and t.offset - f.data_offset == expected
        expected += -(-t.nbytes // f.alignment) * f.alignment
    return {
        "n_kv": len(f.metadata),
        "alignment": f.alignment,
        "data_offset": f.data_offset if f.tensors else None,
        "tensors": [(t.name, int(t.qtype), t.offset - f.data_offset) for t in f.tensors.values()],
        "packed": packed,
    }, "ok"


def _packed(view: dict) -> bool:
    """llama.cpp's extra layout rule: each tensor starts at the padded end of the previous one
    in file order. The GGUF spec only requires aligned offsets; we check non-overlap."""
    return view.get("packed", True)


def written_files(tmp: Path) -> dict[str, bytes]:
    from orcd_toolkit import gguf
    from orcd_toolkit.gguf.reader import GGUFValueType as VT
    from orcd_toolkit.gguf.writer import MetaValue, TensorData, write_gguf

    rng = np.random.default_rng(1)
    out = {}
    kinds = {
        "k.u8": MetaValue(1, VT.UINT8),
        "k.i8": MetaValue(-1, VT.INT8),
        "k.u16": MetaValue(1, VT.UINT16),
        "k.i16": MetaValue(-1, VT.INT16),
        "k.u32": MetaValue(1, VT.UINT32),
        "k.i32": MetaValue(-1, VT.INT32),
        "k.f32": MetaValue(0.5, VT.FLOAT32),
        "k.bool": MetaValue(True, VT.BOOL),
        "k.str": "x",
        "k.u64": MetaValue(2**40, VT.UINT64),
        "k.i64": MetaValue(-(2**40), VT.INT64),
        "k.f64": MetaValue(0.25, VT.FLOAT64),
        "k.astr": ["a", "b"],
        "k.ai32": np.array([1, 2], np.int32),
        "k.af32": np.array([1.0], np.float32),
        "k.abool": np.array([True, False]),
        "k.empty_str": "",
        "k.empty_arr": MetaValue(np.zeros(0, np.int32), VT.ARRAY, VT.INT32),
        "k.empty_sarr": MetaValue([], VT.ARRAY, VT.STRING),
    }
    for align in (None, 64):
        tensors = {
            f"t.{qt.name}": TensorData(qt, (2, 3, 256), gguf.random_blocks(qt, (2, 3, 256), rng))
            for qt in gguf.GGMLType
        }
        p = tmp / f"written-{align}.gguf"
        write_gguf(p, {"general.architecture": "llama", **kinds}, tensors, alignment=align)
        out[f"written (alignment {align or 32}, every type and value kind)"] = p.read_bytes()
    return out


def main() -> int:
    import tempfile

    import fuzz_gguf
    import gguf_reader_hostile

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mutants", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    lc = LlamaCpp()
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        print("## written files (llama.cpp must accept and agree)")
        for name, blob in written_files(Path(tmp)).items():
            a, b = lc.parse(blob), ours(blob)[0]
            same = b is not None and a == {k: v for k, v in b.items() if k != "packed"}
            failures += not same
            print(f"- {name}: llama.cpp {'accepts' if a else 'REJECTS'}; views equal: {same}")
        print("\n## hostile corpus")
        for name, blob in gguf_reader_hostile.cases().items():
            a, (b, rule) = lc.parse(blob), ours(blob)
            print(f"- {name}: llama.cpp {'accepts' if a else 'rejects'}; ours: {rule}")
        print(f"\n## {args.mutants} mutants")
        seeds = [s for s in fuzz_gguf.build_seeds(Path(tmp)) if s["full_size"] is None]
        seeds = [s for s in seeds if len(s["data"]) < 2_000_000]  # keep the run short
        classes: Counter[str] = Counter()
        examples: dict[str, str] = {}
        rules: dict[str, Counter] = defaultdict(Counter)
        for i in range(args.mutants):
            rng = np.random.default_rng([args.seed, i])
            seed = seeds[int(rng.integers(len(seeds)))]
            blob, _ = fuzz_gguf.mutate(seed, rng)
            a, (b, rule) = lc.parse(blob), ours(blob)
            if a is None and b is None:
                key = "both reject"
            elif a is not None and b is not None:
                same = a == {k: v for k, v in b.items() if k != "packed"}
                key = "both accept, same view" if same else "both accept, DIFFERENT view"
            elif a is None:
                key = (
                    "llama.cpp rejects, we accept: unpacked tensor layout (by design)"
                    if not _packed(b)
                    else "llama.cpp rejects, we ACCEPT"
                )
            else:
                key = "we reject, llama.cpp accepts"
                rules[key][rule] += 1
            classes[key] += 1
            examples.setdefault(key, f"iteration {i}, seed {seed['name']}, our rule {rule}")
        for k, v in classes.most_common():
            extra = f" by our rule: {dict(rules[k])}" if k in rules else ""
            print(f"- {k}: {v} (e.g. {examples[k]}){extra}")
        failures += classes["llama.cpp rejects, we ACCEPT"] + classes["both accept, DIFFERENT view"]
    print(f"\nfailures (llama.cpp stricter or views differ): {failures}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
