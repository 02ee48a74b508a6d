"""Runs sim_numba.py (Numba kernels vs NumPy) on the CUDA simulator in a subprocess.

A broken Numba kernel fails CI even without a GPU. The subprocess is needed because
NUMBA_ENABLE_CUDASIM must be set before numba is imported, and the compile checks in this
same suite need the real CUDA target.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def test_numba_kernels_on_simulator() -> None:
    pytest.importorskip("numba.cuda")
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", PYTHONDONTWRITEBYTECODE="1")
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o",
           "python_files=sim_*.py", str(HERE / "sim_numba.py")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300,
                          cwd=HERE.parent.parent)
    print(proc.stdout[-4000:])
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert " passed" in proc.stdout
