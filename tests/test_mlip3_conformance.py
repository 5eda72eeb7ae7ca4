"""Raw energies, forces, virials, site energies and dE/dm of four MLIP-3
potentials, as computed by MLIP-3 itself, reproduced to round-off."""

import json

import numpy as np
import pytest
from ase import Atoms

from mmtp_rs import Potential, read_cfg

NAMES = ["mag_lev8_Fe", "mag_lev10_FeAl", "mag_lev16_CrN", "nonmag_lev12_2sp"]
RTOL = 1e-10


def rel_err(x, y):
    x, y = np.asarray(x, float), np.asarray(y, float)
    return np.max(np.abs(x - y)) / max(np.max(np.abs(y)), 1e-300)


def atoms_of(c):
    a = Atoms(cell=c["cell"], positions=c["positions"], pbc=c.get("pbc", True))
    a.arrays["mlip_type"] = np.array(c["types"])
    return a


@pytest.mark.parametrize("name", NAMES)
def test_raw_outputs_match_mlip3(mlip3_dir, name):
    pot = Potential.from_file(mlip3_dir / f"{name}.mtp")
    doc = json.loads((mlip3_dir / f"{name}.json").read_text())
    assert pot.n_params == doc["potential_summary"]["n_coeffs_total"]
    for c in doc["configurations"]:
        a = atoms_of(c)
        m = np.array(c.get("magmoms", np.zeros(len(a))))
        runs = [("mlip3", m)]
        if "mlip3_spin_flipped" in c:
            runs.append(("mlip3_spin_flipped", -m))
        for key, moments in runs:
            ref = c[key]
            out = pot.evaluate(a, symmetrize=False, moments=moments)
            assert rel_err(out["energy"], ref["energy"]) < RTOL
            assert rel_err(out["energies"], ref["site_energies"]) < RTOL
            assert rel_err(out["forces"], ref["forces"]) < RTOL
            assert rel_err(out["virial"], ref["virial_3x3"]) < RTOL
            assert out["n_pairs"] == ref["n_neighbor_pairs"]
            if "en_der_mx" in ref and pot.magnetic_basis_size > 1:
                assert rel_err(out["dedm"], ref["en_der_mx"]) < RTOL
            vol = abs(np.linalg.det(a.cell.array))
            plus = np.array(ref["plus_stress"])
            assert rel_err(out["stress"], -plus / vol) < 1e-8  # symmetrised W vs MLIP's off-diagonal picks
        if "spin_symmetrized_derived" in c:
            ref = c["spin_symmetrized_derived"]
            out = pot.evaluate(a, symmetrize=True, moments=m)
            assert rel_err(out["energy"], ref["energy"]) < RTOL
            assert rel_err(out["forces"], ref["forces"]) < RTOL
            assert rel_err(out["dedm"], ref["en_der_mx"]) < RTOL


@pytest.mark.parametrize("name", NAMES)
def test_cfg_files_and_round_trip_of_mtp(mlip3_dir, tmp_path, name):
    pot = Potential.from_file(mlip3_dir / f"{name}.mtp")
    images = read_cfg(mlip3_dir / f"{name}.cfg")
    pot.save(tmp_path / "again.mtp")
    again = Potential.from_file(tmp_path / "again.mtp")
    np.testing.assert_array_equal(again.params, pot.params)
    for a in images:
        out = again.evaluate(a, symmetrize=False)
        assert rel_err(out["energy"], a.info["REF_energy"]) < RTOL
        assert rel_err(out["forces"], a.arrays["REF_forces"]) < RTOL
        if "REF_magnetic_forces" in a.arrays and pot.magnetic_basis_size > 1:
            assert rel_err(out["magnetic_forces"], a.arrays["REF_magnetic_forces"]) < RTOL


def test_crn_level16_has_606_parameters(mlip3_dir):
    pot = Potential.from_file(mlip3_dir / "mag_lev16_CrN.mtp", species=["N", "Cr"])
    assert pot.n_params == 606
    assert pot.n_basis == 92
    assert pot.n_radial_functions == 4
