"""Structures and starting states of a learning run: the initial training set, random strains, moment perturbations and random moment starts."""

from __future__ import annotations

import numpy as np
from ase import Atoms

from mmtp_rs.loop.config import LearnConfig, SystemConfig
from mmtp_rs.magnetism.stage1 import SIGN_THRESHOLD


__all__ = ["prototype_cell", "with_state", "species_max_moment", "perturb_moments", "initial_training_set", "random_strain", "random_moment_start"]


def prototype_cell(s: SystemConfig, scale: float = 1.0, supercell=None) -> Atoms:
    """The supercell of a phase (prototype or structure file), uniformly scaled by ``scale``."""
    return s.cell(scale, supercell)


def with_state(atoms: Atoms, s: SystemConfig, kind: str, seed: int) -> Atoms:
    """A copy of ``atoms`` (a cell of phase ``s``) carrying the moments of state ``kind``."""
    a = atoms.copy()
    a.set_initial_magnetic_moments(s.state(a, kind, seed=seed))
    return a


def species_max_moment(cfg: LearnConfig) -> dict[str, float]:
    """M_max per species, μB: ``[model] max_moment`` if given, else the rule of
    :func:`mmtp_rs.fitting.optimize.auto_max_moment` applied to the starting moments."""
    from mmtp_rs.fitting.optimize import max_moment_rule

    given = cfg.model.get("max_moment")
    out = {}
    for sym in dict.fromkeys(s for ph in cfg.phases for s in ph.species):
        if isinstance(given, dict) and sym in given:
            out[sym] = float(given[sym])
        elif isinstance(given, (int, float)) and not isinstance(given, bool):
            out[sym] = float(given)
        else:
            out[sym] = max_moment_rule(max(abs(float(ph.moments.get(sym, 0.0))) for ph in cfg.phases))
    return out


def perturb_moments(atoms: Atoms, rng: np.random.Generator, relative: float, noise: float,
                    max_moment: dict[str, float]) -> None:
    """Perturb the moments of ``atoms`` in place on the scale of each species.

    Moments below :data:`~mmtp_rs.magnetism.stage1.SIGN_THRESHOLD` (induced moments,
    free of sign in stage 1) are drawn uniformly from ``noise`` × [-M_max, M_max]
    of their species, so small-moment species are labelled at non-zero moments;
    larger ones are scaled by a factor uniform in [1 - relative, 1 + relative].
    """
    m = atoms.get_initial_magnetic_moments()
    lim = np.array([max_moment.get(sym, 0.0) for sym in atoms.get_chemical_symbols()])
    small = np.abs(m) < SIGN_THRESHOLD
    new = np.where(small, noise * lim * rng.uniform(-1.0, 1.0, len(m)),
                   m * (1.0 + rng.uniform(-relative, relative, len(m))))
    atoms.set_initial_magnetic_moments(new)


def initial_training_set(cfg: LearnConfig) -> list[Atoms]:
    """The paper's protocol: ideal cells at several lattice parameters; FM, AFM
    and random 50/50 states; random displacements; moment perturbations (15 %
    of the magnitude for magnetic atoms, uniform over ``moment_noise`` ×
    [-M_max, M_max] for small-moment species such as N in CrN)."""
    ini = cfg.initial
    scales = ini.get("scales", [0.96, 1.0, 1.04])
    states = ini.get("states", ["FM", "AFM", "random", "random"])
    per = int(ini.get("per_state", 2))  # displaced copies per (scale, state)
    disp = float(ini.get("displacement", 0.05))  # Å, std of random displacements
    pert = float(ini.get("moment_perturbation", 0.15))  # relative, magnetic atoms
    noise = float(ini.get("moment_noise", 1.0))  # fraction of M_max, small-moment atoms
    strain = float(ini.get("strain", 0.0))  # max |component| of a random symmetric cell strain
    mmax = species_max_moment(cfg)
    rng = np.random.default_rng(cfg.seed)
    out = []
    for phase, scale in ((ph, sc) for ph in cfg.phases for sc in scales):
        base = prototype_cell(phase, scale)
        for k, st in enumerate(states):
            for c in range(per):
                a = with_state(base, phase, st, seed=int(rng.integers(1 << 31)))
                if c > 0 or st.upper() not in ("FM", "AFM"):
                    a.positions += rng.normal(0.0, disp, a.positions.shape)
                    perturb_moments(a, rng, pert, noise, mmax)
                    random_strain(a, rng, strain)
                a.info["origin"] = f"initial {phase.name or phase.structure or phase.prototype} scale={scale} state={st}"
                out.append(a)
    return out


def random_strain(atoms: Atoms, rng: np.random.Generator, strain: float) -> None:
    """Apply a random symmetric strain with components uniform in [-strain, strain], in place."""
    if strain > 0:
        eps = rng.uniform(-strain, strain, (3, 3))
        eps = 0.5 * (eps + eps.T)
        atoms.set_cell(atoms.cell.array @ (np.eye(3) + eps), scale_atoms=True)


def random_moment_start(atoms: Atoms, rng: np.random.Generator, moment_range, max_moment: dict[str, float]) -> None:
    """A random start for a moment-equilibration run, in place: the signs of
    ``atoms``' state are kept; magnetic atoms get |m| uniform in
    ``moment_range`` × M_max, small-moment atoms a moment uniform in [-M_max, M_max]."""
    m = atoms.get_initial_magnetic_moments()
    lim = np.array([max_moment.get(sym, 0.0) for sym in atoms.get_chemical_symbols()])
    small = np.abs(m) < SIGN_THRESHOLD
    mag = rng.uniform(moment_range[0], moment_range[1], len(m)) * lim
    atoms.set_initial_magnetic_moments(np.where(small, lim * rng.uniform(-1.0, 1.0, len(m)), np.sign(m) * mag))


