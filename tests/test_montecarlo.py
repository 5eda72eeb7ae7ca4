"""Spin Monte Carlo, MD+MC, DLM-MD and the Néel temperature (magnetism.montecarlo,
observables, scan, report; Rust spin_mc)."""

import json

import numpy as np
import pytest
from ase.build import bulk
from scipy import stats

import mmtp_rs
from mmtp_rs.magnetism.montecarlo import (
    MCSettings, beta_of, mc_sweeps, run_dlm, run_mdmc, sample_spins, spin_sampler)
from mmtp_rs.magnetism.observables import (TransitionNotFound, blocking_error, midpoint_temperature, peak_temperature,
                                           thermodynamics)
from mmtp_rs.magnetism.paramagnetic import ParamagneticCalculator
from mmtp_rs.magnetism.scan import ordering_patterns, ordering_temperature, temperature_scan
from mmtp_rs.magnetism.stage1 import equilibrate_moments
from mmtp_rs.magnetism.states import antiferromagnetic
from mmtp_rs.oracles.reference import ReferenceCalculator
from mmtp_rs.simulate import GradeWatcher, Thresholds

M_MAX = {"Cr": 3.2, "N": 0.5}


@pytest.fixture(scope="module")
def pot():
    return mmtp_rs.Potential.new(["N", "Cr"], level=10, radial_basis_size=6, magnetic_basis_size=3, min_dist=1.7,
                                 max_dist=4.5, max_moment=M_MAX, seed=3)


def crn(rep=1, rattle=0.05, a=4.15):
    atoms = bulk("CrN", "rocksalt", a=a, cubic=True).repeat(rep)
    m = antiferromagnetic(atoms, {"Cr": 2.4, "N": 0.1}, "AFM1")
    atoms.set_initial_magnetic_moments(m)
    if rattle:
        atoms.rattle(rattle, seed=2)
    return atoms


def energy(calc_or_pot, atoms, m, sym=None):
    if isinstance(calc_or_pot, mmtp_rs.Potential):
        return calc_or_pot.evaluate(atoms, moments=m, symmetrize=sym, param_grad=False, forces=False)["energy"]
    return calc_or_pot.model.evaluate(atoms, m)["energy"]


# ------------------------------------------------------------ local energy changes
@pytest.mark.parametrize("sym", [True, False])
def test_local_energy_change_equals_full_recompute(pot, sym):
    atoms = crn(2)
    calc = mmtp_rs.MMTPCalculator(pot, symmetrize=sym)
    s = spin_sampler(calc, atoms, seed=0)
    m = atoms.get_initial_magnetic_moments().copy()
    e0 = energy(pot, atoms, m, sym)
    assert s.energy == pytest.approx(e0, abs=1e-10)
    rng = np.random.default_rng(0)
    for k in range(24):
        i = int(rng.integers(len(atoms)))
        bound = M_MAX[atoms[i].symbol]
        new = -m[i] if k % 3 == 0 else rng.uniform(-bound, bound)
        m2 = m.copy()
        m2[i] = new
        e1 = energy(pot, atoms, m2, sym)
        assert s.delta_energy(i, new) == pytest.approx(e1 - e0, abs=1e-10)
        if k % 2 == 0:  # accept: later moves start from the updated partial sums
            s.set_moment(i, new)
            m, e0 = m2, e1
            assert s.energy == pytest.approx(e0, abs=1e-10)
    # after many Metropolis moves the running energy still matches a full evaluation
    s.sweep(beta_of(500.0), 0.5, 0.3, 3)
    assert s.energy == pytest.approx(energy(pot, atoms, s.moments, sym), abs=1e-9)


def test_small_cell_with_self_images(pot):
    atoms = bulk("Cr", "bcc", a=2.9)  # one atom: every neighbour is an image of itself
    atoms.set_initial_magnetic_moments([1.5])
    s = spin_sampler(pot, atoms, seed=0)
    for new in (-1.5, 0.3, 2.9):
        assert s.delta_energy(0, new) == pytest.approx(energy(pot, atoms, [new]) - energy(pot, atoms, [1.5]),
                                                       abs=1e-10)


