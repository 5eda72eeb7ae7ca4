"""The oracle interface: labelling batches of configurations with resumable jobs.

An :class:`Oracle` turns configurations with fixed (constrained) moments into
labelled configurations: energy, forces, stress and magnetic forces
``T_i = −∂E/∂m_i``. :meth:`Oracle.label` gives every configuration a job
directory named by a hash of its input, keeps a JSON record there (inputs,
settings, attempts with timing, outputs, status), runs missing jobs through
any :class:`concurrent.futures.Executor`, retries failed attempts with the
overrides the oracle proposes, and reports what could not be labelled.

Rerunning the same batch in the same ``workdir`` reuses every finished job:
records are written atomically (temporary file + :func:`os.replace`), so a
killed run leaves either the old or the new record, never a broken one.
"""

from __future__ import annotations

import abc
import concurrent.futures as cf
import hashlib
import json
import multiprocessing
import os
import socket
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
from ase import Atoms

from mmtp_rs.io.atomic import atomic_write_json
from mmtp_rs.io.labels import attach_labels


__all__ = [
    "Oracle",
    "OracleOutput",
    "LabelResult",
    "Failure",
    "OracleError",
    "OracleSetupError",
    "OracleTimeout",
    "SerialExecutor",
    "default_process_pool",
    "read_record",
    "RECORD_NAME",
]

RECORD_NAME = "record.json"
_RECORD_VERSION = 1


class OracleError(RuntimeError):
    """A labelling job failed (the attempt may be retried)."""


class OracleSetupError(OracleError, ValueError):
    """The oracle cannot run at all (missing program, bad pseudopotential,
    unknown element). Never retried."""


class OracleTimeout(OracleError):
    """A job exceeded its time limit. Not retried."""


@dataclass
class OracleOutput:
    """Result of one oracle calculation (all in eV, Å, μB)."""

    energy: float  # eV
    forces: np.ndarray  # (N, 3) eV/Å
    stress: np.ndarray | None  # (6,) eV/Å³, Voigt xx yy zz yz xz xy, ASE sign
    magnetic_forces: np.ndarray  # (N,) eV/μB, −∂E/∂m_i
    moments: np.ndarray  # (N,) μB, the moments actually obtained
    converged: bool = True
    message: str = ""  # why it did not converge, or notes

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (floats at full precision)."""
        return {
            "energy": float(self.energy),
            "forces": np.asarray(self.forces, float).tolist(),
            "stress": None if self.stress is None else np.asarray(self.stress, float).tolist(),
            "magnetic_forces": np.asarray(self.magnetic_forces, float).tolist(),
            "moments": np.asarray(self.moments, float).tolist(),
            "converged": bool(self.converged),
            "message": str(self.message),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "OracleOutput":
        return cls(
            energy=float(d["energy"]),
            forces=np.asarray(d["forces"], float).reshape(-1, 3),
            stress=None if d.get("stress") is None else np.asarray(d["stress"], float),
            magnetic_forces=np.asarray(d["magnetic_forces"], float),
            moments=np.asarray(d["moments"], float),
            converged=bool(d.get("converged", True)),
            message=str(d.get("message", "")),
        )


@dataclass
class Failure:
    """A configuration that could not be labelled."""

    index: int  # position in the input batch
    job_id: str
    directory: Path
    reason: str
    attempts: int


@dataclass
class LabelResult:
    """Outcome of :meth:`Oracle.label`.

    Attributes
    ----------
    labelled : list of ase.Atoms
        Converged configurations with ``REF_*`` labels, in input order.
    indices : list of int
        Input index of each labelled configuration.
    failures : list of Failure
        Configurations that could not be labelled, with reasons.
    reused : list of int
        Input indices whose result came from an earlier run.
    computed : list of int
        Input indices computed in this call.
    """

    labelled: list[Atoms] = field(default_factory=list)
    indices: list[int] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    reused: list[int] = field(default_factory=list)
    computed: list[int] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True if every configuration was labelled."""
        return not self.failures

    def __repr__(self) -> str:
        return (
            f"LabelResult(labelled={len(self.labelled)}, failures={len(self.failures)}, "
            f"reused={len(self.reused)}, computed={len(self.computed)})"
        )


