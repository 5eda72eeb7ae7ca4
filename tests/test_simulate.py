"""The two-stage simulation: grades watched at every step, preselection,
stopping above gamma_up, clean stops on explosions."""

import numpy as np
import pytest
from ase.build import bulk

from mmtp_rs.oracles.reference import ReferenceCalculator
from mmtp_rs.simulate import ExtrapolationStop, GradeWatcher, Thresholds, equilibrate_watched, relax, run_md, two_stage


def crn(seed=0, rattle=0.03):
    a = bulk("CrN", "rocksalt", a=4.15, cubic=True).repeat(2)
    rng = np.random.default_rng(seed)
    cr = np.array(a.get_chemical_symbols()) == "Cr"
    a.set_initial_magnetic_moments(np.where(cr, rng.choice([-2.0, 2.0], len(a)), 0.0))
    a.rattle(rattle, seed=seed)
    return a


class Counter:
    """A grade that grows by `step` per evaluation."""

    def __init__(self, step):
        self.step, self.n = step, 0

    def __call__(self, atoms):
        self.n += 1
        return 1.0 + self.step * self.n


def test_stage1_lowers_the_energy_and_zeroes_the_magnetic_forces():
    a = crn()
    a.calc = ReferenceCalculator("CrN")
    e0 = a.get_potential_energy()
    m = equilibrate_watched(a, tol=1e-6)
    assert a.get_potential_energy() < e0
    t = a.calc.get_property("magnetic_forces", a)
    assert np.abs(t).max() < 1e-5  # every moment, N included, is at its minimum
    # the N moments start at 0 and acquire induced moments of either sign
    n = np.array(a.get_chemical_symbols()) == "N"
    assert np.all(np.abs(m[n]) > 1e-4) and np.any(m[n] > 0) and np.any(m[n] < 0)
    # signs of the random state are kept
    cr = np.array(a.get_chemical_symbols()) == "Cr"
    assert np.all(np.sign(m[cr]) == np.sign(crn().get_initial_magnetic_moments()[cr]))


def test_watcher_preselects_between_thresholds_and_stops_above_gamma_up():
    w = GradeWatcher(Thresholds(2.0, 3.0), grade=Counter(0.5), stage="test")
    a = crn()
    w.check(a)  # 1.5: nothing
    assert not w.preselected
    w.check(a)  # 2.0: preselected
    w.check(a)  # 2.5
    assert len(w.preselected) == 2 and w.preselected[0].info["MV_grade"] == 2.0
    w.check(a)  # 3.0: still <= gamma_up
    with pytest.raises(ExtrapolationStop):
        w.check(a)  # 3.5 > gamma_up: preselected and stopped
    assert len(w.preselected) == 4 and w.stopped and w.max_grade == 3.5
    with pytest.raises(ValueError):
        Thresholds(5.0, 2.0)


@pytest.mark.parametrize("thermostat", ["langevin", "nose-hoover", "bussi"])
def test_md_runs_with_each_thermostat_and_grades_every_step(thermostat):
    a = crn()
    a.calc = ReferenceCalculator("CrN")
    g = Counter(0.0)
    w = GradeWatcher(Thresholds(4.0, 10.0), grade=g)
    n = run_md(a, w, temperature_K=300, steps=20, thermostat=thermostat)
    assert n == 20 and g.n == 21  # initial state + every step
    assert not w.preselected


def test_two_stage_stops_on_high_grade_and_keeps_preselected():
    r = two_stage(crn(), ReferenceCalculator("CrN"), stage2="md", grade=Counter(0.1), temperature_K=500, steps=500)
    assert r.stopped and r.exploded is None
    assert r.preselected and all(p.info["MV_grade"] >= 2.0 for p in r.preselected)
    assert r.preselected[-1].info["MV_grade"] > 10.0
    assert r.n_evaluations < 300


def test_relaxation_converges_below_fmax_with_low_grades():
    r = two_stage(crn(), ReferenceCalculator("CrN"), stage2="relax", grade=lambda a: 1.0, fmax=0.01, steps=300)
    assert not r.stopped and not r.preselected
    assert np.abs(r.final.get_forces()).max() < 0.01


def test_explosion_is_reported_not_raised():
    a = crn(rattle=0.0)
    a.positions[1] = a.positions[0] + 1e-9  # two atoms on the same spot

    def grade(atoms):
        return 1.0

    from mmtp_rs import MMTPCalculator, Potential

    pot = Potential.new(["N", "Cr"], level=6, max_moment={"N": 0.5, "Cr": 3.0}, seed=1)
    r = two_stage(a, MMTPCalculator(pot), stage2="relax", grade=grade)
    assert r.exploded and "same spot" in r.exploded and r.final is None
