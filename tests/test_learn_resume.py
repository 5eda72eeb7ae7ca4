"""The README main job killed with SIGKILL at ten random moments, resumed each
time (alternating 1 and 2 threads), ends bit-identical to an uninterrupted run:
same training sets, pools, selections, labels, potentials and validation.

This holds because every intermediate is written exactly (17 significant
digits, binary active sets), every simulation has its own random stream and
file, the fit checkpoints its whole BFGS state, and every parallel reduction
in the core sums in a fixed order."""

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import EXAMPLE_MAIN_JOB

pytestmark = pytest.mark.slow

COMPARED = ("training.extxyz", "pool.extxyz", "selected.extxyz", "labelled.extxyz", "potential.json")


def digest(state: Path) -> dict:
    out = {}
    for p in sorted(state.glob("iter_*/*")):
        if p.name in COMPARED:
            out[str(p.relative_to(state))] = hashlib.sha256(p.read_bytes()).hexdigest()
    out["test/test.extxyz"] = hashlib.sha256((state / "test" / "test.extxyz").read_bytes()).hexdigest()
    summary = json.loads((state / "summary.json").read_text())
    out["iterations"] = [{k: v for k, v in it.items()} for it in summary["iterations"]]
    out["converged"] = summary["converged"]
    val = json.loads((state / "report" / "validation.json").read_text())
    val.pop("wall_time_s", None)
    val.pop("files", None)
    out["validation"] = val
    return out


def start(state: Path, threads: int) -> subprocess.Popen:
    env = dict(os.environ, MMTP_NUM_THREADS=str(threads))
    return subprocess.Popen([sys.executable, "-m", "mmtp_rs.cli", "learn", str(EXAMPLE_MAIN_JOB), "--state",
                             str(state), "--quiet"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_killed_and_resumed_main_job_is_bit_identical(main_job_state, tmp_path):
    state = tmp_path / "killed"
    rng = np.random.default_rng(20261130)
    kills = 0
    threads = 1
    while kills < 10:
        proc = start(state, threads)
        try:
            proc.wait(timeout=float(rng.uniform(3.0, 12.0)))
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
        else:
            assert proc.returncode == 0, proc.stderr.read().decode()
            break  # finished before the tenth kill
        threads = 3 - threads
    proc = start(state, 2)
    assert proc.wait(timeout=1800) == 0, proc.stderr.read().decode()
    assert kills == 10
    leftovers = [p for p in state.rglob(".*") if p.is_file()]
    assert not leftovers, leftovers  # no temporary file survives a resume
    assert digest(state) == digest(main_job_state)
    # job records show every interrupted run of a job
    records = [json.loads(p.read_text()) for p in (state / "labels").glob("*/record.json")]
    assert all(r["status"] == "done" for r in records)

