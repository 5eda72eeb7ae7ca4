"""Reference-label convention of mmtp_rs datasets.

Labels live under explicit ``REF_*`` keys so they never collide with the
results of a calculator attached to the same :class:`ase.Atoms`:

==========================  ===============  ==========================================
key                         where            meaning and units
==========================  ===============  ==========================================
``REF_energy``              ``atoms.info``   total energy, eV
``REF_forces``              ``atoms.arrays`` forces, (N, 3), eV/Å
``REF_stress``              ``atoms.info``   stress, 6 Voigt xx yy zz yz xz xy, eV/Å³,
                                             ASE sign (positive = tensile)
``REF_magnetic_forces``     ``atoms.arrays`` T_i = −∂E/∂m_i, (N,), eV/μB
``initial_magmoms``         ``atoms.arrays`` collinear signed moments, (N,), μB
==========================  ===============  ==========================================

All of them round-trip through ASE's extended XYZ format.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.stress import full_3x3_to_voigt_6_stress


__all__ = [
    "REF_ENERGY",
    "REF_FORCES",
    "REF_STRESS",
    "REF_MAGNETIC_FORCES",
    "Labels",
    "attach_labels",
    "read_labels",
    "has_labels",
    "voigt_from_matrix",
]

REF_ENERGY = "REF_energy"
REF_FORCES = "REF_forces"
REF_STRESS = "REF_stress"
REF_MAGNETIC_FORCES = "REF_magnetic_forces"


@dataclass
class Labels:
    """Reference labels of one configuration (``None`` where absent)."""

    energy: float  # eV
    forces: np.ndarray | None = None  # (N, 3) eV/Å
    stress: np.ndarray | None = None  # (6,) eV/Å³, Voigt xx yy zz yz xz xy, ASE sign
    magnetic_forces: np.ndarray | None = None  # (N,) eV/μB, −∂E/∂m
    moments: np.ndarray | None = None  # (N,) μB


def voigt_from_matrix(stress) -> np.ndarray:
    """Return a stress as 6 Voigt components (xx yy zz yz xz xy).

    Parameters
    ----------
    stress : array_like, shape (6,) or (3, 3)

    Returns
    -------
    ndarray, shape (6,)
    """
    s = np.asarray(stress, dtype=float)
    if s.shape == (6,):
        return s.copy()
    if s.shape == (3, 3):
        if not np.allclose(s, s.T, atol=1e-10 * max(1.0, np.abs(s).max())):
            raise ValueError("stress matrix is not symmetric")
        return full_3x3_to_voigt_6_stress(s)
    raise ValueError(f"stress must have shape (6,) or (3, 3), got {s.shape}")


def _check(name: str, value, shape) -> np.ndarray:
    arr = np.asarray(value, dtype=float)
    if arr.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {arr.shape}")
    bad = np.argwhere(~np.isfinite(arr))
    if bad.size:
        raise ValueError(f"{name} has a non-finite value at index {tuple(int(k) for k in bad[0])}")
    return arr.copy()


def attach_labels(
    atoms: Atoms,
    energy: float,
    forces=None,
    stress=None,
    magnetic_forces=None,
    moments=None,
    *,
    copy: bool = True,
) -> Atoms:
    """Store reference labels on a configuration.

    Parameters
    ----------
    atoms : ase.Atoms
        The configuration.
    energy : float
        Total energy, eV.
    forces : array_like, shape (N, 3), optional
        Forces, eV/Å.
    stress : array_like, shape (6,) or (3, 3), optional
        Stress, eV/Å³, ASE sign. Only for 3-D periodic cells.
    magnetic_forces : array_like, shape (N,), optional
        T = −∂E/∂m, eV/μB.
    moments : array_like, shape (N,), optional
        Moments the labels belong to, μB; stored as the initial magnetic
        moments. Default: leave the atoms' moments as they are.
    copy : bool
        Label a copy (default) rather than ``atoms`` itself. The copy drops
        any attached calculator.

    Returns
    -------
    ase.Atoms
        The labelled configuration.
    """
    n = len(atoms)
    e = float(energy)
    if not np.isfinite(e):
        raise ValueError(f"energy is not finite: {energy!r}")
    out = atoms.copy() if copy else atoms
    if copy:
        out.calc = None
    out.info[REF_ENERGY] = e
    if forces is not None:
        out.arrays[REF_FORCES] = _check("forces", forces, (n, 3))
    if stress is not None:
        if not atoms.pbc.all():
            raise ValueError("a stress label needs a 3-D periodic cell")
        out.info[REF_STRESS] = _check("stress", voigt_from_matrix(stress), (6,))
    if magnetic_forces is not None:
        out.arrays[REF_MAGNETIC_FORCES] = _check("magnetic_forces", magnetic_forces, (n,))
    if moments is not None:
        out.set_initial_magnetic_moments(_check("moments", moments, (n,)))
    return out


def has_labels(atoms: Atoms) -> bool:
    """Return True if the configuration carries a reference energy."""
    return REF_ENERGY in atoms.info


def read_labels(atoms: Atoms) -> Labels:
    """Read the reference labels of a configuration.

    Parameters
    ----------
    atoms : ase.Atoms

    Returns
    -------
    Labels

    Raises
    ------
    KeyError
        If there is no ``REF_energy``.
    """
    if REF_ENERGY not in atoms.info:
        raise KeyError(f"configuration has no {REF_ENERGY!r} label")
    n = len(atoms)
    forces = atoms.arrays.get(REF_FORCES)
    stress = atoms.info.get(REF_STRESS)
    tmag = atoms.arrays.get(REF_MAGNETIC_FORCES)
    return Labels(
        energy=float(atoms.info[REF_ENERGY]),
        forces=None if forces is None else _check("forces", forces, (n, 3)),
        stress=None if stress is None else _check("stress", voigt_from_matrix(stress), (6,)),
        magnetic_forces=None if tmag is None else _check("magnetic_forces", tmag, (n,)),
        moments=atoms.get_initial_magnetic_moments().astype(float)
        if atoms.has("initial_magmoms")
        else None,
    )