def test_reference_sampler_energy_change():
    calc = ReferenceCalculator("CrN")
    atoms = crn(1)
    m = atoms.get_initial_magnetic_moments().copy()
    s = spin_sampler(calc, atoms, m_max={"Cr": 3.5, "N": 0.5}, seed=0)
    assert s.energy == pytest.approx(energy(calc, atoms, m), abs=1e-10)
    for i, new in [(0, -2.4), (1, 0.3), (2, 3.1), (0, 0.0)]:
        m2 = m.copy()
        m2[i] = new
        assert s.delta_energy(i, new) == pytest.approx(energy(calc, atoms, m2) - energy(calc, atoms, m), abs=1e-10)
        s.set_moment(i, new)
        m = m2
    assert s.energy == pytest.approx(energy(calc, atoms, m), abs=1e-10)


# ------------------------------------------------------------ detailed balance
def _boltzmann_check(calc_or_pot, atoms, i, bound, n_samples=6000, thin=4, seed=1):
    """Histogram of m_i (others fixed) against exp(-beta E) on the flat measure."""
    m0 = atoms.get_initial_magnetic_moments()
    grid = np.linspace(-bound, bound, 801)
    es = []
    for x in grid:
        m = m0.copy()
        m[i] = x
        es.append(energy(calc_or_pot, atoms, m))
    es = np.array(es)
    beta = 4.0 / (es.max() - es.min())  # a few kT across the interval
    w = np.exp(-beta * (es - es.min()))
    lim = np.zeros(len(atoms))
    lim[i] = bound
    s = spin_sampler(calc_or_pot, atoms, m_max=lim, seed=seed)
    samples = np.empty(n_samples)
    for k in range(n_samples):
        s.sweep(beta, 0.3, 0.5, thin, [i])
        samples[k] = s.moments[i]
    edges = np.linspace(-bound, bound, 13)
    counts, _ = np.histogram(samples, edges)
    # expected mass per bin by the trapezoidal rule on the fine grid
    cum = np.concatenate([[0.0], np.cumsum(0.5 * (w[1:] + w[:-1]) * np.diff(grid))])
    mass = np.diff(np.interp(edges, grid, cum))
    expected = mass / mass.sum() * n_samples
    keep = expected > 5
    chi2 = np.sum((counts[keep] - expected[keep]) ** 2 / expected[keep])
    return stats.chi2.sf(chi2, keep.sum() - 1)


def test_detailed_balance_mmtp(pot):
    atoms = crn(1)
    assert _boltzmann_check(pot, atoms, 0, M_MAX["Cr"]) > 1e-3


def test_detailed_balance_reference():
    assert _boltzmann_check(ReferenceCalculator("CrN"), crn(1), 2, 3.5) > 1e-3


# ------------------------------------------------------------ reproducibility
@pytest.mark.parametrize("frozen_n", [False, True])
def test_reproducible_with_seed_any_thread_count_and_with_watcher(pot, frozen_n):
    atoms = crn(2)
    calc = mmtp_rs.MMTPCalculator(pot)
    if frozen_n:  # N never moved: the watched path must visit the same atoms as sweep()
        calc = pot
        pot_mmax = {"Cr": M_MAX["Cr"]}
    else:
        pot_mmax = "auto"
    old = mmtp_rs.get_num_threads()
    runs = []
    try:
        for threads in (1, 2, 2):
            mmtp_rs.set_num_threads(threads)
            s = spin_sampler(calc, atoms, m_max=pot_mmax, seed=5)
            st = mc_sweeps(s, 800.0, 3)
            runs.append((st, s.moments.tobytes(), s.energy))
    finally:
        mmtp_rs.set_num_threads(old)
    assert runs[0] == runs[1] == runs[2]
    # grading every accepted move does not change the moves
    grades = []
    watcher = GradeWatcher(Thresholds(2.0, 10.0), grade=lambda a: grades.append(1) or 0.0)
    s = spin_sampler(calc, atoms, m_max=pot_mmax, seed=5)
    assert np.array_equal(s.m_max > 0, np.logical_or(not frozen_n, np.array(atoms.get_chemical_symbols()) == "Cr"))
    work = atoms.copy()
    st = mc_sweeps(s, 800.0, 3, watcher=watcher, atoms=work)
    assert (st, s.moments.tobytes(), s.energy) == runs[0]
    assert len(grades) == st["flips_accepted"] + st["mags_accepted"] > 0
    # another seed, another trajectory
    s2 = spin_sampler(calc, atoms, m_max=pot_mmax, seed=6)
    mc_sweeps(s2, 800.0, 3)
    assert s2.moments.tobytes() != runs[0][1]


