"""Philox4x32-10 counter-based random numbers (CONTRACTS.md §4).

Sampling must be batch-invariant and reproducible after preemption: the uniform draw for a
request depends only on its seed and the index of the output token being sampled, never on
what else runs or on how many draws happened before. A counter-based generator gives that
for free: draw ``n`` of seed ``s`` is

    Philox4x32-10(counter=(n, 0, 0, 0), key=(s & 0xffffffff, s >> 32)) word 0 / 2**32

The GPU sampler reproduces this bit for bit, so the NumPy version here is the reference.
Algorithm and constants: Salmon et al., "Parallel Random Numbers: As Easy as 1, 2, 3"
(SC11) and Random123's ``philox.h``; the known-answer vectors are Random123's kat_vectors.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

PHILOX_M0 = 0xD2511F53
PHILOX_M1 = 0xCD9E8D57
PHILOX_W0 = 0x9E3779B9
PHILOX_W1 = 0xBB67AE85
PHILOX_ROUNDS = 10

_MASK32 = np.uint64(0xFFFFFFFF)
_SHIFT32 = np.uint64(32)
_M0 = np.uint64(PHILOX_M0)
_M1 = np.uint64(PHILOX_M1)
_W0 = np.uint64(PHILOX_W0)
_W1 = np.uint64(PHILOX_W1)
_INV_2_32 = 1.0 / 4294967296.0


def philox4x32_10(counter: npt.ArrayLike, key: npt.ArrayLike) -> np.ndarray:
    """Philox4x32-10 of ``counter[..., 4]`` under ``key[..., 2]`` (uint32 words), vectorized.

    Returns uint32 ``[..., 4]``. Words are held in uint64 so each 32x32 -> 64-bit product
    (the "mulhilo" of the paper) is exact.
    """
    ctr = np.asarray(counter, dtype=np.uint64)
    k = np.asarray(key, dtype=np.uint64)
    if ctr.shape[-1:] != (4,) or k.shape[-1:] != (2,):
        raise ValueError(f"counter must end in 4 words and key in 2, got {ctr.shape} and {k.shape}")
    c0, c1, c2, c3 = (ctr[..., i] & _MASK32 for i in range(4))
    k0 = k[..., 0] & _MASK32
    k1 = k[..., 1] & _MASK32
    for r in range(PHILOX_ROUNDS):
        if r:
            # The key schedule bumps the key between rounds (Weyl sequence), mod 2**32.
            k0 = (k0 + _W0) & _MASK32
            k1 = (k1 + _W1) & _MASK32
        p0 = _M0 * c0
        p1 = _M1 * c2
        c0, c1, c2, c3 = (
            (p1 >> _SHIFT32) ^ c1 ^ k0,
            p1 & _MASK32,
            (p0 >> _SHIFT32) ^ c3 ^ k1,
            p0 & _MASK32,
        )
    out = np.stack(np.broadcast_arrays(c0, c1, c2, c3), axis=-1)
    return out.astype(np.uint32)


def split_seed(seed: int) -> tuple[int, int]:
    """The Philox key words of a 64-bit seed: (low 32 bits, high 32 bits)."""
    if not 0 <= seed < 1 << 64:
        raise ValueError(f"seed must be in [0, 2**64), got {seed}")
    return seed & 0xFFFFFFFF, seed >> 32


def uniform_draws(seeds: npt.ArrayLike, indices: npt.ArrayLike) -> np.ndarray:
    """Uniform float64 in [0, 1) for each (seed, output-token index) pair (CONTRACTS.md §4).

    ``seeds`` are uint64 request seeds, ``indices`` the output-token index n being sampled.
    The value is word 0 / 2**32, so it has 32 random bits and is exactly representable in
    float64 (the GPU computes the same double, or compares in integer space).
    """
    s = np.asarray(seeds, dtype=np.uint64)
    n = np.asarray(indices, dtype=np.uint64)
    s, n = np.broadcast_arrays(s, n)
    zeros = np.zeros(s.shape, dtype=np.uint64)
    ctr = np.stack([n & _MASK32, n >> _SHIFT32, zeros, zeros], axis=-1)
    key = np.stack([s & _MASK32, s >> _SHIFT32], axis=-1)
    return philox4x32_10(ctr, key)[..., 0].astype(np.float64) * _INV_2_32
