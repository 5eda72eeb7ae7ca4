"""A small learn run with MD+MC (``mdmc``) and DLM-MD (``dlm``) stages, killed
with SIGKILL at random moments (alternating 1 and 2 threads) and resumed each
time, ends bit-identical to an uninterrupted run: same training sets, pools
(every configuration preselected during MD steps and accepted spin moves),
selections, labels, potentials and run summaries (which carry each run's
moments, grades and Monte-Carlo counts through its preselected images).

Each simulation run has its own random stream (seeded from the run's index)
and its own file under ``iter_K/runs/``; a run killed midway is redone from its
start, and the spin Monte Carlo sums every energy change in a fixed order, so
the redone run repeats the killed one move for move at any thread count."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow

CONFIG = """
name = "crn-spin-md"
seed = 3

[system]
prototype = "rocksalt"
symbols = ["Cr", "N"]
a0 = 4.15
supercell = [1, 1, 2]
moments = { Cr = 2.4, N = 0.0 }

[oracle]
kind = "reference"
preset = "CrN"

[model]
level = 8
radial_basis_size = 4
magnetic_basis_size = 2
max_dist = 4.6
max_moment = { Cr = 3.2, N = 0.1 }

[fit]
max_iter = 60
restarts = 1

[initial]
scales = [1.0]
states = ["AFM", "random"]
per_state = 2

[[stage]]
kind = "mdmc"
gamma_low = 2.0
gamma_up = 30.0
starts = ["AFM", "random"]
temperatures = [150.0, 600.0]
steps = 300
timestep_fs = 2.0

[[stage]]
kind = "dlm"
gamma_low = 2.0
gamma_up = 30.0
starts = ["random"]
temperatures = [300.0, 800.0]
steps = 300
timestep_fs = 2.0

[active]
mode = "neighborhood"

[limits]
max_iterations = 4
max_selected = 6

[validate]
enabled = false
"""

COMPARED = ("training.extxyz", "pool.extxyz", "pool.json", "selected.extxyz", "labelled.extxyz", "potential.json")


def digest(state: Path) -> dict:
    out = {}
    for p in sorted(state.glob("iter_*/*")) + sorted(state.glob("iter_*/runs/run_*")):
        if p.name in COMPARED or p.parent.name == "runs":
            out[str(p.relative_to(state))] = hashlib.sha256(p.read_bytes()).hexdigest()
    summary = json.loads((state / "summary.json").read_text())
    out["iterations"] = summary["iterations"]
    out["converged"] = summary["converged"]
    return out


def start(config: Path, state: Path, threads: int) -> subprocess.Popen:
    env = dict(os.environ, MMTP_NUM_THREADS=str(threads))
    return subprocess.Popen([sys.executable, "-m", "mmtp_rs.cli", "learn", str(config), "--state", str(state),
                             "--quiet"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_killed_and_resumed_spin_md_learn_run_is_bit_identical(tmp_path):
    config = tmp_path / "learn.toml"
    config.write_text(CONFIG)
    ref = tmp_path / "uninterrupted"
    t0 = time.perf_counter()
    proc = start(config, ref, 1)
    assert proc.wait(timeout=900) == 0, proc.stderr.read().decode()
    duration = time.perf_counter() - t0  # start-up included
    runs = sorted(ref.glob("iter_000/runs/run_*.json"))
    kinds = {json.loads(p.read_text())["kind"] for p in runs}
    assert kinds == {"mdmc", "dlm"}
    assert sum(json.loads(p.read_text())["preselected"] for p in runs) > 0  # the spin stages do find configurations

    state = tmp_path / "killed"
    rng = np.random.default_rng(20261201)
    kills, threads = 0, 2
    while kills < 4:
        proc = start(config, state, threads)
        try:
            # kills at 30-60 % of an uninterrupted run (start-up included): each
            # attempt gets a little further, so the kills land in every phase
            proc.wait(timeout=float(rng.uniform(0.3, 0.6)) * duration)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
        else:
            assert proc.returncode == 0, proc.stderr.read().decode()
            break
        threads = 3 - threads
    proc = start(config, state, 2)
    assert proc.wait(timeout=900) == 0, proc.stderr.read().decode()
    assert kills >= 2
    assert not [p for p in state.rglob(".*") if p.is_file()]
    assert digest(state) == digest(ref)
