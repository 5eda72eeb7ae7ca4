"""Collinear magnetic states: FM, layered AFM, random 50/50.

Every generator returns a moment vector (N,) in μB that attaches to the atoms by index.
Magnitudes are given per species ({"Cr": 2.5}), as one number or per atom;
species with magnitude 0 are non-magnetic.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from ase import Atoms


__all__ = ["ROCKSALT_AFM", "magnitudes", "ferromagnetic", "antiferromagnetic", "random_collinear", "random_states", "state_moments"]


#: Antiferromagnetic orderings of rock-salt (conventional-cell directions):
#: name -> (layer normal, consecutive layers of equal sign).
#: AFM1: alternating (001) layers (CrN's ground state in the reference model);
#: AFM2: alternating (111) layers; AFM110_2: double (110) layers (the
#: experimental low-temperature order of CrN, on the cubic lattice).
ROCKSALT_AFM: dict[str, tuple[tuple[int, int, int], int]] = {
    "AFM1": ((0, 0, 1), 1),
    "AFM2": ((1, 1, 1), 1),
    "AFM110_2": ((1, 1, 0), 2),
}


def magnitudes(atoms: Atoms, moment: float | Mapping[str, float] | Sequence[float]) -> np.ndarray:
    """Moment magnitudes (N,), μB, from one number, a per-species mapping or a per-atom list.

    Species missing from a mapping get 0 (non-magnetic).
    """
    symbols = atoms.get_chemical_symbols()
    if isinstance(moment, Mapping):
        out = np.array([float(moment.get(s, 0.0)) for s in symbols])
    elif np.ndim(moment) == 0:
        out = np.full(len(atoms), float(moment))
    else:
        out = np.asarray(moment, dtype=float)
        if out.shape != (len(atoms),):
            raise ValueError(f"per-atom moments must have shape ({len(atoms)},), got {out.shape}")
    if not np.all(np.isfinite(out)):
        raise ValueError("moment magnitudes must be finite")
    return np.abs(out)


def ferromagnetic(atoms: Atoms, moment: float | Mapping[str, float]) -> np.ndarray:
    """All moments parallel (positive), μB."""
    return magnitudes(atoms, moment)


def _layer_index(atoms: Atoms, mask: np.ndarray, normal: np.ndarray, spacing: float | None):
    proj = atoms.positions @ normal
    if spacing is None:
        levels = np.unique(np.round(proj[mask], 6))
        gaps = np.diff(levels)
        gaps = gaps[gaps > 1e-4]
        if gaps.size == 0:  # one layer in the cell: the period must come from the lattice
            shifts = np.abs(atoms.cell.array @ normal)
            shifts = shifts[shifts > 1e-4]
            if shifts.size == 0:
                raise ValueError("cannot determine the layer spacing (all magnetic atoms in one plane)")
            spacing = float(shifts.min())
        else:
            spacing = float(gaps.min())
    origin = proj[mask].min() if mask.any() else 0.0
    return np.rint((proj - origin) / spacing).astype(int), spacing


def antiferromagnetic(
    atoms: Atoms,
    moment: float | Mapping[str, float],
    direction: Sequence[float] | str = (0, 0, 1),
    n_layers: int = 1,
    spacing: float | None = None,
) -> np.ndarray:
    """Layered collinear antiferromagnet.

    Magnetic atoms are grouped into planes normal to ``direction`` (Cartesian,
    or the name of a rock-salt ordering in :data:`ROCKSALT_AFM`); blocks of
    ``n_layers`` consecutive planes alternate in sign (1: single-layer order,
    2: double-layer order).

    Parameters
    ----------
    atoms : ase.Atoms
    moment : magnitude(s), μB (number or per-species mapping)
    direction : layer normal (Cartesian), or "AFM1", "AFM2", "AFM110_2"
    n_layers : planes per block of equal sign
    spacing : distance between consecutive planes, Å (default: the smallest
        gap between distinct planes of magnetic atoms)

    Raises
    ------
    ValueError
        If the ordering is not commensurate with the cell (a lattice
        translation would map an up plane onto a down plane).
    """
    if isinstance(direction, str):
        if direction not in ROCKSALT_AFM:
            raise ValueError(f"unknown AFM ordering {direction!r}; known: {sorted(ROCKSALT_AFM)}")
        direction, n_layers = ROCKSALT_AFM[direction]
    n = np.asarray(direction, dtype=float)
    if n.shape != (3,) or np.linalg.norm(n) == 0:
        raise ValueError("direction must be a non-zero 3-vector")
    n = n / np.linalg.norm(n)
    if n_layers < 1:
        raise ValueError("n_layers must be >= 1")
    mag = magnitudes(atoms, moment)
    mask = mag > 0
    layer, spacing = _layer_index(atoms, mask, n, spacing)
    period = 2 * n_layers
    for k, vec in enumerate(atoms.cell.array):
        if not atoms.pbc[k]:
            continue
        shift = vec @ n / spacing
        if abs(shift - np.rint(shift)) > 1e-3 or int(np.rint(shift)) % period != 0:
            raise ValueError(
                f"AFM order (normal {np.round(n, 4).tolist()}, {n_layers} layer(s)) is not commensurate "
                f"with cell vector {k} (shift {shift:.3f} planes, period {period}); use a larger cell")
    sign = np.where((layer // n_layers) % 2 == 0, 1.0, -1.0)
    return mag * sign


def random_collinear(
    atoms: Atoms,
    moment: float | Mapping[str, float] | Sequence[float],
    seed: int | np.random.Generator | None = None,
) -> np.ndarray:
    """Random collinear state with exactly half the moments of each species up.

    With an odd count the extra moment gets a random sign. ``moment`` may be
    a per-atom array (e.g. equilibrated magnitudes); only its magnitudes are used.
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    mag = magnitudes(atoms, moment)
    sign = np.ones(len(atoms))
    numbers = atoms.numbers
    for z in np.unique(numbers):
        idx = np.flatnonzero((numbers == z) & (mag > 0))
        if idx.size == 0:
            continue
        s = np.resize([1.0, -1.0], idx.size)
        if idx.size % 2:
            s[-1] = rng.choice([1.0, -1.0])
        sign[idx] = rng.permutation(s)
    return mag * sign


def random_states(atoms: Atoms, moment, n_states: int, seed: int = 0) -> list[np.ndarray]:
    """``n_states`` independent random 50/50 states from one seeded generator."""
    if n_states < 1:
        raise ValueError("n_states must be >= 1")
    rng = np.random.default_rng(seed)
    return [random_collinear(atoms, moment, rng) for _ in range(n_states)]


def state_moments(atoms: Atoms, kind: str, moment, *, direction="AFM1", n_layers: int = 1,
                  seed: int = 0) -> np.ndarray:
    """Moments of a named state: "FM", "AFM" (layered, see :func:`antiferromagnetic`),
    a rock-salt ordering name ("AFM1", "AFM2", "AFM110_2") or "PM"/"random" (one random state)."""
    k = kind.upper()
    if k == "FM":
        return ferromagnetic(atoms, moment)
    if k == "AFM":
        return antiferromagnetic(atoms, moment, direction, n_layers)
    if kind in ROCKSALT_AFM:
        return antiferromagnetic(atoms, moment, kind)
    if k in ("PM", "RANDOM"):
        return random_collinear(atoms, moment, seed)
    raise ValueError(f"unknown magnetic state {kind!r}")