# ----------------------------------------------------------------- executors
class SerialExecutor(cf.Executor):
    """Executor that runs each job in the calling process, at submission."""

    def submit(self, fn, /, *args, **kwargs):
        future: cf.Future = cf.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as err:  # noqa: BLE001 - handed to the caller via the future
            if isinstance(err, (KeyboardInterrupt, SystemExit)):
                raise
            future.set_exception(err)
        return future


def default_process_pool(max_workers: int | None = None) -> cf.ProcessPoolExecutor:
    """A local process pool whose workers do not inherit threads by fork.

    Uses the ``forkserver`` start method where available (``spawn``
    otherwise): forking a process that runs rayon or BLAS threads is unsafe.

    Parameters
    ----------
    max_workers : int, optional
        Number of worker processes (default: number of CPUs).
    """
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    return cf.ProcessPoolExecutor(max_workers=max_workers, mp_context=ctx)


# ------------------------------------------------------------------- records
def read_record(directory: str | Path) -> dict[str, Any] | None:
    """Read a job record, or return None if there is none (or it is unreadable)."""
    path = Path(directory) / RECORD_NAME
    try:
        with open(path) as fh:
            return json.load(fh)
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError):
        return None  # treated as missing: the job is redone


def atoms_to_dict(atoms: Atoms) -> dict[str, Any]:
    """Exact JSON form of the parts of a configuration an oracle needs."""
    return {
        "numbers": atoms.numbers.tolist(),
        "positions": atoms.positions.tolist(),
        "cell": atoms.cell.array.tolist(),
        "pbc": [bool(x) for x in atoms.pbc],
        "moments": atoms.get_initial_magnetic_moments().astype(float).tolist(),
    }


def atoms_from_dict(d: dict[str, Any]) -> Atoms:
    """Inverse of :func:`atoms_to_dict`."""
    atoms = Atoms(numbers=d["numbers"], positions=d["positions"], cell=d["cell"], pbc=d["pbc"])
    atoms.set_initial_magnetic_moments(d["moments"])
    return atoms


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def run_job(oracle: "Oracle", payload: dict[str, Any], directory: str) -> dict[str, Any]:
    """Run one job with retries; write and return its record.

    This is the function sent to executors; it must stay importable at module
    level so any executor can pickle it.
    """
    job_dir = Path(directory)
    job_dir.mkdir(parents=True, exist_ok=True)
    # earlier runs of this job (killed, or failed and retried) stay in its history
    prev = read_record(job_dir)
    history = []
    if prev is not None:
        history = list(prev.get("history") or [])
        history.append({
            "status": "interrupted" if prev.get("status") == "running" else prev.get("status"),
            **{k: prev.get(k) for k in ("started", "finished", "host", "pid", "reason", "attempts")},
        })
    record = dict(payload)
    record.update(
        status="running",
        started=_now(),
        host=socket.gethostname(),
        pid=os.getpid(),
        attempts=[],
        history=history,
        output=None,
        reason=None,
    )
    atomic_write_json(job_dir / RECORD_NAME, record)
    atoms = atoms_from_dict(payload["input"])
    reason = "no attempt was made"
    for attempt in range(oracle.max_attempts):
        overrides = oracle.attempt_settings(attempt)
        if overrides is None:
            break
        adir = job_dir / f"attempt{attempt}"
        entry: dict[str, Any] = {"attempt": attempt, "overrides": overrides, "started": _now()}
        t0 = time.perf_counter()
        stop = False
        try:
            out = oracle.compute(atoms, adir, overrides)
            if out.converged:
                entry.update(status="done", wall_s=time.perf_counter() - t0)
                record["attempts"].append(entry)
                record.update(status="done", output=out.to_dict(), finished=_now(), reason=None)
                atomic_write_json(job_dir / RECORD_NAME, record)
                return record
            reason = f"not converged: {out.message}" if out.message else "not converged"
        except OracleTimeout as err:
            reason, stop = f"timeout: {err}", True
        except OracleSetupError as err:
            reason, stop = f"setup error: {err}", True
        except Exception as err:  # noqa: BLE001 - a crash is a reported failure
            reason = f"{type(err).__name__}: {err}"
            entry["traceback"] = traceback.format_exc(limit=5)
        entry.update(status="failed", reason=reason, wall_s=time.perf_counter() - t0)
        record["attempts"].append(entry)
        atomic_write_json(job_dir / RECORD_NAME, record)
        if stop:
            break
    record.update(status="failed", reason=reason, finished=_now())
    atomic_write_json(job_dir / RECORD_NAME, record)
    return record


