"""Fixtures for the model tests: synthetic/requantized files (cached under $ORCD_HOME/synth,
byte-identical to the ones the goldens were made from), one loaded model per file per session,
and single-threaded BLAS (the machine is shared; OpenBLAS threads spinning against other
processes made a decode step 3x slower)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def _single_thread_blas() -> Iterator[None]:
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional: only a speed concern
        yield
        return
    with threadpool_limits(1):
        yield


@pytest.fixture(scope="session")
def synth_path():
    """``synth_path(preset)`` -> the tiny synthetic file for ``preset`` (seed 0)."""
    from orcd_toolkit.models.synth import cached_synth

    def get(preset: str) -> Path:
        return cached_synth(preset, tiny=True, seed=0)

    return get


@pytest.fixture(scope="session")
def model_cache():
    """``model_cache(path, activations="exact")``: the model on the NumPy backend with that
    activation rounding (see NumpyBackend), loaded once and kept until another is asked for."""
    from orcd_toolkit.backends.cpu import NumpyBackend
    from orcd_toolkit.models import load_model

    cache: dict[tuple[Path, str], object] = {}

    def get(path: Path, activations: str = "exact"):  # noqa: ANN202
        key = (Path(path), activations)
        if key not in cache:
            cache.clear()  # keep at most one model (a few GiB of f32) resident
            cache[key] = load_model(path, NumpyBackend(activations=activations))
        return cache[key]

    return get
