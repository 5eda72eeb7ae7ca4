"""The active-learning loop end to end on the embedded reference model:
convergence, held-out errors, resuming after a kill in every phase without
recomputing a label, failing oracles and bad configuration files."""

import json
from pathlib import Path

import numpy as np
import pytest

from mmtp_rs.loop.config import ConfigError, LearnConfig
from mmtp_rs.loop.learner import Learner
from mmtp_rs.oracles.base import OracleError, read_record
from mmtp_rs.oracles.reference import ReferenceOracle

TINY = """
name = "tiny"
seed = 3
[system]
prototype = "rocksalt"
symbols = ["Cr", "N"]
a0 = 4.15
supercell = [2, 2, 1]
moments = { Cr = 2.4, N = 0.0 }
[oracle]
kind = "reference"
preset = "CrN"
[model]
level = 8
radial_basis_size = 5
magnetic_basis_size = 2
max_dist = 4.6
max_moment = { Cr = 3.2, N = 0.1 }
[fit]
max_iter = 80
[initial]
scales = [0.97, 1.03]
states = ["FM", "AFM", "random"]
per_state = 2
[[stage]]
kind = "relax"
starts = ["FM", "AFM"]
scales = [1.0]
steps = 30
[[stage]]
kind = "md"
starts = ["FM", "AFM", "random"]  # cover the states and temperatures of the held-out test MD
temperatures = [300.0, 1000.0]
steps = 40
[active]
mode = "neighborhood"
[limits]
max_iterations = 8
max_selected = 6
[test]
n = 6
[validate]
enabled = false
"""


def config(tmp_path, text=TINY):
    p = tmp_path / "cfg.toml"
    p.write_text(text)
    return LearnConfig.from_toml(p)


def all_records(state: Path):
    return [read_record(d) for d in (state / "labels").iterdir() if d.is_dir()]


def test_loop_converges_with_small_held_out_errors(tmp_path):
    summary = Learner(config(tmp_path), tmp_path / "run", quiet=True).run()
    its = summary["iterations"]
    assert summary["converged"], its
    assert its[-1]["n_preselected"] == 0 and its[-1]["n_selected"] == 0
    assert len(its) <= 8
    # stated bounds for this small level-8 model on held-out oracle MD; runs
    # differ (parallel reductions make fits non-bitwise-reproducible): seen
    # 0.9-2.1 meV/atom, 20-93 meV/Å, 0.1-0.7 GPa, 9-19 meV/μB
    test = summary["report"]["errors"]["test (held-out oracle MD)"]
    assert test["energy"]["rmse"] < 10.0  # meV/atom
    assert test["forces"]["rmse"] < 250.0  # meV/Å
    assert test["stress"]["rmse"] < 3.0  # GPa
    assert test["magnetic_forces"]["rmse"] < 80.0  # meV/μB
    # the delivered potential is the final refit of the training set whose sampling
    # preselected nothing, sampled again; it fits that set better than the refit before
    assert its[-1]["fit"] == "final" and its[-2]["n_preselected"] == 0
    assert its[-1]["training_size"] == its[-2]["training_size"]
    assert summary["final_iteration"] == its[-1]["iteration"]
    losses = [training_loss(tmp_path / "run", it["iteration"]) for it in its[-2:]]
    assert losses[1] < 0.9 * losses[0], losses
    rep = tmp_path / "run" / "report"
    for f in ("learning_curve.png", "grade_histograms.png", "report.md", "errors.json"):
        assert (rep / f).exists(), f
    # every label was computed exactly once
    assert all(r["status"] == "done" and len(r["attempts"]) == 1 for r in all_records(tmp_path / "run"))


def training_loss(state: Path, k: int) -> float:
    from mmtp_rs import Potential
    from mmtp_rs.fitting.data import Dataset
    from mmtp_rs.fitting.optimize import Objective
    from mmtp_rs.io.images import read_images

    d = state / f"iter_{k:03d}"
    pot = Potential.from_file(d / "potential.json")
    return Objective(pot, Dataset.from_atoms(read_images(d / "training.extxyz"))).evaluate_theta(
        pot.params, gradient=False)["loss"]


@pytest.mark.parametrize("final", [None, 0])
def test_the_last_permitted_iteration_delivers_a_final_refit(tmp_path, final):
    """At the iteration limit the last fit is a final (longer) refit, and the summary
    names that iteration; with ``final_max_iter = 0`` refits are all alike."""
    text = TINY.replace("max_iterations = 8", "max_iterations = 2")
    if final is not None:
        text = text.replace("max_iter = 80", f"max_iter = 80\nfinal_max_iter = {final}")
    summary = Learner(config(tmp_path, text), tmp_path / "run", quiet=True).run()
    its = summary["iterations"]
    assert [it["fit"] for it in its] == ["cold", "final" if final is None else "warm"]
    assert summary["final_iteration"] == 1
    assert summary["converged"] == (its[-1]["n_preselected"] == 0)
    if not summary["converged"]:
        assert "stopped at the iteration limit" in (tmp_path / "run" / "log.txt").read_text()


class Killed(Exception):
    pass


