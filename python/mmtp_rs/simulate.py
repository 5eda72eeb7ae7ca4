"""The two-stage simulation of the paper, with the extrapolation grade
watched at every step.

Stage 1 equilibrates the moments at fixed positions and cell (the package's
one stage 1, :func:`mmtp_rs.magnetism.stage1.equilibrate_moments`). Stage 2 keeps the moments
fixed and relaxes positions and cell, or runs NVT molecular dynamics. Every
configuration visited is graded: ``gamma_low <= gamma <= gamma_up`` -> it is
preselected and the simulation goes on; ``gamma > gamma_up`` -> it is
preselected and the simulation stops (the potential is extrapolating too
far for the trajectory to mean anything).

The calculator must report ``energy``, ``forces``, ``magnetic_forces`` and
``extrapolation_grade`` (e.g. :class:`mmtp_rs.active.GradingCalculator`);
any other moment-aware ASE calculator works if ``grade`` is given.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from ase import Atoms, units

from mmtp_rs.io.images import plain_copy


__all__ = [
    "Thresholds",
    "DEFAULT_GAMMA_LOW",
    "default_thresholds",
    "GradeWatcher",
    "ExtrapolationStop",
    "SimulationExploded",
    "SimulationResult",
    "run_spin_md",
    "equilibrate_watched",
    "relax",
    "run_md",
    "two_stage",
]


class ExtrapolationStop(Exception):
    """Raised inside a simulation when the grade exceeds gamma_up."""


class SimulationExploded(RuntimeError):
    """The simulation reached an unphysical state (overlapping atoms, NaN)."""


#: The paper's gamma_low per simulation kind (gamma_up is 10 for all).
DEFAULT_GAMMA_LOW = {"moments": 2.0, "relax": 2.0, "md": 4.0, "mdmc": 4.0, "dlm": 4.0}


def default_thresholds(kind: str, gamma_low: float | None = None, gamma_up: float = 10.0) -> "Thresholds":
    """Thresholds of a stage kind ("moments", "relax", "md"), gamma_low defaulting to the paper's."""
    if kind not in DEFAULT_GAMMA_LOW:
        raise ValueError(f"unknown stage kind {kind!r}; known: {sorted(DEFAULT_GAMMA_LOW)}")
    return Thresholds(DEFAULT_GAMMA_LOW[kind] if gamma_low is None else gamma_low, gamma_up)


@dataclass(frozen=True)
class Thresholds:
    """Grade thresholds of one stage (the paper: gamma_low 2 for relaxation, 4 for MD; gamma_up 10)."""

    gamma_low: float = 2.0
    gamma_up: float = 10.0

    def __post_init__(self):
        if not (np.isfinite(self.gamma_low) and np.isfinite(self.gamma_up) and 0 < self.gamma_low <= self.gamma_up):
            raise ValueError(f"need 0 < gamma_low <= gamma_up, got {self.gamma_low}, {self.gamma_up}")


def _calculator_grade(atoms: Atoms) -> float:
    calc = atoms.calc
    if calc is None:
        raise ValueError("the atoms have no calculator to grade them")
    g = calc.get_property("extrapolation_grade", atoms)
    return float(np.max(g))


@dataclass
class GradeWatcher:
    """Grades every visited configuration and keeps the preselected ones.

    Parameters
    ----------
    thresholds : the stage's gamma_low / gamma_up
    grade : function of the atoms returning the grade; default: the
        calculator's ``extrapolation_grade``
    stage : a name recorded with each preselected configuration
    """

    thresholds: Thresholds
    grade: Callable[[Atoms], float] = _calculator_grade
    stage: str = ""
    min_distance: float = 0.0  # Å; closer pairs make a configuration unphysical: not preselected
    preselected: list = field(default_factory=list)
    rejected: int = 0  # configurations above gamma_low not preselected (unphysical)
    grades: list = field(default_factory=list)
    max_grade: float = 0.0
    stopped: bool = False

    def check(self, atoms: Atoms, moments=None) -> float:
        """Grade ``atoms`` (with ``moments`` if given); raise ExtrapolationStop above gamma_up."""
        g = float(self.grade(atoms))
        if not np.isfinite(g):
            raise SimulationExploded(f"{self.stage}: the extrapolation grade is {g}")
        self.grades.append(g)
        self.max_grade = max(self.max_grade, g)
        if g >= self.thresholds.gamma_low:
            if self.min_distance > 0 and _min_distance(atoms) < self.min_distance:
                # a trajectory broken by an extrapolating potential: such a
                # configuration would only poison the training set (and DFT)
                self.rejected += 1
            else:
                snap = plain_copy(atoms, moments, info_keys=())
                snap.info["MV_grade"] = g
                snap.info["stage"] = self.stage
                self.preselected.append(snap)
        if g > self.thresholds.gamma_up:
            self.stopped = True
            raise ExtrapolationStop(f"{self.stage}: grade {g:.3g} > gamma_up {self.thresholds.gamma_up}")
        return g


def _min_distance(atoms: Atoms) -> float:
    from ase.neighborlist import neighbor_list

    d = neighbor_list("d", atoms, 3.0)
    return float(d.min()) if len(d) else np.inf


