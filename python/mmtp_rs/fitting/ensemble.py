"""Ensembles of mMTPs (as in the Fe-Al paper: several models from different seeds).

:func:`train_ensemble` fits k potentials that differ only in the random seed
of their initial parameters; :class:`EnsembleCalculator` is an ASE
calculator returning the ensemble mean of energy, forces, stress and magnetic
forces, and their spread (standard deviation over the models) as the extra
properties ``energy_std``, ``forces_std``, ``stress_std`` and
``magnetic_forces_std``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes

from mmtp_rs.fitting.data import Dataset
from mmtp_rs.model.potential import Potential


__all__ = ["train_ensemble", "EnsembleCalculator", "ensemble_evaluate"]


def train_ensemble(k: int, train: Dataset, valid: Dataset | None = None, *, seeds: Sequence[int] | None = None,
                   potential_kwargs: dict | None = None, fit_kwargs: dict | None = None,
                   outdir: str | os.PathLike | None = None) -> list:
    """Fit ``k`` potentials from different seeds.

    Parameters
    ----------
    k : number of models
    train, valid : datasets
    seeds : one per model (default 0..k-1)
    potential_kwargs : passed to :func:`mmtp_rs.fitting.optimize.make_potential` (level, species, ...)
    fit_kwargs : passed to :func:`mmtp_rs.fitting.optimize.fit`
    outdir : if given, each model is saved as ``model_<i>.json`` there

    Returns
    -------
    list of :class:`mmtp_rs.fitting.FitResult`
    """
    from mmtp_rs.fitting.optimize import fit, make_potential

    seeds = list(range(k)) if seeds is None else list(seeds)
    if len(seeds) != k:
        raise ValueError(f"{len(seeds)} seeds for {k} models")
    results = []
    for i, s in enumerate(seeds):
        pot = make_potential(train, seed=s, **(potential_kwargs or {}))
        fk = dict(fit_kwargs or {})
        fk.setdefault("seed", s)
        res = fit(pot, train, valid, **fk)
        results.append(res)
        if outdir is not None:
            Path(outdir).mkdir(parents=True, exist_ok=True)
            res.potential.save(Path(outdir) / f"model_{i}.json")
    return results


def ensemble_evaluate(potentials: Sequence[Potential], atoms, symmetrize: bool | None = None) -> dict:
    """Mean and standard deviation over the models of energy, forces, stress, magnetic forces."""
    if not potentials:
        raise ValueError("an ensemble needs at least one potential")
    outs = [p.evaluate(atoms, symmetrize=symmetrize, param_grad=False) for p in potentials]
    res = {}
    for key in ("energy", "energies", "forces", "stress", "magnetic_forces"):
        if all(key in o for o in outs):
            arr = np.array([o[key] for o in outs], dtype=float)
            res[key] = arr.mean(axis=0)
            res[f"{key}_std"] = arr.std(axis=0)
    res["energy"] = float(res["energy"])
    res["energy_std"] = float(res["energy_std"])
    return res


class EnsembleCalculator(Calculator):
    """ASE calculator averaging several mMTPs.

    Properties: ``energy``, ``free_energy``, ``energies`` (eV), ``forces``
    (eV/Å), ``stress`` (eV/Å³, Voigt, ASE sign; 3-D periodic cells only),
    ``magnetic_forces`` (eV/μB), each the mean over the models, and their
    spreads (population standard deviation over the models) ``energy_std``,
    ``energies_std``, ``forces_std``, ``stress_std``, ``magnetic_forces_std``.

    Parameters
    ----------
    potentials : Potential objects or paths to potential files
    symmetrize : spin-inversion symmetrised energy (default: each potential's)
    species : species names when loading ``.mtp`` files
    """

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress", "magnetic_forces",
                              "energy_std", "energies_std", "forces_std", "stress_std", "magnetic_forces_std"]

    def __init__(self, potentials: Sequence, symmetrize: bool | None = None, species=None, **kwargs):
        super().__init__(**kwargs)
        pots = [p if isinstance(p, Potential) else Potential.from_file(p, species=species) for p in potentials]
        if not pots:
            raise ValueError("an ensemble needs at least one potential")
        self.potentials = pots
        self.symmetrize = symmetrize

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        if ("stress" in properties or "stress_std" in properties) and not all(self.atoms.pbc):
            raise PropertyNotImplementedError("stress needs a cell periodic in all three directions")
        res = ensemble_evaluate(self.potentials, self.atoms, self.symmetrize)
        res["free_energy"] = res["energy"]
        self.results = res