# -------------------------------------------------------------------- oracle
class Oracle(abc.ABC):
    """Base class of labelling oracles.

    Parameters
    ----------
    relax_moments : bool
        False (default): constrained calculation, the moments are held at the
        configuration's initial magnetic moments. True: unconstrained
        (equilibrium) calculation, the moments relax at fixed geometry and
        the obtained moments are stored with the labels.
    max_attempts : int
        Attempts per job, including retries with :meth:`attempt_settings`.
    timeout : float, optional
        Wall-time limit per attempt, seconds (honoured by oracles that run
        external programs).

    Notes
    -----
    Subclasses implement :meth:`settings` (the physics settings that define
    the labels: they enter the job hash) and :meth:`compute`; they may
    override :meth:`attempt_settings`, :meth:`validate` and
    :meth:`default_executor`. Oracles are pickled to executor workers.
    """

    name = "oracle"

    def __init__(self, *, relax_moments: bool = False, max_attempts: int = 3,
                 timeout: float | None = None):
        if int(max_attempts) < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts!r}")
        if timeout is not None and not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
        self.relax_moments = bool(relax_moments)
        self.max_attempts = int(max_attempts)
        self.timeout = timeout

    # ------------------------------------------------------ subclass hooks
    @abc.abstractmethod
    def settings(self) -> dict[str, Any]:
        """JSON-serialisable settings that determine the labels."""

    @abc.abstractmethod
    def compute(self, atoms: Atoms, directory: Path, overrides: dict[str, Any]) -> OracleOutput:
        """Label one configuration (runs in a worker).

        Parameters
        ----------
        atoms : ase.Atoms
            Configuration with the target moments as initial magnetic moments.
        directory : pathlib.Path
            Scratch directory of this attempt (may not exist yet).
        overrides : dict
            Settings of this attempt from :meth:`attempt_settings`.
        """

    def attempt_settings(self, attempt: int) -> dict[str, Any] | None:
        """Setting overrides for attempt ``attempt`` (0-based); None: stop."""
        return {}

    def validate(self, configurations: Sequence[Atoms]) -> None:
        """Check a batch before any job is submitted; raise on bad input."""

    def default_executor(self, n_jobs: int, max_workers: int | None) -> cf.Executor:
        """Executor used when :meth:`label` gets none (a local process pool)."""
        workers = max(1, min(n_jobs, max_workers or os.cpu_count() or 1))
        return default_process_pool(workers)

    # ------------------------------------------------------------- jobs
    def job_id(self, atoms: Atoms) -> str:
        """Hash of the configuration, the target moments and the settings."""
        key = {
            "oracle": self.name,
            "settings": self.settings(),
            "relax_moments": self.relax_moments,
            "input": atoms_to_dict(atoms),
        }
        text = json.dumps(key, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:20]

    def label(
        self,
        configurations: Iterable[Atoms],
        workdir: str | Path,
        executor: cf.Executor | None = None,
        *,
        max_workers: int | None = None,
        retry_failed: bool = False,
    ) -> LabelResult:
        """Label a batch of configurations.

        Parameters
        ----------
        configurations : iterable of ase.Atoms
            Configurations; their initial magnetic moments are the targets.
        workdir : str or path
            Directory holding one job directory per distinct configuration.
            Reusing it resumes an interrupted batch.
        executor : concurrent.futures.Executor, optional
            Where jobs run, e.g. a ``ProcessPoolExecutor`` or
            ``dask.distributed.Client.get_executor()``. Default:
            :meth:`default_executor` (created and shut down here).
        max_workers : int, optional
            Workers of the default executor.
        retry_failed : bool
            Redo jobs whose record says they failed (default: report the
            earlier failure again without recomputing).

        Returns
        -------
        LabelResult
        """
        configs = list(configurations)
        for k, atoms in enumerate(configs):
            if not isinstance(atoms, Atoms):
                raise TypeError(f"configuration {k} is a {type(atoms).__name__}, not ase.Atoms")
        self.validate(configs)
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)

        ids = [self.job_id(a) for a in configs]
        by_job: dict[str, list[int]] = {}
        for k, jid in enumerate(ids):
            by_job.setdefault(jid, []).append(k)

        records: dict[str, dict[str, Any]] = {}
        errors: dict[str, str] = {}
        to_run: list[str] = []
        for jid, idx in by_job.items():
            rec = read_record(workdir / jid)
            if rec is not None and rec.get("status") == "done" and rec.get("output"):
                records[jid] = rec
            elif rec is not None and rec.get("status") == "failed" and not retry_failed:
                records[jid] = rec
            else:
                to_run.append(jid)

        computed_jobs: set[str] = set()
        if to_run:
            own = executor is None
            ex = self.default_executor(len(to_run), max_workers) if own else executor
            futures: dict[cf.Future, str] = {}
            try:
                for jid in to_run:
                    atoms = configs[by_job[jid][0]]
                    payload = {
                        "version": _RECORD_VERSION,
                        "job_id": jid,
                        "oracle": self.name,
                        "settings": self.settings(),
                        "relax_moments": self.relax_moments,
                        "input": atoms_to_dict(atoms),
                        "created": _now(),
                    }
                    jdir = workdir / jid
                    atomic_write_json(jdir / "input.json", payload)
                    futures[ex.submit(run_job, self, payload, str(jdir))] = jid
                for fut in cf.as_completed(futures):
                    jid = futures[fut]
                    try:
                        records[jid] = fut.result()
                        computed_jobs.add(jid)
                    except Exception as err:  # noqa: BLE001 - worker died, executor error
                        errors[jid] = f"worker error: {type(err).__name__}: {err}"
            except BaseException:
                for fut in futures:
                    fut.cancel()
                raise
            finally:
                if own:
                    ex.shutdown(wait=True, cancel_futures=True)

        result = LabelResult()
        for k, atoms in enumerate(configs):
            jid = ids[k]
            jdir = workdir / jid
            if jid in errors:
                result.failures.append(Failure(k, jid, jdir, errors[jid], 0))
                continue
            rec = records[jid]
            (result.computed if jid in computed_jobs else result.reused).append(k)
            if rec.get("status") == "done":
                out = OracleOutput.from_dict(rec["output"])
                labelled = attach_labels(
                    atoms,
                    out.energy,
                    forces=out.forces,
                    stress=out.stress if atoms.pbc.all() else None,
                    magnetic_forces=out.magnetic_forces,
                    moments=out.moments,
                )
                labelled.info["oracle_job"] = jid
                result.labelled.append(labelled)
                result.indices.append(k)
            else:
                result.failures.append(
                    Failure(k, jid, jdir, str(rec.get("reason")), len(rec.get("attempts", [])))
                )
        return result
