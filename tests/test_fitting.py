"""Fitting: objective gradient, linear solve, teacher-student refit, magnetic
forces in the objective, label handling, CLI with resume, ensembles."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk
from ase.io import write

import mmtp_rs
from mmtp_rs.fitting.data import Dataset, DatasetError
from mmtp_rs.fitting.ensemble import EnsembleCalculator, train_ensemble
from mmtp_rs.fitting.optimize import Objective, Weights, auto_max_moment, auto_min_dist, fit, make_potential, solve_linear
from mmtp_rs.io.labels import REF_ENERGY, REF_FORCES, REF_MAGNETIC_FORCES, REF_STRESS, attach_labels
from mmtp_rs.oracles.reference import ReferenceModel
from mmtp_rs.fitting.report import error_report, to_markdown

SPECIES = ["N", "Cr"]


def crn_configs(n, seed=0, disp=0.08, strain=0.02, sizes=((1, 1, 1), (2, 1, 1))):
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        a = bulk("CrN", "rocksalt", a=4.15, cubic=True).repeat(sizes[k % len(sizes)])
        a.set_cell(a.cell * (1 + strain * rng.normal()), scale_atoms=True)
        a.positions += rng.normal(scale=disp, size=a.positions.shape)
        cr = np.array(a.get_chemical_symbols()) == "Cr"
        a.set_initial_magnetic_moments(np.where(cr, rng.uniform(1.5, 2.8, len(a)) * rng.choice([-1, 1], len(a)), 0.0))
        out.append(a)
    return out


def label_with(model, images):
    res = []
    for a in images:
        o = model.evaluate(a)
        res.append(attach_labels(a, o["energy"], o["forces"], o["stress"], o["magnetic_forces"]))
    return res


def small_pot(seed=1, level=6, **kw):
    kw.setdefault("radial_basis_size", 4)
    return mmtp_rs.Potential.new(SPECIES, level=level, magnetic_basis_size=2, min_dist=1.6, max_dist=4.5,
                                 max_moment={"Cr": 3.0, "N": 0.1}, seed=seed, **kw)


def tame_teacher(seed=3, level=8):
    t = small_pot(seed, level=level)
    p, b = t.params, t.param_blocks
    p[b["radial"]] *= 0.3
    p[b["species"]] = [-3.0, -5.0]
    p[b["moment"]] *= 30.0
    t.params = p
    return t


# --------------------------------------------------------------------------- gradient


@pytest.mark.parametrize("symmetrize", [True, False])
def test_objective_gradient_matches_finite_differences(symmetrize):
    teacher = tame_teacher()
    data = Dataset(label_with(ReferenceModel.preset("CrN"), crn_configs(3, seed=5)))
    pot = small_pot(seed=2)
    rng = np.random.default_rng(0)
    scale = np.exp(rng.normal(size=pot.n_params))  # any parameter scaling must be exact
    u0 = pot.params / scale
    blocks = pot.param_blocks
    for term in range(4):
        w = [0.0] * 4
        w[term] = [1.0, 0.01, 0.001, 0.1][term]
        obj = Objective(pot, data, w, regularization=0.05, symmetrize=symmetrize, scale=scale)
        obj.value_scale = 3.0
        _, g = obj(u0)
        for name, sl in blocks.items():
            for j in rng.choice(np.arange(sl.start, sl.stop), size=min(2, sl.stop - sl.start), replace=False):
                h = 1e-5 * max(1.0, abs(u0[j]))
                up, um = u0.copy(), u0.copy()
                up[j] += h
                um[j] -= h
                fd = (obj(up, gradient=False) - obj(um, gradient=False)) / (2 * h)
                assert fd == pytest.approx(g[j], rel=2e-5, abs=1e-9 * (1 + abs(g).max())), (term, name, j)
    del teacher


def test_linear_solve_is_exact_minimum_over_linear_block():
    data = Dataset(label_with(tame_teacher(), crn_configs(6, seed=1)))
    pot = small_pot(seed=4)
    obj = Objective(pot, data, regularization=1e-6)
    theta, info = solve_linear(obj, pot.params, "hessian")
    g = obj.evaluate_theta(theta)["gradient"]
    b = pot.param_blocks
    lin = np.r_[g[b["species"]], g[b["moment"]]]
    g0 = obj.evaluate_theta(pot.params)["gradient"]
    assert info["loss_after"] < info["loss_before"]
    assert np.abs(lin).max() < 1e-7 * np.abs(np.r_[g0[b["species"]], g0[b["moment"]]]).max()
    theta_cg, info_cg = solve_linear(obj, pot.params, "cg")
    assert info_cg["loss_after"] == pytest.approx(info["loss_after"], rel=1e-6)


# --------------------------------------------------------------------------- teacher-student


def test_teacher_student_refit_to_near_zero():
    teacher = tame_teacher()
    data = Dataset(label_with(teacher, crn_configs(12, seed=0)))
    rng = np.random.default_rng(0)
    student = teacher.copy()
    q, b = teacher.params, teacher.param_blocks
    q[b["radial"]] *= 1 + 0.05 * rng.normal(size=b["radial"].stop)
    q[b["species"]] = 0.0
    q[b["moment"]] = 0.0
    student.params = q
    res = fit(student, data, max_iter=250, quiet=True)
    err = error_report(res.potential, {"train": data})["train"]
    assert err["energy"]["rmse"] < 1e-3  # meV/atom, i.e. 1e-6 eV/atom
    assert err["forces"]["rmse"] < 0.1  # meV/Å (labels ~30 meV/Å)
    assert err["magnetic_forces"]["rmse"] < 0.1  # meV/μB (labels ~900 meV/μB)
    assert res.history and res.history[-1]["loss"] < 1e-6 * res.restarts[0]["linear_solve"]["loss_before"]


# --------------------------------------------------------------------------- magnetic forces help


def test_magnetic_force_term_improves_held_out_magnetic_forces():
    model = ReferenceModel.preset("CrN")
    train = Dataset(label_with(model, crn_configs(14, seed=10)))
    test = Dataset(label_with(model, crn_configs(6, seed=11)))
    rmse = {}
    for wt in (0.1, 0.0):
        pot = make_potential(train, species=SPECIES, level=8, radial_basis_size=4, max_dist=4.5, seed=0)
        res = fit(pot, train, weights=Weights(1.0, 0.01, 0.001, wt), max_iter=150, quiet=True)
        rmse[wt] = error_report(res.potential, {"test": test})["test"]["magnetic_forces"]["rmse"]
    assert rmse[0.1] < 0.5 * rmse[0.0], rmse


# --------------------------------------------------------------------------- labels and errors


def test_missing_labels_contribute_nothing():
    model = ReferenceModel.preset("CrN")
    imgs = label_with(model, crn_configs(3, seed=2))
    del imgs[1].info[REF_STRESS]
    del imgs[1].arrays[REF_MAGNETIC_FORCES]
    del imgs[2].arrays[REF_FORCES]
    data = Dataset(imgs)
    assert data.label_counts() == {"energy": 3, "forces": 2, "stress": 2, "magnetic_forces": 2}
    pot = small_pot()
    full = Objective(pot, data, normalize=False).evaluate_theta(pot.params, gradient=False)
    n = [len(a) for a in imgs]
    assert full["count"] == [3, 3 * (n[0] + n[1]), 12, n[0] + n[2]]
    # the stress and magnetic-force sums equal those of the configurations that carry them
    sub = Dataset([imgs[0], imgs[2]])
    part = Objective(pot, sub, normalize=False).evaluate_theta(pot.params, gradient=False)
    assert full["sse"][2] == pytest.approx(part["sse"][2], rel=1e-12)
    assert full["sse"][3] == pytest.approx(part["sse"][3], rel=1e-12)


def test_bad_data_errors_name_the_configuration(tmp_path):
    model = ReferenceModel.preset("CrN")
    imgs = label_with(model, crn_configs(3, seed=3))
    bad = [a.copy() for a in imgs]
    del bad[1].arrays[REF_FORCES]
    bad[1].arrays[REF_FORCES] = np.zeros((len(bad[1]), 2))
    with pytest.raises(DatasetError, match="configuration 1: forces label has shape"):
        Dataset(bad)
    bad = [a.copy() for a in imgs]
    bad[1].info[REF_STRESS] = np.zeros(5)
    with pytest.raises(DatasetError, match="configuration 1: stress"):
        Dataset(bad)
    bad = [a.copy() for a in imgs]
    bad[2].info[REF_ENERGY] = float("nan")
    with pytest.raises(DatasetError, match="configuration 2: energy"):
        Dataset(bad)
    bad = [a.copy() for a in imgs]
    bad[0].arrays[REF_MAGNETIC_FORCES][3] = np.inf
    with pytest.raises(DatasetError, match="configuration 0: magnetic_forces"):
        Dataset(bad)
    bad = [a.copy() for a in imgs]
    bad[1].info["REF_forces_x"] = 0  # irrelevant keys are ignored
    bad[1].set_pbc([True, True, False])
    with pytest.raises(DatasetError, match="configuration 1: a stress label needs"):
        Dataset(bad)
    with pytest.raises(DatasetError, match="empty"):
        Objective(small_pot(), Dataset([]))
    other = imgs[0].copy()
    other.symbols[0] = "Fe"
    with pytest.raises(DatasetError, match="configuration 1: atom 0 is Fe"):
        Dataset([imgs[1], other]).to_core(small_pot())
    with pytest.raises(ValueError, match="weight"):
        Objective(small_pot(), Dataset(imgs), (1.0, -1.0, 0.0, 0.0))


def test_dataset_files_split_and_auto_hyperparameters(tmp_path):
    imgs = label_with(ReferenceModel.preset("CrN"), crn_configs(5, seed=4))
    data = Dataset(imgs)
    data.write(tmp_path / "d.cfg", species=SPECIES)
    data.write(tmp_path / "d.xyz")
    a = Dataset.read(tmp_path / "d.cfg", species=SPECIES)
    b = Dataset.read(tmp_path / "d.xyz")
    for x, y in ((a, data), (b, data)):
        assert len(x) == 5
        assert np.allclose(x[3].arrays[REF_MAGNETIC_FORCES], y[3].arrays[REF_MAGNETIC_FORCES])
        assert np.allclose(x[3].info[REF_STRESS], y[3].info[REF_STRESS])
    tr, va = data.split(0.4, seed=1)
    assert len(tr) == 3 and len(va) == 2
    dmin = data.min_distance()
    assert 0.9 * dmin < auto_min_dist(data) < dmin
    mm = auto_max_moment(data, SPECIES)
    assert mm["N"] == 0.1 and mm["Cr"] >= max(abs(a.get_initial_magnetic_moments()).max() for a in imgs)
    pot = make_potential(data, level=6)
    assert pot.species == ["N", "Cr"] and pot.min_dist == auto_min_dist(data)
    core = data.to_core(pot)
    assert data.to_core(pot) is core and len(core) == 5


# --------------------------------------------------------------------------- CLI and checkpoints


def test_cli_train_end_to_end_and_resume(tmp_path):
    from mmtp_rs.cli.main import parse_args

    imgs = label_with(ReferenceModel.preset("CrN"), crn_configs(8, seed=6))
    write(tmp_path / "train.xyz", imgs, format="extxyz")
    (tmp_path / "fit.toml").write_text(
        '[data]\ntrain = ["train.xyz"]\n'
        '[model]\nlevel = 6\nradial_basis_size = 4\nmax_dist = 4.5\n'
        '[fit]\nmax_iter = 15\nrestarts = 2\nseed = 3\nvalid_fraction = 0.25\n[output]\ndir = "out"\n')
    args = parse_args(["train", str(tmp_path / "fit.toml"), "--quiet"])
    doc = args.func(args)
    out = tmp_path / "out"
    for name in ("potential.json", "potential.mtp", "report.json", "report.md", "parity_energy.png",
                 "parity_forces.png", "parity_stress.png", "parity_magnetic_forces.png", "checkpoint.json"):
        assert (out / name).exists(), name
    rep = json.loads((out / "report.json").read_text())
    assert set(rep["errors"]) == {"train", "valid"} and rep["errors"]["valid"]["forces"]["rmse"] > 0
    pot = mmtp_rs.Potential.from_file(out / "potential.json")
    assert pot.level == 6 and pot.species == ["N", "Cr"]
    assert "| train |" in (out / "report.md").read_text()
    # running the same command again resumes from the finished checkpoint and gives the same potential
    doc2 = args.func(args)
    assert doc2["fit"]["resumed"] and doc2["fit"]["best_loss"] == doc["fit"]["best_loss"]


def test_killed_fit_resumes_from_checkpoint(tmp_path):
    data = Dataset(label_with(ReferenceModel.preset("CrN"), crn_configs(6, seed=7)))
    pot = small_pot(seed=5)
    ck = tmp_path / "ck.json"

    class Killed(Exception):
        pass

    def kill(rec):
        if rec["iteration"] == 7:
            raise Killed

    with pytest.raises(Killed):
        fit(pot, data, max_iter=12, checkpoint=ck, checkpoint_interval=0.0, quiet=True, callback=kill)
    state = json.loads(ck.read_text())
    assert state["iteration"] == 7 and not state["done"]
    seen = []
    res = fit(pot, data, max_iter=12, checkpoint=ck, checkpoint_interval=0.0, quiet=True, callback=seen.append)
    assert res.resumed
    assert seen[0]["iteration"] == 8 and seen[-1]["iteration"] <= 12
    assert [h["iteration"] for h in res.history][:7] == list(range(1, 8))
    assert res.best_loss <= min(h["loss"] for h in res.history) + 1e-15
    # the resumed fit is the uninterrupted one, bit for bit (the BFGS state is checkpointed)
    clean = fit(pot, data, max_iter=12, quiet=True)
    assert np.array_equal(res.potential.params, clean.potential.params)
    assert [h["loss"] for h in res.history] == [h["loss"] for h in clean.history]
    # a checkpoint of a different fit is not used
    res2 = fit(pot, data, weights=(1, 0, 0, 0), max_iter=2, checkpoint=ck, quiet=True)
    assert not res2.resumed


def test_early_stopping_keeps_best_validation_parameters():
    model = ReferenceModel.preset("CrN")
    train = Dataset(label_with(model, crn_configs(6, seed=8)))
    valid = Dataset(label_with(model, crn_configs(4, seed=9)))
    res = fit(small_pot(seed=6), train, valid, max_iter=60, patience=3, quiet=True)
    vl = [h["valid_loss"] for h in res.history]
    assert res.best_valid_loss <= min(vl) + 1e-15
    check = Objective(res.potential, valid).evaluate_theta(res.potential.params, gradient=False)["loss"]
    assert check == pytest.approx(res.best_valid_loss, rel=1e-10)
    assert "| valid |" in to_markdown(error_report(res.potential, {"train": train, "valid": valid}))


# --------------------------------------------------------------------------- ensembles


def test_ensemble_spread():
    atoms = crn_configs(1, seed=12, sizes=((2, 1, 1),))[0]
    p = small_pot(seed=1)
    calc = EnsembleCalculator([p, p.copy()])
    atoms.calc = calc
    e = atoms.get_potential_energy()
    assert e == pytest.approx(p.evaluate(atoms)["energy"], rel=1e-12)
    for k in ("energy_std", "forces_std", "stress_std", "magnetic_forces_std"):
        assert np.all(calc.get_property(k, atoms) == 0.0), k
    data = Dataset(label_with(ReferenceModel.preset("CrN"), crn_configs(5, seed=13)))
    results = train_ensemble(2, data, potential_kwargs={"level": 6, "radial_basis_size": 4, "max_dist": 4.5},
                             fit_kwargs={"max_iter": 10, "quiet": True})
    atoms.calc = EnsembleCalculator([r.potential for r in results])
    assert atoms.calc.get_property("energy_std", atoms) > 0
    assert atoms.calc.get_property("forces_std", atoms).max() > 0
    assert atoms.calc.get_property("magnetic_forces_std", atoms).max() > 0
    mean = np.mean([r.potential.evaluate(atoms)["forces"] for r in results], axis=0)
    assert np.allclose(atoms.get_forces(), mean)
