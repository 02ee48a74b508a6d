"""``orcd inspect``: the real file's table, JSON output, one-line errors for bad files."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from orcd_toolkit.gguf.rawwriter import RawGGUF, RawTensor, kv
from orcd_toolkit.gguf.reader import GGUFValueType as VT


def _orcd(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "orcd_toolkit", "inspect", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_inspect_qwen_json_lists_291_tensors(qwen05_path):
    out = _orcd(str(qwen05_path), "--json")
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["architecture"] == "qwen2"
    assert r["tensor_count"] == 291 and len(r["tensors"]) == 291
    types = {t["name"]: t["type"] for t in r["tensors"]}
    assert types["token_embd.weight"] == "Q5_0"
    assert types["output.weight"] == "Q8_0"
    assert types["blk.0.ffn_down.weight"] == "Q6_K"
    assert types["output_norm.weight"] == "F32"
    assert set(r["totals_by_type"]) == {"Q5_0", "Q8_0", "Q6_K", "Q4_K", "F32"}
    assert sum(t["tensors"] for t in r["totals_by_type"].values()) == 291
    assert r["totals_by_type"]["Q4_K"]["tensors"] == 12
    assert r["hyperparameters"]["embedding_length"] == 896
    assert r["hyperparameters"]["block_count"] == 24
    tok = r["tokenizer"]
    assert tok["vocab_size"] == 151936 and tok["model"] == "gpt2" and tok["pre"] == "qwen2"
    assert tok["special_tokens"]["eos"] == {"id": 151645, "token": "<|im_end|>"}
    assert r["tensor_bytes"] + r["data_offset"] <= r["file_bytes"]


def test_inspect_text(smollm2_path):
    out = _orcd(str(smollm2_path))
    assert out.returncode == 0, out.stderr
    assert "architecture:  llama" in out.stdout
    assert "Q4_1" in out.stdout and "totals by type:" in out.stdout
    assert "tensors (272):" in out.stdout


def test_inspect_vocab_only_file(testdata):
    out = _orcd(str(testdata / "vocab" / "ggml-vocab-phi-3.gguf"), "--json")
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["tensor_count"] == 0 and r["tokenizer"]["vocab_size"] == 32064


@pytest.mark.parametrize(
    "blob",
    [
        b"",
        b"GGUF\x03\0\0\0",
        b"NOPE" + b"\0" * 40,
        RawGGUF(kvs=[kv("general.alignment", VT.UINT32, 0)]).build(),
        RawGGUF(
            kvs=[kv("general.architecture", VT.STRING, "llama")],
            tensors=[RawTensor(b"w", [32], 16, 0)],
            data=b"\0" * 64,
        ).build(),
        RawGGUF(tensors=[RawTensor(b"w", [2**42 + 1], 0, 0)], data=b"\0" * 64).build(),
    ],
    ids=["empty", "short", "magic", "alignment0", "iq2_xxs", "huge"],
)
def test_inspect_bad_file_is_one_line_error(tmp_path, blob):
    p = tmp_path / "bad.gguf"
    p.write_bytes(blob)
    out = _orcd(str(p))
    assert out.returncode == 1
    assert out.stdout == ""
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("orcd inspect: error: ")
    assert str(p) in lines[0]


def test_inspect_missing_file(tmp_path):
    out = _orcd(str(tmp_path / "missing.gguf"))
    assert out.returncode == 1 and len(out.stderr.strip().splitlines()) == 1


def test_inspect_invalid_utf8_metadata_is_escaped(tmp_path):
    from orcd_toolkit.gguf.rawwriter import RawKV, gguf_string

    blob = RawGGUF(
        kvs=[
            kv("general.architecture", VT.STRING, "llama"),
            RawKV(b"general.name", int(VT.STRING), gguf_string(b"bad\xff\xfename")),
        ]
    ).build()
    p = tmp_path / "u.gguf"
    p.write_bytes(blob)
    out = subprocess.run(
        [sys.executable, "-m", "orcd_toolkit", "inspect", str(p)],
        capture_output=True,
        check=False,
        timeout=60,
        env={**__import__("os").environ, "PYTHONIOENCODING": "utf-8:strict"},
    )
    assert out.returncode == 0, out.stderr
    assert b"bad\\xff\\xfename" in out.stdout
    js = _orcd(str(p), "--json")
    assert json.loads(js.stdout)["name"] == "bad\udcff\udcfename"


def test_inspect_totals_every_type(tmp_path, capsys):
    import numpy as np

    from orcd_toolkit import cli, gguf
    from orcd_toolkit.gguf.writer import TensorData, write_gguf

    rng = np.random.default_rng(0)
    tensors = {}
    for i, qt in enumerate(gguf.GGMLType):
        shape = (i + 1, 256)
        tensors[f"w{i}"] = TensorData(qt, shape, gguf.random_blocks(qt, shape, rng))
    p = tmp_path / "all.gguf"
    write_gguf(p, {"general.architecture": "llama", "llama.block_count": 1}, tensors)
    assert cli.main(["inspect", str(p), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert set(r["totals_by_type"]) == {qt.name for qt in gguf.GGMLType}
    for i, qt in enumerate(gguf.GGMLType):
        tot = r["totals_by_type"][qt.name]
        assert tot == {
            "tensors": 1,
            "elements": (i + 1) * 256,
            "bytes": (i + 1) * gguf.row_bytes(qt, 256),
            "block_elems": gguf.LAYOUTS[qt].block_elems,
        }
    assert r["parameters"] == sum((i + 1) * 256 for i in range(len(gguf.GGMLType)))
    assert r["hyperparameters"] == {"block_count": 1}
