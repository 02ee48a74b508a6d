"""Logits and greedy continuations against llama.cpp goldens (scripts/golden_llamacpp.py).

The goldens are llama-cpp-python 0.3.36 on the CPU with an f32 KV cache, for the
``default`` prompts (7 short ones) and, as ``<name>-long``, the ``long`` prompt (~400 tokens of
natural text: enough positions that a 99 % agreement rate is a measurement, not one or two
coin flips). Each golden also records llama.cpp against itself (its default f16 KV cache):
that noise floor is what the KL tolerance is measured against.

Why per-position top-1 is judged on "decidable" positions: on a quantized file llama.cpp's
logits are a chaotic function of its rounding (Q8 activations: a 1e-7 relative perturbation of
the embeddings moves SmolLM2's logits by 0.2..1.5, measured), so where two tokens are nearly
tied any implementation that is not bit-identical to llama.cpp, llama.cpp with an f16 KV cache
included, picks either. Measured over both goldens, llama.cpp agrees with itself on only
92.7..100 % of positions (SmolLM2 96.4 %). A position is *decidable* when llama.cpp's top-2
margin exceeds the logit change its own f16-KV run shows there (``self_maxdiff``); there the
top-1 must agree (>= 99 %, the issue's bar; measured 100 % for every model in both modes).
Overall agreement is printed and recorded in docs/models.md next to llama.cpp's self-agreement.

Two numerics of the NumPy reference are compared:

* ``ggml-cpu`` (``NumpyBackend(activations="ggml-cpu")``): every matmul's activations rounded
  as llama.cpp's CPU backend rounds them for that weight type (Q8_0 / Q8_1 / Q8_K / F16; bit for
  bit per op, tests/models/test_activation_rounding.py): llama.cpp's arithmetic up to
  summation order. Bar: decidable top-1 >= 99 %; mean KL no larger than llama.cpp's own f16-KV
  noise on the same positions; greedy tokens equal up to the first step where llama.cpp's own
  top-2 margin is below ``MARGIN`` logits; for the real models at least 16 equal greedy tokens
  on some prompt (how far llama.cpp's own f16-KV greedy follows its reference is printed too).
* ``exact`` (the default, and what the GPU kernels are tested against): no rounding. On the
  ``-f32`` goldens (weights dequantized exactly to F32, where llama.cpp does plain f32
  arithmetic) it must match to summation order: KL <= ``EXACT_KL``, every top-1 and greedy
  token equal. On the quantized files: decidable top-1 >= 99 % and mean KL <= ``QUANT_KL``
  (measured 5e-4..4e-3, the order of llama.cpp's self-noise).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from parity import GOLDENS, Golden, Parity, run_model_on_golden

EXACT_KL = 1e-6
QUANT_KL = 1e-2
MARGIN = 0.5
F32, Q4_0 = 0, 2


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


@pytest.fixture(scope="session")
def golden_model_path(request, synth_path):  # noqa: ANN001, ANN201
    """``path(golden_name)``: the file a golden was made from, rebuilt if needed, verified."""
    from orcd_toolkit.models.synth import cached_requant

    def resolve(name: str) -> Path:
        base = name.removesuffix("-long").removesuffix("-f32")
        if base.endswith("-tiny"):
            path = synth_path(base.removesuffix("-tiny"))
        elif base.startswith("smollm2"):
            path = request.getfixturevalue("smollm2_path")
        elif base == "qwen2.5-0.5b-q4_0":
            path = cached_requant(request.getfixturevalue("qwen05_path"), Q4_0)
        elif base == "qwen2.5-0.5b":
            path = request.getfixturevalue("qwen05_path")
        elif base == "qwen2.5-1.5b":
            path = request.getfixturevalue("qwen15_path")
        else:
            raise KeyError(name)
        if name.endswith("-f32"):
            path = cached_requant(path, F32)
        want = Golden.load(name).meta["model_sha256"]
        if _sha256(Path(path)) != want:
            pytest.fail(f"{path} is not the file golden {name} was made from (regenerate goldens)")
        return Path(path)

    return resolve


def _run(golden_model_path, model_cache, name, prompts, n_greedy, activations) -> Parity:  # noqa: ANN001
    golden = Golden.load(name)
    model = model_cache(golden_model_path(name), activations)
    p = run_model_on_golden(model, golden, prompts=prompts, n_greedy=n_greedy)
    p.greedy_len = [n_greedy or len(golden.greedy[i]) for i in (prompts or range(len(golden.prompts)))]
    return p


def _goldens(model: str) -> list[str]:
    return [model] + ([f"{model}-long"] if (GOLDENS / f"{model}-long.npz").exists() else [])


def _check_greedy(p: Parity, real: bool) -> None:
    assert all(m >= s for m, s in zip(p.greedy_match, p.greedy_stable, strict=True)), p.summary()
    if real:
        assert max(p.greedy_match) >= 16, p.summary()


# model, default-prompt subset (None = all), greedy tokens (None = all 32), real model; the
# default suite runs the tiny models and a subset of SmolLM2 / Qwen 0.5B prompts
DEFAULT = [
    ("gpt2-124m-tiny", None, None, False),
    ("phi3-mini-4k-tiny", None, None, False),
    ("gpt-oss-20b-tiny", None, None, False),
    ("smollm2-135m", [0, 5, 6], 16, True),
]
SLOW = [
    ("smollm2-135m", None, None, True),
    ("qwen2.5-0.5b", None, None, True),
    ("qwen2.5-0.5b-q4_0", None, None, True),
    ("qwen2.5-1.5b", None, None, True),
]


def _cases(default: list, slow: list) -> list:
    ids = lambda c: f"{c[0]}-{'all' if c[1] is None else 'subset'}"  # noqa: E731
    return [pytest.param(*c, id=ids(c)) for c in default] + [
        pytest.param(*c, id=ids(c), marks=pytest.mark.slow) for c in slow
    ]


@pytest.mark.parametrize("model,prompts,n_greedy,real", _cases(DEFAULT, SLOW))
def test_llamacpp_arithmetic_parity(
    golden_model_path, model_cache, model, prompts, n_greedy, real
) -> None:  # noqa: ANN001
    parts = []
    for name in _goldens(model):
        sub = prompts if not name.endswith("-long") else None
        parts.append(_run(golden_model_path, model_cache, name, sub, n_greedy, "ggml-cpu"))
    p = Parity.pool(parts)
    print(f"\n{model} [ggml-cpu] {_goldens(model)}: {p.summary()}")
    assert p.decidable_agree >= 0.99, p.summary()
    assert p.mean_kl <= p.self_mean_kl, p.summary()
    _check_greedy(p, real)


EXACT_DEFAULT = [
    ("phi3-mini-4k-tiny-f32", None, None, False),
    ("smollm2-135m-f32", [0, 5], 16, True),
    ("qwen2.5-0.5b", [0, 5], 16, True),
]
EXACT_SLOW = [
    ("gpt-oss-20b-tiny-f32", None, None, False),
    ("smollm2-135m-f32", None, None, True),
    ("qwen2.5-1.5b-f32", None, None, True),
    ("gpt-oss-20b-tiny", None, None, False),
    ("phi3-mini-4k-tiny", None, None, False),
    ("smollm2-135m", None, None, True),
    ("qwen2.5-0.5b", None, None, True),
    ("qwen2.5-0.5b-q4_0", None, None, True),
]


@pytest.mark.parametrize("name,prompts,n_greedy,real", _cases(EXACT_DEFAULT, EXACT_SLOW))
def test_exact_numerics(golden_model_path, model_cache, name, prompts, n_greedy, real) -> None:  # noqa: ANN001
    p = _run(golden_model_path, model_cache, name, prompts, n_greedy, "exact")
    print(f"\n{name} [exact]: {p.summary()}")
    if name.endswith("-f32"):
        assert p.top1_agree == 1.0, p.summary()
        assert p.mean_kl <= EXACT_KL, p.summary()
        assert p.greedy_match == p.greedy_len, p.summary()
    else:
        assert p.decidable_agree >= 0.99, p.summary()
        assert p.mean_kl <= QUANT_KL, p.summary()
        _check_greedy(p, real)


@pytest.mark.parametrize(
    "name",
    ["smollm2-135m", "qwen2.5-0.5b", "phi3-mini-4k-tiny", "gpt2-124m-tiny", "gpt-oss-20b-tiny"],
)
def test_golden_prompt_ids_match_our_tokenizer(golden_model_path, name) -> None:  # noqa: ANN001
    """The goldens' prompt ids are llama.cpp's tokenization (BOS rule included); ours must
    give the same ids, so ``orcd run``/``perplexity`` feed the model what llama.cpp does."""
    import json

    from orcd_toolkit.tokenizer import load_tokenizer

    prompts = json.loads((Path(__file__).parent / "golden_prompts.json").read_text())
    tok = load_tokenizer(golden_model_path(name))
    for golden_name, key in ((name, "default"), (f"{name}-long", "long")):
        if not (GOLDENS / f"{golden_name}.npz").exists():
            continue
        golden = Golden.load(golden_name)
        for text, ids in zip(prompts[key], golden.prompts, strict=True):
            assert tok.encode(text, add_special=True) == ids.tolist(), text