def _check_finite(atoms: Atoms, what: str) -> None:
    if not np.all(np.isfinite(atoms.positions)):
        raise SimulationExploded(f"{what}: positions are not finite")


def equilibrate_watched(atoms: Atoms, watcher: GradeWatcher | None = None, **kwargs) -> np.ndarray:
    """Stage 1 with the grade watched: :func:`mmtp_rs.magnetism.stage1.equilibrate_moments`
    (its rule and defaults; keyword arguments go to it) on ``atoms.calc``, grading
    every moment state visited. Leaves the final moments in ``atoms`` and returns them."""
    from mmtp_rs.magnetism.stage1 import equilibrate_moments

    if atoms.calc is None:
        raise ValueError("stage 1 needs atoms with a calculator")

    def visit(m):
        if watcher is not None:
            atoms.set_initial_magnetic_moments(m)
            watcher.check(atoms, m)

    try:
        m = equilibrate_moments(atoms, atoms.calc, callback=visit, **kwargs)
    except FloatingPointError as exc:
        raise SimulationExploded(f"stage 1: {exc}") from None
    atoms.set_initial_magnetic_moments(m)
    return m


def _attach_watch(dyn, atoms: Atoms, watcher: GradeWatcher | None, what: str):
    def step():
        _check_finite(atoms, what)
        if watcher is not None:
            watcher.check(atoms)

    dyn.attach(step, interval=1)


def relax(atoms: Atoms, watcher: GradeWatcher | None = None, fmax: float = 0.01, steps: int = 200,
          cell: bool = True, optimizer: str = "FIRE") -> int:
    """Stage 2 (relaxation): positions and, with ``cell``, the cell at fixed moments.

    Returns the number of optimiser steps taken.
    """
    from ase import optimize
    from ase.filters import FrechetCellFilter

    if atoms.calc is None:
        raise ValueError("relax needs atoms with a calculator")
    opt_cls = getattr(optimize, optimizer, None)
    if opt_cls is None:
        raise ValueError(f"unknown ASE optimizer {optimizer!r}")
    import warnings

    target = FrechetCellFilter(atoms) if cell and all(atoms.pbc) else atoms
    dyn = opt_cls(target, logfile=None)
    _attach_watch(dyn, atoms, watcher, "relaxation")
    with warnings.catch_warnings():
        # scipy's matrix logarithm inside the cell filter warns at round-off level
        warnings.filterwarnings("ignore", message="logm result may be inaccurate")
        dyn.run(fmax=fmax, steps=steps)
    return dyn.get_number_of_steps()


def run_md(atoms: Atoms, watcher: GradeWatcher | None = None, temperature_K: float = 300.0, steps: int = 1000,
           timestep_fs: float = 1.0, thermostat: str = "langevin", seed: int = 0,
           friction_per_fs: float = 0.01, tdamp_fs: float = 100.0) -> int:
    """Stage 2 (MD): NVT molecular dynamics at fixed moments and cell.

    ``thermostat``: "langevin", "nose-hoover" (chain) or "bussi". Velocities
    start from a Maxwell-Boltzmann distribution at ``temperature_K``.
    Returns the number of steps run.
    """
    from ase.md import velocitydistribution as vd

    if atoms.calc is None:
        raise ValueError("run_md needs atoms with a calculator")
    if not (temperature_K >= 0 and np.isfinite(temperature_K)):
        raise ValueError(f"temperature must be >= 0 K, got {temperature_K}")
    rng = np.random.default_rng(seed)
    if hasattr(vd, "thermalize_momenta"):
        vd.thermalize_momenta(atoms, temperature_K=temperature_K, rng=rng)
    else:  # ASE < 3.28
        vd.MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_K, rng=rng)
    vd.Stationary(atoms)
    dt = timestep_fs * units.fs
    name = thermostat.lower().replace("_", "-")
    if name == "langevin":
        from ase.md.langevin import Langevin

        dyn = Langevin(atoms, dt, temperature_K=temperature_K, friction=friction_per_fs / units.fs, rng=rng,
                       fixcm=False)
    elif name in ("nose-hoover", "nosehoover", "nose-hoover-chain"):
        from ase.md.nose_hoover_chain import NoseHooverChainNVT

        dyn = NoseHooverChainNVT(atoms, dt, temperature_K=temperature_K, tdamp=tdamp_fs * units.fs)
    elif name == "bussi":
        from ase.md.bussi import Bussi

        dyn = Bussi(atoms, dt, temperature_K=temperature_K, taut=tdamp_fs * units.fs, rng=rng)
    else:
        raise ValueError(f"unknown thermostat {thermostat!r} (langevin, nose-hoover, bussi)")
    _attach_watch(dyn, atoms, watcher, f"MD at {temperature_K} K")
    dyn.run(steps)
    return dyn.get_number_of_steps()


