#!/usr/bin/env python
"""What ``gguf.GGUFReader`` (gguf 0.19) does on hostile files, next to our validation.

Evidence for docs/gguf.md: why ``orcd_toolkit.gguf.load`` validates with its own parse
instead of trusting the reader. Each case runs the reader in a child process with a 2 GiB
address-space limit and a 20 s timeout. Also times both on the real Qwen2.5-0.5B file.
Usage: ``python scripts/gguf_reader_hostile.py [--qwen PATH]``
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
CHILD = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (2 * 2**30, 2 * 2**30))
from gguf import GGUFReader
try:
    r = GGUFReader(sys.argv[1])
    n = sum(int(t.n_bytes) for t in r.tensors)
    print(f"ACCEPTED: {len(r.fields)} fields, {len(r.tensors)} tensors, {n} tensor bytes")
except Exception as e:
    print(f"{type(e).__name__}: {str(e)[:90]}")
"""


def cases() -> dict[str, bytes]:
    from orcd_toolkit.gguf import GGMLType, quantize
    from orcd_toolkit.gguf.rawwriter import RawGGUF, RawKV, RawTensor, gguf_string, kv, kv_array
    from orcd_toolkit.gguf.reader import GGUFValueType as VT

    def base() -> RawGGUF:
        q8 = quantize(np.linspace(-1, 1, 32, dtype=np.float32), GGMLType.Q8_0).tobytes()
        return RawGGUF(
            kvs=[kv("general.architecture", VT.STRING, "llama")],
            tensors=[
                RawTensor(b"a", [4], 0, 0),
                RawTensor(b"b", [32], 8, 32),
            ],
            data=b"\1" * 32 + q8,
        )

    out: dict[str, bytes] = {}
    r = base()
    r.kvs.append(RawKV(b"s", int(VT.STRING), gguf_string(b"abc", length=2**40)))
    out["string length 2^40"] = r.build()
    r = base()
    r.kvs.append(kv_array("arr", int(VT.UINT8), [], count=2**40))
    out["array length 2^40"] = r.build()
    r = base()
    r.kvs.append(kv_array("arr", int(VT.STRING), [], count=2**40))
    out["string-array count 2^40"] = r.build()
    r = base()
    r.tensors[0].ne = [2**42 + 1]
    out["element count 2^42+1 (F32)"] = r.build()
    r = base()
    r.tensors[0].ne = [2**32, 2**32]
    out["element count 2^64 (wraps)"] = r.build()
    r = base()
    r.kvs.append(kv("general.alignment", VT.UINT32, 0))
    out["alignment 0"] = r.build()
    r = base()
    r.kvs.append(kv("general.alignment", VT.UINT32, 3))
    out["alignment 3"] = r.build()
    r = base()
    r.tensors[1].offset = 2**40
    out["tensor offset past end"] = r.build()
    r = base()
    r.tensors[1].offset = 0
    out["overlapping tensors"] = r.build()
    r = base()
    r.tensors[1].offset = 36
    out["misaligned tensor"] = r.build()
    r = base()
    r.tensors[1].ne = [33]
    out["row not multiple of block"] = r.build()
    r = base()
    r.tensors[0].n_dims, r.tensors[0].ne = 5, [4, 1, 1, 1, 1]
    out["n_dims 5"] = r.build()
    r = base()
    r.tensors[1].type_id = 16
    out["IQ2_XXS tensor"] = r.build()
    r = base()
    r.tensors[1].type_id = 1000
    out["unknown type id"] = r.build()
    r = base()
    r.kvs.append(kv("general.architecture", VT.STRING, "x"))
    out["duplicate key"] = r.build()
    r = base()
    r.tensors[1].name = b"a"
    out["duplicate tensor name"] = r.build()
    r = base()
    inner = (int(VT.UINT8)).to_bytes(4, "little") + (1).to_bytes(8, "little") + b"\1"
    r.kvs.append(
        RawKV(b"n", int(VT.ARRAY), (9).to_bytes(4, "little") + (1).to_bytes(8, "little") + inner)
    )
    out["array of arrays"] = r.build()
    r = base()
    r.kvs.append(RawKV(b"odd", 13, b"\0" * 8))
    out["unknown value type"] = r.build()
    r = base()
    r.n_kv = 2**40
    out["kv count 2^40"] = r.build()
    return out


def main() -> int:
    sys.path.insert(0, str(REPO))
    from orcd_toolkit import gguf

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--qwen",
        type=Path,
        default=Path.home() / ".cache/orcd/models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    )
    args = ap.parse_args()
    print("| case | gguf.GGUFReader 0.19 | orcd_toolkit.gguf.load |\n|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name, blob in cases().items():
            p = Path(tmp) / "case.gguf"
            p.write_bytes(blob)
            try:
                res = subprocess.run(
                    [sys.executable, "-c", CHILD, str(p)],
                    capture_output=True,
                    text=True,
                    timeout=20,
                    check=False,
                )
                theirs = (res.stdout.strip() or res.stderr.strip().splitlines()[-1])[:100]
            except subprocess.TimeoutExpired:
                theirs = "TIMEOUT (20 s)"
            try:
                gguf.load(p)
                ours = "accepted"
            except gguf.GGUFError as exc:
                ours = f"{type(exc).__name__} [{exc.rule}]"
            print(f"| {name} | {theirs.replace('|', '/')} | {ours} |")
    if args.qwen.is_file():
        gguf.load(args.qwen)
        t0 = time.perf_counter()
        f = gguf.load(args.qwen)
        _ = f.metadata["tokenizer.ggml.tokens"]
        t_ours = time.perf_counter() - t0
        from gguf import GGUFReader

        t0 = time.perf_counter()
        r = GGUFReader(args.qwen)
        toks = r.fields["tokenizer.ggml.tokens"].contents()
        t_theirs = time.perf_counter() - t0
        print(
            f"\nQwen2.5-0.5B open incl. 151,936-token vocab as list[str] (warm page cache): "
            f"ours {t_ours:.3f} s, GGUFReader + fields[...].contents() {t_theirs:.2f} s "
            f"({len(toks)} tokens)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
