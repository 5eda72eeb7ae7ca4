"""`mmtp validate` and the validation module: both sides through the same stage 1,
checks that can fail, files written, exit codes."""

import json

import numpy as np
import pytest

from mmtp_rs import Potential
from mmtp_rs.cli.main import main
from mmtp_rs.loop.config import ConfigError, LearnConfig, SystemConfig
from mmtp_rs.loop.structures import prototype_cell
from mmtp_rs.oracles.reference import ReferenceCalculator
from mmtp_rs.properties.validation import ValidationOptions, validate

CFG = """
name = "v"
[system]
prototype = "rocksalt"
symbols = ["Cr", "N"]
a0 = 4.15
supercell = [1, 1, 1]
moments = { Cr = 2.4, N = 0.0 }
[model]
max_moment = { Cr = 3.2, N = 0.1 }
[[stage]]
kind = "relax"
[validate]
lattice = [4.1, 4.15, 4.2]
n_random = 1
elastic = false
phonons = false
"""


def test_oracle_against_itself_passes_every_check():
    s = SystemConfig(supercell=[1, 1, 1])
    opts = ValidationOptions(lattice=[4.05, 4.1, 4.15, 4.2, 4.25], n_random=1, elastic_states=["FM", "AFM"],
                             phonons=False)
    ref = ReferenceCalculator("CrN")
    rep = validate(ref, ReferenceCalculator("CrN"), lambda a: prototype_cell(s, a / s.a0), {"Cr": 2.4}, opts)
    assert rep["passed"]
    assert all(c["value"] < 1e-9 for c in rep["checks"] if "lattice" not in c["name"])
    names = {c["name"] for c in rep["checks"]}
    assert {"moments", "state energy differences", "C11 FM", "C44 AFM", "lattice parameter AFM"} <= names
    # the reference model's AFM1 ground state: FM lies 27-42 meV/atom above it over this range
    fm = [x["states"]["FM"]["dE_oracle_meV"] for x in rep["scan"]]
    assert 20 < min(fm) and max(fm) < 50


def test_a_random_potential_fails_and_the_command_exits_1(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text(CFG)
    pot = Potential.new(["N", "Cr"], level=6, max_moment={"N": 0.1, "Cr": 3.2}, min_dist=1.5, max_dist=4.6, seed=3)
    pot.save(tmp_path / "p.json")
    out = tmp_path / "val"
    assert main(["validate", str(cfg), "--potential", str(tmp_path / "p.json"), "--out", str(out)]) == 1
    rep = json.loads((out / "validation.json").read_text())
    assert not rep["passed"] and any(not c["pass"] for c in rep["checks"])
    assert "FAIL" in capsys.readouterr().out
    assert (out / "validation.md").read_text().count("| 4.") >= 3
    assert (out / "validation.png").stat().st_size > 0


def test_bad_validate_entries_are_rejected_at_load(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text(CFG.replace("n_random = 1", "n_randm = 1"))
    with pytest.raises(ConfigError, match="n_randm"):
        LearnConfig.from_toml(p)
    p.write_text(CFG.replace('lattice = [4.1, 4.15, 4.2]', 'lattice = []'))
    with pytest.raises(ConfigError, match="lattice"):
        LearnConfig.from_toml(p)
    p.write_text(CFG.replace('phonons = false', 'phonons = false\nstates = ["FM", "ferri"]'))
    with pytest.raises(ConfigError, match="ferri"):
        LearnConfig.from_toml(p)


def test_oracle_calculator_runs_jobs_once_and_equals_the_model(tmp_path):
    from mmtp_rs.magnetism.stage1 import equilibrate_moments
    from mmtp_rs.oracles.calculator import OracleCalculator
    from mmtp_rs.oracles.reference import ReferenceOracle

    at = prototype_cell(SystemConfig(supercell=[1, 1, 1]))
    at.set_initial_magnetic_moments([2.4, 0.0, -2.4, 0.0, 2.4, 0.0, -2.4, 0.0])
    at.rattle(0.02, seed=1)
    calc = OracleCalculator(ReferenceOracle("CrN"), tmp_path / "jobs")
    m = equilibrate_moments(at, calc, tol=1e-6)
    direct = equilibrate_moments(at, ReferenceCalculator("CrN"))
    np.testing.assert_allclose(m, direct, atol=1e-5)
    n = calc.n_jobs
    assert n > 3
    again = OracleCalculator(ReferenceOracle("CrN"), tmp_path / "jobs")
    equilibrate_moments(at, again, tol=1e-6)
    assert again.n_jobs == 0  # every evaluation read back from its job directory
    b = at.copy()
    b.set_initial_magnetic_moments(m)
    b.calc = again
    ref = ReferenceCalculator("CrN").get_property("stress", b)
    np.testing.assert_allclose(b.get_stress(), ref, rtol=1e-12, atol=1e-14)