def test_bad_input_raises_package_errors(pot):
    atoms = crn(1)
    s = spin_sampler(pot, atoms)
    with pytest.raises(mmtp_rs.MMTPError):
        s.sweep(-1.0)
    with pytest.raises(mmtp_rs.MMTPError):
        s.delta_energy(99, 1.0)
    with pytest.raises(ValueError):
        beta_of(0.0)
    with pytest.raises(ValueError):
        MCSettings(p_flip=2.0)
    with pytest.raises(TypeError):
        spin_sampler(object(), atoms)


# ------------------------------------------------------------ samplers with MD
def test_mdmc_and_dlm_watch_every_step(pot):
    atoms = crn(1)
    calc = mmtp_rs.MMTPCalculator(pot)
    atoms.calc = calc
    grades = []
    watcher = GradeWatcher(Thresholds(1e9, 1e9), grade=lambda a: grades.append(1) or 0.0)
    out = run_mdmc(atoms, 300.0, n_cycles=3, md_steps=4, mc_sweeps_per_cycle=2, watcher=watcher, seed=1)
    accepted = out.stats["flips_accepted"] + out.stats["mags_accepted"]
    # every MD step (ASE also calls observers once when the dynamics starts) and every accepted move
    assert 3 * 4 + accepted <= len(grades) <= 3 * 5 + accepted
    assert len(out.energies) == 3 and np.all(np.isfinite(out.energies))
    m = atoms.get_initial_magnetic_moments()
    assert np.all(np.abs(m) <= np.array([M_MAX[s] for s in atoms.get_chemical_symbols()]) + 1e-12)

    atoms = crn(1)
    atoms.calc = mmtp_rs.MMTPCalculator(pot)
    grades.clear()
    out = run_dlm(atoms, 300.0, n_cycles=3, md_steps=4, equilibrate=False, watcher=watcher, seed=1)
    assert 3 + 3 * 4 <= len(grades) <= 3 + 3 * 5
    cr = np.array(atoms.get_chemical_symbols()) == "Cr"
    for m in out.moments:
        assert np.sum(m[cr] > 0) == np.sum(m[cr] < 0)  # 50/50


def test_dlm_infinite_temperature_equals_paramagnetic_average():
    calc = ReferenceCalculator("CrN")
    atoms = crn(2, rattle=0.0)
    m0 = atoms.get_initial_magnetic_moments()
    atoms.calc = calc
    out = run_dlm(atoms, 300.0, n_cycles=300, md_steps=0, equilibrate=True, seed=3)
    e_dlm, err_dlm = blocking_error(out.energies)
    atoms.set_initial_magnetic_moments(m0)
    pm = ParamagneticCalculator(calc, n_states=300, seed=11, moment={"Cr": 2.4, "N": 0.1}, equilibrate="once")
    atoms.calc = pm
    e_pm = atoms.get_potential_energy()
    err_pm = pm.results["energy_sem"]
    assert abs(e_dlm - e_pm) < 4 * np.hypot(err_dlm, err_pm)
    # Metropolis flips at infinite temperature sample the same signs independently
    s = spin_sampler(calc, atoms, m0, m_max={"Cr": 3.5, "N": 0.5}, seed=2)
    smp = []
    for _ in range(400):
        mc_sweeps(s, np.inf, 1, MCSettings(p_flip=1.0))
        smp.append(s.moments)
    smp = np.array(smp)
    assert np.all(np.abs(smp) == np.abs(m0))
    cr = np.array(atoms.get_chemical_symbols()) == "Cr"
    assert abs(np.mean(smp[:, cr] > 0) - 0.5) < 0.03


# ------------------------------------------------------------ observables and T_N
def test_observables_and_peak():
    rng = np.random.default_rng(0)
    x = rng.normal(size=4096)
    mean, err = blocking_error(x)
    assert err == pytest.approx(1 / 64, rel=0.3)
    t = np.linspace(100, 200, 11)
    y = 10 - (t - 143.0) ** 2 / 100
    tc, dt = peak_temperature(t, y, np.full(t.size, 1e-6))
    assert tc == pytest.approx(143.0, abs=0.01) and 0 < dt < 5
    pattern = np.array([1, 0, -1, 0])
    th = thermodynamics([1.0, 1.1, 0.9, 1.0] * 8, np.tile([2.0, 0.0, -2.0, 0.0], (32, 1)), pattern, 100.0, 4)
    assert th["abs_Ms"] == 2.0 and th["abs_M"] == 0.0 and th["binder"] == pytest.approx(2 / 3)


