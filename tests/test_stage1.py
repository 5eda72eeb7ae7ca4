"""One stage 1 for the whole package: every moment is a degree of freedom.

The learning loop once froze every moment that started at 0 (N in CrN), so no
training configuration ever had a non-zero N moment, while the properties path
let them move: a potential the loop called converged drove N to its bound and
was 200 meV/atom off. These tests pin the rule down on the paths users run."""

import numpy as np
import pytest
from ase.build import bulk

from mmtp_rs import MMTPCalculator, Potential
from mmtp_rs.loop.config import LearnConfig
from mmtp_rs.loop.structures import initial_training_set, random_moment_start, species_max_moment
from mmtp_rs.magnetism.stage1 import SIGN_THRESHOLD, equilibrate_moments, moment_bounds
from mmtp_rs.magnetism.states import state_moments
from mmtp_rs.oracles.reference import ReferenceCalculator, ReferenceModel
from mmtp_rs.magnetism.paramagnetic import ParamagneticCalculator
from mmtp_rs.properties.setup import MagneticSetup
from mmtp_rs.simulate import Thresholds, two_stage


def crn(a=4.15, state="AFM", seed=0):
    at = bulk("CrN", "rocksalt", a=a, cubic=True).repeat(2)
    at.set_initial_magnetic_moments(state_moments(at, state, {"Cr": 2.4}, seed=seed))
    return at


def is_n(at):
    return np.array(at.get_chemical_symbols()) == "N"


class Opaque:
    """The reference calculator without its Newton shortcut: plain L-BFGS-B is used."""

    def __init__(self, calc):
        self.calc = calc
        self.results = {}

    def calculate(self, atoms, properties, changes):
        self.calc.calculate(atoms, properties, changes)
        self.results = self.calc.results


@pytest.mark.parametrize("state", ["AFM", "FM", "random"])
def test_two_stage_frees_moments_that_start_at_zero(state):
    """The loop's stage 1 (two_stage with defaults) reaches the oracle's own minimum, N included."""
    at = crn(4.10, state, seed=2)
    calc = ReferenceCalculator("CrN")
    r = two_stage(at, Opaque(calc), stage2="none", grade=lambda a: 1.0)
    m = r.final.get_initial_magnetic_moments()
    exact = ReferenceModel.preset("CrN").relax_moments(at, at.get_initial_magnetic_moments())
    np.testing.assert_allclose(m, exact, atol=2e-4)
    if state != "FM":  # FM: N moments are induced too, all of one sign
        assert np.any(m[is_n(at)] > 1e-3) and np.any(m[is_n(at)] < -1e-3)
    assert np.abs(m[is_n(at)]).max() > 1e-3


def test_newton_shortcut_and_lbfgsb_agree_and_keep_the_state():
    at = crn(4.2, "random", seed=5)
    calc = ReferenceCalculator("CrN")
    m0 = at.get_initial_magnetic_moments()
    newton = equilibrate_moments(at, calc)
    lbfgs = equilibrate_moments(at, Opaque(calc), tol=1e-7)
    np.testing.assert_allclose(newton, lbfgs, atol=1e-5)
    big = np.abs(m0) >= SIGN_THRESHOLD
    assert np.all(np.sign(newton[big]) == np.sign(m0[big]))


def test_sign_rule_bounds_and_explicit_freezing():
    at = crn()
    m0 = at.get_initial_magnetic_moments()
    m0[1] = 0.3  # a small starting moment (below the threshold): free of sign
    lo, hi = moment_bounds(at, m0, {"Cr": 3.2, "N": 0.1})
    cr = ~is_n(at)
    assert np.all(lo[cr & (m0 > 0)] == 0) and np.all(hi[cr & (m0 > 0)] == 3.2)
    assert np.all(hi[cr & (m0 < 0)] == 0) and np.all(lo[cr & (m0 < 0)] == -3.2)
    assert np.all(lo[is_n(at)] == -0.1) and np.all(hi[is_n(at)] == 0.1)
    assert lo[1] == -at_max(at, 1) and hi[1] == at_max(at, 1)
    lo, hi = moment_bounds(at, m0, None, frozen=["N"])
    assert np.all(lo[is_n(at)] == m0[is_n(at)]) and np.all(hi[is_n(at)] == m0[is_n(at)])
    m = equilibrate_moments(at, ReferenceCalculator("CrN"), frozen="N")
    assert np.all(m[is_n(at)] == 0.0)
    with pytest.raises(ValueError, match="frozen species"):
        moment_bounds(at, m0, None, frozen=["Fe"])


