"""Training data: labelled configurations for fitting an mMTP.

A :class:`Dataset` is a list of :class:`ase.Atoms` carrying reference labels
under the keys of :mod:`mmtp_rs.io.labels` (``REF_energy``, ``REF_forces``,
``REF_stress``, ``REF_magnetic_forces``; moments in ``initial_magmoms``).
Configurations may differ in size and species, and each may lack any label
(a configuration without a stress label simply contributes no stress
residual). Read from extended XYZ or MLIP ``.cfg`` files, write back to
either, split into training and validation parts, and hand to the Rust core
with :meth:`Dataset.to_core`, which builds the neighbour lists once and
caches them per (species, cutoff).

Units: eV, Å, eV/Å, eV/Å³ (Voigt xx yy zz yz xz xy, ASE sign), μB, eV/μB.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from ase import Atoms

from mmtp_rs._core import MMTPError
from mmtp_rs.io.labels import REF_ENERGY, REF_FORCES, REF_MAGNETIC_FORCES, REF_STRESS, voigt_from_matrix


__all__ = ["Dataset", "DatasetError"]

_CFG_SUFFIXES = (".cfg",)


class DatasetError(MMTPError):
    """A configuration of a dataset is unusable; the message names it (a ValueError)."""


def _label_array(atoms: Atoms, k: int, name: str, value, shape) -> np.ndarray:
    arr = np.asarray(value, dtype=float)
    if name == "stress" and arr.shape == (3, 3):
        arr = voigt_from_matrix(arr)
    if arr.shape != shape:
        raise DatasetError(f"configuration {k}: {name} label has shape {arr.shape}, expected {shape}")
    bad = np.argwhere(~np.isfinite(arr))
    if bad.size:
        raise DatasetError(f"configuration {k}: {name} label is not finite at index {tuple(int(i) for i in bad[0])}")
    return np.ascontiguousarray(arr)


def _labels_of(atoms: Atoms, k: int):
    """(energy, forces, stress, magnetic_forces) of one configuration, None where absent."""
    n = len(atoms)
    e = atoms.info.get(REF_ENERGY)
    if e is not None:
        e = float(e)
        if not np.isfinite(e):
            raise DatasetError(f"configuration {k}: energy label is not finite ({e})")
    f = atoms.arrays.get(REF_FORCES)
    f = None if f is None else _label_array(atoms, k, "forces", f, (n, 3))
    s = atoms.info.get(REF_STRESS)
    if s is not None:
        s = _label_array(atoms, k, "stress", s, (6,))
        if not all(atoms.pbc):
            raise DatasetError(f"configuration {k}: a stress label needs a cell periodic in all three directions")
    t = atoms.arrays.get(REF_MAGNETIC_FORCES)
    t = None if t is None else _label_array(atoms, k, "magnetic_forces", t, (n,))
    return e, f, s, t


class Dataset:
    """Labelled configurations (a list of :class:`ase.Atoms` with ``REF_*`` labels).

    Parameters
    ----------
    images : iterable of ase.Atoms
        The configurations. They are used as they are (not copied); labels
        are checked at construction (shapes, finite values, stress only on
        3-D periodic cells), and errors name the configuration by index.
    name : str
        A label for progress messages and reports.
    """

    def __init__(self, images: Iterable[Atoms] = (), name: str = ""):
        self.images: list[Atoms] = list(images)
        self.name = name
        for k, a in enumerate(self.images):
            if not isinstance(a, Atoms):
                raise DatasetError(f"configuration {k}: expected ase.Atoms, got {type(a).__name__}")
            if len(a) == 0:
                raise DatasetError(f"configuration {k}: has no atoms")
            m = a.get_initial_magnetic_moments()
            if m.ndim != 1:
                raise DatasetError(f"configuration {k}: magnetic moments must be collinear (one number per atom), got shape {m.shape}")
            if not np.all(np.isfinite(m)):
                raise DatasetError(f"configuration {k}: magnetic moments are not all finite")
            try:
                _labels_of(a, k)
            except (TypeError, ValueError, OverflowError) as exc:
                if isinstance(exc, DatasetError):
                    raise
                raise DatasetError(f"configuration {k}: unusable label ({exc})") from None
        self._core_cache: dict = {}

    # ------------------------------------------------------------ reading
    @classmethod
    def from_atoms(cls, images: Iterable[Atoms], name: str = "") -> "Dataset":
        """A dataset from ASE Atoms carrying ``REF_*`` labels."""
        return cls(images, name=name)

    @classmethod
    def read(cls, paths: str | os.PathLike | Sequence[str | os.PathLike], species: Sequence[str] | None = None,
             name: str = "") -> "Dataset":
        """Read configurations from extended XYZ or MLIP ``.cfg`` files.

        Parameters
        ----------
        paths : a path or a list of paths; ``.cfg`` files are read with
            :func:`mmtp_rs.read_cfg`, everything else with :func:`ase.io.read`
            (extended XYZ with ``REF_*`` labels).
        species : chemical symbols of the ``.cfg`` type indices 0, 1, ...
            (needed for ``.cfg`` files, which hold type indices only).
        """
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        images: list[Atoms] = []
        for p in paths:
            p = Path(p)
            if not p.exists():
                raise FileNotFoundError(f"{p}: no such data file")
            if p.suffix.lower() in _CFG_SUFFIXES:
                from mmtp_rs.io.cfg import read_cfg

                images.extend(read_cfg(p, species=species))
            else:
                from ase.io import read

                try:
                    got = read(p, index=":")
                except Exception as exc:  # noqa: BLE001 - ASE's readers raise anything on malformed text
                    raise DatasetError(f"{p}: cannot read as extended XYZ ({type(exc).__name__}: "
                                       f"{str(exc)[:200]})") from None
                images.extend(got if isinstance(got, list) else [got])
        return cls(images, name=name or ", ".join(str(Path(p).name) for p in paths))

    def write(self, path: str | os.PathLike, species: Sequence[str] | None = None) -> None:
        """Write the configurations: ``.cfg`` (MLIP) or anything else via ASE (extxyz)."""
        path = Path(path)
        if path.suffix.lower() in _CFG_SUFFIXES:
            from mmtp_rs.io.cfg import write_cfg

            write_cfg(path, self.images, species=species)
        else:
            from ase.io import write

            from mmtp_rs.io.atomic import atomic_path

            with atomic_path(path, suffix=".extxyz") as tmp:
                write(tmp, self.images, format="extxyz")

    # ------------------------------------------------------------ container
    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return Dataset(self.images[index], name=self.name)
        if isinstance(index, (list, np.ndarray)):
            return Dataset([self.images[int(i)] for i in index], name=self.name)
        return self.images[index]

    def __iter__(self):
        return iter(self.images)

    def __add__(self, other: "Dataset") -> "Dataset":
        return Dataset(self.images + list(other.images), name=self.name)

    def __repr__(self) -> str:
        return f"Dataset({self.name!r}, {len(self)} configurations, {self.n_atoms} atoms, species {self.species})"

    @property
    def n_atoms(self) -> int:
        """Total number of atoms."""
        return int(sum(len(a) for a in self.images))

    @property
    def species(self) -> list[str]:
        """Chemical symbols present, sorted by atomic number."""
        from ase.data import atomic_numbers

        s = set()
        for a in self.images:
            s.update(a.get_chemical_symbols())
        return sorted(s, key=lambda x: atomic_numbers.get(x, 0))

    def labels(self) -> list[tuple]:
        """Per configuration (energy, forces, stress, magnetic_forces), None where absent."""
        return [_labels_of(a, k) for k, a in enumerate(self.images)]

    def label_counts(self) -> dict[str, int]:
        """How many configurations carry each label."""
        labs = self.labels()
        return {name: sum(lab[i] is not None for lab in labs)
                for i, name in enumerate(("energy", "forces", "stress", "magnetic_forces"))}

    def split(self, fraction: float, seed: int | None = 0) -> tuple["Dataset", "Dataset"]:
        """Random split into (training, validation), ``fraction`` going to validation.

        At least one configuration stays in training; with ``fraction > 0`` and
        two or more configurations, at least one goes to validation.
        """
        if not 0.0 <= fraction < 1.0:
            raise ValueError(f"validation fraction must be in [0, 1), got {fraction}")
        n = len(self)
        n_val = int(round(fraction * n))
        if fraction > 0 and n >= 2:
            n_val = min(max(n_val, 1), n - 1)
        perm = np.random.default_rng(seed).permutation(n)
        val = np.sort(perm[:n_val])
        train = np.sort(perm[n_val:])
        return (Dataset([self.images[i] for i in train], name=f"{self.name} (training)"),
                Dataset([self.images[i] for i in val], name=f"{self.name} (validation)"))

    # ------------------------------------------------------------ statistics
    def min_distance(self, cutoff: float = 4.0) -> float:
        """Smallest interatomic distance in the data (Å; inf if none within ``cutoff``)."""
        from mmtp_rs import _core

        best = np.inf
        for a in self.images:
            _, _, vec = _core.neighbor_list(np.ascontiguousarray(a.cell.array, dtype=float),
                                            [bool(x) for x in a.pbc],
                                            np.ascontiguousarray(a.positions, dtype=float), float(cutoff))
            if len(vec):
                best = min(best, float(np.sqrt((vec * vec).sum(axis=1)).min()))
        return best

    def max_abs_moment(self) -> dict[str, float]:
        """Largest |m| per chemical species (μB)."""
        out: dict[str, float] = {}
        for a in self.images:
            m = np.abs(a.get_initial_magnetic_moments())
            for s, v in zip(a.get_chemical_symbols(), m):
                if v > out.get(s, 0.0):
                    out[s] = float(v)
                else:
                    out.setdefault(s, 0.0)
        return out

    # ------------------------------------------------------------ core
    def to_core(self, pot):
        """The dataset as a :class:`mmtp_rs._core.CoreDataset` for ``pot``.

        Cached per (species of the potential, cutoff): neighbour lists are built
        once, in parallel. Errors name the configuration.
        """
        from mmtp_rs import _core

        key = (tuple(pot.species) if pot.species is not None else None, float(pot.max_dist))
        hit = self._core_cache.get(key)
        if hit is not None:
            return hit
        if not self.images:
            raise DatasetError("the dataset is empty")
        inputs = []
        for k, a in enumerate(self.images):
            try:
                inputs.append(pot._inputs(a))
            except MMTPError as exc:
                raise DatasetError(f"configuration {k}: {exc}") from None
        labels = self.labels()
        try:
            core = _core.CoreDataset(inputs, labels, float(pot.max_dist))
        except MMTPError as exc:
            raise DatasetError(str(exc)) from None
        self._core_cache[key] = core
        return core
