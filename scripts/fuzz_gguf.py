#!/usr/bin/env python
"""Mutation fuzzing of the GGUF validation pass on real headers.

Seeds: llama.cpp's vocab GGUFs (../shared/testdata/vocab: the whole file is header), the
headers of the real model files (Qwen2.5-Coder-0.5B, SmolLM2; mutated headers are written to
a sparse file of the original size so tensor ranges stay meaningful), and a synthetic file
with every supported tensor type and metadata value kind.

Each input is a seed with 1-8 mutations (bit flips, interesting u32/u64 values written over
counts/lengths/types/offsets, byte runs, insertions, deletions, truncation), biased towards the
header. Each input goes through ``orcd_toolkit.gguf.load`` (or ``load_bytes``); a file that
validates is then exercised (every tensor's ``raw()`` view, a dequantized row of up to 8
tensors, ``check_vocab``, ``check_model_metadata``). Outcomes:

- ok / typed (a ``GGUFError``, counted per rule) — both are fine;
- untyped: any other exception (the input and traceback are saved);
- hang: one input used more than ``--time-limit`` seconds of CPU (SIGPROF in the worker: CPU
  time, not wall time, so a busy 2-core machine does not produce false hangs), plus a
  supervisor watchdog (wall clock) for code that blocks or does not return to Python;
- crash: the worker process died (segfault, OOM kill); the supervisor restarts it.

Inputs are reproducible: iteration ``i`` uses ``numpy.random.default_rng([seed, i])``
(``--replay i`` re-runs one). The worker runs under ``RLIMIT_AS`` so an allocation sized by a
hostile count fails loudly (MemoryError = untyped) instead of swapping.

Usage: ``nice -n 10 python scripts/fuzz_gguf.py --minutes 35 --out /tmp/orcd-fuzz``
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import struct
import subprocess
import sys
import time
import traceback
from collections import Counter
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
VOCAB_DIR = REPO.parent / "shared" / "testdata" / "vocab"
INTERESTING_U32 = [
    0,
    1,
    2,
    3,
    4,
    5,
    7,
    8,
    9,
    12,
    13,
    16,
    31,
    32,
    33,
    64,
    255,
    256,
    2**16,
    2**31 - 1,
    2**31,
    2**32 - 1,
]
INTERESTING_U64 = INTERESTING_U32 + [
    2**32,
    2**40,
    2**42 + 1,
    2**48,
    2**62,
    2**63 - 1,
    2**63,
    2**64 - 32,
    2**64 - 1,
]


class InputTimeout(Exception):
    """Raised by SIGPROF when one input uses more CPU time than the per-input limit."""


def _on_alarm(signum: int, frame: object) -> None:
    raise InputTimeout()


# --- seeds ------------------------------------------------------------------------------


def build_seeds(work: Path) -> list[dict]:
    """Seeds as dicts: name, data (bytes of the header/whole file), full_size (sparse files)."""
    from orcd_toolkit import gguf

    seeds: list[dict] = []
    for p in sorted(VOCAB_DIR.glob("*.gguf")):
        seeds.append({"name": p.name, "data": p.read_bytes(), "full_size": None, "weight": 1.0})
    store = Path(os.environ.get("ORCD_HOME", Path.home() / ".cache" / "orcd")) / "models"
    for fname in ("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf", "smollm2-135m-instruct-q4_1.gguf"):
        p = store / fname
        if p.is_file():
            f = gguf.load(p)
            with open(p, "rb") as fh:
                head = fh.read(f.data_offset)
            seeds.append(
                {"name": fname + " (header)", "data": head, "full_size": f.file_size, "weight": 1.0}
            )
            f.close()
    seeds.append(
        {"name": "synthetic-all-types", "data": _synthetic(work), "full_size": None, "weight": 2.0}
    )
    return seeds


def _synthetic(work: Path) -> bytes:
    from orcd_toolkit import gguf
    from orcd_toolkit.gguf.reader import GGUFValueType as VT
    from orcd_toolkit.gguf.writer import MetaValue, TensorData, write_gguf

    rng = np.random.default_rng(0)
    md = {
        "general.architecture": "llama",
        "llama.block_count": 2,
        "llama.context_length": 128,
        "llama.embedding_length": 64,
        "llama.attention.head_count": MetaValue(4, VT.UINT32),
        "llama.rope.freq_base": 10000.0,
        "k.u8": MetaValue(1, VT.UINT8),
        "k.i8": MetaValue(-1, VT.INT8),
        "k.u16": MetaValue(2, VT.UINT16),
        "k.i16": MetaValue(-2, VT.INT16),
        "k.i32": MetaValue(-3, VT.INT32),
        "k.u64": MetaValue(2**40, VT.UINT64),
        "k.i64": MetaValue(-(2**40), VT.INT64),
        "k.f64": MetaValue(0.5, VT.FLOAT64),
        "k.bool": True,
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.tokens": [f"tok{i}" for i in range(40)],
        "tokenizer.ggml.scores": np.linspace(0, 1, 40, dtype=np.float32),
        "tokenizer.ggml.token_type": np.ones(40, dtype=np.int32),
        "tokenizer.ggml.bos_token_id": 1,
        "k.bools": np.array([True, False]),
    }
    tensors = {}
    for qt in gguf.GGMLType:
        shape = (2, 256)
        tensors[f"t.{qt.name}"] = TensorData(qt, shape, gguf.random_blocks(qt, shape, rng))
    p = work / "synthetic.gguf"
    write_gguf(p, md, tensors)
    return p.read_bytes()


# --- mutation ---------------------------------------------------------------------------


def _header_end_guess(data: bytes) -> int:
    return len(data)


def mutate(seed: dict, rng: np.random.Generator) -> tuple[bytes, int | None]:
    """A mutated copy of the seed and the file size to give it (sparse) or None."""
    buf = bytearray(seed["data"])
    n_mut = int(rng.integers(1, 9))
    # bias towards the first bytes: header, counts, first keys, and tensor infos at the end
    for _ in range(n_mut):
        if not buf:
            break
        r = rng.random()
        pos = _pick_offset(len(buf), rng)
        if r < 0.25:  # bit flip
            buf[pos] ^= 1 << int(rng.integers(0, 8))
        elif r < 0.45:  # interesting u64
            v = INTERESTING_U64[int(rng.integers(len(INTERESTING_U64)))]
            if rng.random() < 0.3:
                v = (v + int(rng.integers(-2, 3))) % 2**64
            buf[pos : pos + 8] = struct.pack("<Q", v)
        elif r < 0.6:  # interesting u32
            v = INTERESTING_U32[int(rng.integers(len(INTERESTING_U32)))]
            buf[pos : pos + 4] = struct.pack("<I", v)
        elif r < 0.7:  # random byte run
            n = int(rng.integers(1, 16))
            buf[pos : pos + n] = rng.integers(0, 256, size=n, dtype=np.uint8).tobytes()
        elif r < 0.78:  # delete
            n = int(rng.integers(1, 64))
            del buf[pos : pos + n]
        elif r < 0.86:  # insert
            n = int(rng.integers(1, 64))
            buf[pos:pos] = rng.integers(0, 256, size=n, dtype=np.uint8).tobytes()
        elif r < 0.92:  # duplicate a chunk (duplicate keys / tensor infos)
            n = int(rng.integers(8, 256))
            src = _pick_offset(len(buf), rng)
            buf[pos:pos] = buf[src : src + n]
        else:  # truncate
            del buf[int(rng.integers(0, len(buf) + 1)) :]
    full = seed["full_size"]
    if full is not None and rng.random() < 0.1:
        full = int(rng.integers(len(buf), full + 1))
    return bytes(buf), full


def _pick_offset(n: int, rng: np.random.Generator) -> int:
    r = rng.random()
    if r < 0.4:
        return int(rng.integers(0, min(n, 512)))
    if r < 0.55:
        return int(rng.integers(max(0, n - 40_000), n))
    return int(rng.integers(0, n))


# --- one input --------------------------------------------------------------------------


def exercise(data: bytes, full_size: int | None, work: Path) -> str:
    """Run one input; returns 'ok' or 'typed:<rule>'; anything else raises."""
    from orcd_toolkit import gguf

    try:
        if full_size is not None:
            p = work / "input.gguf"
            with open(p, "wb") as fh:
                fh.write(data)
                fh.truncate(max(full_size, len(data)))
            f = gguf.load(p)
        else:
            f = gguf.load_bytes(data)
        for i, t in enumerate(f.tensors.values()):
            v = t.raw()
            if v.nbytes != t.nbytes:
                raise AssertionError(
                    f"raw view of {t.name} has {v.nbytes} bytes, info says {t.nbytes}"
                )
            if i < 8:
                row = v.reshape(-1, t.row_bytes)[:1]
                out = gguf.dequantize(row, t.qtype, (1, t.ne[0]))
                if out.shape != (1, t.ne[0]) or out.dtype != np.float32:
                    raise AssertionError("dequantize returned the wrong shape/dtype")
        try:
            gguf.check_vocab(f)
        except gguf.GGUFModelError:
            pass
        try:
            gguf.check_model_metadata(
                f, {"{arch}.block_count": int, "{arch}.rope.freq_base": float}
            )
        except gguf.GGUFModelError:
            pass
        _ = f.arch, len(f.metadata)
        f.close()
        return "ok"
    except gguf.GGUFError as exc:
        if not str(exc) or "\n" in str(exc):
            raise AssertionError(f"GGUFError message must be one non-empty line: {exc!r}") from exc
        return f"typed:{exc.rule}"


# --- worker -----------------------------------------------------------------------------


def worker(args: argparse.Namespace) -> int:
    out = Path(args.out)
    work = out / f"work-{os.getpid()}"
    work.mkdir(parents=True, exist_ok=True)
    limit = int(args.mem_limit_gib * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    seeds = build_seeds(work)
    weights = np.array([s["weight"] for s in seeds])
    weights /= weights.sum()
    signal.signal(signal.SIGPROF, _on_alarm)
    progress = os.open(out / "current", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    counts: Counter[str] = Counter()
    deadline = args.deadline
    i = args.start
    last_report = time.time()
    slowest = 0.0
    slowest_cpu = 0.0
    while time.time() < deadline and (args.count is None or i < args.start + args.count):
        os.pwrite(progress, f"{i:>20}\n".encode(), 0)
        rng = np.random.default_rng([args.seed, i])
        seed = seeds[int(rng.choice(len(seeds), p=weights))]
        data, full = mutate(seed, rng)
        t0 = time.perf_counter()
        c0 = time.process_time()
        signal.setitimer(signal.ITIMER_PROF, args.time_limit)
        try:
            outcome = exercise(data, full, work)
            signal.setitimer(signal.ITIMER_PROF, 0)
        except InputTimeout:
            outcome = "hang"
            _save(out, i, seed["name"], data, "timeout", "")
        except BaseException as exc:  # noqa: BLE001 — the fuzzer records every untyped escape
            signal.setitimer(signal.ITIMER_PROF, 0)
            if isinstance(exc, KeyboardInterrupt):
                raise
            outcome = "untyped"
            _save(out, i, seed["name"], data, type(exc).__name__, traceback.format_exc())
        dt = time.perf_counter() - t0
        slowest = max(slowest, dt)
        slowest_cpu = max(slowest_cpu, time.process_time() - c0)
        counts[outcome] += 1
        i += 1
        if time.time() - last_report > 10 or time.time() >= deadline:
            _report(out, i, counts, slowest, slowest_cpu)
            counts.clear()
            last_report = time.time()
    _report(out, i, counts, slowest, slowest_cpu)
    return 0


def _report(out: Path, i: int, counts: Counter, slowest: float, slowest_cpu: float) -> None:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    line = {
        "pid": os.getpid(),
        "next": i,
        "counts": dict(counts),
        "slowest_s": round(slowest, 4),
        "slowest_cpu_s": round(slowest_cpu, 4),
        "maxrss_bytes": rss,
        "t": time.time(),
    }
    with open(out / "progress.jsonl", "a") as fh:
        fh.write(json.dumps(line) + "\n")


def _save(out: Path, i: int, seed: str, data: bytes, kind: str, tb: str) -> None:
    d = out / "findings"
    d.mkdir(exist_ok=True)
    (d / f"{i}-{kind}.gguf").write_bytes(data[: 2**20])
    (d / f"{i}-{kind}.txt").write_text(f"iteration {i} seed {seed}\n{tb}")


# --- supervisor ---------------------------------------------------------------------------


def supervise(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("progress.jsonl", "current", "summary.json"):
        (out / stale).unlink(missing_ok=True)
    t_start = time.time()
    deadline = t_start + args.minutes * 60
    start, crashes, watchdog_hangs = 0, [], []
    while time.time() < deadline:
        cmd = [
            sys.executable,
            __file__,
            "--worker",
            "--out",
            str(out),
            "--seed",
            str(args.seed),
            "--start",
            str(start),
            "--deadline",
            str(deadline),
            "--time-limit",
            str(args.time_limit),
            "--mem-limit-gib",
            str(args.mem_limit_gib),
        ]
        proc = subprocess.Popen(cmd)
        last, last_change = None, time.time()
        while proc.poll() is None:
            time.sleep(1.0)
            cur = _current(out)
            if cur != last:
                last, last_change = cur, time.time()
            elif time.time() - last_change > args.watchdog:
                proc.kill()
                proc.wait()
                watchdog_hangs.append(cur)
                break
        if proc.returncode == 0:
            break
        cur = _current(out)
        if cur is None or cur < start:
            print(
                f"worker failed before its first input (status {proc.returncode})", file=sys.stderr
            )
            return 2
        if cur is not None and cur not in watchdog_hangs:
            crashes.append({"iteration": cur, "returncode": proc.returncode})
        start = (cur if cur is not None else start) + 1
    summary = _summarize(out, t_start, crashes, watchdog_hangs, args)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return 0


def _current(out: Path) -> int | None:
    try:
        txt = (out / "current").read_text().strip()
        return int(txt) if txt else None
    except (OSError, ValueError):
        return None


def _summarize(out: Path, t_start: float, crashes: list, hangs: list, args) -> dict:
    total: Counter[str] = Counter()
    maxrss, slowest, slowest_cpu = 0, 0.0, 0.0
    if (out / "progress.jsonl").exists():
        for line in (out / "progress.jsonl").read_text().splitlines():
            rec = json.loads(line)
            total.update(rec["counts"])
            maxrss = max(maxrss, rec["maxrss_bytes"])
            slowest = max(slowest, rec["slowest_s"])
            slowest_cpu = max(slowest_cpu, rec.get("slowest_cpu_s", 0.0))
    typed = {k[6:]: v for k, v in total.items() if k.startswith("typed:")}
    return {
        "minutes": round((time.time() - t_start) / 60, 2),
        "inputs": sum(total.values()),
        "validated_ok": total.get("ok", 0),
        "typed_errors": sum(typed.values()),
        "typed_by_rule": dict(sorted(typed.items(), key=lambda kv: -kv[1])),
        "untyped_exceptions": total.get("untyped", 0),
        "hangs_cpu_limit": total.get("hang", 0),
        "hangs_watchdog": len(hangs),
        "crashes": crashes,
        "slowest_input_wall_s": slowest,
        "slowest_input_cpu_s": slowest_cpu,
        "worker_peak_rss_mib": round(maxrss / 2**20, 1),
        "per_input_cpu_limit_s": args.time_limit,
        "slowest_input_wall_s_note": "wall time, includes CPU contention on a shared machine",
        "address_space_limit_gib": args.mem_limit_gib,
        "seed": args.seed,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=35.0)
    ap.add_argument("--out", default="/tmp/orcd-fuzz")
    ap.add_argument("--seed", type=int, default=20261126)
    ap.add_argument("--time-limit", type=float, default=2.0, help="CPU seconds per input")
    ap.add_argument("--watchdog", type=float, default=30.0, help="kill a stuck worker after s")
    ap.add_argument("--mem-limit-gib", type=float, default=4.0)
    ap.add_argument("--replay", type=int, help="re-run one iteration and print its outcome")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--start", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--count", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--deadline", type=float, default=0.0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))
    if args.replay is not None:
        work = Path(args.out) / "replay"
        work.mkdir(parents=True, exist_ok=True)
        seeds = build_seeds(work)
        weights = np.array([s["weight"] for s in seeds])
        rng = np.random.default_rng([args.seed, args.replay])
        seed = seeds[int(rng.choice(len(seeds), p=weights / weights.sum()))]
        data, full = mutate(seed, rng)
        print(seed["name"], len(data), exercise(data, full, work))
        return 0
    if args.worker:
        return worker(args)
    return supervise(args)


if __name__ == "__main__":
    sys.exit(main())
