"""Collinear magnetic states: FM, layered AFM, random 50/50, moment equilibration.

Every generator returns a moment vector (N,) in μB that attaches to the atoms
by index; set it with ``atoms.set_initial_magnetic_moments(m)``. Moment
magnitudes are given per species (``{"Cr": 2.5, "N": 0.0}``) or as one number
for every atom. Atoms whose species has magnitude 0 are non-magnetic.

Stage 1 of a constrained-moment simulation (Kotykhov et al., PRB 2025) is
:func:`equilibrate_moments`: minimise E over the moments at fixed geometry,
using the calculator's magnetic forces ``-dE/dm``. It is the only stage 1 of
the package (simulation, learning loop, properties, paramagnetic averaging,
validation) and its rule is: every moment is free inside [-M_max, M_max] of
its species; a moment that starts at |m| >= 0.5 μB (:data:`SIGN_THRESHOLD`)
keeps its sign (it defines the state); freezing a moment is explicit.
"""

from __future__ import annotations

from typing import Callable, Mapping

import numpy as np
from ase import Atoms
from ase.calculators.calculator import all_changes


__all__ = ["SIGN_THRESHOLD", "STAGE1_TOL", "STAGE1_MAX_ITER", "moment_bounds", "frozen_mask", "potential_moment_bounds", "equilibrate_moments"]


# ---------------------------------------------------------------- stage 1
#: Stage 1 defaults, shared by every caller (two-stage simulation, the learning
#: loop, properties, paramagnetic averaging, validation, the command line).
#: Moments at least this large (μB) at the start keep their sign: they define
#: the magnetic state (FM, AFM, a random 50/50 pattern). Smaller ones, induced
#: moments such as N in CrN or Al in FeAl, are free over [-M_max, M_max].
SIGN_THRESHOLD = 0.5


#: Convergence of stage 1: max |projected dE/dm|, eV/μB.
STAGE1_TOL = 1e-5


#: Iteration limit of stage 1.
STAGE1_MAX_ITER = 500


