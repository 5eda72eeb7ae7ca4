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

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from mmtp_rs.fitting.data import Dataset
from mmtp_rs.io.atomic import atomic_write_json, atomic_write_text, remove_stale_temporaries
from mmtp_rs.io.images import plain_copy, read_images, write_images
from mmtp_rs.loop.config import ConfigError, LearnConfig, StageConfig, validation_options
from mmtp_rs.loop.structures import initial_training_set, prototype_cell, random_moment_start, random_strain, with_state
from mmtp_rs.simulate import default_thresholds


__all__ = ["run_validation", "make_oracle", "make_executor", "write_json", "Learner"]


def run_validation(cfg: LearnConfig, pot, outdir: Path, oracle_workdir: Path | None = None, progress=None) -> dict:
    """:func:`mmtp_rs.properties.validation.validate` of ``pot`` against the configured oracle on the [system] structure."""
    from mmtp_rs.model.calculator import MMTPCalculator
    from mmtp_rs.oracles.calculator import oracle_calculator
    from mmtp_rs.properties.validation import validate, write_validation

    opts = validation_options(cfg)
    s = cfg.system
    a0 = s.reference_length
    rep = validate(MMTPCalculator(pot), oracle_calculator(cfg.oracle, oracle_workdir),
                   structure=lambda a: s.cell(a / a0), moment=dict(s.moments), opts=opts,
                   elastic_cell=lambda a: s.cell(a / a0, supercell=[1, 1, 1]), progress=progress)
    rep["files"] = write_validation(rep, outdir)
    return rep


def make_oracle(cfg: LearnConfig):
    o = dict(cfg.oracle)
    kind = o.pop("kind", "reference")
    if kind == "reference":
        from mmtp_rs.oracles.reference import ReferenceOracle

        return ReferenceOracle(o.pop("preset", "CrN"), **o)
    from mmtp_rs.oracles.abinit import AbinitOracle

    return AbinitOracle(**o)


def make_executor(cfg: LearnConfig):
    """None (the oracle's default), a serial executor, a process pool or a dask client's executor."""
    e = cfg.executor
    kind = e.get("kind", "default")
    if kind == "default":
        return None
    if kind == "serial":
        from mmtp_rs.oracles.base import SerialExecutor

        return SerialExecutor()
    if kind == "process":
        from mmtp_rs.oracles.base import default_process_pool

        return default_process_pool(int(e.get("workers", 2)))
    if kind == "dask":
        from dask.distributed import Client

        return Client(e["address"]).get_executor() if "address" in e else Client(
            n_workers=int(e.get("workers", 2)), threads_per_worker=1).get_executor()
    raise ConfigError(f"{cfg.source}: [executor] kind {kind!r} is not default/serial/process/dask")


def write_json(path: Path, doc: Any) -> None:
    atomic_write_json(path, doc)


def warm_max_iter(fit: dict) -> int:
    """Iteration limit of a refit warm-started from the previous iteration's potential
    while the loop is still selecting: ``[fit] warm_max_iter`` if set (> 0), else
    ``max_iter``.

    Not shortened by default: the refits of the main job reach the final loss of a
    cold fit of the same set after 70-80 (k = 1) and 1 (k >= 2) of 200 iterations
    (benches/bench_refit.py), but stopping them there (a quarter of ``max_iter``)
    made the main job slower, not faster: the weaker potentials steered the sampling
    to configurations the full refits never visit (7 iterations and 72 labels instead
    of 4 and 51; 297 s instead of 137 s).
    """
    n = int(fit.get("warm_max_iter", 0) or 0)
    return n if n > 0 else int(fit.get("max_iter", 1000))


