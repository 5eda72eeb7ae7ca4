"""Issue 15: the README main job (whose loop includes an ``mdmc`` stage)
gives a potential that reproduces the reference model's Monte-Carlo Néel
temperature of CrN within 10 %.

Both models go through the same protocol: the 216-atom cubic CrN cell at
a = 4.15 Å, AFM1 order with moments equilibrated by each model's own stage 1,
then spin Monte Carlo (flips and magnitude moves, M_max 3.2 μB for Cr and
0.1 μB for N on both sides) at each temperature from that ordered state, with
the same seeds. The Néel temperature of one scan is where ⟨|M_s|⟩ falls
through the midpoint between its ordered and disordered levels
(:func:`~mmtp_rs.magnetism.observables.midpoint_temperature`); six seeds give
its mean and standard error. The susceptibility peak of the package's
``mmtp magnetism`` is far noisier here (±27 K for 64 atoms): the reference
model's transition is first-order-like (the ordered state survives on heating
far above where a disordered start orders), so the peak's flat top wanders,
while the steep fall of ⟨|M_s|⟩ is fixed to a few kelvin."""

import numpy as np
import pytest
from ase.build import bulk

from mmtp_rs import MMTPCalculator
from mmtp_rs.magnetism.observables import midpoint_temperature
from mmtp_rs.magnetism.scan import ordering_patterns, temperature_scan
from mmtp_rs.magnetism.stage1 import equilibrate_moments
from mmtp_rs.oracles.reference import ReferenceCalculator

pytestmark = pytest.mark.slow

TEMPS = [120.0, 135.0, 145.0, 150.0, 155.0, 160.0, 165.0, 170.0, 180.0, 200.0]
SEEDS = [11, 12, 13, 14, 15, 16]
M_MAX = {"Cr": 3.2, "N": 0.1}


def neel_temperature(calc) -> tuple[float, float, list[float]]:
    atoms = bulk("CrN", "rocksalt", a=4.15, cubic=True).repeat(3)
    patterns = ordering_patterns(atoms, ["Cr"], "AFM1")
    cr = np.array(atoms.get_chemical_symbols()) == "Cr"
    atoms.set_initial_magnetic_moments(equilibrate_moments(atoms, calc, patterns[2] * 2.5 * cr))
    per_seed = []
    for seed in SEEDS:
        scan = temperature_scan(atoms, calc, TEMPS, patterns, n_equil=100, n_samples=300, m_max=M_MAX, seed=seed)
        ms = [r["abs_Ms"] for r in scan]
        assert ms[0] > 2.0 and ms[-1] < 1.2, ms  # ordered at the bottom of the scan, disordered at the top
        per_seed.append(midpoint_temperature(TEMPS, ms))
    return float(np.mean(per_seed)), float(np.std(per_seed, ddof=1) / np.sqrt(len(per_seed))), per_seed


def test_trained_potential_reproduces_the_reference_neel_temperature(main_job):
    _, pot = main_job
    t_ref, e_ref, s_ref = neel_temperature(ReferenceCalculator("CrN"))
    t_pot, e_pot, s_pot = neel_temperature(MMTPCalculator(pot))
    report = f"T_N reference {t_ref:.1f} ± {e_ref:.1f} K {s_ref}, potential {t_pot:.1f} ± {e_pot:.1f} K {s_pot}"
    print(report)
    # the estimate is precise enough for a 10 % test to mean something
    assert e_ref < 0.04 * t_ref and e_pot < 0.04 * t_pot, report
    assert abs(t_pot - t_ref) <= 0.10 * t_ref, report
