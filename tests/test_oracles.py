"""Oracle interface: labels, job records, executors (process pool, dask),
retries, failure reports and kill-and-resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase.build import bulk

from mmtp_rs.io.labels import REF_ENERGY, attach_labels, read_labels
from mmtp_rs.oracles import OracleOutput, ReferenceModel, ReferenceOracle, default_process_pool, read_record


def batch(n=6, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        at = bulk("CrN", "rocksalt", a=4.15, cubic=True)
        at.rattle(0.05, seed=seed + k)
        at.set_initial_magnetic_moments(np.where(at.numbers == 24,
                                                 rng.choice([-2.5, 2.5], len(at)), 0.0))
        out.append(at)
    return out


def assert_labels_match_model(labelled, model):
    for at in labelled:
        lab = read_labels(at)
        ref = model.evaluate(at)
        assert lab.energy == ref["energy"]
        np.testing.assert_array_equal(lab.forces, ref["forces"])
        np.testing.assert_array_equal(lab.stress, ref["stress"])
        np.testing.assert_array_equal(lab.magnetic_forces, ref["magnetic_forces"])


def test_label_records_and_reuse(tmp_path):
    oracle = ReferenceOracle("CrN")
    configs = batch()
    res = oracle.label(configs, tmp_path)
    assert res.ok and res.indices == list(range(6)) and res.computed == list(range(6))
    assert_labels_match_model(res.labelled, oracle.model)
    for at in res.labelled:
        rec = read_record(tmp_path / at.info["oracle_job"])
        assert rec["status"] == "done" and rec["attempts"][0]["wall_s"] >= 0
        assert rec["input"]["moments"] == at.get_initial_magnetic_moments().tolist()
        assert OracleOutput.from_dict(rec["output"]).energy == at.info[REF_ENERGY]
    assert not list(tmp_path.rglob("*.tmp"))  # atomic writes leave no debris
    again = oracle.label(configs, tmp_path)
    assert again.computed == [] and again.reused == list(range(6))
    assert [a.info[REF_ENERGY] for a in again.labelled] == [a.info[REF_ENERGY] for a in res.labelled]
    # a different model is a different job
    other = ReferenceOracle(ReferenceModel.from_dict({**oracle.model.to_dict(), "cutoff": 4.4}))
    assert other.label(configs[:1], tmp_path).computed == [0]


def test_labels_round_trip_through_extxyz(tmp_path):
    res = ReferenceOracle("CrN").label(batch(2), tmp_path / "jobs")
    ase.io.write(tmp_path / "set.extxyz", res.labelled)
    back = ase.io.read(tmp_path / "set.extxyz", ":")
    for a, b in zip(res.labelled, back):
        la, lb = read_labels(a), read_labels(b)
        assert la.energy == lb.energy
        np.testing.assert_allclose(lb.forces, la.forces, atol=1e-7)
        np.testing.assert_allclose(lb.stress, la.stress, atol=1e-12)
        np.testing.assert_allclose(lb.magnetic_forces, la.magnetic_forces, atol=1e-7)
        np.testing.assert_allclose(lb.moments, la.moments, atol=1e-7)


def test_attach_labels_rejects_bad_values():
    at = batch(1)[0]
    with pytest.raises(ValueError, match="forces must have shape"):
        attach_labels(at, 1.0, forces=np.zeros((3, 3)))
    with pytest.raises(ValueError, match="magnetic_forces has a non-finite value at index \\(2,\\)"):
        attach_labels(at, 1.0, magnetic_forces=[0, 0, np.nan, 0, 0, 0, 0, 0])
    with pytest.raises(ValueError, match="energy is not finite"):
        attach_labels(at, np.inf)


def test_relax_moments_oracle(tmp_path):
    configs = batch(2)
    res = ReferenceOracle("CrN", relax_moments=True).label(configs, tmp_path)
    con = ReferenceOracle("CrN").label(configs, tmp_path)
    for r, c in zip(res.labelled, con.labelled):
        lab = read_labels(r)
        assert np.abs(lab.magnetic_forces).max() < 1e-8
        assert lab.energy < read_labels(c).energy
        assert not np.allclose(lab.moments, read_labels(c).moments)


def test_duplicates_and_validation(tmp_path):
    at = batch(1)[0]
    res = ReferenceOracle("CrN").label([at, at.copy()], tmp_path)
    assert len(res.labelled) == 2 and len({a.info["oracle_job"] for a in res.labelled}) == 1
    bad = batch(2)
    bad[1].symbols[0] = "Fe"
    with pytest.raises(ValueError, match=r"configuration 1: .*element 'Fe' \(atom 0\)"):
        ReferenceOracle("CrN").label(bad, tmp_path)
    with pytest.raises(TypeError, match="configuration 0 is a str"):
        ReferenceOracle("CrN").label(["not atoms"], tmp_path)


def test_process_pool_gives_identical_labels(tmp_path):
    oracle = ReferenceOracle("CrN")
    with default_process_pool(2) as pool:
        res = oracle.label(batch(), tmp_path, executor=pool)
    assert res.ok and res.computed == list(range(6))
    assert_labels_match_model(res.labelled, oracle.model)
    pids = {read_record(tmp_path / a.info["oracle_job"])["pid"] for a in res.labelled}
    assert os.getpid() not in pids


def test_dask_local_cluster(tmp_path):
    distributed = pytest.importorskip("distributed")
    oracle = ReferenceOracle("CrN")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client:
            res = oracle.label(batch(4), tmp_path, executor=client.get_executor())
    assert res.ok and len(res.labelled) == 4
    assert_labels_match_model(res.labelled, oracle.model)


# ----------------------------------------------------------- retries, failures
class FlakyOracle(ReferenceOracle):
    """Fails (not converged) unless the retry settings say otherwise."""

    def attempt_settings(self, attempt):
        return {"gentle": attempt >= 1}

    def compute(self, atoms, directory, overrides):
        out = super().compute(atoms, directory, overrides)
        out.converged = bool(overrides["gentle"])
        out.message = "" if out.converged else "SCF stalled"
        return out


class BrokenOracle(ReferenceOracle):
    def compute(self, atoms, directory, overrides):
        raise RuntimeError("segmentation fault in the DFT code")


def test_retry_then_success(tmp_path):
    res = FlakyOracle("CrN", max_attempts=3).label(batch(2), tmp_path)
    assert res.ok
    rec = read_record(tmp_path / res.labelled[0].info["oracle_job"])
    assert [a["status"] for a in rec["attempts"]] == ["failed", "done"]
    assert rec["attempts"][0]["reason"] == "not converged: SCF stalled"


def test_failures_are_reported_not_dropped(tmp_path):
    res = FlakyOracle("CrN", max_attempts=1).label(batch(2), tmp_path)
    assert res.labelled == [] and [f.index for f in res.failures] == [0, 1]
    assert all(f.reason == "not converged: SCF stalled" and f.attempts == 1 for f in res.failures)
    crash = BrokenOracle("CrN", max_attempts=2).label(batch(1), tmp_path / "b")
    assert crash.labelled == [] and crash.failures[0].attempts == 2
    assert "RuntimeError: segmentation fault" in crash.failures[0].reason
    # reported again without recomputing, unless asked to retry
    again = FlakyOracle("CrN", max_attempts=1).label(batch(2), tmp_path)
    assert again.computed == [] and len(again.failures) == 2
    retried = FlakyOracle("CrN", max_attempts=2).label(batch(2), tmp_path, retry_failed=True)
    assert retried.ok and retried.computed == [0, 1]


# ------------------------------------------------------------- kill and resume
def test_kill_midway_and_resume(tmp_path):
    configs = batch(8)
    ase.io.write(tmp_path / "batch.extxyz", configs)
    work = tmp_path / "work"
    script = textwrap.dedent(f"""
        import ase.io
        from mmtp_rs.oracles import ReferenceOracle, default_process_pool
        configs = ase.io.read({str(tmp_path / 'batch.extxyz')!r}, ":")
        with default_process_pool(2) as pool:
            ReferenceOracle("CrN", delay=0.4).label(configs, {str(work)!r}, executor=pool)
    """)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parents[1] / "python"),
                                         env.get("PYTHONPATH", "")])
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, start_new_session=True)

    def done_records():
        return {p.parent.name: p.read_bytes() for p in work.glob("*/record.json")
                if json.loads(p.read_text())["status"] == "done"}

    deadline = time.monotonic() + 60
    while len(done_records()) < 3 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = done_records()
    assert 3 <= len(finished) < 8, "the batch was not interrupted midway"

    configs = ase.io.read(tmp_path / "batch.extxyz", ":")
    oracle = ReferenceOracle("CrN")
    res = oracle.label(configs, work)
    assert res.ok and len(res.labelled) == 8
    reused_jobs = {res.labelled[k].info["oracle_job"] for k in res.reused}
    assert reused_jobs == set(finished)  # nothing that had finished was recomputed
    assert len(res.computed) == 8 - len(finished)  # nothing lost
    for jid, content in finished.items():
        assert (work / jid / "record.json").read_bytes() == content
    assert_labels_match_model(res.labelled, oracle.model)
