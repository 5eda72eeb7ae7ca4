"""Elastic constants from stress-strain with internal relaxation; Born stability; the zero-pressure volume of a state."""

from __future__ import annotations

from typing import Callable

import numpy as np
from ase import Atoms

from mmtp_rs.properties.setup import MagneticSetup, _sibling
from mmtp_rs.units import EV_A3_TO_GPA


__all__ = ["voigt_strain", "elastic_constants", "cubic_constants", "born_stability", "equilibrium_scale"]


# ================================================================ elastic constants
def voigt_strain(j: int, h: float) -> np.ndarray:
    """Symmetric strain tensor of Voigt component j (0..5; shear as engineering strain h)."""
    pairs = [(0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1)]
    p, q = pairs[j]
    e = np.zeros((3, 3))
    if p == q:
        e[p, p] = h
    else:
        e[p, q] = e[q, p] = h / 2
    return e


def _relax_positions(at: Atoms, fmax: float, steps: int) -> int:
    from ase.optimize import BFGS

    opt = BFGS(at, logfile=None)
    opt.run(fmax=fmax, steps=steps)
    return int(opt.get_number_of_steps())


def elastic_constants(
    atoms: Atoms,
    strain: float = 0.005,
    relax: bool = True,
    fmax: float = 1e-3,
    max_steps: int = 300,
    reattach: Callable[[Atoms], Atoms] | None = None,
) -> dict:
    """Elastic constants from central stress-strain differences.

    C[:, j] = (σ(+h e_j) − σ(−h e_j)) / 2h in Voigt notation (engineering
    shear strains), σ in ASE's sign (positive in tension), so C = +dσ/dε.

    Parameters
    ----------
    atoms : structure with its calculator (and moments) attached; the
        reference geometry (ideally at zero stress)
    strain : h, the strain amplitude (0.005 = ±0.5 %)
    relax : relax internal positions at fixed cell (and fixed moments)
    fmax : force tolerance of the relaxation, eV/Å
    max_steps : step limit of each relaxation
    reattach : optional ``f(strained_atoms) -> atoms`` that re-prepares the
        state at each strain (e.g. :meth:`MagneticSetup.attach`, for
        moments re-equilibrated at each strain); default: the reference
        moments (or PM states) are kept fixed

    Returns
    -------
    dict : ``C`` (6x6 GPa, as computed), ``C_sym`` ((C+Cᵀ)/2), ``asymmetry``
    (max |C−Cᵀ|/2, GPa), ``stress0_GPa`` (stress at zero strain), ``relax_steps``
    """
    cell = atoms.cell.array.copy()
    c = np.zeros((6, 6))
    steps = []
    for j in range(6):
        sig = []
        for sgn in (1.0, -1.0):
            b = atoms.copy()
            b.set_cell(cell @ (np.eye(3) + voigt_strain(j, sgn * strain)), scale_atoms=True)
            if reattach is not None:
                b = reattach(b)
            else:
                b.calc = atoms.calc
            steps.append(_relax_positions(b, fmax, max_steps) if relax else 0)
            sig.append(b.get_stress(voigt=True))
        c[:, j] = (sig[0] - sig[1]) / (2 * strain) * EV_A3_TO_GPA
    s0 = _sibling(atoms).get_stress(voigt=True) * EV_A3_TO_GPA
    csym = 0.5 * (c + c.T)
    return {"C": c, "C_sym": csym, "asymmetry": float(np.abs(c - c.T).max() / 2), "stress0_GPa": s0,
            "relax_steps": steps, "strain": strain, "relaxed": relax}


def cubic_constants(c: np.ndarray) -> dict:
    """Cubic averages C11, C12, C44 (GPa), bulk modulus and the largest deviation from cubic form."""
    c = np.asarray(c)
    c11 = float(np.mean([c[0, 0], c[1, 1], c[2, 2]]))
    c12 = float(np.mean([c[0, 1], c[0, 2], c[1, 2], c[1, 0], c[2, 0], c[2, 1]]))
    c44 = float(np.mean([c[3, 3], c[4, 4], c[5, 5]]))
    ideal = np.zeros((6, 6))
    ideal[:3, :3] = c12
    ideal[np.arange(3), np.arange(3)] = c11
    ideal[np.arange(3, 6), np.arange(3, 6)] = c44
    return {"C11": c11, "C12": c12, "C44": c44, "B": (c11 + 2 * c12) / 3,
            "max_deviation_from_cubic": float(np.abs(c - ideal).max())}


def born_stability(c: np.ndarray, cubic_tolerance: float = 2.0) -> dict:
    """Born mechanical stability.

    The general criterion is that the symmetric 6x6 C is positive definite;
    for a (near-)cubic C the classic conditions C11 − C12 > 0, C11 + 2 C12 > 0,
    C44 > 0 are reported too.
    """
    cs = 0.5 * (np.asarray(c) + np.asarray(c).T)
    eig = np.linalg.eigvalsh(cs)
    out = {"stable": bool(eig.min() > 0), "eigenvalues_GPa": eig.tolist()}
    cub = cubic_constants(cs)
    if cub["max_deviation_from_cubic"] <= cubic_tolerance * max(1.0, 0.01 * abs(cub["C11"])):
        out["cubic"] = {"C11-C12": cub["C11"] - cub["C12"], "C11+2C12": cub["C11"] + 2 * cub["C12"],
                        "C44": cub["C44"],
                        "stable": bool(cub["C11"] > cub["C12"] and cub["C11"] + 2 * cub["C12"] > 0
                                       and cub["C44"] > 0)}
    return out


def equilibrium_scale(atoms: Atoms, setup: MagneticSetup, bracket: tuple[float, float] = (0.97, 1.03),
                      tol: float = 1e-5) -> tuple[float, float]:
    """Linear scale s of the cell at which the (averaged) pressure of the state vanishes.

    Each trial cell is re-attached (moments re-equilibrated, PM states rebuilt).
    Returns (s, pressure at s in GPa).
    """
    from scipy.optimize import brentq

    cell = atoms.cell.array.copy()

    def pressure(s):
        b = atoms.copy()
        b.set_cell(cell * s, scale_atoms=True)
        b = setup.attach(b)
        return float(-b.get_stress(voigt=True)[:3].mean() * EV_A3_TO_GPA)

    lo, hi = bracket
    plo, phi = pressure(lo), pressure(hi)
    for _ in range(6):
        if plo * phi < 0:
            break
        lo, hi = 1 - 2 * (1 - lo), 1 + 2 * (hi - 1)
        plo, phi = pressure(lo), pressure(hi)
    else:
        raise RuntimeError("no zero-pressure volume found within ±40 % linear strain")
    s = brentq(pressure, lo, hi, xtol=tol)
    return float(s), pressure(s)


