"""Philox4x32-10 against Random123's known-answer vectors, and the draw contract."""

from __future__ import annotations

import numpy as np
import pytest

from orcd_toolkit.engine.rng import philox4x32_10, split_seed, uniform_draws

# Random123 tests/kat_vectors, philox4x32 with 10 rounds: counter, key, expected output.
KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    (
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
        (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ),
]


@pytest.mark.parametrize(("ctr", "key", "expected"), KAT)
def test_known_answers(ctr, key, expected) -> None:
    assert tuple(int(x) for x in philox4x32_10(ctr, key)) == expected


def test_vectorized_matches_scalar() -> None:
    ctrs = np.array([k[0] for k in KAT], dtype=np.uint32)
    keys = np.array([k[1] for k in KAT], dtype=np.uint32)
    out = philox4x32_10(ctrs, keys)
    assert [tuple(int(x) for x in row) for row in out] == [k[2] for k in KAT]


def test_uniform_draw_contract() -> None:
    seed = 0x0123456789ABCDEF
    lo, hi = split_seed(seed)
    assert (lo, hi) == (0x89ABCDEF, 0x01234567)
    for n in (0, 1, 7, 12345):
        word0 = int(philox4x32_10((n, 0, 0, 0), (lo, hi))[0])
        assert uniform_draws([seed], [n])[0] == word0 / 2**32


def test_draws_depend_only_on_seed_and_index() -> None:
    seeds = np.array([1, 2, 3, 1], dtype=np.uint64)
    idx = np.array([5, 5, 5, 5])
    u = uniform_draws(seeds, idx)
    assert u[0] == u[3] and len(set(u[:3].tolist())) == 3
    assert ((u >= 0) & (u < 1)).all()
    # roughly uniform: 20k draws of one seed, mean and a coarse histogram
    many = uniform_draws(np.full(20000, 42, dtype=np.uint64), np.arange(20000))
    assert abs(many.mean() - 0.5) < 0.01
    hist, _ = np.histogram(many, bins=10, range=(0, 1))
    assert hist.min() > 1800 and hist.max() < 2200


def test_bad_seed() -> None:
    with pytest.raises(ValueError, match="seed"):
        split_seed(-1)
