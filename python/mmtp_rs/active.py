"""Active learning: the maxvol active set, extrapolation grades, selection.

The active set is the m x m matrix A (m = number of parameters) whose rows
are parameter gradients dE/dtheta of m training configurations chosen by
maxvol to maximise |det A| (Podryabinkin & Shapeev 2017). The extrapolation
grade of a configuration with gradient b is ``max_j |(b A^-1)_j|``: at most
1 (+ tol) inside the "hull" of the active set, large outside it.

Two modes:

``"configuration"``
    one row per configuration: dE/dtheta of the energy (spin-inversion
    symmetrised if the potential is), divided by the number of atoms unless
    ``scale_by_atoms=False`` (MLIP's default scaling);
``"neighborhood"``
    one row per atom: dE_i/dtheta of its site energy; the grade of a
    configuration is the largest over its atoms (per-atom grades are kept
    as ``nbh_grades``).

While fewer than m rows of data exist, A is filled with unit rows, as in the
paper; directions that no data reaches (for example the exactly linearly
dependent basis function of MLIP's level-16 basis) keep their unit row, so A
is never singular. The maxvol swaps, the Sherman-Morrison updates of A^-1
and the grading run in Rust (``mmtp_core::maxvol``), in parallel.

Typical loop::

    aset = ActiveSet.from_training(pot, train)            # maxvol over the training set
    atoms.calc = aset.calculator()                        # energy, forces, extrapolation_grade
    ...                                                   # run MD, preselect grade > gamma_low
    chosen = aset.select(preselected, limit=20)           # maxvol selection from the pool
    ...                                                   # label `chosen`, refit pot
    aset.update(potential=pot, training=train + chosen)   # rebuild for the refitted potential
    aset.save("active.npz"); aset = ActiveSet.load("active.npz", pot)
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes

from mmtp_rs import _core
from mmtp_rs.io.images import plain_copy
from mmtp_rs.model.calculator import MMTPCalculator
from mmtp_rs.model.potential import MMTPError, Potential


__all__ = ["FORMAT_TAG", "FORMAT_VERSION", "ATOM_STRIDE", "ActiveSet", "GradingCalculator"]


FORMAT_TAG = "mmtp_rs active set"


FORMAT_VERSION = 1


ATOM_STRIDE = 1 << 24  # row id = config id * ATOM_STRIDE + atom index (neighbourhood mode)


_MODES = {"configuration": "configuration", "cfg": "configuration",
          "neighborhood": "neighborhood", "neighbourhood": "neighborhood", "nbh": "neighborhood"}


def _mode(mode: str) -> str:
    try:
        return _MODES[str(mode).lower()]
    except KeyError:
        raise MMTPError(f"unknown active-set mode {mode!r}: use 'configuration' or 'neighborhood'") from None


def _fingerprint(pot: Potential, symmetrize: bool) -> str:
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(pot.params, dtype="<f8").tobytes())
    h.update(f"{pot.n_params}:{symmetrize}:{pot.min_dist}:{pot.max_dist}:{pot.scaling}".encode())
    h.update(np.ascontiguousarray(pot.mag_intervals, dtype="<f8").tobytes())
    return h.hexdigest()


class ActiveSet:
    """The maxvol active set of a potential.

    Parameters
    ----------
    potential : Potential
    mode : ``"configuration"`` (one row per configuration) or ``"neighborhood"``
        (one row per atom)
    scale_by_atoms : configuration mode: divide rows by the number of atoms (MLIP's default)
    tol : swap tolerance of :meth:`select` (swap while |c_ij| > 1 + tol; MLIP: 1e-3)
    build_tol : swap tolerance when building or adding to the active set (MLIP: 1e-7)
    unit_value : diagonal value of the unit rows that fill A before data does. Rows
        are gradients of order 1e-3..1 per atom, so unit rows of 1 would rarely be
        displaced; 1e-5 (the size of MLIP's initialisation threshold) lets every
        direction the data reaches be filled by data, and leaves unreached
        directions (exact linear dependences) with a tiny unit row, which makes a
        configuration that does reach them extrapolative.
    symmetrize : energy whose gradient makes the rows (default: the potential's setting)
    batch_size : configurations evaluated per parallel batch
    """

    def __init__(self, potential: Potential, mode: str = "configuration", *, scale_by_atoms: bool = True,
                 tol: float = 1e-3, build_tol: float = 1e-7, unit_value: float = 1e-5,
                 symmetrize: bool | None = None, batch_size: int = 256):
        if not isinstance(potential, Potential):
            raise TypeError(f"potential must be a mmtp_rs.Potential, got {type(potential).__name__}")
        for name, v in (("tol", tol), ("build_tol", build_tol)):
            if not (np.isfinite(v) and v >= 0):
                raise MMTPError(f"{name} must be finite and >= 0, got {v}")
        self.potential = potential
        self.mode = _mode(mode)
        self.scale_by_atoms = bool(scale_by_atoms)
        self.tol = float(tol)
        self.build_tol = float(build_tol)
        self.symmetrize = potential.symmetrize if symmetrize is None else bool(symmetrize)
        self.batch_size = max(1, int(batch_size))
        self.matrix = _core.ActiveMatrix(potential.n_params, float(unit_value))
        self.configs: dict[int, Atoms] = {}  # configurations holding rows of A, by id
        self._next_id = 0
        self._fp = _fingerprint(potential, self.symmetrize)
        self.last_report: dict | None = None

    # ------------------------------------------------------------ building
    @classmethod
    def from_training(cls, potential: Potential, images: Sequence[Atoms], mode: str = "configuration",
                      **kwargs) -> "ActiveSet":
        """An active set chosen by maxvol from the training configurations ``images``."""
        aset = cls(potential, mode, **kwargs)
        aset.add(images)
        return aset

    @property
    def m(self) -> int:
        """Number of rows (= parameters)."""
        return self.matrix.m

    @property
    def n_unit_rows(self) -> int:
        """Rows of A not (yet) filled by data."""
        return int(np.sum(self.matrix.ids < 0))

    def row_owners(self) -> np.ndarray:
        """(m, 2) array of (configuration id, atom index) of each row of A; -1 for unit rows
        (atom index -1 in configuration mode)."""
        ids = self.matrix.ids
        out = np.full((len(ids), 2), -1, dtype=np.int64)
        data = ids >= 0
        if self.mode == "configuration":
            out[data, 0] = ids[data]
        else:
            out[data, 0] = ids[data] // ATOM_STRIDE
            out[data, 1] = ids[data] % ATOM_STRIDE
        return out

    def _check_potential(self) -> None:
        if _fingerprint(self.potential, self.symmetrize) != self._fp:
            raise MMTPError("the potential's parameters changed since the active set was built: "
                            "call update() (optionally with the training set) before grading or selecting")

    def rows(self, images: Sequence[Atoms]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Gradient rows of ``images``: (B (K, m), image index (K,), atom index (K,), -1 in
        configuration mode). Evaluated in parallel batches."""
        images = list(images)
        m = self.m
        blocks, img, atom = [], [], []
        nbh = self.mode == "neighborhood"
        for s in range(0, len(images), self.batch_size):
            chunk = images[s:s + self.batch_size]
            outs = self.potential.evaluate_many(chunk, symmetrize=self.symmetrize, param_grad=not nbh,
                                                forces=False, site_param_grad=nbh)
            for k, (a, o) in enumerate(zip(chunk, outs)):
                if nbh:
                    g = np.asarray(o["site_param_gradient"], dtype=float).reshape(len(a), m)
                    blocks.append(g)
                    img.append(np.full(len(a), s + k, dtype=np.int64))
                    atom.append(np.arange(len(a), dtype=np.int64))
                else:
                    g = np.asarray(o["param_gradient"], dtype=float)
                    if self.scale_by_atoms:
                        g = g / max(len(a), 1)
                    blocks.append(g[None, :])
                    img.append(np.array([s + k], dtype=np.int64))
                    atom.append(np.array([-1], dtype=np.int64))
        if not blocks:
            return np.zeros((0, m)), np.zeros(0, np.int64), np.zeros(0, np.int64)
        return np.concatenate(blocks), np.concatenate(img), np.concatenate(atom)

    def _ids(self, cfg_ids: np.ndarray, atom: np.ndarray) -> np.ndarray:
        if self.mode == "configuration":
            return cfg_ids.astype(np.int64)
        if len(atom) and atom.max() >= ATOM_STRIDE:
            raise MMTPError(f"neighbourhood mode supports at most {ATOM_STRIDE} atoms per configuration")
        return cfg_ids.astype(np.int64) * ATOM_STRIDE + atom

    def _prune(self) -> None:
        keep = set(int(x) for x in self.row_owners()[:, 0] if x >= 0)
        self.configs = {k: v for k, v in self.configs.items() if k in keep}

    def add(self, images: Sequence[Atoms], tol: float | None = None) -> dict:
        """Run maxvol over the rows of ``images`` against the current A (swap
        tolerance ``build_tol`` unless ``tol`` is given). Configurations whose
        rows enter A are kept (copies) in ``configs``. Returns the maxvol report."""
        self._check_potential()
        images = list(images)
        b, img, atom = self.rows(images)
        cfg_ids = self._next_id + img
        ids = self._ids(cfg_ids, atom)
        rep = self.matrix.maxvol(b, ids, groups=cfg_ids, tol=self.build_tol if tol is None else float(tol))
        self._next_id += len(images)
        present = set(int(x) for x in self.row_owners()[:, 0] if x >= 0)
        for k, a in enumerate(images):
            cid = self._next_id - len(images) + k
            if cid in present:
                self.configs[cid] = plain_copy(a, info_keys=())
        self._prune()
        self.last_report = rep
        return rep

    def update(self, potential: Potential | None = None, new_images: Sequence[Atoms] | None = None,
               training: Sequence[Atoms] | None = None) -> "ActiveSet":
        """Bring the active set up to date.

        * ``training`` given: rebuild from scratch by maxvol over the whole
          training set (what to do after a refit);
        * else, if the potential (or its parameters) changed: rebuild from the
          configurations currently in the active set plus ``new_images``;
        * else: add ``new_images`` by maxvol.
        """
        if potential is not None:
            if potential.n_params != self.m:
                raise MMTPError(f"the new potential has {potential.n_params} parameters, the active set {self.m}")
            self.potential = potential
        fp = _fingerprint(self.potential, self.symmetrize)
        new_images = [] if new_images is None else list(new_images)
        if training is not None or fp != self._fp:
            pool = list(training) + new_images if training is not None else \
                [self.configs[k] for k in sorted(self.configs)] + new_images
            self.matrix = _core.ActiveMatrix(self.m, self.matrix.unit_value)
            self.configs = {}
            self._next_id = 0
            self._fp = fp
            self.add(pool)
        elif new_images:
            self.add(new_images)
        return self

    # ------------------------------------------------------------ grading
    def _grades_rows(self, b: np.ndarray) -> np.ndarray:
        g, _ = self.matrix.grades(np.ascontiguousarray(b, dtype=float))
        return g

    def grades(self, images: Sequence[Atoms], store: bool = False) -> np.ndarray:
        """Extrapolation grades of many configurations (parallel). With ``store``,
        each image gets ``info['MV_grade']`` (and ``arrays['nbh_grades']`` in
        neighbourhood mode)."""
        self._check_potential()
        images = list(images)
        out = np.zeros(len(images))
        for s in range(0, len(images), self.batch_size):
            chunk = images[s:s + self.batch_size]
            b, img, _ = self.rows(chunk)
            g = self._grades_rows(b)
            gmax = np.zeros(len(chunk))
            np.maximum.at(gmax, img, g)
            out[s:s + len(chunk)] = gmax
            if store:
                for k, a in enumerate(chunk):
                    a.info["MV_grade"] = float(gmax[k])
                    if self.mode == "neighborhood":
                        a.arrays["nbh_grades"] = g[img == k].copy()
        return out

    def grade(self, atoms: Atoms) -> float:
        """Extrapolation grade of one configuration (max over atoms in neighbourhood mode)."""
        return float(self.grades([atoms])[0])

    def atom_grades(self, atoms: Atoms) -> np.ndarray:
        """Per-atom grades (neighbourhood mode)."""
        if self.mode != "neighborhood":
            raise MMTPError("per-atom grades need an active set in neighbourhood mode")
        self._check_potential()
        b, _, _ = self.rows([atoms])
        return self._grades_rows(b)

    def grade_from_output(self, out: dict, n_atoms: int) -> tuple[float, np.ndarray | None]:
        """Grade from an ``evaluate`` result holding ``param_gradient`` (configuration mode)
        or ``site_param_gradient`` (neighbourhood mode): (grade, per-atom grades or None)."""
        if self.mode == "neighborhood":
            g = self._grades_rows(np.asarray(out["site_param_gradient"]).reshape(n_atoms, self.m))
            return (float(g.max()) if len(g) else 0.0), g
        b = np.asarray(out["param_gradient"], dtype=float)
        if self.scale_by_atoms:
            b = b / max(n_atoms, 1)
        return float(self._grades_rows(b[None, :])[0]), None

    # ------------------------------------------------------------ selection
    def select(self, candidates: Sequence[Atoms], limit: int | None = None, tol: float | None = None,
               return_indices: bool = False):
        """Choose configurations to label from a (preselected) pool by maxvol.

        The candidates' rows are swapped into a copy of A while some
        ``|(B A^-1)_ij| > 1 + tol``; the candidates holding rows of the final
        matrix are selected, so of a group of near-duplicates at most one is
        taken. With ``limit``, no swap brings in a candidate beyond ``limit``
        distinct configurations (a greedy prefix of maxvol). The active set
        itself is not changed: add the labelled configurations with
        :meth:`update` or :meth:`add`.

        Returns the selected configurations (pool order), or their indices
        with ``return_indices=True``.
        """
        self._check_potential()
        candidates = list(candidates)
        if limit is not None and int(limit) < 0:
            raise MMTPError(f"limit must be >= 0, got {limit}")
        if not candidates or limit == 0:
            return [] if not return_indices else np.zeros(0, np.int64)
        b, img, atom = self.rows(candidates)
        cfg_ids = self._next_id + img
        work = self.matrix.copy()
        rep = work.maxvol(b, self._ids(cfg_ids, atom), groups=cfg_ids, tol=self.tol if tol is None else float(tol),
                          max_groups=None if limit is None else int(limit))
        ids = work.ids
        owners = ids[ids >= 0] // (ATOM_STRIDE if self.mode == "neighborhood" else 1)
        chosen = np.unique(owners[owners >= self._next_id] - self._next_id)
        self.last_report = rep
        if return_indices:
            return chosen
        return [candidates[i] for i in chosen]

    # ------------------------------------------------------------ calculator
    def calculator(self, **kwargs) -> "GradingCalculator":
        """An ASE calculator of the potential that also reports ``extrapolation_grade``."""
        return GradingCalculator(self, **kwargs)

    # ------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike) -> None:
        """Write the state to an ``.npz`` file (no pickles): A, row ids, settings,
        a fingerprint of the potential and the configurations holding rows of A."""
        path = Path(path)
        keys = sorted(self.configs)
        confs = [self.configs[k] for k in keys]
        nat = np.array([len(a) for a in confs], dtype=np.int64)
        cat = (lambda xs, shape: np.concatenate(xs) if xs else np.zeros(shape))
        data = dict(
            format=np.array(FORMAT_TAG), version=np.array(FORMAT_VERSION),
            mode=np.array(self.mode), scale_by_atoms=np.array(self.scale_by_atoms),
            tol=np.array(self.tol), build_tol=np.array(self.build_tol),
            unit_value=np.array(self.matrix.unit_value), symmetrize=np.array(self.symmetrize),
            fingerprint=np.array(self._fp), next_id=np.array(self._next_id),
            A=self.matrix.matrix, ids=self.matrix.ids,
            cfg_ids=np.array(keys, dtype=np.int64), cfg_natoms=nat,
            cfg_numbers=cat([a.numbers for a in confs], (0,)).astype(np.int64),
            cfg_types=cat([self.potential.types_of(a) for a in confs], (0,)).astype(np.int64),
            cfg_positions=cat([a.positions for a in confs], (0, 3)),
            cfg_moments=cat([np.asarray(a.get_initial_magnetic_moments(), float).reshape(len(a)) for a in confs], (0,)),
            cfg_cells=np.array([a.cell.array for a in confs]).reshape(-1, 3, 3),
            cfg_pbc=np.array([a.pbc for a in confs], dtype=bool).reshape(-1, 3),
        )
        from mmtp_rs.io.atomic import atomic_path

        with atomic_path(path, suffix=".npz") as tmp:
            np.savez_compressed(tmp, **data)

    @classmethod
    def load(cls, path: str | os.PathLike, potential: Potential) -> "ActiveSet":
        """Read a state written by :meth:`save`. If ``potential`` differs from the
        one the state was built with, the active set is rebuilt from its stored
        configurations (call :meth:`update` with the training set for a full rebuild)."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such active-set file")
        try:
            with np.load(path, allow_pickle=False) as z:
                d = {k: z[k] for k in z.files}
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
            raise MMTPError(f"{path}: not a readable .npz active-set file ({exc})") from None
        try:
            if str(d["format"]) != FORMAT_TAG:
                raise MMTPError(f"{path}: not an {FORMAT_TAG} file")
            if int(d["version"]) > FORMAT_VERSION:
                raise MMTPError(f"{path}: format version {int(d['version'])} is newer than this package's")
            aset = cls(potential, str(d["mode"]), scale_by_atoms=bool(d["scale_by_atoms"]), tol=float(d["tol"]),
                       build_tol=float(d["build_tol"]), unit_value=float(d["unit_value"]),
                       symmetrize=bool(d["symmetrize"]))
            if d["A"].shape != (potential.n_params, potential.n_params):
                raise MMTPError(f"{path}: active set of {d['A'].shape[0]} parameters, the potential has "
                                f"{potential.n_params}")
            nat = np.asarray(d["cfg_natoms"])
            if (nat.ndim != 1 or nat.dtype.kind not in "iu" or (nat < 0).any()
                    or len(d["cfg_ids"]) != len(nat) or int(nat.sum()) != len(d["cfg_numbers"])):
                raise MMTPError(f"{path}: inconsistent stored configurations (cfg_natoms {nat.shape}, "
                                f"{len(d['cfg_ids'])} ids, {len(d['cfg_numbers'])} atoms)")
            off = np.concatenate([[0], np.cumsum(nat)])
            for k, cid in enumerate(d["cfg_ids"]):
                sl = slice(off[k], off[k + 1])
                a = Atoms(numbers=d["cfg_numbers"][sl], positions=d["cfg_positions"][sl],
                          cell=d["cfg_cells"][k], pbc=d["cfg_pbc"][k])
                a.set_initial_magnetic_moments(d["cfg_moments"][sl])
                if potential.species is None:
                    a.arrays["mlip_type"] = d["cfg_types"][sl].copy()
                aset.configs[int(cid)] = a
            aset._next_id = int(d["next_id"])
            if str(d["fingerprint"]) == aset._fp:
                aset.matrix = _core.ActiveMatrix.from_rows(np.ascontiguousarray(d["A"], float),
                                                           np.ascontiguousarray(d["ids"], np.int64),
                                                           float(d["unit_value"]))
            else:
                aset._fp = "stale"
                aset.update()
        except KeyError as exc:
            raise MMTPError(f"{path}: missing entry {exc.args[0]!r}") from None
        except MMTPError as exc:
            if str(exc).startswith(str(path)):
                raise
            raise MMTPError(f"{path}: {exc}") from None
        except (IndexError, TypeError, ValueError, OverflowError) as exc:
            raise MMTPError(f"{path}: malformed active-set entry ({type(exc).__name__}: {str(exc)[:200]})") from None
        return aset

    def __repr__(self) -> str:
        return (f"ActiveSet(mode={self.mode!r}, m={self.m}, data_rows={self.m - self.n_unit_rows}, "
                f"configurations={len(self.configs)}, tol={self.tol})")


class GradingCalculator(MMTPCalculator):
    """:class:`MMTPCalculator` that also reports the extrapolation grade.

    Results add ``extrapolation_grade`` (float) and, in neighbourhood mode,
    ``nbh_grades`` (per-atom grades). The energy is the one the active set
    was built for (its ``symmetrize`` setting); dE/dtheta comes from the same
    evaluation as the forces.
    """

    implemented_properties = MMTPCalculator.implemented_properties + ["extrapolation_grade", "nbh_grades"]

    def __init__(self, active_set: ActiveSet, **kwargs):
        super().__init__(active_set.potential, symmetrize=active_set.symmetrize, **kwargs)
        self.active_set = active_set

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        Calculator.calculate(self, atoms, properties, system_changes)
        if "stress" in properties and not all(self.atoms.pbc):
            raise PropertyNotImplementedError("stress needs a cell periodic in all three directions")
        aset = self.active_set
        aset._check_potential()
        nbh = aset.mode == "neighborhood"
        out = aset.potential.evaluate(self.atoms, symmetrize=aset.symmetrize, param_grad=not nbh,
                                      site_param_grad=nbh)
        grade, per_atom = aset.grade_from_output(out, len(self.atoms))
        self.results = {
            "energy": out["energy"],
            "free_energy": out["energy"],
            "energies": out["energies"],
            "forces": out["forces"],
            "magnetic_forces": out["magnetic_forces"],
            "extrapolation_grade": grade,
            "n_close_atoms": out["n_close_atoms"],
            "n_moments_outside": out["n_moments_outside"],
        }
        if per_atom is not None:
            self.results["nbh_grades"] = per_atom
        if "stress" in out:
            self.results["stress"] = out["stress"]


