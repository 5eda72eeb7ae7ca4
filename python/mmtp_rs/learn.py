"""The active-learning loop, end to end and unattended.

    initial training set -> fit -> two-stage simulations with the grade watched
    -> select from the preselected pool by maxvol -> label with the oracle
    (constrained moments) -> add -> refit -> ... until a whole round of
    simulations preselects nothing.

Everything lives in a state directory, written atomically, so a run killed
at any point resumes where it stopped with ``mmtp learn CONFIG.toml``:

    state/
      config.toml               the configuration the run started with
      log.txt                   progress log
      summary.json              per-iteration summary (machine-readable)
      iter_000/training.extxyz  training set used in this iteration
      iter_000/potential.json   fitted potential (+ .mtp copy, fit checkpoint)
      iter_000/pool.extxyz      preselected configurations (+ pool.json summary)
      iter_000/selected.extxyz  chosen by maxvol (+ labelled.extxyz when labelled)
      labels/                   oracle job directories (hash-named; never redone)
      test/test.extxyz          held-out oracle labels from oracle MD
      report/                   learning curve, grade histograms, final errors

Each phase's output file marks it done; labels are reused from the oracle's
job directories, so no label is ever computed twice.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.build import bulk

from .data import Dataset
from .images import read_images, write_images
from .magnetic import SIGN_THRESHOLD
from .simulate import DEFAULT_GAMMA_LOW, default_thresholds
from ._atomic import atomic_write_json, atomic_write_text, remove_stale_temporaries

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib


class ConfigError(ValueError):
    """A bad learning configuration; the message names the file and entry."""


# --------------------------------------------------------------------------- configuration

PROTOTYPES = ("rocksalt", "bcc", "b2", "fcc")


@dataclass
class SystemConfig:
    prototype: str = "rocksalt"
    symbols: list = field(default_factory=lambda: ["Cr", "N"])  # rocksalt/b2: [A, B]; bcc/fcc: [A]
    a0: float = 4.15  # Å
    supercell: list = field(default_factory=lambda: [2, 2, 2])  # repeats of the conventional cubic cell
    moments: dict = field(default_factory=lambda: {"Cr": 2.4, "N": 0.0})  # μB, starting magnitudes


@dataclass
class StageConfig:
    kind: str = "relax"  # "moments" (stage 1 only, from random starts), "relax" or "md"
    gamma_low: float | None = None  # default: 2 (moments, relax), 4 (md)
    gamma_up: float = 10.0
    starts: list = field(default_factory=lambda: ["FM", "AFM", "random"])
    scales: list = field(default_factory=lambda: [1.0])  # lattice-parameter factors
    temperatures: list = field(default_factory=lambda: [300.0])  # K (md)
    steps: int = 200  # MD steps or optimiser steps
    timestep_fs: float = 2.0
    thermostat: str = "langevin"
    fmax: float = 0.01  # eV/Å (relax)
    cell: bool = True  # relax the cell too
    equilibrate: bool = True  # stage 1 before this stage
    frozen: list = field(default_factory=list)  # species whose moments stage 1 holds fixed (explicit only)
    moment_range: list = field(default_factory=lambda: [0.5, 1.0])  # moments: |m|/M_max of magnetic atoms
    displacement: float = 0.02  # Å, std of random displacements of relax/moments starts
    strain: float = 0.0  # max |component| of a random symmetric cell strain of relax/moments starts


@dataclass
class LearnConfig:
    name: str = "mmtp-learn"
    seed: int = 0
    system: SystemConfig = field(default_factory=SystemConfig)
    oracle: dict = field(default_factory=lambda: {"kind": "reference", "preset": "CrN"})
    model: dict = field(default_factory=dict)  # make_potential arguments
    fit: dict = field(default_factory=dict)  # fit arguments (weights, max_iter, restarts, ...)
    initial: dict = field(default_factory=dict)
    stages: list = field(default_factory=lambda: [StageConfig()])
    active: dict = field(default_factory=dict)  # ActiveSet arguments (mode, tol, ...)
    max_iterations: int = 10
    max_selected: int = 20  # labelled configurations per iteration
    test: dict = field(default_factory=dict)  # held-out oracle MD: n, temperatures, steps
    executor: dict = field(default_factory=dict)  # {"kind": "process"|"serial"|"dask", "workers": n}
    validate: dict = field(default_factory=dict)  # ValidationOptions entries (lattice in Å, ...); see validation_options
    source: str = ""

    @classmethod
    def from_toml(cls, path: str | os.PathLike) -> "LearnConfig":
        path = Path(path)
        try:
            doc = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: no such configuration file") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: invalid TOML: {exc}") from None
        return cls.from_dict(doc, source=str(path))

    @classmethod
    def from_dict(cls, doc: dict, source: str = "<dict>") -> "LearnConfig":
        known = {"name", "seed", "system", "oracle", "model", "fit", "initial", "stage", "active", "limits",
                 "test", "executor", "validate"}
        unknown = set(doc) - known
        if unknown:
            raise ConfigError(f"{source}: unknown section(s) {sorted(unknown)}; known: {sorted(known)}")
        cfg = cls(source=source)
        cfg.name = str(doc.get("name", cfg.name))
        cfg.seed = int(doc.get("seed", 0))
        sysd = dict(doc.get("system", {}))
        bad = set(sysd) - set(SystemConfig.__dataclass_fields__)
        if bad:
            raise ConfigError(f"{source}: [system] has unknown entries {sorted(bad)}")
        cfg.system = SystemConfig(**sysd)
        s = cfg.system
        if s.prototype not in PROTOTYPES:
            raise ConfigError(f"{source}: [system] prototype {s.prototype!r} is not one of {PROTOTYPES}")
        need = 2 if s.prototype in ("rocksalt", "b2") else 1
        if len(s.symbols) != need:
            raise ConfigError(f"{source}: [system] prototype {s.prototype} needs {need} symbols, got {s.symbols}")
        if not (isinstance(s.a0, (int, float)) and s.a0 > 0):
            raise ConfigError(f"{source}: [system] a0 must be a positive length in Å, got {s.a0!r}")
        if len(s.supercell) != 3 or any(int(k) < 1 for k in s.supercell):
            raise ConfigError(f"{source}: [system] supercell must be three positive integers, got {s.supercell}")
        cfg.oracle = dict(doc.get("oracle", cfg.oracle))
        if cfg.oracle.get("kind", "reference") not in ("reference", "abinit"):
            raise ConfigError(f"{source}: [oracle] kind must be 'reference' or 'abinit', got {cfg.oracle.get('kind')!r}")
        cfg.model = dict(doc.get("model", {}))
        cfg.fit = dict(doc.get("fit", {}))
        cfg.initial = dict(doc.get("initial", {}))
        stages = doc.get("stage", [])
        if not isinstance(stages, list) or not stages:
            raise ConfigError(f"{source}: at least one [[stage]] is needed")
        cfg.stages = []
        for k, st in enumerate(stages):
            bad = set(st) - set(StageConfig.__dataclass_fields__)
            if bad:
                raise ConfigError(f"{source}: [[stage]] {k} has unknown entries {sorted(bad)}")
            sc = StageConfig(**st)
            if sc.kind not in DEFAULT_GAMMA_LOW:
                raise ConfigError(f"{source}: [[stage]] {k} kind must be one of {sorted(DEFAULT_GAMMA_LOW)}, "
                                  f"got {sc.kind!r}")
            try:
                default_thresholds(sc.kind, sc.gamma_low, sc.gamma_up)
            except ValueError as exc:
                raise ConfigError(f"{source}: [[stage]] {k}: {exc}") from None
            lo_hi = [float(x) for x in sc.moment_range]
            if len(lo_hi) != 2 or not (0 <= lo_hi[0] <= lo_hi[1] <= 1):
                raise ConfigError(f"{source}: [[stage]] {k} moment_range must be [lo, hi] with 0 <= lo <= hi <= 1 "
                                  f"(fractions of M_max), got {sc.moment_range}")
            if not (0 <= sc.strain < 0.5 and sc.displacement >= 0):
                raise ConfigError(f"{source}: [[stage]] {k} needs 0 <= strain < 0.5 and displacement >= 0 Å, "
                                  f"got {sc.strain}, {sc.displacement}")
            bad = [x for x in sc.frozen if x not in s.symbols]
            if bad:
                raise ConfigError(f"{source}: [[stage]] {k} frozen species {bad} are not in [system] symbols")
            cfg.stages.append(sc)
        cfg.active = dict(doc.get("active", {}))
        limits = dict(doc.get("limits", {}))
        cfg.max_iterations = int(limits.get("max_iterations", cfg.max_iterations))
        cfg.max_selected = int(limits.get("max_selected", cfg.max_selected))
        if cfg.max_iterations < 1 or cfg.max_selected < 1:
            raise ConfigError(f"{source}: [limits] max_iterations and max_selected must be >= 1")
        cfg.test = dict(doc.get("test", {}))
        cfg.executor = dict(doc.get("executor", {}))
        cfg.validate = dict(doc.get("validate", {}))
        try:
            validation_options(cfg)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{source}: [validate]: {exc}") from None
        return cfg


# --------------------------------------------------------------------------- structures


def prototype_cell(s: SystemConfig, scale: float = 1.0) -> Atoms:
    """The conventional cubic cell of the prototype, repeated, at a0 * scale."""
    a = s.a0 * scale
    if s.prototype == "rocksalt":
        atoms = bulk("".join(s.symbols), "rocksalt", a=a, cubic=True)
    elif s.prototype == "b2":
        atoms = bulk("".join(s.symbols), "cesiumchloride", a=a, cubic=True)
    elif s.prototype == "bcc":
        atoms = bulk(s.symbols[0], "bcc", a=a, cubic=True)
    else:
        atoms = bulk(s.symbols[0], "fcc", a=a, cubic=True)
    return atoms.repeat([int(k) for k in s.supercell])


def with_state(atoms: Atoms, s: SystemConfig, kind: str, seed: int) -> Atoms:
    from .magnetic import state_moments

    a = atoms.copy()
    a.set_initial_magnetic_moments(state_moments(a, kind, s.moments, seed=seed))
    return a


def species_max_moment(cfg: LearnConfig) -> dict[str, float]:
    """M_max per species, μB: ``[model] max_moment`` if given, else the rule of
    :func:`mmtp_rs.fitting.auto_max_moment` applied to the starting moments."""
    from .fitting import max_moment_rule

    given = cfg.model.get("max_moment")
    out = {}
    for sym in cfg.system.symbols:
        if isinstance(given, dict) and sym in given:
            out[sym] = float(given[sym])
        elif isinstance(given, (int, float)) and not isinstance(given, bool):
            out[sym] = float(given)
        else:
            out[sym] = max_moment_rule(abs(float(cfg.system.moments.get(sym, 0.0))))
    return out


def perturb_moments(atoms: Atoms, rng: np.random.Generator, relative: float, noise: float,
                    max_moment: dict[str, float]) -> None:
    """Perturb the moments of ``atoms`` in place on the scale of each species.

    Moments below :data:`~mmtp_rs.magnetic.SIGN_THRESHOLD` (induced moments,
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
    for scale in scales:
        base = prototype_cell(cfg.system, scale)
        for k, st in enumerate(states):
            for c in range(per):
                a = with_state(base, cfg.system, st, seed=int(rng.integers(1 << 31)))
                if c > 0 or st.upper() not in ("FM", "AFM"):
                    a.positions += rng.normal(0.0, disp, a.positions.shape)
                    perturb_moments(a, rng, pert, noise, mmax)
                    random_strain(a, rng, strain)
                a.info["origin"] = f"initial scale={scale} state={st}"
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


def validation_options(cfg: LearnConfig):
    """:class:`~mmtp_rs.validate.ValidationOptions` of the ``[validate]`` table.

    ``enabled`` (default true with the reference oracle, false otherwise);
    ``lattice`` in Å (default a0 × [0.976, 0.988, 1, 1.012, 1.024]); the other
    keys are the fields of ValidationOptions.
    """
    from .validate import ValidationOptions

    v = dict(cfg.validate)
    v.pop("enabled", None)
    a0 = cfg.system.a0
    v.setdefault("lattice", [round(a0 * f, 4) for f in (0.976, 0.988, 1.0, 1.012, 1.024)])
    v.setdefault("elastic_lattice", a0)
    if cfg.system.prototype == "rocksalt":
        v.setdefault("afm_direction", "AFM1")
    else:
        v.setdefault("afm_direction", [0, 0, 1])
    fields = ValidationOptions.__dataclass_fields__
    bad = set(v) - set(fields)
    if bad:
        raise ValueError(f"unknown entries {sorted(bad)}; known: {sorted(set(fields) | {'enabled'})}")
    opts = ValidationOptions(**v)
    if not opts.lattice or any(not (float(a) > 0) for a in opts.lattice):
        raise ValueError(f"lattice must be a non-empty list of positive lattice parameters (Å), got {opts.lattice}")
    bad = [s for s in list(opts.states) + list(opts.elastic_states)
           if s.upper() not in ("FM", "AFM", "RANDOM", "PM")]
    if bad:
        raise ValueError(f"unknown states {bad} (FM, AFM, random; elastic: FM, AFM, PM)")
    return opts


def validation_enabled(cfg: LearnConfig) -> bool:
    return bool(cfg.validate.get("enabled", cfg.oracle.get("kind", "reference") == "reference"))


def run_validation(cfg: LearnConfig, pot, outdir: Path, oracle_workdir: Path | None = None, progress=None) -> dict:
    """:func:`mmtp_rs.validate.validate` of ``pot`` against the configured oracle on the [system] structure."""
    from .calculator import MMTPCalculator
    from .oracles.calculator import oracle_calculator
    from .validate import validate, write_validation

    opts = validation_options(cfg)
    s = cfg.system
    one = SystemConfig(**{**s.__dict__, "supercell": [1, 1, 1]})
    rep = validate(MMTPCalculator(pot), oracle_calculator(cfg.oracle, oracle_workdir),
                   structure=lambda a: prototype_cell(s, a / s.a0), moment=dict(s.moments), opts=opts,
                   elastic_cell=lambda a: prototype_cell(one, a / s.a0), progress=progress)
    rep["files"] = write_validation(rep, outdir)
    return rep


# --------------------------------------------------------------------------- oracle and I/O


def make_oracle(cfg: LearnConfig):
    o = dict(cfg.oracle)
    kind = o.pop("kind", "reference")
    if kind == "reference":
        from .oracles.reference import ReferenceOracle

        return ReferenceOracle(o.pop("preset", "CrN"), **o)
    from .oracles.abinit import AbinitOracle

    return AbinitOracle(**o)


def make_executor(cfg: LearnConfig):
    """None (the oracle's default), a serial executor, a process pool or a dask client's executor."""
    e = cfg.executor
    kind = e.get("kind", "default")
    if kind == "default":
        return None
    if kind == "serial":
        from .oracles.base import SerialExecutor

        return SerialExecutor()
    if kind == "process":
        from .oracles.base import default_process_pool

        return default_process_pool(int(e.get("workers", 2)))
    if kind == "dask":
        from dask.distributed import Client

        return Client(e["address"]).get_executor() if "address" in e else Client(
            n_workers=int(e.get("workers", 2)), threads_per_worker=1).get_executor()
    raise ConfigError(f"{cfg.source}: [executor] kind {kind!r} is not default/serial/process/dask")


def write_json(path: Path, doc: Any) -> None:
    atomic_write_json(path, doc)


# --------------------------------------------------------------------------- the loop


class Learner:
    """Runs (and resumes) the active-learning loop of a configuration in a state directory."""

    def __init__(self, cfg: LearnConfig, state: str | os.PathLike, quiet: bool = False):
        self.cfg = cfg
        self.state = Path(state)
        self.quiet = quiet
        self.state.mkdir(parents=True, exist_ok=True)
        (self.state / "labels").mkdir(exist_ok=True)
        remove_stale_temporaries(self.state)  # a killed write leaves its temporary file behind
        self.oracle = make_oracle(cfg)
        self._executor = None
        self.summary_path = self.state / "summary.json"
        self.summary = json.loads(self.summary_path.read_text()) if self.summary_path.exists() else {
            "name": cfg.name, "iterations": []}
        if cfg.source and Path(cfg.source).exists() and not (self.state / "config.toml").exists():
            atomic_write_text(self.state / "config.toml", Path(cfg.source).read_text())

    # ---------------------------------------------------------------- utilities
    def log(self, msg: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {msg}"
        if not self.quiet:
            print(line, flush=True)
        with open(self.state / "log.txt", "a") as fh:
            fh.write(line + "\n")

    def executor(self):
        if self._executor is None:
            self._executor = make_executor(self.cfg)
        return self._executor

    def label(self, images: list[Atoms], what: str) -> list[Atoms]:
        """Label through the oracle's job directories; failures are reported and left out."""
        if not images:
            return []
        res = self.oracle.label(images, self.state / "labels", executor=self.executor())
        self.log(f"labelled {what}: {len(res.labelled)} ok ({len(res.computed)} computed, "
                 f"{len(res.reused)} reused), {len(res.failures)} failed")
        for f in res.failures:
            self.log(f"  label failure: configuration {f.index} ({f.directory}): {f.reason}")
        out = []
        for a in res.labelled:
            b = a.copy()
            b.calc = None
            out.append(b)
        return out

    def iter_dir(self, k: int) -> Path:
        d = self.state / f"iter_{k:03d}"
        d.mkdir(exist_ok=True)
        return d

    def save_summary(self) -> None:
        write_json(self.summary_path, self.summary)

    # ---------------------------------------------------------------- phases
    def initial(self) -> list[Atoms]:
        path = self.iter_dir(0) / "training.extxyz"
        if path.exists():
            return read_images(path)
        images = initial_training_set(self.cfg)
        self.log(f"initial training set: {len(images)} configurations")
        labelled = self.label(images, "initial set")
        if not labelled:
            raise RuntimeError("the oracle labelled none of the initial configurations; see log.txt")
        write_images(path, labelled)
        return labelled

    def fit(self, k: int, training: list[Atoms], previous=None):
        from .fitting import fit, make_potential
        from .potential import Potential

        d = self.iter_dir(k)
        path = d / "potential.json"
        if path.exists():
            return Potential.from_file(path)
        data = Dataset.from_atoms(training)
        m = dict(self.cfg.model)
        species = m.pop("species", None) or sorted({s for a in training for s in a.get_chemical_symbols()})
        if previous is None:
            pot = make_potential(data, species=species, seed=self.cfg.seed, **m)
        else:
            pot = previous  # warm start from the last iteration's fit
        f = dict(self.cfg.fit)
        valid_fraction = float(f.pop("valid_fraction", 0.0))
        train, valid = (data.split(valid_fraction, seed=self.cfg.seed + k) if valid_fraction > 0 else (data, None))
        t0 = time.perf_counter()
        res = fit(pot, train, valid, checkpoint=d / "fit_checkpoint.json", checkpoint_interval=5.0, quiet=True,
                  seed=self.cfg.seed + k, **f)
        pot = res.potential
        self.log(f"iteration {k}: fitted {pot.n_params} parameters on {len(train)} configurations "
                 f"in {time.perf_counter() - t0:.1f} s (loss {res.best_loss:.4g})")
        pot.save(d / "potential.mtp")
        pot.save(path)
        return Potential.from_file(path)  # exactly what a resumed run reads

    def active_set(self, k: int, pot, training: list[Atoms]):
        from .active import ActiveSet

        path = self.iter_dir(k) / "active_set.npz"
        if path.exists():
            try:
                return ActiveSet.load(path, pot)
            except Exception as exc:  # stale or damaged state: rebuild from the training set
                self.log(f"rebuilding the active set ({exc})")
        aset = ActiveSet.from_training(pot, training, **self.cfg.active)
        aset.save(path)
        return ActiveSet.load(path, pot)  # exactly what a resumed run reads (A^-1 inverted afresh)

    def simulate(self, k: int, pot, aset) -> tuple[list[Atoms], dict]:
        d = self.iter_dir(k)
        pool_path, info_path = d / "pool.extxyz", d / "pool.json"
        if pool_path.exists() and info_path.exists():
            return read_images(pool_path), json.loads(info_path.read_text())
        calc = aset.calculator()
        mmax = dict(pot.max_moment)
        runs_dir = d / "runs"
        runs_dir.mkdir(exist_ok=True)
        pool: list[Atoms] = []
        runs = []
        grades: list[float] = []
        for r, (si, st, scale, start, temp) in enumerate(self.simulation_plan()):
            # every run has its own random stream and its own files: a killed phase
            # resumes at the first unfinished run and ends as an uninterrupted one
            r_images, r_info = runs_dir / f"run_{r:04d}.extxyz", runs_dir / f"run_{r:04d}.json"
            if r_images.exists() and r_info.exists():
                pre, desc = read_images(r_images), json.loads(r_info.read_text())
            else:
                pre, desc = self.simulate_one(r, k, calc, pot, mmax, si, st, scale, start, temp)
                write_images(r_images, pre)
                write_json(r_info, desc)
            pool += pre
            runs.append(desc)
            grades.append(desc["max_grade"])
        info = {"runs": runs, "max_grades": grades, "n_preselected": len(pool)}
        write_images(pool_path, pool)
        write_json(info_path, info)
        return pool, info

    def simulation_plan(self) -> list[tuple]:
        """Every simulation of an iteration: (stage index, stage, scale, start, temperature)."""
        plan = []
        for si, st in enumerate(self.cfg.stages):
            for scale in st.scales:
                for start in st.starts:
                    for temp in (st.temperatures if st.kind == "md" else [None]):
                        plan.append((si, st, scale, start, temp))
        return plan

    def simulate_one(self, r: int, k: int, calc, pot, mmax: dict, si: int, st: StageConfig, scale: float,
                     start: str, temp) -> tuple[list[Atoms], dict]:
        """Simulation ``r`` of iteration ``k``; returns its preselected configurations and summary."""
        from .simulate import two_stage

        rng = np.random.default_rng([self.cfg.seed, k, r])
        a = with_state(prototype_cell(self.cfg.system, scale), self.cfg.system, start, seed=int(rng.integers(1 << 31)))
        if st.kind == "md":
            kw = dict(temperature_K=temp, steps=st.steps, timestep_fs=st.timestep_fs, thermostat=st.thermostat,
                      seed=int(rng.integers(1 << 31)))
        else:
            random_strain(a, rng, st.strain)
            a.positions += rng.normal(0.0, st.displacement, a.positions.shape)
            kw = dict(fmax=st.fmax, steps=st.steps, cell=st.cell) if st.kind == "relax" else {}
        if st.kind == "moments":
            random_moment_start(a, rng, st.moment_range, mmax)
        opts = {"frozen": list(st.frozen)} if st.frozen else {}
        res = two_stage(a, calc, stage2="none" if st.kind == "moments" else st.kind,
                        stage1=default_thresholds("moments", None, st.gamma_up),
                        stage2_thresholds=default_thresholds(st.kind, st.gamma_low, st.gamma_up),
                        equilibrate=st.equilibrate or st.kind == "moments", stage1_options=opts,
                        min_distance=0.75 * pot.min_dist, **kw)
        pre = [_plain(p) for p in res.preselected]
        for p in pre:
            p.info["run"] = r
        desc = {"stage": si, "kind": st.kind, "scale": scale, "start": start, "temperature": temp, **res.summary()}
        note = ("stopped: grade > gamma_up" if res.stopped else
                f"exploded: {res.exploded}" if res.exploded else "completed")
        self.log(f"iteration {k}: {st.kind} scale={scale} start={start}"
                 + (f" T={temp} K" if temp is not None else "")
                 + f": max grade {res.max_grade:.3g}, preselected {len(pre)}, {note}")
        return pre, desc

    def select(self, k: int, aset, pool: list[Atoms]) -> list[Atoms]:
        path = self.iter_dir(k) / "selected.extxyz"
        if path.exists():
            return read_images(path)
        from .potential import MMTPError

        try:
            chosen = aset.select(pool, limit=self.cfg.max_selected) if pool else []
            how = "by maxvol"
        except MMTPError as exc:
            # numerically singular active set: fall back to the highest grades, one per simulation run
            self.log(f"iteration {k}: maxvol selection failed ({exc}); taking the highest grades instead")
            best: dict = {}
            for a in pool:
                r = a.info.get("run", id(a))
                if r not in best or a.info.get("MV_grade", 0) > best[r].info.get("MV_grade", 0):
                    best[r] = a
            chosen = sorted(best.values(), key=lambda a: -a.info.get("MV_grade", 0))[: self.cfg.max_selected]
            how = "by grade"
        self.log(f"iteration {k}: selected {len(chosen)} of {len(pool)} preselected configurations {how}")
        write_images(path, [_plain(a) for a in chosen])
        return chosen

    # ---------------------------------------------------------------- test set and report
    def test_set(self) -> list[Atoms]:
        """Held-out oracle labels from MD driven by the oracle itself (never used in training)."""
        t = self.cfg.test
        n = int(t.get("n", 0))
        d = self.state / "test"
        d.mkdir(exist_ok=True)
        path = d / "test.extxyz"
        if path.exists():
            return read_images(path)
        if n <= 0:
            write_images(path, [])
            return []
        if self.cfg.oracle.get("kind", "reference") != "reference":
            self.log("test set: oracle MD is only run with the reference oracle; skipped")
            write_images(path, [])
            return []
        from ase.md.langevin import Langevin
        from ase import units

        from .oracles.reference import ReferenceCalculator

        rng = np.random.default_rng(self.cfg.seed + 12345)
        temps = t.get("temperatures", [300.0, 1000.0])
        states = t.get("states", ["AFM", "random", "FM"])
        every = int(t.get("every", 10))
        images = []
        while len(images) < n:
            k = len(images)
            a = with_state(prototype_cell(self.cfg.system), self.cfg.system, states[k % len(states)],
                           seed=int(rng.integers(1 << 31)))
            a.calc = ReferenceCalculator(self.cfg.oracle.get("preset", "CrN"))
            dyn = Langevin(a, 2.0 * units.fs, temperature_K=temps[k % len(temps)], friction=0.02,
                           rng=np.random.default_rng(int(rng.integers(1 << 31))), fixcm=False)
            dyn.run(every * 5)
            for _ in range(min(3, n - len(images))):
                dyn.run(every)
                images.append(_plain(a))
        labelled = self.label(images, "held-out test set")
        write_images(path, labelled)
        return labelled

    def errors(self, pot, images: list[Atoms]) -> dict | None:
        if not images:
            return None
        from .report import error_report

        return error_report(pot, {"test": Dataset.from_atoms(images)})

    def report(self, pot, test: list[Atoms]) -> dict:
        from .learn_report import write_learning_report

        return write_learning_report(self, pot, test)

    # ---------------------------------------------------------------- main loop
    def run(self) -> dict:
        from .potential import single_blas_thread

        with single_blas_thread():
            return self._run()

    def _run(self) -> dict:
        t_start = time.perf_counter()
        timing = self.summary.setdefault("timing", {"fit": 0.0, "simulate": 0.0, "select": 0.0, "label": 0.0})
        training = self.initial()
        test = self.test_set()
        previous = None
        converged = False
        k = 0
        pot = None
        while k < self.cfg.max_iterations:
            d = self.iter_dir(k)
            tr_path = d / "training.extxyz"
            if not tr_path.exists():
                write_images(tr_path, training)
            training = read_images(tr_path)
            t0 = time.perf_counter()
            pot = self.fit(k, training, previous)
            aset = self.active_set(k, pot, training)
            t1 = time.perf_counter()
            pool, info = self.simulate(k, pot, aset)
            t2 = time.perf_counter()
            selected = self.select(k, aset, pool) if pool else []
            t3 = time.perf_counter()
            rec = {"iteration": k, "training_size": len(training), "n_preselected": len(pool),
                   "n_selected": len(selected), "max_grades": info["max_grades"],
                   "test_errors": self.errors(pot, test)}
            labelled: list[Atoms] = []
            if selected:
                lab_path = d / "labelled.extxyz"
                if lab_path.exists():
                    labelled = read_images(lab_path)
                else:
                    labelled = self.label(selected, f"iteration {k} selection")
                    write_images(lab_path, labelled)
            t4 = time.perf_counter()
            rec["n_labelled"] = len(labelled)
            rec["n_label_failures"] = len(selected) - len(labelled)
            self.summary["iterations"] = [r for r in self.summary["iterations"] if r["iteration"] != k] + [rec]
            for key, dt in (("fit", t1 - t0), ("simulate", t2 - t1), ("select", t3 - t2), ("label", t4 - t3)):
                timing[key] += dt
            self.save_summary()
            self.log(f"iteration {k}: training {len(training)}, preselected {len(pool)}, selected {len(selected)}, "
                     f"labelled {len(labelled)}")
            if not pool:
                converged = True
                self.log(f"converged: iteration {k} preselected nothing")
                break
            if not labelled:
                self.log(f"iteration {k}: nothing could be labelled; stopping (see the label failures above)")
                break
            training = training + labelled
            previous = pot
            k += 1
        else:
            self.log(f"stopped at the iteration limit ({self.cfg.max_iterations}) without convergence")
        self.summary["converged"] = converged
        self.summary["final_iteration"] = k
        self.summary["wall_time_s"] = self.summary.get("wall_time_s", 0.0) + (time.perf_counter() - t_start)
        self.save_summary()
        rep = self.report(pot, test) if pot is not None else {}
        self.summary["report"] = rep
        self.save_summary()
        if self._executor is not None and hasattr(self._executor, "shutdown"):
            self._executor.shutdown()
        return self.summary


def _plain(a: Atoms) -> Atoms:
    b = Atoms(a.get_chemical_symbols(), positions=a.positions.copy(), cell=a.cell.array.copy(), pbc=a.pbc.copy())
    b.set_initial_magnetic_moments(a.get_initial_magnetic_moments())
    for key in ("MV_grade", "stage", "run", "origin"):
        if key in a.info:
            b.info[key] = a.info[key]
    return b


# --------------------------------------------------------------------------- command line


def add_cli(sub) -> None:
    p = sub.add_parser("learn", help="run (or resume) the active-learning loop of a TOML configuration")
    p.add_argument("config", help="TOML file (see examples/)")
    p.add_argument("--state", default=None, help="state directory (default: runs/<name>)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run)
    v = sub.add_parser("validate", help="compare a potential with the oracle of a learn configuration, moments "
                                        "equilibrated (moments, state energies, E(a), elastic constants, phonons)")
    v.add_argument("config", help="learn TOML file: its [system], [oracle] and [validate] sections are used")
    v.add_argument("--potential", required=True, help="potential file (.json or MLIP-3 .mtp)")
    v.add_argument("--out", default="validation", help="output directory (validation.json/.md/.png)")
    v.add_argument("--quiet", action="store_true")
    v.set_defaults(func=run_validate)


def run_validate(args: argparse.Namespace) -> dict:
    """``mmtp validate``: exits non-zero when a check fails (see validation.md)."""
    from .potential import Potential

    cfg = LearnConfig.from_toml(args.config)
    pot = Potential.from_file(args.potential, species=cfg.model.get("species"))
    out = Path(args.out)
    say = (lambda msg: None) if args.quiet else (lambda msg: print(msg, flush=True))
    from .potential import single_blas_thread

    with single_blas_thread():
        rep = run_validation(cfg, pot, out, oracle_workdir=out / "oracle_jobs", progress=say)
    if not args.quiet:
        for c in rep["checks"]:
            print(f"  {'pass' if c['pass'] else 'FAIL'}  {c['name']}: {c['value']:.4g} {c['unit']} "
                  f"(tolerance {c['tolerance']:.4g}; {c['where']})")
        print(f"all checks pass: {rep['passed']}; report in {out}/validation.md")
    if not rep["passed"]:
        raise ValidationFailed(f"{sum(not c['pass'] for c in rep['checks'])} validation check(s) failed; "
                               f"see {out / 'validation.md'}")
    return rep


class ValidationFailed(RuntimeError):
    """A potential failed a validation check (``mmtp validate`` exits with 1)."""


def run(args: argparse.Namespace) -> dict:
    cfg = LearnConfig.from_toml(args.config)
    state = args.state or str(Path("runs") / cfg.name)
    learner = Learner(cfg, state, quiet=args.quiet)
    summary = learner.run()
    if not args.quiet:
        print(json.dumps({k: summary[k] for k in ("converged", "final_iteration", "timing", "wall_time_s")
                          if k in summary}, indent=1, default=float))
    return summary
