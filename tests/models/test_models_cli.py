"""``orcd run`` end to end (tokenizer + engine + model) against llama.cpp's greedy tokens,
and ``orcd perplexity`` against llama.cpp's perplexity on the same text."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from parity import Golden

DATA = Path(__file__).parent / "data"
# llama.cpp's ``llama-perplexity`` on tests/models/data/gpl3_head.txt (built from the vendored
# llama.cpp of llama-cpp-python 0.3.36; the same through its Python logits is recorded too);
# see docs/models.md
LLAMACPP_PPL = json.loads((Path(__file__).parent / "goldens" / "perplexity.json").read_text())


def _orcd(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "orcd_toolkit", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


def test_run_json_greedy_matches_llamacpp(smollm2_path) -> None:  # noqa: ANN001
    golden = Golden.load("smollm2-135m")
    prompt = json.loads((Path(__file__).parent / "golden_prompts.json").read_text())["default"][5]
    res = _orcd("run", "--model", str(smollm2_path), "--prompt", prompt, "--max-tokens", "16",
                "--temperature", "0", "--device", "cpu", "--json")  # fmt: skip
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["prompt_ids"] == golden.prompts[5].tolist()
    assert doc["generated_ids"] == golden.greedy[5][:16].tolist()
    assert doc["text"].startswith(" 13, 14, 15")
    assert set(doc["timings"]) >= {"load_s", "ttft_s", "total_s"}


def test_run_chat_and_errors(smollm2_path) -> None:  # noqa: ANN001
    res = _orcd("run", "--model", str(smollm2_path), "--prompt", "What is the capital of France?", "--chat",
                "--max-tokens", "12", "--temperature", "0", "--device", "cpu")  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "Paris" in res.stdout
    bad = _orcd(
        "run", "--model", str(smollm2_path), "--prompt", "x", "--max-tokens", "0", "--device", "cpu"
    )
    assert bad.returncode == 1 and "--max-tokens must be >= 1" in bad.stderr
    gpu = _orcd("run", "--model", str(smollm2_path), "--prompt", "x", "--device", "gpu",
                "--activations", "ggml-cpu")  # fmt: skip
    assert gpu.returncode == 1 and "use --device cpu" in gpu.stderr, gpu.stderr


def test_run_with_llamacpp_activation_rounding(smollm2_path) -> None:  # noqa: ANN001
    """``--activations ggml-cpu`` reproduces llama.cpp's greedy tokens on a stable prompt."""
    golden = Golden.load("smollm2-135m")
    prompt = json.loads((Path(__file__).parent / "golden_prompts.json").read_text())["default"][5]
    res = _orcd("run", "--model", str(smollm2_path), "--prompt", prompt, "--max-tokens", "16",
                "--temperature", "0", "--device", "cpu", "--activations", "ggml-cpu", "--json")  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["generated_ids"] == golden.greedy[5][:16].tolist()


def _ppl(model: Path, ctx: int, dump: Path | None = None) -> float:
    args = [
        "perplexity",
        "--model",
        str(model),
        "--file",
        str(DATA / "gpl3_head.txt"),
        "--ctx",
        str(ctx),
        "--device",
        "cpu",
    ]
    if dump:
        args += ["--dump-logprobs", str(dump)]
    res = _orcd(*args, timeout=1800)
    assert res.returncode == 0, res.stderr
    m = re.search(r"PPL = (\d+\.\d{4})", res.stdout)
    assert m, res.stdout
    return float(m.group(1))


def test_perplexity_smollm2_ctx128_within_1_percent_of_llamacpp(
    smollm2_path, tmp_path: Path
) -> None:  # noqa: ANN001
    ref = LLAMACPP_PPL["smollm2-135m/ctx128"]["ppl"]
    dump = tmp_path / "lp.json"
    ours = _ppl(smollm2_path, 128, dump)
    assert abs(ours / ref - 1) < 0.01, (ours, ref)
    doc = json.loads(dump.read_text())
    assert doc["n_scored"] == len(doc["positions"]) == 23 * 63
    first = doc["positions"][0]
    assert first["pos"] == 64 and len(first["top"]) == 5
    assert first["top"][0]["logprob"] >= first["logprob"]


@pytest.mark.slow
def test_perplexity_qwen05_ctx512_within_1_percent_of_llamacpp(qwen05_path) -> None:  # noqa: ANN001
    ref = LLAMACPP_PPL["qwen2.5-0.5b/ctx512"]["ppl"]
    ours = _ppl(qwen05_path, 512)
    assert abs(ours / ref - 1) < 0.01, (ours, ref)
