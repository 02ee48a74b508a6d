"""The IPython extension: %load_ext orcd_toolkit, %orcd_load, %orcd_connect, %%orcd."""

from __future__ import annotations

import pytest
from IPython.core.interactiveshell import InteractiveShell

from orcd_toolkit.notebook import ACTIVE, LocalSession, RemoteSession
from orcd_toolkit.notebook.server_process import free_port


@pytest.fixture(scope="module")
def shell() -> InteractiveShell:
    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "orcd_toolkit")
    return ip


def test_extension_registers_the_magics(shell):
    lines = shell.magics_manager.magics["line"]
    cells = shell.magics_manager.magics["cell"]
    assert {"orcd_load", "orcd_connect", "orcd_close"} <= set(lines) and "orcd" in cells


def test_cell_without_session_says_what_to_do(shell, capsys):
    shell.run_cell_magic("orcd", "--max-tokens 2", "hello")
    err = capsys.readouterr().err
    assert err.startswith("orcd: nothing to generate with: run `%orcd_load MODEL`")
    assert err.count("\n") == 1


def test_load_generate_close(shell, capsys, smollm2_path):
    session = shell.run_line_magic("orcd_load", f"{smollm2_path} --kv-cache-mb 16")
    try:
        out = capsys.readouterr().out
        assert isinstance(session, LocalSession) and ACTIVE.session is session
        assert shell.user_ns["orcd_session"] is session
        assert "loaded smollm2-135m-instruct-q4_1 (llama, Q4_1, gguf-bpe) on cpu" in out
        shell.run_cell_magic("orcd", "--max-tokens 4 --temperature 0", "The capital of France is")
        out = capsys.readouterr().out
        text = "".join(
            e["t"] for e in session.start("The capital of France is", max_tokens=4,
                                          temperature=0.0).events(timeout=60)
            if e["type"] == "token")
        assert out.startswith(text) and text.startswith(" Paris")
        assert out.rstrip().endswith("finish: length]") and "4 tokens · TTFT" in out
        shell.run_cell_magic("orcd", "--temperature 9", "x")
        err = capsys.readouterr().err
        assert err == "orcd: field 'temperature' must be in [0, 2], got 9\n"
    finally:
        shell.run_line_magic("orcd_close", "")
    assert ACTIVE.session is None and "orcd_session" not in shell.user_ns
    assert "session closed" in capsys.readouterr().out


def test_load_missing_model_is_one_line(shell, capsys):
    assert shell.run_line_magic("orcd_load", "no-such-model-xyz") is None
    err = capsys.readouterr().err
    assert err.startswith("orcd_load: model 'no-such-model-xyz' is neither")
    assert err.count("\n") == 1 and "Traceback" not in err
    assert ACTIVE.session is None


def test_load_on_gpu_without_one_is_one_line(shell, capsys, smollm2_path):
    from orcd_toolkit.kernels.device import gpu_status

    if gpu_status().usable:
        pytest.skip("a GPU is usable here")
    assert shell.run_line_magic("orcd_load", f"{smollm2_path} --device gpu") is None
    err = capsys.readouterr().err
    assert err.startswith("orcd_load: --device gpu: ") and err.count("\n") == 1
    assert ACTIVE.session is None


def test_connect_unreachable_is_one_line(shell, capsys):
    port = free_port()
    assert shell.run_line_magic("orcd_connect", f"ws://127.0.0.1:{port}") is None
    err = capsys.readouterr().err
    assert err.startswith(f"orcd_connect: no server answers at http://127.0.0.1:{port}/health")
    assert err.count("\n") == 1


def test_connect_and_stream(shell, capsys, smollm2_server):
    session = shell.run_line_magic("orcd_connect", smollm2_server.url)
    assert isinstance(session, RemoteSession) and ACTIVE.session is session
    assert "status ready" in capsys.readouterr().out
    shell.run_cell_magic("orcd", "--max-tokens 3 --temperature 0", "The capital of France is")
    out = capsys.readouterr().out
    assert out.startswith(" Paris") and "3 tokens" in out
