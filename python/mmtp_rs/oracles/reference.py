"""An embedded spin-lattice reference model: the default, DFT-free oracle.

The model is a Heisenberg-Landau model on top of a second-moment
(Finnis-Sinclair / Cleri-Rosato type) lattice model. For atoms ``i`` of
species ``a`` with collinear signed moments ``m_i`` (μB)::

    E = Σ_pairs φ_ab(r) + Σ_i F_a(ρ_i) + Σ_i [A_a(ρ_i) m_i² + B_a m_i⁴]
        − Σ_pairs J_ab(r) m_i m_j

    ρ_i    = Σ_j g_ab(r_ij)
    φ_ab   = E_ab exp(−p_ab (r / r0_ab − 1)) fc(r)          (repulsion, eV)
    g_ab   = ξ_ab² exp(−2 q_ab (r / r0_ab − 1)) fc(r)       (band density, eV²)
    F_a(ρ) = −(√(ρ + s²) − s)                               (band energy, eV)
    A_a(ρ) = A0_a + A1_a ρ                                  (magneto-volume, eV/μB²)
    J_ab   = J0_ab exp(−k_ab x − c_ab x²) fc(r), x = r / rJ_ab − 1   (exchange, eV/μB²)

``fc`` is a C² quintic switch from 1 to 0 between ``cutoff − taper`` and
``cutoff``. Energy, forces, stress and magnetic forces ``T_i = −∂E/∂m_i``
are analytic. See ``docs/reference_model.md`` for the parameter sets.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from ase.data import atomic_numbers
from ase.neighborlist import neighbor_list
from ase.stress import full_3x3_to_voigt_6_stress

from mmtp_rs.oracles.base import Oracle, OracleOutput, SerialExecutor


__all__ = [
    "ReferenceModel",
    "ReferenceCalculator",
    "ReferenceOracle",
    "PRESETS",
]

#: Smoothing of the square root in F(ρ), eV. Keeps F'(0) finite.
_SQRT_SOFTENING = 1.0e-2


def _switch(r: np.ndarray, cutoff: float, taper: float) -> tuple[np.ndarray, np.ndarray]:
    """C² quintic switching function and its derivative."""
    x = np.clip((r - (cutoff - taper)) / taper, 0.0, 1.0)
    fc = 1.0 - x**3 * (10.0 - 15.0 * x + 6.0 * x**2)
    dfc = -30.0 * x**2 * (1.0 - x) ** 2 / taper
    return fc, dfc


def _neighbours(atoms: Atoms, cutoff: float):
    """Full neighbour list ``i, j, d, D`` with ``D = r_j + shift − r_i``.

    Small periodic cells use a vectorised all-images search (a few ms for 64
    atoms); larger or non-periodic systems use :func:`ase.neighborlist.neighbor_list`.
    """
    n = len(atoms)
    if atoms.pbc.all() and n > 0:
        cell = atoms.cell.array
        recip = np.linalg.inv(cell)
        heights = 1.0 / np.linalg.norm(recip, axis=0)
        reps = [int(np.ceil(cutoff / h)) for h in heights]
        n_images = np.prod([2 * k + 1 for k in reps])
        if n * n * n_images <= 400_000:
            frac = atoms.positions @ recip
            frac -= np.floor(frac)
            pos = frac @ cell
            grid = np.meshgrid(*[np.arange(-k, k + 1) for k in reps], indexing="ij")
            offsets = np.stack([g.ravel() for g in grid], axis=1) @ cell
            vec = pos[None, :, None, :] + offsets[None, None, :, :] - pos[:, None, None, :]
            d2 = np.einsum("ijsk,ijsk->ijs", vec, vec)
            inside = d2 < cutoff * cutoff
            centre = len(offsets) // 2  # the zero shift
            inside[np.arange(n), np.arange(n), centre] = False
            i, j, s = np.nonzero(inside)
            vec = vec[i, j, s]
            return i, j, np.sqrt(d2[i, j, s]), vec
    i, j, d, vec = neighbor_list("ijdD", atoms, cutoff)
    return i, j, d, vec


# Parameter sets. Pair keys are "A-B" (unordered, symmetric). Units:
# E (eV), p (1), r0 (Å), xi2 (eV²), q (1), J0 (eV/μB²), k (1), rJ (Å);
# per species A0 (eV/μB²), A1 (eV/μB² per eV² of density), B (eV/μB⁴).
PRESETS: dict[str, dict[str, Any]] = {
    # Rock-salt CrN: AFM ([001] layers) ground state, a0 = 4.15 Å, |m_Cr| = 2.5 μB,
    # C11 ≈ 450, C12 ≈ 120, C44 ≈ 120 GPa (relaxed moments).
    "CrN": {
        "species": ["Cr", "N"],
        "cutoff": 4.5,
        "taper": 1.0,
        "species_params": {
            "Cr": {"A0": -0.6428, "A1": 0.006535, "B": 0.02},
            "N": {"A0": 0.5, "A1": 0.0, "B": 0.05},
        },
        "pair_params": {
            "Cr-N": {"E": 0.2387, "p": 15.99, "r0": 2.075, "xi2": 8.808, "q": 3.828,
                     "J0": 0.002, "k": 3.0, "c": 0.0, "rJ": 2.075},
            "Cr-Cr": {"E": 0.1312, "p": 10.0, "r0": 2.93, "xi2": 0.6142, "q": 2.5,
                      "J0": -0.0015, "k": 4.0, "c": 0.0, "rJ": 2.93},
            "N-N": {"E": 0.1312, "p": 10.0, "r0": 2.93, "xi2": 0.0, "q": 2.5},
        },
    },
    # bcc Fe: FM, a0 = 2.83 Å, m = 2.2 μB, C11 ≈ 260, C12 ≈ 140, C44 ≈ 110 GPa;
    # E(AFM B2 order) − E(FM) ≈ 0.35 eV/atom. The exchange peaks at the second
    # shell: magnetism is what keeps bcc stable (as in real Fe).
    "Fe": {
        "species": ["Fe"],
        "cutoff": 3.9,
        "taper": 0.6,
        "species_params": {"Fe": {"A0": -0.3837, "A1": 0.005, "B": 0.03}},
        "pair_params": {
            "Fe-Fe": {"E": 0.24033, "p": 13.42683, "r0": 2.45, "xi2": 4.27546, "q": 3.60602,
                      "J0": 0.02562, "k": 0.0, "c": 49.2715, "rJ": 2.83},
        },
    },
    # B2 FeAl: FM, a0 = 2.88 Å, m_Fe ≈ 0.7 μB, m_Al = 0, C11 ≈ 260, C12 ≈ 136,
    # C44 ≈ 134 GPa. Fe-Fe pair terms as in "Fe"; Fe's Landau A0 is refitted.
    "FeAl": {
        "species": ["Fe", "Al"],
        "cutoff": 3.9,
        "taper": 0.6,
        "species_params": {
            "Fe": {"A0": -0.4686, "A1": 0.005, "B": 0.03},
            "Al": {"A0": 0.5, "A1": 0.0, "B": 0.05},
        },
        "pair_params": {
            "Fe-Fe": {"E": 0.24033, "p": 13.42683, "r0": 2.45, "xi2": 4.27546, "q": 3.60602,
                      "J0": 0.02562, "k": 0.0, "c": 49.2715, "rJ": 2.83},
            "Fe-Al": {"E": 0.08248, "p": 18.0, "r0": 2.49, "xi2": 12.0, "q": 0.81097},
            "Al-Al": {"E": 0.18472, "p": 10.0, "r0": 2.88, "xi2": 0.0, "q": 3.0},
        },
    },
}


@dataclass
class ReferenceModel:
    """Heisenberg-Landau spin-lattice model with analytic derivatives.

    Parameters
    ----------
    species : sequence of str
        Chemical symbols the model knows.
    cutoff : float
        Interaction cutoff, Å.
    taper : float
        Width of the smooth switch-off below ``cutoff``, Å.
    species_params : mapping
        For every symbol, a mapping with ``A0`` (eV/μB²), ``A1`` (eV/μB² per
        eV² of density) and ``B`` (eV/μB⁴).
    pair_params : mapping
        For every unordered pair ``"A-B"`` (both orders accepted), a mapping
        with ``E`` (eV), ``p``, ``r0`` (Å) for the repulsion, ``xi2`` (eV²),
        ``q`` for the density, and ``J0`` (eV/μB²), ``k``, ``c``, ``rJ`` (Å)
        for the exchange. Missing keys default to 0 (``r0``, ``rJ``: 1 Å);
        missing pairs do not interact.
    name : str, optional
        Label of the parameter set.
    """

    species: Sequence[str]
    cutoff: float
    taper: float
    species_params: Mapping[str, Mapping[str, float]]
    pair_params: Mapping[str, Mapping[str, float]]
    name: str = "custom"
    _arrays: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.species = tuple(self.species)
        for s in self.species:
            if s not in atomic_numbers:
                raise ValueError(f"reference model {self.name!r}: unknown chemical symbol {s!r}")
        if not (np.isfinite(self.cutoff) and self.cutoff > 0):
            raise ValueError(f"reference model {self.name!r}: cutoff must be > 0 Å, got {self.cutoff!r}")
        if not (0 < self.taper <= self.cutoff):
            raise ValueError(
                f"reference model {self.name!r}: taper must be in (0, cutoff], got {self.taper!r}"
            )
        n = len(self.species)
        idx = {s: k for k, s in enumerate(self.species)}
        sp = {k: np.zeros(n) for k in ("A0", "A1", "B")}
        for s in self.species:
            if s not in self.species_params:
                raise ValueError(f"reference model {self.name!r}: no species parameters for {s!r}")
            for k in sp:
                v = float(self.species_params[s][k])
                if not np.isfinite(v):
                    raise ValueError(f"reference model {self.name!r}: {s}.{k} = {v!r} is not finite")
                sp[k][idx[s]] = v
            if sp["B"][idx[s]] <= 0:
                raise ValueError(
                    f"reference model {self.name!r}: {s}.B must be > 0 (bounded Landau energy)"
                )
        keys = ("E", "p", "r0", "xi2", "q", "J0", "k", "c", "rJ")
        pp = {k: np.zeros((n, n)) for k in keys}
        for k in ("r0", "rJ"):
            pp[k][:] = 1.0
        for pair, values in self.pair_params.items():
            try:
                a, b = pair.split("-")
                ia, ib = idx[a], idx[b]
            except (ValueError, KeyError):
                raise ValueError(
                    f"reference model {self.name!r}: bad pair key {pair!r} "
                    f"(expected 'A-B' with A, B in {self.species})"
                ) from None
            for k in keys:
                v = float(values.get(k, 0.0 if k not in ("r0", "rJ") else 1.0))
                if not np.isfinite(v):
                    raise ValueError(f"reference model {self.name!r}: {pair}.{k} = {v!r} is not finite")
                pp[k][ia, ib] = pp[k][ib, ia] = v
        if np.any(pp["r0"] <= 0) or np.any(pp["rJ"] <= 0):
            raise ValueError(f"reference model {self.name!r}: r0 and rJ must be > 0 Å")
        self._arrays = {"index": idx, **sp, **pp}

    # ------------------------------------------------------------------ presets
    @classmethod
    def preset(cls, name: str) -> "ReferenceModel":
        """Return a shipped parameter set: ``"CrN"``, ``"Fe"`` or ``"FeAl"``.

        Parameters
        ----------
        name : str
            Name of the preset (case-insensitive).

        Returns
        -------
        ReferenceModel
        """
        for key, value in PRESETS.items():
            if key.lower() == str(name).lower():
                return cls(name=key, **copy.deepcopy(value))
        raise ValueError(f"unknown reference-model preset {name!r}; available: {sorted(PRESETS)}")

    def to_dict(self) -> dict[str, Any]:
        """Return the parameters as a JSON-serialisable dictionary."""
        return {
            "name": self.name,
            "species": list(self.species),
            "cutoff": float(self.cutoff),
            "taper": float(self.taper),
            "species_params": {k: dict(v) for k, v in self.species_params.items()},
            "pair_params": {k: dict(v) for k, v in self.pair_params.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ReferenceModel":
        """Build a model from :meth:`to_dict` output."""
        return cls(**copy.deepcopy(dict(data)))

    @classmethod
    def from_json(cls, path: str | Path) -> "ReferenceModel":
        """Read a model from a JSON file written by :meth:`to_json`."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"cannot read reference-model parameters from {path}: {err}") from err
        return cls.from_dict(data)

    def to_json(self, path: str | Path) -> None:
        """Write the parameters to a JSON file."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=1))

    # --------------------------------------------------------------- evaluation
    def _types(self, atoms: Atoms) -> np.ndarray:
        idx = self._arrays["index"]
        symbols = atoms.get_chemical_symbols()
        types = np.empty(len(symbols), dtype=np.intp)
        for k, s in enumerate(symbols):
            t = idx.get(s)
            if t is None:
                raise ValueError(
                    f"reference model {self.name!r} has no parameters for element {s!r} "
                    f"(atom {k}); known: {list(self.species)}"
                )
            types[k] = t
        return types

    def _moments(self, atoms: Atoms, moments: np.ndarray | None) -> np.ndarray:
        m = atoms.get_initial_magnetic_moments() if moments is None else np.asarray(moments, float)
        if m.ndim != 1 or m.shape[0] != len(atoms):
            raise ValueError(
                f"moments must be collinear with shape ({len(atoms)},), got shape {np.shape(m)}"
            )
        bad = np.flatnonzero(~np.isfinite(m))
        if bad.size:
            raise ValueError(f"moment of atom {bad[0]} is not finite: {m[bad[0]]!r}")
        return m

    @staticmethod
    def _check_geometry(atoms: Atoms) -> None:
        pos = atoms.get_positions()
        bad = np.flatnonzero(~np.all(np.isfinite(pos), axis=1))
        if bad.size:
            raise ValueError(f"position of atom {bad[0]} is not finite: {pos[bad[0]]}")
        if atoms.pbc.all() and abs(atoms.cell.volume) < 1e-12:
            raise ValueError("periodic cell has zero volume")

    def _geometry(self, atoms: Atoms):
        """Neighbour list and all moment-independent radial terms."""
        self._check_geometry(atoms)
        types = self._types(atoms)
        ar = self._arrays
        i, j, d, vec = _neighbours(atoms, self.cutoff)
        if d.size and d.min() < 0.5:
            k = int(np.argmin(d))
            raise ValueError(
                f"atoms {i[k]} and {j[k]} are {d[k]:.3f} Å apart: too close for the reference model"
            )
        ti, tj = types[i], types[j]
        fc, dfc = _switch(d, self.cutoff, self.taper)
        r0 = ar["r0"][ti, tj]
        ex = np.exp(-ar["p"][ti, tj] * (d / r0 - 1.0))
        phi = ar["E"][ti, tj] * ex * fc
        dphi = ar["E"][ti, tj] * ex * (-ar["p"][ti, tj] / r0 * fc + dfc)
        eg = ar["xi2"][ti, tj] * np.exp(-2.0 * ar["q"][ti, tj] * (d / r0 - 1.0))
        g = eg * fc
        dg = eg * (-2.0 * ar["q"][ti, tj] / r0 * fc + dfc)
        rj = ar["rJ"][ti, tj]
        xj = d / rj - 1.0
        cj = ar["c"][ti, tj]
        ej = ar["J0"][ti, tj] * np.exp(-ar["k"][ti, tj] * xj - cj * xj * xj)
        jr = ej * fc
        djr = ej * (-(ar["k"][ti, tj] + 2.0 * cj * xj) / rj * fc + dfc)
        n = len(atoms)
        rho = np.bincount(i, weights=g, minlength=n)
        return dict(types=types, i=i, j=j, d=d, vec=vec, phi=phi, dphi=dphi, dg=dg,
                    rho=rho, J=jr, dJ=djr)

    def _magnetic_terms(self, geo, m):
        ar = self._arrays
        t = geo["types"]
        a = ar["A0"][t] + ar["A1"][t] * geo["rho"]
        b = ar["B"][t]
        n = m.shape[0]
        h = np.bincount(geo["i"], weights=geo["J"] * m[geo["j"]], minlength=n)
        dedm = 2.0 * a * m + 4.0 * b * m**3 - h
        return a, b, h, dedm

    def evaluate(self, atoms: Atoms, moments: np.ndarray | None = None) -> dict[str, Any]:
        """Energy and all derivatives for one configuration.

        Parameters
        ----------
        atoms : ase.Atoms
            The configuration. Every element must be in :attr:`species`.
        moments : ndarray, shape (N,), optional
            Collinear signed moments, μB. Default: the initial magnetic moments.

        Returns
        -------
        dict
            ``energy`` (eV), ``energies`` (per atom, eV), ``forces`` (N×3,
            eV/Å), ``stress`` (6 Voigt xx yy zz yz xz xy, eV/Å³, ASE sign;
            ``None`` unless the cell is 3-D periodic), ``magnetic_forces``
            (N, eV/μB, −∂E/∂m) and ``magmoms`` (N, μB).
        """
        m = self._moments(atoms, moments)
        geo = self._geometry(atoms)
        return self._evaluate(atoms, geo, m)

    def _evaluate(self, atoms, geo, m):
        n = len(atoms)
        ar = self._arrays
        t, i, j = geo["types"], geo["i"], geo["j"]
        rho = geo["rho"]
        s = _SQRT_SOFTENING
        sq = np.sqrt(rho + s * s)
        f_emb = -(sq - s)
        df_emb = -0.5 / sq
        a, b, h, dedm = self._magnetic_terms(geo, m)
        mm = m[i] * m[j]
        pair_e = 0.5 * geo["phi"] - 0.5 * geo["J"] * mm
        energies = (
            f_emb + a * m**2 + b * m**4 + np.bincount(i, weights=pair_e, minlength=n)
        )
        de_drho = df_emb + ar["A1"][t] * m**2
        dedr = 0.5 * geo["dphi"] + de_drho[i] * geo["dg"] - 0.5 * geo["dJ"] * mm
        d = geo["d"]
        dedvec = (dedr / d)[:, None] * geo["vec"]
        forces = np.zeros((n, 3))
        for c in range(3):
            forces[:, c] = np.bincount(i, weights=dedvec[:, c], minlength=n) - np.bincount(
                j, weights=dedvec[:, c], minlength=n
            )
        stress = None
        if atoms.pbc.all():
            virial = geo["vec"].T @ dedvec  # Σ D_a ∂E/∂D_b
            virial = 0.5 * (virial + virial.T)
            sig = virial / atoms.get_volume()
            stress = full_3x3_to_voigt_6_stress(sig)
        out = {
            "energy": float(energies.sum()),
            "energies": energies,
            "forces": forces,
            "stress": stress,
            "magnetic_forces": -dedm,
            "magmoms": m.copy(),
        }
        for key, val in out.items():
            if val is not None and not np.all(np.isfinite(val)):
                raise FloatingPointError(f"reference model produced non-finite {key}")
        return out

    def relax_moments(
        self,
        atoms: Atoms,
        moments: np.ndarray | None = None,
        *,
        tol: float = 1e-10,
        max_iter: int = 200,
    ) -> np.ndarray:
        """Minimise the energy over the moments at fixed geometry.

        A damped Newton iteration started from ``moments`` (default: the
        initial magnetic moments) finds the nearest local minimum, so the
        sign pattern of the start (FM, AFM, random) is kept. Zero moments stay
        zero (a stationary point by symmetry).

        Parameters
        ----------
        atoms : ase.Atoms
            Configuration.
        moments : ndarray, shape (N,), optional
            Starting moments, μB.
        tol : float
            Convergence threshold on max |∂E/∂m|, eV/μB.
        max_iter : int
            Maximum number of Newton steps.

        Returns
        -------
        ndarray, shape (N,)
            Moments at the local minimum, μB.

        Raises
        ------
        RuntimeError
            If the iteration does not converge.
        """
        m = self._moments(atoms, moments).copy()
        geo = self._geometry(atoms)
        return self._relax(geo, m, tol=tol, max_iter=max_iter)

    def _relax(self, geo, m, tol=1e-10, max_iter=200):
        from scipy.sparse import coo_matrix, diags
        from scipy.sparse.linalg import spsolve

        n = m.shape[0]
        jmat = coo_matrix((geo["J"], (geo["i"], geo["j"])), shape=(n, n)).tocsr()
        a, b, _, _ = self._magnetic_terms(geo, m)

        def energy(x):
            return float(np.sum(a * x**2 + b * x**4) - 0.5 * x @ (jmat @ x))

        for _ in range(max_iter):
            grad = 2.0 * a * m + 4.0 * b * m**3 - jmat @ m
            if np.max(np.abs(grad), initial=0.0) < tol:
                return m
            hdiag = 2.0 * a + 12.0 * b * m**2
            hess = (diags(hdiag) - jmat).tocsc()
            try:
                step = spsolve(hess, grad)
                ok = np.all(np.isfinite(step)) and float(step @ grad) > 0
            except Exception:  # singular Hessian: fall back below
                ok = False
            if not ok:  # not a descent direction: diagonal preconditioned gradient step
                step = grad / np.maximum(np.abs(hdiag) + np.abs(jmat).sum(axis=1).A1, 1e-3)
            e0 = energy(m)
            lam = 1.0
            while lam > 1e-8:
                trial = m - lam * step
                if energy(trial) <= e0 + 1e-14 * max(1.0, abs(e0)):
                    break
                lam *= 0.5
            m = trial
        raise RuntimeError(f"moment relaxation did not converge in {max_iter} steps")

    def get_calculator(self, **kwargs) -> "ReferenceCalculator":
        """Return an ASE calculator using this model."""
        return ReferenceCalculator(model=self, **kwargs)


class ReferenceCalculator(Calculator):
    """ASE calculator for :class:`ReferenceModel`.

    Parameters
    ----------
    model : ReferenceModel or str
        The model or the name of a preset.
    relax_moments : bool
        If True, the moments are first relaxed at fixed geometry (the
        "unconstrained" calculation); ``magmoms`` then holds the relaxed
        moments and the magnetic forces vanish up to the tolerance.

    Notes
    -----
    Extra properties: ``magnetic_forces`` (N, eV/μB, −∂E/∂m_i) and
    ``magmoms`` (N, μB, the moments used). Moments are read from
    ``atoms.get_initial_magnetic_moments()``.
    """

    implemented_properties = [
        "energy",
        "free_energy",
        "energies",
        "forces",
        "stress",
        "magnetic_forces",
        "magmoms",
        "magmom",
    ]
    default_parameters: dict[str, Any] = {}

    def __init__(self, model: ReferenceModel | str = "CrN", relax_moments: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.model = ReferenceModel.preset(model) if isinstance(model, str) else model
        self.relax = bool(relax_moments)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        model = self.model
        m = model._moments(self.atoms, None)
        geo = model._geometry(self.atoms)
        if self.relax:
            m = model._relax(geo, m.copy())
        out = model._evaluate(self.atoms, geo, m)
        self.results = {
            "energy": out["energy"],
            "free_energy": out["energy"],
            "energies": out["energies"],
            "forces": out["forces"],
            "magnetic_forces": out["magnetic_forces"],
            "magmoms": out["magmoms"],
            "magmom": float(out["magmoms"].sum()),
        }
        if out["stress"] is not None:
            self.results["stress"] = out["stress"]


class ReferenceOracle(Oracle):
    """Oracle backed by :class:`ReferenceModel` (exact, no DFT).

    Parameters
    ----------
    model : ReferenceModel or str
        The model or a preset name (default ``"CrN"``).
    relax_moments : bool
        Minimise the energy over the moments at fixed geometry before
        labelling (unconstrained calculation).
    delay : float
        Simulated cost per job, seconds (to mimic an expensive oracle in demos
        and in tests of scheduling and resuming). Default 0.
    max_attempts : int
        Attempts per job.

    Notes
    -----
    With no executor, :meth:`label` runs the jobs in the calling process
    (:class:`~mmtp_rs.oracles.base.SerialExecutor`): a job takes milliseconds,
    less than starting a worker process. Pass any executor to change that.
    """

    name = "reference"

    def __init__(self, model: ReferenceModel | str = "CrN", *, relax_moments: bool = False,
                 delay: float = 0.0, max_attempts: int = 1):
        super().__init__(relax_moments=relax_moments, max_attempts=max_attempts)
        self.model = ReferenceModel.preset(model) if isinstance(model, str) else model
        self.delay = float(delay)

    def settings(self) -> dict[str, Any]:
        return {"model": self.model.to_dict()}

    def validate(self, configurations: Sequence[Atoms]) -> None:
        for k, atoms in enumerate(configurations):
            try:
                self.model._types(atoms)
                self.model._moments(atoms, None)
            except ValueError as err:
                raise ValueError(f"configuration {k}: {err}") from None

    def default_executor(self, n_jobs: int, max_workers: int | None):
        return SerialExecutor()

    def compute(self, atoms: Atoms, directory: Path, overrides: dict[str, Any]) -> OracleOutput:
        if self.delay > 0:
            time.sleep(self.delay)
        model = self.model
        m = model._moments(atoms, None)
        geo = model._geometry(atoms)
        if self.relax_moments:
            m = model._relax(geo, m.copy())
        out = model._evaluate(atoms, geo, m)
        return OracleOutput(
            energy=out["energy"],
            forces=out["forces"],
            stress=out["stress"],
            magnetic_forces=out["magnetic_forces"],
            moments=out["magmoms"],
            converged=True,
        )