def at_max(at, k):
    return {"Cr": 3.2, "N": 0.1}[at.get_chemical_symbols()[k]]


def test_potential_bounds_are_its_magnetic_intervals():
    pot = Potential.new(["N", "Cr"], level=6, max_moment={"N": 0.1, "Cr": 3.2}, seed=4)
    at = crn()
    seen = []
    m = equilibrate_moments(at, MMTPCalculator(pot), max_iter=30, callback=lambda x: seen.append(x))
    assert seen, "the callback sees every visited state"
    assert np.all(np.abs(m[is_n(at)]) <= 0.1 + 1e-12) and np.all(np.abs(m[~is_n(at)]) <= 3.2 + 1e-12)
    assert np.any(m[is_n(at)] != 0)  # a random potential pulls N off zero: it is free


def test_properties_and_paramagnetic_paths_use_the_same_stage1():
    at = bulk("CrN", "rocksalt", a=4.15, cubic=True)
    calc = ReferenceCalculator("CrN")
    afm = MagneticSetup(calc, "AFM", moment={"Cr": 2.4}, direction="AFM1").attach(at)
    exact = ReferenceModel.preset("CrN").relax_moments(at, afm.get_initial_magnetic_moments())
    np.testing.assert_allclose(afm.get_initial_magnetic_moments(), exact, atol=1e-8)
    assert np.all(np.abs(afm.get_initial_magnetic_moments()[is_n(at)]) > 1e-3)
    big = crn()
    pm = ParamagneticCalculator(calc, n_states=2, seed=1, moment={"Cr": 2.4}, equilibrate="once")
    for m in pm.set_reference(big):
        assert np.abs(ReferenceModel.preset("CrN").evaluate(big, m)["magnetic_forces"]).max() < 1e-6
        assert np.abs(m[is_n(big)]).max() > 1e-3


CFG = """
name = "t"
[system]
prototype = "rocksalt"
symbols = ["Cr", "N"]
a0 = 4.15
supercell = [1, 1, 1]
moments = { Cr = 2.4, N = 0.0 }
[model]
max_moment = { Cr = 3.2, N = 0.1 }
[initial]
scales = [1.0]
states = ["FM", "AFM", "random"]
per_state = 3
[[stage]]
kind = "moments"
"""


def test_initial_set_and_random_starts_cover_small_moments(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text(CFG)
    cfg = LearnConfig.from_toml(p)
    images = initial_training_set(cfg)
    n_moments = np.concatenate([a.get_initial_magnetic_moments()[is_n(a)] for a in images])
    assert np.abs(n_moments).max() <= 0.1
    assert np.abs(n_moments).max() > 0.05 and (n_moments > 0.01).any() and (n_moments < -0.01).any()
    rng = np.random.default_rng(0)
    at = crn()
    random_moment_start(at, rng, [0.5, 1.0], species_max_moment(cfg))
    m = at.get_initial_magnetic_moments()
    assert np.all(np.abs(m[~is_n(at)]) >= 1.6) and np.all(np.abs(m[~is_n(at)]) <= 3.2)
    assert np.all(np.abs(m[is_n(at)]) <= 0.1) and np.abs(m[is_n(at)]).max() > 0.03
    # the AFM sign pattern of the start survives
    assert np.all(np.sign(m[~is_n(at)]) == np.sign(crn().get_initial_magnetic_moments()[~is_n(at)]))


def test_stage1_states_are_graded_and_preselected():
    """Every state stage 1 visits is graded; states above gamma_low are preselected with their moments."""
    at = crn(4.1, "AFM")
    pot = Potential.new(["N", "Cr"], level=6, max_moment={"N": 0.1, "Cr": 3.2}, seed=4)
    grades = iter(np.linspace(1.0, 3.0, 9))
    r = two_stage(at, MMTPCalculator(pot), stage2="none", stage1=Thresholds(2.0, 10.0),
                  grade=lambda a: next(grades, 3.0), stage1_options={"max_iter": 40})
    assert r.n_evaluations > 5 and r.preselected
    assert any(np.abs(p.get_initial_magnetic_moments()[is_n(at)]).max() > 0 for p in r.preselected)
