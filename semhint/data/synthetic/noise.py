"""Procedural solid noise evaluated at 3D (or 2D) points, so every view of a surface agrees.

Textures in the synthetic worlds are functions of the *world* (or material) coordinate of the hit
point, never of the pixel: two cameras looking at the same point see the same albedo, which is
what makes the ground-truth warp reproduce a frame exactly.
"""

from __future__ import annotations

import torch

_N = 32  # a periodic 32^3 lattice of random values: small enough to sit in cache
_P = _N + 1  # stored with one wrapped layer per axis, so corner i + 1 never needs a modulo


def noise_table(seed: int) -> torch.Tensor:
    """The random lattice values (33^3, flattened) that make one world's noise reproducible."""
    g = torch.Generator().manual_seed(int(seed))
    core = torch.rand(_N, _N, _N, generator=g, dtype=torch.float32)
    idx = torch.arange(_P) % _N
    return core[idx][:, idx][:, :, idx].reshape(-1).contiguous()


def _smooth(t: torch.Tensor) -> torch.Tensor:
    return t * t * (3.0 - 2.0 * t)


def value_noise(p: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Trilinear value noise in [0, 1] at points ``p`` (3 x N: rows stay contiguous), lattice spacing 1.

    Smoothstep interpolation hides the lattice; the 32-cell period is far larger than any
    feature the textures need once the caller scales ``p``.
    """
    fl = torch.floor(p)
    f = _smooth(p - fl)
    i = fl.to(torch.int64) % _N
    base = (i[0] * _P + i[1]) * _P + i[2]
    fx, fy, fz = f[0], f[1], f[2]

    def at(offset: int) -> torch.Tensor:
        return table.index_select(0, base + offset if offset else base)  # index_select: the fast gather

    dx, dy, dz = _P * _P, _P, 1
    x00 = torch.lerp(at(0), at(dx), fx)
    x10 = torch.lerp(at(dy), at(dx + dy), fx)
    x01 = torch.lerp(at(dz), at(dx + dz), fx)
    x11 = torch.lerp(at(dy + dz), at(dx + dy + dz), fx)
    return torch.lerp(torch.lerp(x00, x10, fy), torch.lerp(x01, x11, fy), fz)


def fbm(p: torch.Tensor, table: torch.Tensor, octaves: int = 3, footprint: torch.Tensor | None = None,
        lacunarity: float = 2.03, gain: float = 0.5) -> torch.Tensor:
    """Fractal sum of value noise at points ``p`` (3 x N), normalised to about [0, 1].

    ``footprint`` (N, in the units of ``p``) is the size of a pixel on the surface; octaves finer
    than a pixel fade out (a cheap mip-map), so distant texture does not alias.
    """
    total = torch.zeros(p.shape[1], dtype=p.dtype, device=p.device)
    amp, norm = 1.0, 0.0
    for k in range(octaves):
        freq = lacunarity**k
        n = value_noise(p * freq + 7.31 * k, table)  # the offset decorrelates octaves
        if footprint is not None and k > 0:
            fade = (1.5 - footprint * freq).clamp(0, 1)
            n = 0.5 + (n - 0.5) * fade
        total = total + amp * n
        norm += amp
        amp *= gain
    return total / norm
