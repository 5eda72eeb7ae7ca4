"""ABINIT adapter: input writing, errors, and real constrained-DFT runs.

Real runs use 2-atom bcc Fe with a PseudoDojo norm-conserving
pseudopotential, ecut 15 Ha and 2x2x2 k-points (a few seconds each).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.units import Bohr

from mmtp_rs.io.labels import read_labels
from mmtp_rs.oracles import AbinitOracle, OracleSetupError, default_process_pool, parse_abinit_output, read_record
from mmtp_rs.oracles.abinit import DEFAULT_PSP_DIR, read_pseudo_header

HAVE_ABINIT = shutil.which("abinit") is not None
HAVE_PSP = (Path(DEFAULT_PSP_DIR) / "Pseudodojo_nc_sr_04_pw_standard_psp8" / "Fe.psp8").is_file()
needs_psp = pytest.mark.skipif(not HAVE_PSP, reason="Debian abinit-data pseudopotentials not installed")
needs_abinit = [
    pytest.mark.abinit,
    pytest.mark.skipif(not HAVE_ABINIT, reason="the 'abinit' program is not on PATH"),
    needs_psp,
]


def fe2(m1=1.8, m2=2.6, dx=0.0):
    """2-atom bcc Fe, a = 5.42 bohr, second atom displaced off the centre."""
    at = Atoms("Fe2", scaled_positions=[[0, 0, 0], [0.52, 0.50, 0.49]],
               cell=np.eye(3) * 5.42 * Bohr, pbc=True)
    at.positions[1, 0] += dx
    at.set_initial_magnetic_moments([m1, m2])
    return at


def oracle(**kw):
    return AbinitOracle(kpts=(2, 2, 2), ecut=15.0, **kw)


# ------------------------------------------------------------ no program needed
@needs_psp
def test_input_has_constraint_variables():
    text = oracle().make_input(fe2())
    words = dict((line.split(None, 1) + [""])[:2] for line in text.splitlines()[1:]
                 if not line.startswith(" "))
    assert words["nsppol"] == "2"
    assert words["constraint_kind"] == "1"
    assert float(words["ratsph"]) == 2.0
    assert "ratsm" in words and "magcon_lambda" in words
    assert "iscf" not in words  # NC: ABINIT default mixing
    assert "0 0 2.6" in text and "0 0 1.8" in text
    relaxed = oracle(relax_moments=True).make_input(fe2())
    assert "constraint_kind 0" in relaxed


@pytest.mark.skipif(
    not (Path(DEFAULT_PSP_DIR) / "Pseudodojo_paw_pbe_standard" / "Fe.xml").is_file(),
    reason="PAW datasets not installed")
def test_paw_input_uses_iscf7_and_pawecutdg():
    text = oracle(pseudo_family="paw").make_input(fe2())
    assert "\niscf 7\n" in text and "pawecutdg 3.0" in text


def test_missing_abinit_binary_is_a_clear_error():
    with pytest.raises(OracleSetupError, match="not-an-abinit.*not found on PATH"):
        oracle(executable="not-an-abinit").validate([fe2()])


def test_malformed_and_missing_pseudopotentials(tmp_path):
    bad = tmp_path / "Fe.psp8"
    bad.write_text("this is not a pseudopotential\nnonsense here\n")
    with pytest.raises(OracleSetupError, match="Fe.psp8: malformed header"):
        read_pseudo_header(bad)
    empty = tmp_path / "empty.psp8"
    empty.write_text("")
    with pytest.raises(OracleSetupError, match="empty"):
        read_pseudo_header(empty)
    badxml = tmp_path / "Fe.xml"
    badxml.write_text('<?xml version="1.0"?>\n<paw_dataset version="0.7">\n<atom symbol="Fe"/>\n')
    with pytest.raises(OracleSetupError, match="malformed PAW"):
        read_pseudo_header(badxml)
    o = oracle(pseudopotentials={"Fe": str(bad)})
    with pytest.raises(OracleSetupError, match="malformed"):
        o.make_input(fe2())
    o = oracle(pseudopotentials={"Fe": str(tmp_path / "nowhere.psp8")})
    with pytest.raises(OracleSetupError, match=r"element 'Fe' \(atom 0\).*nowhere.psp8"):
        o.make_input(fe2())


@needs_psp
def test_wrong_element_pseudopotential_and_unknown_element():
    n_psp = Path(DEFAULT_PSP_DIR) / "Pseudodojo_nc_sr_04_pw_standard_psp8" / "N.psp8"
    with pytest.raises(OracleSetupError, match="Z=7"):
        oracle(pseudopotentials={"Fe": str(n_psp)}).make_input(fe2())
    at = fe2()
    at.numbers[1] = 0  # 'X', not an element
    with pytest.raises(OracleSetupError, match=r"unknown element 'X' \(atom 1\)"):
        oracle().make_input(at)
    with pytest.raises(ValueError, match="unknown element 'Xx'"):
        AbinitOracle(pseudopotentials={"Xx": "a.psp8"})


def test_mpi_command_has_no_shell():
    assert oracle(mpi_procs=4).command() == ["mpirun", "-np", "4", "abinit", "run.abi"]
    assert oracle().command() == ["abinit", "run.abi"]


# ----------------------------------------------------------------- real runs
@pytest.mark.abinit
@pytest.mark.skipif(not HAVE_ABINIT, reason="the 'abinit' program is not on PATH")
@needs_psp
def test_magnetic_and_atomic_forces_match_finite_differences(tmp_path):
    hm, hx = 0.02, 0.01  # μB, Å
    batch = [fe2(), fe2(m2=2.6 + hm), fe2(m2=2.6 - hm), fe2(dx=hx), fe2(dx=-hx)]
    with default_process_pool(2) as pool:
        res = oracle().label(batch, tmp_path, executor=pool)
    assert res.ok, res.failures
    lab = [read_labels(a) for a in res.labelled]
    centre = lab[0]
    # the constrained moments are reached
    assert np.allclose(centre.moments, [1.8, 2.6], atol=1e-3)
    t_fd = -(lab[1].energy - lab[2].energy) / (2 * hm)
    assert centre.magnetic_forces[1] == pytest.approx(t_fd, rel=0.02, abs=2e-3)
    f_fd = -(lab[3].energy - lab[4].energy) / (2 * hx)
    assert centre.forces[1, 0] == pytest.approx(f_fd, rel=0.02, abs=5e-3)
    assert abs(centre.forces[1, 0]) > 0.1 and abs(centre.magnetic_forces[1]) > 0.1
    # rerunning the batch computes nothing
    again = oracle().label(batch, tmp_path)
    assert again.computed == [] and len(again.reused) == 5
    assert again.labelled[0].info["REF_energy"] == res.labelled[0].info["REF_energy"]


@pytest.mark.abinit
@pytest.mark.skipif(not HAVE_ABINIT, reason="the 'abinit' program is not on PATH")
@needs_psp
def test_non_converged_run_is_parsed_and_reported(tmp_path):
    o = oracle(nstep=2, max_attempts=2)
    # retry ladder: nstep 2, then nstep 4 with gentler mixing; both too few
    res = o.label([fe2()], tmp_path, executor=None, max_workers=1)
    assert not res.ok and res.labelled == []
    fail = res.failures[0]
    assert fail.attempts == 2 and "not converged" in fail.reason and "nstep=" in fail.reason
    rec = read_record(fail.directory)
    assert rec["status"] == "failed" and rec["attempts"][1]["overrides"]["nstep"] == 4
    parsed = parse_abinit_output(fail.directory / "attempt0" / "run.abo")
    assert not parsed.converged and parsed.completed
    assert np.isfinite(parsed.etotal) and parsed.grspin.shape == (2, 3)
