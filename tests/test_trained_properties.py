"""The README main job's potential, taken through stage 1 the way users run it
(moments equilibrated with the package's defaults, on both sides), reproduces
the reference model: over a = 4.05-4.25 Å for FM, AFM and random states every
moment within 0.03 μB and the state energy differences within 3 meV/atom;
C11, C12, C44 within 10 % for FM, AFM and PM (moments re-equilibrated at every
strain); zone-boundary phonons within 5 %.

The random states, the PM states and their seeds differ from those of the
learn report's own validation, so this is a held-out check. On main a57adc1
(stage 1 of the loop froze the N moments at 0) this failed by 0.11 μB and
140 meV/atom."""


import pytest

from mmtp_rs import MMTPCalculator
from mmtp_rs.loop.structures import prototype_cell
from mmtp_rs.oracles.reference import ReferenceCalculator
from mmtp_rs.properties.validation import ValidationOptions, validate

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def validation(main_job):
    cfg, pot = main_job
    s = cfg.system
    opts = ValidationOptions(lattice=[4.05, 4.10, 4.15, 4.20, 4.25], states=["AFM", "FM", "random"], n_random=3,
                             elastic_states=["FM", "AFM", "PM"], elastic_lattice=4.15, pm_states=5, seed=2024)
    return validate(MMTPCalculator(pot), ReferenceCalculator("CrN"), lambda a: prototype_cell(s, a / s.a0),
                    moment=dict(s.moments), opts=opts,
                    elastic_cell=lambda a: prototype_cell(s, a / s.a0, supercell=[1, 1, 1]))


def test_equilibrated_moments_match_the_reference(validation):
    worst = max(r["max_dm"] for s in validation["scan"] for r in s["states"].values())
    assert worst <= 0.03, [(s["a"], k, r["max_dm"]) for s in validation["scan"] for k, r in s["states"].items()]
    # the moments are not trivially small: N carries an induced moment in AFM
    n_afm = [s["states"]["AFM"]["moments"]["oracle"]["N"] for s in validation["scan"]]
    assert min(n_afm) > 1e-3


def test_state_energy_differences_match_the_reference(validation):
    errs = [abs(r["dE_potential_meV"] - r["dE_oracle_meV"]) for s in validation["scan"] for r in s["states"].values()]
    assert max(errs) <= 3.0, errs
    fm = [s["states"]["FM"]["dE_oracle_meV"] for s in validation["scan"]]
    assert min(fm) > 10.0  # the comparison is not vacuous: FM lies well above AFM


@pytest.mark.parametrize("state", ["FM", "AFM", "PM"])
def test_elastic_constants_with_equilibrated_moments(validation, state):
    el = validation["elastic"][state]
    for key in ("C11", "C12", "C44"):
        assert el["relative_error"][key] <= 0.10, (state, key, el["potential"][key], el["oracle"][key])


@pytest.mark.parametrize("state", ["FM", "AFM", "PM"])
def test_zone_boundary_phonons(validation, state):
    assert validation["phonons"][state]["max_relative_error"] <= 0.05, validation["phonons"][state]


def test_learn_report_carries_the_validation(main_job_state):
    rep = (main_job_state / "report" / "validation.md").read_text()
    assert "Validation with moments equilibrated" in rep
    assert (main_job_state / "report" / "validation.png").stat().st_size > 0