def moment_bounds(atoms: Atoms, m0: np.ndarray, max_abs, sign_threshold: float = SIGN_THRESHOLD,
                  frozen=None) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper bounds (N,), μB, of the moments in stage 1.

    The rule: |m| <= M_max of the atom's species (``max_abs``: None, one number
    or a per-symbol mapping); an atom whose starting |m| >= ``sign_threshold``
    keeps the sign of its start; ``frozen`` atoms (mask, indices or chemical
    symbols) stay at their start.
    """
    syms = atoms.get_chemical_symbols()
    n = len(atoms)
    if max_abs is None:
        lim = np.full(n, np.inf)
    elif isinstance(max_abs, Mapping):
        lim = np.array([float(max_abs.get(s, np.inf)) for s in syms])
    else:
        lim = np.full(n, float(max_abs))
    if np.any(np.isnan(lim)) or np.any(lim < 0):
        raise ValueError(f"moment bounds must be >= 0 μB, got {max_abs!r}")
    lo, hi = -lim, lim.copy()
    keep = np.abs(m0) >= sign_threshold
    lo[keep & (m0 > 0)] = 0.0
    hi[keep & (m0 < 0)] = 0.0
    fz = frozen_mask(atoms, frozen)
    lo[fz] = m0[fz]
    hi[fz] = m0[fz]
    return lo, hi


def frozen_mask(atoms: Atoms, frozen) -> np.ndarray:
    """Boolean mask (N,) of the atoms whose moment stays fixed: ``frozen`` is None,
    a boolean mask, atom indices or chemical symbols."""
    n = len(atoms)
    if frozen is None:
        return np.zeros(n, dtype=bool)
    items = list(frozen) if not isinstance(frozen, (str, np.ndarray)) else frozen
    if isinstance(items, str):
        items = [items]
    arr = np.asarray(items)
    if arr.dtype == bool:
        if arr.shape != (n,):
            raise ValueError(f"a frozen mask must have shape ({n},), got {arr.shape}")
        return arr.copy()
    mask = np.zeros(n, dtype=bool)
    if arr.size == 0:
        return mask
    if arr.dtype.kind in "US":
        syms = np.array(atoms.get_chemical_symbols())
        for s in arr:
            if s not in syms:
                raise ValueError(f"frozen species {s!r} is not in the structure ({sorted(set(syms))})")
            mask |= syms == s
        return mask
    idx = arr.astype(int)
    if np.any(idx != arr) or np.any(idx < -n) or np.any(idx >= n):
        raise ValueError(f"frozen atom indices must be integers in [0, {n}), got {arr.tolist()}")
    mask[idx] = True
    return mask


def potential_moment_bounds(calc) -> Mapping[str, float] | None:
    """M_max per species of the mMTP behind ``calc`` (None if it has no magnetic basis)."""
    pot = getattr(calc, "potential", None)
    if pot is not None and hasattr(pot, "max_moment") and getattr(pot, "magnetic_basis_size", 1) > 1:
        return pot.max_moment
    base = getattr(calc, "base", None)  # wrappers (paramagnetic averaging)
    return potential_moment_bounds(base) if base is not None and base is not calc else None


def equilibrate_moments(
    atoms: Atoms,
    calc,
    moments: np.ndarray | None = None,
    *,
    tol: float = STAGE1_TOL,
    max_iter: int = STAGE1_MAX_ITER,
    max_abs: float | Mapping[str, float] | str | None = "auto",
    sign_threshold: float = SIGN_THRESHOLD,
    frozen=None,
    callback: Callable[[np.ndarray], None] | None = None,
) -> np.ndarray:
    """Stage 1: minimise E over the moments at fixed geometry. The one routine of the package.

    Every moment is a degree of freedom inside ``[-M_max, M_max]`` of its
    species. A moment whose starting magnitude is at least ``sign_threshold``
    (0.5 μB) keeps its sign, so the sign pattern that defines the magnetic
    state (FM, AFM, a random 50/50 state) survives, while induced moments
    (N in CrN, Al in FeAl, any moment that starts at 0) move freely in both
    directions. Freezing moments is an explicit choice (``frozen``).

    The minimiser is scipy's bounded L-BFGS-B on E(m) with the gradient
    ``-magnetic_forces``. For the reference model
    (:class:`~mmtp_rs.oracles.ReferenceCalculator`) its exact Newton
    relaxation is used instead when its minimum satisfies the same bounds (the
    same local minimum, to 1e-10 eV/μB), so the oracle's ground truth comes
    from the same rule.

    Parameters
    ----------
    atoms : geometry (not modified)
    calc : ASE calculator providing ``energy`` and ``magnetic_forces``
    moments : starting moments, μB (default: ``atoms.get_initial_magnetic_moments()``)
    tol : convergence on the largest projected |dE/dm|, eV/μB
    max_iter : iteration limit
    max_abs : bound on |m|: "auto" (the M_max per species of the mMTP behind
        ``calc``; none for other calculators), None (unbounded), one number
        or a per-symbol mapping, μB
    sign_threshold : starting |m| (μB) from which an atom keeps its sign
    frozen : atoms whose moment stays at its start (mask, indices or symbols)
    callback : called as ``callback(m)`` after every evaluation (the
        calculator's results are then those of ``m``), e.g. to grade every
        visited moment state

    Returns
    -------
    ndarray (N,) : equilibrated moments, μB

    Raises
    ------
    FloatingPointError
        If the calculator returns a non-finite energy or magnetic force.
    """
    from scipy.optimize import minimize

    m0 = np.array(atoms.get_initial_magnetic_moments() if moments is None else moments, dtype=float)
    if m0.shape != (len(atoms),):
        raise ValueError(f"collinear moments of shape ({len(atoms)},) are needed, got {m0.shape}")
    if not np.all(np.isfinite(m0)):
        k = int(np.flatnonzero(~np.isfinite(m0))[0])
        raise ValueError(f"the starting moment of atom {k} is {m0[k]}")
    if not (tol > 0 and max_iter >= 1):
        raise ValueError(f"need tol > 0 and max_iter >= 1, got {tol}, {max_iter}")
    if isinstance(max_abs, str):
        if max_abs != "auto":
            raise ValueError(f"max_abs must be 'auto', None, a number or a per-species mapping, got {max_abs!r}")
        max_abs = potential_moment_bounds(calc)
    lo, hi = moment_bounds(atoms, m0, max_abs, sign_threshold, frozen)
    work = atoms.copy()
    work.calc = None
    x0 = np.clip(m0, lo, hi)

    model = getattr(calc, "model", None)
    if model is not None and hasattr(model, "relax_moments") and not getattr(calc, "relax", False) \
            and not np.any(lo == hi):
        try:
            m = model.relax_moments(work, x0, tol=min(tol, 1e-10))
        except RuntimeError:
            m = None
        if m is not None and np.all(m >= lo - 1e-12) and np.all(m <= hi + 1e-12):
            if callback is not None:
                work.set_initial_magnetic_moments(m)
                calc.calculate(work, ["energy", "magnetic_forces"], all_changes)
                callback(np.array(m))
            return np.clip(m, lo, hi)

    def fun(x):
        work.set_initial_magnetic_moments(x)
        calc.calculate(work, ["energy", "magnetic_forces"], all_changes)
        e = float(calc.results["energy"])
        t = np.asarray(calc.results["magnetic_forces"], dtype=float)
        if not (np.isfinite(e) and np.all(np.isfinite(t))):
            raise FloatingPointError("energy or magnetic forces are not finite during moment equilibration")
        if callback is not None:
            callback(np.array(x))
        return e, -t

    bounds = [(None if not np.isfinite(a) else a, None if not np.isfinite(b) else b) for a, b in zip(lo, hi)]
    res = minimize(fun, x0, jac=True, method="L-BFGS-B", bounds=bounds,
                   options={"maxiter": max_iter, "gtol": tol, "ftol": 1e-15})
    return np.clip(np.asarray(res.x, dtype=float), lo, hi)