@pytest.mark.parametrize("phase", ["fit", "simulate", "select", "label"])
def test_resume_after_a_kill_in_each_phase(tmp_path, phase):
    cfg = config(tmp_path)
    state = tmp_path / "run"
    learner = Learner(cfg, state, quiet=True)
    calls = {"n": 0}
    if phase == "label":
        original = learner.label

        def broken(images, what):
            if what.startswith("iteration 1"):
                # die halfway through the batch: half of the jobs are finished
                original(images[: len(images) // 2], what)
                raise Killed
            return original(images, what)

        learner.label = broken
    else:
        original = getattr(learner, phase)

        def broken(k, *args, **kwargs):
            if k == 1:
                raise Killed
            return original(k, *args, **kwargs)

        setattr(learner, phase, broken)
    with pytest.raises(Killed):
        learner.run()
    done_before = {d.name: read_record(d) for d in (state / "labels").iterdir() if d.is_dir()}
    summary = Learner(cfg, state, quiet=True).run()
    assert summary["converged"]
    after = {d.name: read_record(d) for d in (state / "labels").iterdir() if d.is_dir()}
    for name, rec in done_before.items():
        if rec["status"] == "done":
            assert after[name] == rec  # reused untouched, never recomputed
    assert all(len(r["attempts"]) == 1 for r in after.values())


class Flaky(ReferenceOracle):
    """Fails every configuration whose first Cr moment is negative."""

    def compute(self, atoms, directory, overrides):
        m = atoms.get_initial_magnetic_moments()
        if m[0] < 0:
            raise OracleError("SCF did not converge (simulated)")
        return super().compute(atoms, directory, overrides)


def test_failing_oracle_jobs_are_reported_and_left_out(tmp_path):
    learner = Learner(config(tmp_path), tmp_path / "run", quiet=True)
    learner.oracle = Flaky("CrN")
    summary = learner.run()
    log = (tmp_path / "run" / "log.txt").read_text()
    assert "label failure" in log and "SCF did not converge" in log
    from ase.io import read

    for path in (tmp_path / "run").glob("iter_*/training.extxyz"):
        for a in read(path, ":"):
            assert a.get_initial_magnetic_moments()[0] >= 0
    assert summary["iterations"]


@pytest.mark.parametrize("text,match", [
    ("[system]\nprototype = 'hcp'\n[[stage]]\nkind = 'md'\n", "prototype"),
    ("[sistem]\n", "unknown section"),
    ("[system]\nprototype = 'rocksalt'\n", "stage"),
    ("[[stage]]\nkind = 'anneal'\n", "kind"),
    ("[[stage]]\nkind = 'md'\ngamma_low = 20\ngamma_up = 10\n", "gamma_low"),
    ("[[stage]]\nkind = 'md'\n[limits]\nmax_selected = 0\n", "max_selected"),
    ("this is not toml", "invalid TOML"),
    # typos and nonsense are rejected at load time, before anything is labelled
    ("[[stage]]\nkind = 'md'\n[initial]\nscale = [1.0]\n", r"\[initial\]: unknown key\(s\) \['scale'\]"),
    ("[[stage]]\nkind = 'md'\n[test]\nn = 4\ntemps = [300.0]\n", r"\[test\]: unknown key\(s\) \['temps'\]"),
    ("[[stage]]\nkind = 'md'\n[executor]\nkind = 'process'\nworker = 2\n", r"\[executor\].*'worker'"),
    ("[[stage]]\nkind = 'md'\n[model]\nlevle = 12\n", r"\[model\].*'levle'"),
    ("[[stage]]\nkind = 'md'\n[fit]\nmax_iters = 5\n", r"\[fit\].*'max_iters'"),
    ("[[stage]]\nkind = 'md'\n[active]\nmod = 'neighborhood'\n", r"\[active\].*'mod'"),
    ("[[stage]]\nkind = 'md'\nsteps = -5\n", r"steps must be >= 0"),
    ("[[stage]]\nkind = 'md'\nsteps = 2.5\n", r"steps must be an integer"),
    ("[[stage]]\nkind = 'md'\ntemperatures = []\n", r"temperatures must not be empty"),
    ("[[stage]]\nkind = 'md'\nthermostat = 'berendsen'\n", r"thermostat must be one of"),
    ("[[stage]]\nkind = 'md'\nstarts = ['FM', 'AFMM']\n", r"unknown state 'AFMM'"),
    ("[[stage]]\nkind = 'md'\n[oracle]\nkind = 'reference'\npreset = 'CrNN'\n", r"unknown reference-model preset"),
    ("[system]\nprototype = 'bcc'\nsymbols = ['Fe']\na0 = 2.83\n[[stage]]\nkind = 'md'\n", r"has no parameters for \['Fe'\]"),
    ("[system]\nmoments = { Cr = 2.4, Xx = 1.0 }\n[[stage]]\nkind = 'md'\n", r"'Xx' is not a chemical symbol"),
    ("[[stage]]\nkind = 'md'\n[limits]\nmax_iterations = 'ten'\n", r"max_iterations must be an integer"),
    ("[[stage]]\nkind = 'md'\n[fit]\nweights = [1.0, 0.01, 0.001, 0.1]\n", r"weights must be a table"),
    ("[[stage]]\nkind = 'md'\n[fit]\nweights = { energy = 1.0, force = 0.01 }\n", r"weights: unknown key"),
    ("[[stage]]\nkind = 'md'\n[model]\nmax_moment = { Cr = 3.2 }\n", r"max_moment has no value for \['N'\]"),
    ("[system]\nstructure = 'missing.vasp'\n[[stage]]\nkind = 'md'\n", r"missing.vasp: cannot read"),
])
def test_bad_configuration_files_give_clear_errors(tmp_path, text, match):
    p = tmp_path / "bad.toml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=match) as err:
        LearnConfig.from_toml(p)
    assert "bad.toml" in str(err.value)
    with pytest.raises(FileNotFoundError):
        LearnConfig.from_toml(tmp_path / "missing.toml")


def test_cli_runs_the_loop(tmp_path, monkeypatch):
    from mmtp_rs.cli.main import main

    p = tmp_path / "cfg.toml"
    p.write_text(TINY.replace("max_iterations = 8", "max_iterations = 1"))
    assert main(["learn", str(p), "--state", str(tmp_path / "s"), "--quiet"]) == 0
    summary = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert summary["iterations"][0]["iteration"] == 0
    assert main(["learn", str(tmp_path / "nope.toml")]) == 2


def test_check_flag_validates_without_running(tmp_path, capsys):
    from mmtp_rs.cli.main import main

    p = tmp_path / "cfg.toml"
    p.write_text(TINY)
    assert main(["learn", str(p), "--check"]) == 0
    assert "valid" in capsys.readouterr().out and not (tmp_path / "runs").exists()
    p.write_text(TINY.replace("max_selected = 6", "max_selected = -6"))
    assert main(["learn", str(p), "--check"]) == 2
    assert "max_selected must be >= 1" in capsys.readouterr().err


POSCAR_CFG = """
name = "poscar"
seed = 5
[[phase]]
name = "crn-file"
structure = "crn.vasp"          # relative to this file
supercell = [2, 1, 1]
moments = { Cr = 2.4, N = 0.0 }
signs = { stripes = [1, 1, -1, -1, 0, 0, 0, 0] }
[[phase]]
name = "crn-proto"
prototype = "rocksalt"
symbols = ["Cr", "N"]
a0 = 4.2
supercell = [1, 1, 2]
moments = { Cr = 2.4, N = 0.0 }
[model]
level = 6
radial_basis_size = 4
max_dist = 4.6
max_moment = { Cr = 3.2, N = 0.1 }
[fit]
max_iter = 20
[initial]
scales = [1.0]
states = ["FM", "random"]
per_state = 1
[[stage]]
kind = "relax"
starts = ["FM", "AFM"]
steps = 5
[limits]
max_iterations = 1
max_selected = 2
[validate]
enabled = false
"""


def test_any_structure_file_and_several_phases(tmp_path):
    """A learn config built on a POSCAR (plus a prototype phase) passes --check and runs."""
    from ase.build import bulk
    from ase.io import write

    from mmtp_rs.cli.main import main

    cell = bulk("CrN", "rocksalt", a=4.15, cubic=True)
    write(tmp_path / "crn.vasp", cell, format="vasp", direct=True)
    p = tmp_path / "cfg.toml"
    p.write_text(POSCAR_CFG)
    with pytest.raises(ConfigError, match=r"signs.stripes: need 8 entries of \+1 or -1"):
        LearnConfig.from_toml(p)
    p.write_text(POSCAR_CFG.replace("[1, 1, -1, -1, 0, 0, 0, 0]", "[1, 1, -1, -1, 1, 1, 1, 1]")
                 .replace('starts = ["FM", "AFM"]', 'starts = ["FM", "stripes"]'))
    with pytest.raises(ConfigError, match="unknown state 'stripes'"):
        LearnConfig.from_toml(p)  # the second phase has no such signs
    text = POSCAR_CFG.replace("[1, 1, -1, -1, 0, 0, 0, 0]", "[1, 1, -1, -1, 1, 1, 1, 1]")
    p.write_text(text)
    cfg = LearnConfig.from_toml(p)
    assert [len(ph.cell()) for ph in cfg.phases] == [16, 16]
    assert cfg.phases[0].structure == str(tmp_path / "crn.vasp")
    m = cfg.phases[0].state(cfg.phases[0].cell(), "stripes")
    cr = np.array(cell.get_chemical_symbols()) == "Cr"
    assert list(np.sign(m[:8])) == list(np.where(cr, [1, 1, -1, -1, 1, 1, 1, 1], 0))  # N carries no moment
    assert np.array_equal(m[8:], m[:8])  # tiled over the supercell
    assert main(["learn", str(p), "--check"]) == 0
    summary = Learner(cfg, tmp_path / "run", quiet=True).run()
    its = summary["iterations"]
    assert its and its[0]["training_size"] == 2 * 2  # two phases x two initial states
    runs = json.loads((tmp_path / "run" / "iter_000" / "pool.json").read_text())["runs"]
    assert {r["phase"] for r in runs} == {0, 1}
