"""Temperature scans of spin Monte Carlo and the ordering (Néel or Curie) temperature.

:func:`ordering_patterns` gives the ±1 pattern(s) of an ordering (with the
symmetry-equivalent variants of a cubic AFM order); :func:`temperature_scan`
runs :func:`~mmtp_rs.magnetism.montecarlo.sample_spins` at each temperature
from the same ordered start and reduces each run with
:func:`~mmtp_rs.magnetism.observables.thermodynamics`;
:func:`ordering_temperature` locates the peak of the staggered susceptibility
(and, with two cell sizes, the Binder-cumulant crossing).
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np
from ase import Atoms

from mmtp_rs.magnetism.montecarlo import MCSettings, sample_spins
from mmtp_rs.magnetism.observables import TransitionNotFound, binder_crossing, peak_temperature, thermodynamics
from mmtp_rs.magnetism.states import ROCKSALT_AFM, antiferromagnetic, ferromagnetic

__all__ = ["ordering_patterns", "temperature_scan", "ordering_temperature"]

_CUBIC_NORMALS = {
    (0, 0, 1): [(1, 0, 0), (0, 1, 0), (0, 0, 1)],
    (1, 1, 1): [(1, 1, 1), (-1, 1, 1), (1, -1, 1), (1, 1, -1)],
    (1, 1, 0): [(1, 1, 0), (1, -1, 0), (1, 0, 1), (1, 0, -1), (0, 1, 1), (0, 1, -1)],
}


def ordering_patterns(atoms: Atoms, magnetic: Sequence[str], order: str = "AFM1", n_layers: int = 1,
                      equivalent: bool = True) -> np.ndarray:
    """The ±1 pattern(s) (P, N) of an ordering on the ``magnetic`` species (0 elsewhere).

    ``order``: "FM", a rock-salt AFM name ("AFM1", "AFM2", "AFM110_2") or a
    layer normal "h,k,l"; ``equivalent``: also the cubic-symmetry variants of
    the normal (AFM1 normal to x, y and z), those commensurate with the cell.
    """
    unit = {s: 1.0 for s in magnetic}
    if order.upper() == "FM":
        return ferromagnetic(atoms, unit)[None, :]
    if order in ROCKSALT_AFM:
        normal, n_layers = ROCKSALT_AFM[order]
    else:
        try:
            normal = tuple(int(x) for x in order.split(","))
            assert len(normal) == 3
        except (ValueError, AssertionError):
            raise ValueError(f"order must be 'FM', one of {sorted(ROCKSALT_AFM)} or 'h,k,l', got {order!r}") from None
    normals = [normal]
    if equivalent:
        key = tuple(sorted(abs(x) for x in normal))
        key = {(0, 0, 1): (0, 0, 1), (1, 1, 1): (1, 1, 1), (0, 1, 1): (1, 1, 0)}.get(key)
        if key is not None:
            normals = _CUBIC_NORMALS[key]
    out = []
    for nrm in normals:
        try:
            out.append(antiferromagnetic(atoms, unit, nrm, n_layers))
        except ValueError:
            if nrm == normal:
                raise
    return np.sign(np.array(out))


def temperature_scan(atoms: Atoms, calc, temperatures: Sequence[float], patterns: np.ndarray, *,
                     n_equil: int = 200, n_samples: int = 1000, sweeps_per_sample: int = 1, m_max="auto",
                     settings: MCSettings = MCSettings(), seed: int = 0, n_blocks: int = 16,
                     progress: Callable[[float, int], None] | None = None) -> list[dict]:
    """Spin MC at each temperature from the moments of ``atoms`` (the ordered
    state); returns one :func:`thermodynamics` dict per temperature (plus the
    acceptance ratio). Every temperature has its own seed (``seed + k``)."""
    temps = [float(t) for t in temperatures]
    if not temps or any(not (t > 0) for t in temps):
        raise ValueError(f"temperatures must be > 0 K, got {temperatures}")
    out = []
    for k, t in enumerate(temps):
        s = sample_spins(atoms, calc, t, n_equil, n_samples, m_max=m_max, settings=settings, seed=seed + k,
                         sweeps_per_sample=sweeps_per_sample)
        th = thermodynamics(s.energies, np.array(s.moments), patterns, t, len(atoms), n_blocks=n_blocks)
        th["acceptance"] = s.acceptance
        out.append(th)
        if progress is not None:
            progress(t, k)
    return out


def ordering_temperature(scans: Mapping[int, list[dict]], key: str = "chi_s", seed: int = 0) -> dict:
    """Ordering temperature (K) from scans of one or more cell sizes (``{n_atoms: scan}``).

    ``T_peak``: the peak of ``key`` (staggered susceptibility) of the largest
    cell, with its uncertainty (:func:`peak_temperature`); with two or more
    sizes also ``T_binder``: the crossing of the Binder cumulants of the two
    largest cells. ``temperature_K`` / ``uncertainty_K``: the peak estimate
    (the Binder crossing if the peak is not bracketed). Raises
    :class:`TransitionNotFound` if neither is found.
    """
    sizes = sorted(scans)
    big = scans[sizes[-1]]
    t = [r["temperature_K"] for r in big]
    res: dict = {"method": None}
    try:
        res["T_peak"], res["T_peak_err"] = peak_temperature(t, [r[key] for r in big], [r[key + "_err"] for r in big],
                                                            seed=seed)
    except TransitionNotFound as exc:
        res["peak_error"] = str(exc)
    if len(sizes) >= 2:
        small = scans[sizes[-2]]
        ts = [r["temperature_K"] for r in small]
        if ts != t:
            raise ValueError("the Binder crossing needs the same temperatures for both cell sizes")
        try:
            res["T_binder"], res["T_binder_err"] = binder_crossing(
                t, [r["binder"] for r in small], [r["binder_err"] for r in small],
                [r["binder"] for r in big], [r["binder_err"] for r in big], seed=seed)
        except TransitionNotFound as exc:
            res["binder_error"] = str(exc)
    if "T_peak" in res:
        res["temperature_K"], res["uncertainty_K"], res["method"] = res["T_peak"], res["T_peak_err"], "susceptibility peak"
    elif "T_binder" in res:
        res["temperature_K"], res["uncertainty_K"], res["method"] = res["T_binder"], res["T_binder_err"], "Binder crossing"
    else:
        raise TransitionNotFound("; ".join(v for k, v in res.items() if k.endswith("_error")))
    return res
