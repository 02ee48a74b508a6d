"""On a GPU: the op-parity table in quick mode and the graph-capture check (issue #8 items
4-5). Skipped with the reason where no GPU is usable (tests/conftest.py)."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parent.parent.parent / "scripts"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.gpu
def test_op_parity_quick() -> None:
    parity = _load("kernel_parity")
    rc = parity.main(["--quick"])
    failed = [r for r in parity.ROWS if not r.ok]
    assert rc == 0 and not failed, "\n".join(f"{r.op} {r.qtype} {r.shape}: {r.nmse} {r.note}" for r in failed)
    assert len(parity.ROWS) > 100


@pytest.mark.gpu
def test_decoder_layer_graph_replay_equals_eager() -> None:
    if os.environ.get("NUMBA_CUDA_ARRAY_INTERFACE_SYNC") != "0":
        pytest.skip("run with NUMBA_CUDA_ARRAY_INTERFACE_SYNC=0 (set before numba is imported)")
    graph = _load("kernel_graph")
    assert graph.main(["--replays", "200"]) == 0
