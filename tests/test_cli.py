"""The ``orcd`` script: every subcommand listed; errors are one line, no traceback."""

from __future__ import annotations

import subprocess
import sys

from orcd_toolkit.cli import COMMANDS, main


def _orcd(*args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    import os

    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "orcd_toolkit", *args],
                          capture_output=True, text=True, env=env, check=False)


def test_help_lists_every_subcommand() -> None:
    out = _orcd("--help")
    assert out.returncode == 0
    for name in ("serve", "run", "models", "inspect", "tokenize", "perplexity", "synth", "bench"):
        assert name in COMMANDS
        assert f"    {name}" in out.stdout


def test_models_pull_unknown_is_one_line_error(tmp_path) -> None:
    out = _orcd("models", "pull", "nope", env_extra={"ORCD_HOME": str(tmp_path)})
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "unknown model 'nope'" in lines[0] and "smollm2-135m-instruct-q4_1" in lines[0]


def test_models_list_json(tmp_path, capsys) -> None:
    import json
    import os

    os.environ["ORCD_HOME"] = str(tmp_path)
    try:
        assert main(["models", "list", "--json"]) == 0
    finally:
        del os.environ["ORCD_HOME"]
    doc = json.loads(capsys.readouterr().out)
    assert {m["name"] for m in doc["models"]} >= {"smollm2-135m-instruct-q4_1"}
    assert all(m["pulled"] is False for m in doc["models"])


def test_no_command_prints_help() -> None:
    out = _orcd()
    assert out.returncode == 2 and "COMMAND" in out.stdout


def test_unbuilt_commands_say_so_plainly() -> None:
    from orcd_toolkit.cli import _load_command

    for name in COMMANDS:
        if _load_command(name) is not None:
            continue
        out = _orcd(name, "--anything")
        assert out.returncode == 2
        assert "not available yet" in out.stderr
        assert out.stdout == ""
