"""Fixtures for the notebook tests: one in-process SmolLM2 session and one real server.

Both run the NumPy backend. The server is the real ``orcd serve`` in a child process
(``orcd_toolkit.notebook.server_process``), so remote tests cover the same path a user's
notebook takes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from orcd_toolkit.notebook import ACTIVE
from orcd_toolkit.notebook.server_process import ServerProcess
from orcd_toolkit.notebook.sessions import LocalSession

# The engine's NumPy backend does one small matvec after another; on a 2-core CI box shared
# with other jobs, OpenBLAS threads spinning against each other make it ~10x slower.
CHILD_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module", autouse=True)
def _single_threaded_blas() -> Iterator[None]:
    """The same limit for the in-process engine (numpy is imported long before this runs,
    so the environment variable would come too late; threadpoolctl sets it live). Module
    scope: the limit is lifted again before other areas' tests run."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional: without it the tests only run slower
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


@pytest.fixture(scope="session")
def smollm2_session(smollm2_path) -> Iterator[LocalSession]:
    session = LocalSession(str(smollm2_path), kv_cache_size_mb=32).wait_ready(300)
    yield session
    session.close()


@pytest.fixture(scope="session")
def smollm2_server(smollm2_path) -> Iterator[ServerProcess]:
    with ServerProcess(str(smollm2_path), kv_cache_size_mb=32, env=CHILD_ENV) as sp:
        yield sp


@pytest.fixture(autouse=True)
def _no_active_session() -> Iterator[None]:
    """Each test starts without a current session (magics set one)."""
    ACTIVE.session = None
    yield
    ACTIVE.session = None


@pytest.fixture
def child_env() -> dict[str, str]:
    return {**os.environ, **CHILD_ENV}