def run_spin_md(atoms: Atoms, watcher: GradeWatcher | None, kind: str, temperature_K: float = 300.0,
                steps: int = 1000, timestep_fs: float = 1.0, seed: int = 0, spin_every: int = 10,
                thermostat: str = "langevin") -> int:
    """Stage 2 with moving moments: "mdmc" (Langevin MD at fixed moments, one
    Metropolis sweep of the moments every ``spin_every`` steps, at the same
    temperature) or "dlm" (signs redrawn 50/50 and magnitudes equilibrated
    every ``spin_every`` steps); the grade is watched at every MD step and
    every accepted spin move / stage-1 evaluation (see
    :mod:`mmtp_rs.magnetism.montecarlo`). Returns the number of MD steps."""
    from mmtp_rs.magnetism.montecarlo import run_dlm, run_mdmc

    if thermostat.lower() != "langevin":
        raise ValueError(f"{kind} runs Langevin MD only, got thermostat {thermostat!r}")
    every = max(1, int(spin_every))
    n_cycles = max(1, int(steps) // every)
    if kind == "mdmc":
        run_mdmc(atoms, temperature_K, n_cycles, every, 1, timestep_fs=timestep_fs, seed=seed, watcher=watcher)
    elif kind == "dlm":
        run_dlm(atoms, temperature_K, n_cycles, every, timestep_fs=timestep_fs, seed=seed, watcher=watcher)
    else:
        raise ValueError(f"kind must be 'mdmc' or 'dlm', got {kind!r}")
    return n_cycles * every


@dataclass
class SimulationResult:
    """What one two-stage simulation found."""

    preselected: list
    rejected: int  # above gamma_low but unphysical (atoms closer than min_distance)
    stopped: bool  # a grade above gamma_up ended the run
    exploded: str | None  # reason, if the simulation became unphysical
    max_grade: float
    n_evaluations: int
    final: Atoms | None

    def summary(self) -> dict:
        return {"preselected": len(self.preselected), "rejected": self.rejected, "stopped": self.stopped,
                "exploded": self.exploded,
                "max_grade": self.max_grade, "n_evaluations": self.n_evaluations}


def two_stage(atoms: Atoms, calc, stage2: str = "relax", stage1: Thresholds | None = Thresholds(2.0, 10.0),
              stage2_thresholds: Thresholds | None = None, grade: Callable[[Atoms], float] | None = None,
              equilibrate: bool = True, stage1_options: dict | None = None, min_distance: float = 0.0,
              **stage2_kwargs) -> SimulationResult:
    """Run stage 1 (moments at fixed geometry) then stage 2 ("relax", "md", "mdmc", "dlm", or "none": stage 1 only).

    ``stage2_thresholds`` defaults to the paper's (2, 10) for relaxation and
    (4, 10) for MD. Extra keyword arguments go to :func:`relax` or
    :func:`run_md` (or :func:`run_spin_md` for "mdmc": MD with Metropolis spin
    sweeps, and "dlm": MD with signs redrawn 50/50). The simulation stops cleanly on a grade above gamma_up,
    and on an explosion (overlapping atoms, non-finite values), keeping what
    was preselected before. Stage 1 is :func:`mmtp_rs.magnetism.stage1.equilibrate_moments`
    with its defaults (every moment free inside the potential's M_max, signs of
    moments >= 0.5 μB kept); ``stage1_options`` passes explicit choices to it
    (``frozen``, ``max_abs``, ``tol``, ...). Configurations with atoms closer than
    ``min_distance`` are not preselected (counted as rejected).
    """
    from mmtp_rs.model.potential import MMTPError

    if stage2 not in ("relax", "md", "mdmc", "dlm", "none"):
        raise ValueError(f"stage2 must be 'relax', 'md', 'mdmc', 'dlm' or 'none' (stage 1 only), got {stage2!r}")
    if stage2_thresholds is None:
        stage2_thresholds = default_thresholds("moments" if stage2 == "none" else stage2)
    atoms = atoms.copy()
    atoms.calc = calc
    kw = {} if grade is None else {"grade": grade}
    w1 = GradeWatcher(stage1, stage="moments", min_distance=min_distance, **kw) if stage1 else None
    w2 = GradeWatcher(stage2_thresholds, stage=stage2, min_distance=min_distance, **kw)
    exploded = None
    stopped = False
    try:
        if equilibrate:
            equilibrate_watched(atoms, w1, **(stage1_options or {}))
        if stage2 == "relax":
            relax(atoms, w2, **stage2_kwargs)
        elif stage2 == "md":
            run_md(atoms, w2, **stage2_kwargs)
        elif stage2 in ("mdmc", "dlm"):
            run_spin_md(atoms, w2, stage2, **stage2_kwargs)
    except ExtrapolationStop:
        stopped = True
    except SimulationExploded as exc:
        exploded = str(exc)
    except (MMTPError, FloatingPointError) as exc:
        exploded = f"{type(exc).__name__}: {exc}"
    pre = (w1.preselected if w1 else []) + w2.preselected
    grades = (w1.grades if w1 else []) + w2.grades
    rejected = (w1.rejected if w1 else 0) + w2.rejected
    return SimulationResult(preselected=pre, rejected=rejected, stopped=stopped, exploded=exploded,
                            max_grade=max(grades) if grades else 0.0, n_evaluations=len(grades),
                            final=None if exploded else atoms)
