"""A potential trained by the active-learning loop on the reference model
reproduces the reference model's own elastic constants (within 10 %) and its
phonon frequencies at the zone boundary (within 5 %) for FM, AFM and PM.

Moments are held fixed (constrained) during the property calculations, the
setting the mMTP is trained for (cDFT labels at fixed moments; stage 2 of the
simulation runs at fixed moments)."""

from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk

from mmtp_rs import MMTPCalculator
from mmtp_rs.learn import LearnConfig, Learner
from mmtp_rs.oracles.reference import ReferenceCalculator
from mmtp_rs.properties import MagneticSetup, cubic_constants, elastic_constants, phonons

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "learn_crn_reference.toml"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from mmtp_rs import Potential

    cfg = LearnConfig.from_toml(EXAMPLE)
    state = tmp_path_factory.mktemp("learn") / "state"
    summary = Learner(cfg, state, quiet=True).run()
    assert summary["converged"]
    k = summary["final_iteration"]
    return Potential.from_file(state / f"iter_{k:03d}" / "potential.json")


def setups(calc):
    fixed = dict(moment={"Cr": 2.4}, equilibrate=False)
    return {
        "FM": MagneticSetup(calc, "FM", **fixed),
        "AFM": MagneticSetup(calc, "AFM", direction="AFM1", **fixed),
        "PM": MagneticSetup(calc, "PM", n_states=6, seed=3, **fixed),
    }


def elastic(setup, cell):
    at = setup.attach(cell)
    res = elastic_constants(at, strain=0.005, fmax=5e-3, max_steps=100, reattach=setup.reattacher(at))
    return cubic_constants(res["C"])


def zone_boundary_frequencies(setup, cell):
    res = phonons(cell, setup, supercell=(2, 2, 2) if setup.kind != "PM" else (1, 1, 1), bands=False, dos=False,
                  mesh=(2, 2, 2), primitive_matrix=None)
    ph = res["phonopy"]
    ph.run_qpoints([[0.5, 0.0, 0.0], [0.5, 0.5, 0.0]])
    return np.sort(np.asarray(ph.qpoints.frequencies).ravel())


@pytest.mark.parametrize("state", ["FM", "AFM", "PM"])
def test_trained_potential_reproduces_reference_properties(trained, state):
    cell = bulk("CrN", "rocksalt", a=4.15, cubic=True)
    if state == "PM":
        cell = cell.repeat((2, 2, 2))
    ref = setups(ReferenceCalculator("CrN"))[state]
    fit = setups(MMTPCalculator(trained))[state]
    cr, cf = elastic(ref, cell), elastic(fit, cell)
    for key in ("C11", "C12", "C44"):
        assert abs(cf[key] - cr[key]) <= 0.10 * abs(cr[key]), (state, key, cf[key], cr[key])
    fr, ff = zone_boundary_frequencies(ref, cell), zone_boundary_frequencies(fit, cell)
    top = fr > 0.2 * fr.max()  # compare the well-defined (non-acoustic-limit) modes
    np.testing.assert_allclose(ff[top], fr[top], rtol=0.05)