def final_max_iter(fit: dict) -> int:
    """Iteration limit of the final refit: once a round of sampling preselects
    nothing, the loop refits the same training set (warm) for this many iterations
    and samples again with the result, which is the potential it delivers.
    ``[fit] final_max_iter``; default ``2 * max_iter``; 0: no final refit (the loop
    ends with the refit whose sampling preselected nothing)."""
    n = fit.get("final_max_iter")
    return 2 * int(fit.get("max_iter", 1000)) if n is None else int(n)


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

    def fit(self, k: int, training: list[Atoms], previous=None, kind: str = "cold"):
        """Fit of iteration ``k``: ``cold`` (a new potential, ``max_iter``), ``warm``
        (from ``previous``, :func:`warm_max_iter`) or ``final`` (from ``previous``,
        :func:`final_max_iter`)."""
        from mmtp_rs.fitting.optimize import fit, make_potential
        from mmtp_rs.model.potential import Potential

        d = self.iter_dir(k)
        path = d / "potential.json"
        if path.exists():
            return Potential.from_file(path)
        data = Dataset.from_atoms(training)
        m = dict(self.cfg.model)
        species = m.pop("species", None) or sorted({s for a in training for s in a.get_chemical_symbols()})
        from mmtp_rs.config import fit_arguments

        valid_fraction = float(self.cfg.fit.get("valid_fraction", 0.0))
        f = fit_arguments(self.cfg.fit)
        f.pop("seed", None)  # each iteration's fit is seeded by the run's seed and the iteration
        f.pop("checkpoint_interval", None)  # the loop checkpoints every 5 s
        if previous is None:
            kind = "cold"
            pot = make_potential(data, species=species, seed=self.cfg.seed, **m)
        else:
            pot = previous  # warm start from the last iteration's fit
            f["max_iter"] = final_max_iter(self.cfg.fit) if kind == "final" else warm_max_iter(self.cfg.fit)
        train, valid = (data.split(valid_fraction, seed=self.cfg.seed + k) if valid_fraction > 0 else (data, None))
        t0 = time.perf_counter()
        res = fit(pot, train, valid, checkpoint=d / "fit_checkpoint.json", checkpoint_interval=5.0, quiet=True,
                  seed=self.cfg.seed + k, **f)
        pot = res.potential
        self.log(f"iteration {k}: fitted {pot.n_params} parameters on {len(train)} configurations "
                 f"in {time.perf_counter() - t0:.1f} s ({'' if kind == 'cold' else kind + ' refit, '}"
                 f"{len(res.history)} iterations, loss {res.best_loss:.4g})")
        pot.save(d / "potential.mtp")
        pot.save(path)
        return Potential.from_file(path)  # exactly what a resumed run reads

    def active_set(self, k: int, pot, training: list[Atoms]):
        from mmtp_rs.active import ActiveSet

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
        for r, (pi, si, st, scale, start, temp) in enumerate(self.simulation_plan()):
            # every run has its own random stream and its own files: a killed phase
            # resumes at the first unfinished run and ends as an uninterrupted one
            r_images, r_info = runs_dir / f"run_{r:04d}.extxyz", runs_dir / f"run_{r:04d}.json"
            if r_images.exists() and r_info.exists():
                pre, desc = read_images(r_images), json.loads(r_info.read_text())
            else:
                pre, desc = self.simulate_one(r, k, calc, pot, mmax, pi, si, st, scale, start, temp)
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
        """Every simulation of an iteration: (phase index, stage index, stage, scale, start, temperature)."""
        plan = []
        for si, st in enumerate(self.cfg.stages):
            for pi in range(len(self.cfg.phases)):
                for scale in st.scales:
                    for start in st.starts:
                        for temp in (st.temperatures if st.kind in ("md", "mdmc", "dlm") else [None]):
                            plan.append((pi, si, st, scale, start, temp))
        return plan

    def simulate_one(self, r: int, k: int, calc, pot, mmax: dict, pi: int, si: int, st: StageConfig, scale: float,
                     start: str, temp) -> tuple[list[Atoms], dict]:
        """Simulation ``r`` of iteration ``k``; returns its preselected configurations and summary."""
        from mmtp_rs.simulate import two_stage

        rng = np.random.default_rng([self.cfg.seed, k, r])
        phase = self.cfg.phases[pi]
        a = with_state(prototype_cell(phase, scale), phase, start, seed=int(rng.integers(1 << 31)))
        if st.kind == "md" and st.engine == "lammps":
            return self._simulate_lammps(r, k, calc, pot, pi, si, st, scale, start, temp, a, rng)
        if st.kind in ("md", "mdmc", "dlm"):
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
        pre = [plain_copy(p) for p in res.preselected]
        for p in pre:
            p.info["run"] = r
        desc = {"phase": pi, "stage": si, "kind": st.kind, "scale": scale, "start": start, "temperature": temp,
                **res.summary()}
        note = ("stopped: grade > gamma_up" if res.stopped else
                f"exploded: {res.exploded}" if res.exploded else "completed")
        where = f" phase={phase.name or pi}" if len(self.cfg.phases) > 1 else ""
        self.log(f"iteration {k}: {st.kind}{where} scale={scale} start={start}"
                 + (f" T={temp} K" if temp is not None else "")
                 + f": max grade {res.max_grade:.3g}, preselected {len(pre)}, {note}")
        return pre, desc

    def _simulate_lammps(self, r, k, calc, pot, pi, si, st, scale, start, temp, atoms, rng):
        """Simulation ``r`` as stage 1 + NVT MD in LAMMPS (``engine = "lammps"``), every step graded."""
        from mmtp_rs.lammps import run_md as lammps_md

        thr = default_thresholds("md", st.gamma_low, st.gamma_up)
        work = self.iter_dir(k) / "runs" / f"lammps_{r:04d}"
        res = lammps_md(atoms, pot, calc.active_set, temperature_K=temp, steps=st.steps, timestep_fs=st.timestep_fs,
                        gamma_low=thr.gamma_low, gamma_up=thr.gamma_up, stage1=st.equilibrate,
                        seed=int(rng.integers(1, 1 << 30)), nprocs=st.nprocs, workdir=work)
        pre = []
        for p in res.preselected:
            q = plain_copy(p)
            q.info.update(stage="md", run=r, MV_grade=float(p.info.get("MV_grade", 0.0)))
            pre.append(q)
        desc = {"phase": pi, "stage": si, "kind": st.kind, "scale": scale, "start": start, "temperature": temp,
                "engine": "lammps", "preselected": len(pre), "rejected": 0, "stopped": bool(res.stopped),
                "exploded": None, "max_grade": float(res.max_grade), "n_evaluations": int(res.steps) + 1}
        self.log(f"iteration {k}: md (LAMMPS, {st.nprocs} rank(s)) scale={scale} start={start} T={temp} K: "
                 f"max grade {res.max_grade:.3g}, preselected {len(pre)}, "
                 f"{'stopped: grade > gamma_up' if res.stopped else 'completed'}")
        return pre, desc

    def select(self, k: int, aset, pool: list[Atoms]) -> list[Atoms]:
        path = self.iter_dir(k) / "selected.extxyz"
        if path.exists():
            return read_images(path)
        from mmtp_rs.model.potential import MMTPError

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
        write_images(path, [plain_copy(a) for a in chosen])
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
        from ase import units
        from ase.md.langevin import Langevin

        from mmtp_rs.oracles.reference import ReferenceCalculator

        rng = np.random.default_rng(self.cfg.seed + 12345)
        temps = t.get("temperatures", [300.0, 1000.0])
        states = t.get("states", ["AFM", "random", "FM"])
        every = int(t.get("every", 10))
        images = []
        while len(images) < n:
            k = len(images)
            phase = self.cfg.phases[(k // 3) % len(self.cfg.phases)]
            a = with_state(prototype_cell(phase), phase, states[k % len(states)], seed=int(rng.integers(1 << 31)))
            a.calc = ReferenceCalculator(self.cfg.oracle.get("preset", "CrN"))
            dyn = Langevin(a, 2.0 * units.fs, temperature_K=temps[k % len(temps)], friction=0.02,
                           rng=np.random.default_rng(int(rng.integers(1 << 31))), fixcm=False)
            dyn.run(every * 5)
            for _ in range(min(3, n - len(images))):
                dyn.run(every)
                images.append(plain_copy(a))
        labelled = self.label(images, "held-out test set")
        write_images(path, labelled)
        return labelled

    def errors(self, pot, images: list[Atoms]) -> dict | None:
        if not images:
            return None
        from mmtp_rs.fitting.report import error_report

        return error_report(pot, {"test": Dataset.from_atoms(images)})

    def report(self, pot, test: list[Atoms]) -> dict:
        from mmtp_rs.loop.report import write_learning_report

        return write_learning_report(self, pot, test)

    # ---------------------------------------------------------------- main loop
    def run(self) -> dict:
        from mmtp_rs.model.potential import single_blas_thread

        with single_blas_thread():
            return self._run()

    def _run(self) -> dict:
        t_start = time.perf_counter()
        timing = self.summary.setdefault("timing", {"fit": 0.0, "simulate": 0.0, "select": 0.0, "label": 0.0})
        training = self.initial()
        test = self.test_set()
        previous = None
        converged = False
        final_pending = False  # the last round preselected nothing: refit long, sample again
        finals = final_max_iter(self.cfg.fit) > 0
        k = 0
        pot = None
        while k < self.cfg.max_iterations:
            d = self.iter_dir(k)
            tr_path = d / "training.extxyz"
            if not tr_path.exists():
                write_images(tr_path, training)
            training = read_images(tr_path)
            t0 = time.perf_counter()
            # iteration 0 fits from scratch, later ones start from the previous potential;
            # the potential the loop delivers comes from a final (longer) refit: after a
            # round that preselected nothing, and at the last permitted iteration
            if previous is None:
                kind = "cold"
            elif finals and (final_pending or k == self.cfg.max_iterations - 1):
                kind = "final"
            else:
                kind = "warm"
            pot = self.fit(k, training, previous, kind)
            aset = self.active_set(k, pot, training)
            t1 = time.perf_counter()
            pool, info = self.simulate(k, pot, aset)
            t2 = time.perf_counter()
            selected = self.select(k, aset, pool) if pool else []
            t3 = time.perf_counter()
            rec = {"iteration": k, "fit": kind, "training_size": len(training), "n_preselected": len(pool),
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
            if not pool and finals and kind != "final":
                self.log(f"iteration {k} preselected nothing; iteration {k + 1} refits the same training set "
                         f"for {final_max_iter(self.cfg.fit)} iterations and samples again")
                final_pending = True
                previous = pot
                k += 1
                continue
            if not pool:
                converged = True
                self.log(f"converged: iteration {k} preselected nothing")
                break
            final_pending = False
            if not labelled:
                self.log(f"iteration {k}: nothing could be labelled; stopping (see the label failures above)")
                break
            training = training + labelled
            previous = pot
            k += 1
        else:
            k = self.cfg.max_iterations - 1  # the last iteration run
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