def test_midpoint_temperature():
    t = [100, 120, 140, 160, 180, 200]
    ms = [2.5, 2.5, 2.3, 0.9, 0.8, 0.8]  # midpoint 1.65: between 140 and 160 K
    assert midpoint_temperature(t, ms) == pytest.approx(140 + 20 * (2.3 - 1.65) / (2.3 - 0.9))
    assert midpoint_temperature(t[::-1], ms[::-1]) == midpoint_temperature(t, ms)  # order of the scan
    with pytest.raises(TransitionNotFound):
        midpoint_temperature(t, [2.5] * 6)  # never disorders
    with pytest.raises(TransitionNotFound):
        midpoint_temperature(t[:2], ms[:2])


def test_neel_temperature_reference_crn():
    calc = ReferenceCalculator("CrN")
    atoms = bulk("CrN", "rocksalt", a=4.15, cubic=True).repeat(2)
    patterns = ordering_patterns(atoms, ["Cr"], "AFM1")
    assert patterns.shape == (3, 64)
    m = equilibrate_moments(atoms, calc, patterns[2] * 2.5 * (np.array(atoms.get_chemical_symbols()) == "Cr"))
    atoms.set_initial_magnetic_moments(m)
    temps = [60, 100, 130, 150, 180, 260]
    scan = temperature_scan(atoms, calc, temps, patterns, n_equil=200, n_samples=800, m_max={"Cr": 3.5, "N": 0.5})
    ms = [r["abs_Ms"] for r in scan]
    assert ms[0] > 2.3 and ms[-1] < 1.5  # ordered at 60 K, disordered at 260 K
    tn = ordering_temperature({64: scan})
    assert 90 < tn["temperature_K"] < 220 and 0 < tn["uncertainty_K"] < 60


def test_cli_magnetism(tmp_path):
    from mmtp_rs.cli.main import main

    cfg = tmp_path / "mag.toml"
    cfg.write_text("""
[structure]
prototype = "rocksalt"
symbols = "CrN"
a = 4.15
[calculator]
reference = "CrN"
[moments]
Cr = 2.5
[scan]
temperatures = [60, 100, 140, 180, 260]
supercells = [[1, 1, 2], [2, 2, 2]]
m_max = { Cr = 3.5, N = 0.5 }
n_equil = 100
n_samples = 400
""")
    assert main(["magnetism", str(cfg), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    doc = json.loads((tmp_path / "out" / "magnetism.json").read_text())
    assert "neel_temperature_K" in doc and "neel_temperature_uncertainty_K" in doc
    assert set(doc["sizes"]) == {"16", "64"}
    for f in ("magnetism.md", "M_T.png", "C_T.png", "chi_T.png"):
        assert (tmp_path / "out" / f).stat().st_size > 0
    cfg.write_text("[scan]\nbogus = 1\n")
    assert main(["magnetism", str(cfg), "--quiet"]) == 2


def test_loop_stage_kinds_mdmc_and_dlm(pot):
    from mmtp_rs.loop.config import LearnConfig
    from mmtp_rs.simulate import two_stage

    cfg = LearnConfig.from_dict({"stage": [{"kind": "mdmc", "temperatures": [300.0], "steps": 20},
                                           {"kind": "dlm", "steps": 20}]})
    assert [s.kind for s in cfg.stages] == ["mdmc", "dlm"]
    calc = mmtp_rs.MMTPCalculator(pot)
    for kind in ("mdmc", "dlm"):
        res = two_stage(crn(1), calc, stage2=kind, grade=lambda a: 0.5, equilibrate=False, temperature_K=300.0,
                        steps=6, timestep_fs=1.0, seed=0, spin_every=3)
        assert res.exploded is None and not res.stopped and res.n_evaluations >= 6


def test_mdmc_reequilibrates_magnitudes_on_the_reference_model():
    from mmtp_rs.magnetism.stage1 import equilibrate_moments as eq

    atoms = crn(1)
    atoms.calc = ReferenceCalculator("CrN")
    out = run_mdmc(atoms, 200.0, n_cycles=2, md_steps=3, m_max={"Cr": 3.5, "N": 0.5}, reequilibrate=True, seed=4)
    m = out.moments[-1]
    # the magnitudes are at the stage-1 minimum for the sampled signs at the final positions
    assert np.allclose(eq(atoms, atoms.calc, m), m, atol=1e-6)
