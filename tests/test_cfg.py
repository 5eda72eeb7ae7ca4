"""Tests of the MLIP ``.cfg`` reader and writer (``mmtp_rs.io.cfg``)."""

from __future__ import annotations

import json
import string
import time
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from mmtp_rs.io.cfg import CfgFormatError, cell_volume, read_cfg, write_cfg

# --------------------------------------------------------------------------- #
# Helpers
# --------------------------------------------------------------------------- #


MLIP3_DIR = Path(__file__).resolve().parent / "data" / "mlip3"  # shipped with the repository
needs_mlip3 = pytest.mark.skipif(not MLIP3_DIR.is_dir(), reason=f"MLIP-3 conformance data missing: {MLIP3_DIR}")


def mlip3_json_cases() -> list[tuple[Path, str]]:
    """(JSON file, key of a .cfg it describes) for every reference set."""
    cases = []
    for path in sorted(MLIP3_DIR.glob("*.json")) if MLIP3_DIR.is_dir() else []:
        ref = json.loads(path.read_text())
        cases += [(path, key) for key in ("cfg_file", "cfg_file_spin_flipped") if ref.get(key)]
    return cases


def mlip3_cfg_files() -> list[Path]:
    return sorted(MLIP3_DIR.glob("*.cfg")) if MLIP3_DIR.is_dir() else []


def assert_same_atoms(a: Atoms, b: Atoms) -> None:
    """Bitwise-equal numbers (up to the sign of zero) in every item."""
    assert len(a) == len(b)
    np.testing.assert_array_equal(a.numbers, b.numbers)
    np.testing.assert_array_equal(a.positions, b.positions)
    np.testing.assert_array_equal(a.cell.array, b.cell.array)
    np.testing.assert_array_equal(a.pbc, b.pbc)
    assert sorted(a.arrays) == sorted(b.arrays)
    for key in a.arrays:
        assert a.arrays[key].shape == b.arrays[key].shape, key
        np.testing.assert_array_equal(a.arrays[key], b.arrays[key], err_msg=key)
    assert sorted(a.info) == sorted(b.info)
    for key, value in a.info.items():
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(value, b.info[key], err_msg=key)
        else:
            assert value == b.info[key], key


def write_text(tmp_path: Path, text: str, name: str = "t.cfg") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# --------------------------------------------------------------------------- #
# MLIP-3 conformance files
# --------------------------------------------------------------------------- #


@needs_mlip3
@pytest.mark.parametrize(
    "json_path, key", mlip3_json_cases(), ids=lambda v: v.stem if isinstance(v, Path) else ("spin_flipped" if "flipped" in v else "original")
)
def test_mlip3_files_match_json(json_path: Path, key: str) -> None:
    ref = json.loads(json_path.read_text())
    flipped = key == "cfg_file_spin_flipped"
    species_map = ref["species"]
    chemical = all(s.isalpha() and len(s) <= 2 for s in species_map.values())
    species = [species_map[str(k)] for k in range(len(species_map))] if chemical else None

    images = read_cfg(MLIP3_DIR / ref[key], species=species)
    configs = ref["configurations"]
    assert len(images) == len(configs)
    for atoms, conf in zip(images, configs):
        out = conf["mlip3_spin_flipped" if flipped else "mlip3"]
        types = np.array(conf["types"])
        np.testing.assert_array_equal(atoms.arrays["mlip_type"], types)
        if species is None:
            assert set(atoms.get_chemical_symbols()) <= {"X"}
        else:
            assert atoms.get_chemical_symbols() == [species[t] for t in types]
        np.testing.assert_array_equal(atoms.cell.array, np.array(conf["cell"]))
        assert list(atoms.pbc) == conf["pbc"]
        np.testing.assert_array_equal(atoms.positions, np.array(conf["positions"]))
        assert atoms.info["REF_energy"] == out["energy"]
        np.testing.assert_array_equal(atoms.arrays["REF_forces"], np.array(out["forces"]))
        plus = np.array(out["plus_stress"])
        volume = cell_volume(conf["cell"])
        assert volume == pytest.approx(abs(np.linalg.det(np.array(conf["cell"]))), rel=1e-14)
        # REF_stress is -PlusStress/V correctly rounded from the file's decimal
        # text, so it may differ from the double division by one ulp.
        np.testing.assert_allclose(atoms.info["REF_stress"], -(plus / volume), rtol=3e-16, atol=0)
        assert atoms.info["mlip_features"] == {"EFS_by": "MLIP-3@7fe598d"}
        if "magmoms" in conf:
            sign = -1.0 if flipped else 1.0
            np.testing.assert_array_equal(atoms.get_initial_magnetic_moments(), sign * np.array(conf["magmoms"]))
            np.testing.assert_array_equal(atoms.arrays["REF_magnetic_forces"], -np.array(out["en_der_mx"]))
        else:
            assert "initial_magmoms" not in atoms.arrays
            assert "REF_magnetic_forces" not in atoms.arrays
        assert "REF_energies" not in atoms.arrays  # no site_en column in these files


@needs_mlip3
@pytest.mark.parametrize("cfg_path", mlip3_cfg_files(), ids=lambda p: p.name)
def test_mlip3_files_round_trip(cfg_path: Path, tmp_path: Path) -> None:
    images = read_cfg(cfg_path)
    out = tmp_path / "copy.cfg"
    write_cfg(out, images)
    again = read_cfg(out)
    assert len(again) == len(images)
    for a, b in zip(images, again):
        assert_same_atoms(a, b)
    # The rewritten PlusStress is the original one to within an ulp.
    original = [line for line in cfg_path.read_text().splitlines()]
    rewritten = [line for line in out.read_text().splitlines()]
    vir0 = [np.array(original[k + 1].split(), float) for k, s in enumerate(original) if s.startswith(" PlusStress")]
    vir1 = [np.array(rewritten[k + 1].split(), float) for k, s in enumerate(rewritten) if s.startswith(" PlusStress")]
    np.testing.assert_allclose(np.array(vir1), np.array(vir0), rtol=4e-16, atol=0)


@needs_mlip3
def test_index_selection() -> None:
    path = MLIP3_DIR / "mag_lev8_Fe.cfg"
    every = read_cfg(path)
    assert isinstance(read_cfg(path, index=0), Atoms)
    assert_same_atoms(read_cfg(path, index=-1), every[-1])
    assert_same_atoms(read_cfg(path, index="-1"), every[-1])
    assert [len(a) for a in read_cfg(path, index="1:4:2")] == [len(every[1]), len(every[3])]
    assert [len(a) for a in read_cfg(path, index=slice(None, 2))] == [len(a) for a in every[:2]]
    with pytest.raises(IndexError):
        read_cfg(path, index=len(every))
    with pytest.raises(ValueError):
        read_cfg(path, index="a:b")


# --------------------------------------------------------------------------- #
# Semantics on small hand-written files
# --------------------------------------------------------------------------- #

BASE = """\
BEGIN_CFG
 Size
    2
 Supercell
    3.0 0.0 0.0
    0.0 3.0 0.0
    0.0 0.0 3.0
 AtomData:  id type cartes_x cartes_y cartes_z fx fy fz magmom_x magmom_y magmom_z en_der_mx en_der_my en_der_mz
    1 0 0.0 0.0 0.0 0.1 0.2 0.3 2.0 0 0 0.5 0 0
    2 1 1.5 1.5 1.5 -0.1 -0.2 -0.3 -2.0 0 0 -0.5 0 0
 Energy
    -10.5
 PlusStress:  xx yy zz yz xz xy
    1 2 3 4 5 6
 Feature   EFS_by	VASP
 Feature   MV_grade	1.5
END_CFG
"""
BASE_LINES = BASE.splitlines()


def test_base_semantics(tmp_path: Path) -> None:
    atoms = read_cfg(write_text(tmp_path, BASE), species=["N", "Cr"], index=0)
    assert atoms.get_chemical_symbols() == ["N", "Cr"]
    np.testing.assert_array_equal(atoms.arrays["mlip_type"], [0, 1])
    assert atoms.arrays["mlip_type"].dtype.kind == "i"
    assert list(atoms.pbc) == [True, True, True]
    np.testing.assert_array_equal(atoms.cell.array, 3.0 * np.eye(3))
    np.testing.assert_array_equal(atoms.positions, [[0, 0, 0], [1.5, 1.5, 1.5]])
    np.testing.assert_array_equal(atoms.arrays["REF_forces"], [[0.1, 0.2, 0.3], [-0.1, -0.2, -0.3]])
    np.testing.assert_array_equal(atoms.get_initial_magnetic_moments(), [2.0, -2.0])
    np.testing.assert_array_equal(atoms.arrays["REF_magnetic_forces"], [-0.5, 0.5])
    assert atoms.info["REF_energy"] == -10.5
    np.testing.assert_array_equal(atoms.info["REF_stress"], -np.arange(1.0, 7.0) / 27.0)
    assert atoms.info["MV_grade"] == 1.5
    assert atoms.info["mlip_features"] == {"EFS_by": "VASP"}
    assert atoms.calc is None


def test_species_none_uses_dummy_element(tmp_path: Path) -> None:
    atoms = read_cfg(write_text(tmp_path, BASE), index=0)
    assert atoms.get_chemical_symbols() == ["X", "X"]
    np.testing.assert_array_equal(atoms.numbers, [0, 0])
    np.testing.assert_array_equal(atoms.arrays["mlip_type"], [0, 1])


def test_missing_labels_stay_missing(tmp_path: Path) -> None:
    text = """\
BEGIN_CFG
 Size
  1
 AtomData: id type cartes_x cartes_y cartes_z
  1 0 0.5 0.25 -1
END_CFG
"""
    atoms = read_cfg(write_text(tmp_path, text), species=["Fe"], index=0)
    assert list(atoms.pbc) == [False, False, False]
    np.testing.assert_array_equal(atoms.cell.array, np.zeros((3, 3)))
    assert sorted(atoms.arrays) == ["mlip_type", "numbers", "positions"]
    assert atoms.info == {}
    out = tmp_path / "out.cfg"
    write_cfg(out, atoms, species=["Fe"])
    written = out.read_text()
    for word in ("Supercell", "Energy", "PlusStress", "Feature", "fx", "magmom", "en_der"):
        assert word not in written


def test_direct_coordinates_and_column_order(tmp_path: Path) -> None:
    text = """\
BEGIN_CFG
 Size
  2
 Supercell
  2 0 0
  0 4 0
  1 0 8
 AtomData: type direct_z id direct_x fz direct_y fy fx site_en charge nbh_grades magmom_x
  1 0.5 1 0.25 3.0 0.5 2.0 1.0 -4.5 0.1 1.25 -1.5
  0 0 2 0 6 0 5 4 -3.5 -0.1 0.75 0.0
 PlusStress: xy xz yz zz yy xx
  6 5 4 3 2 1
END_CFG
"""
    atoms = read_cfg(write_text(tmp_path, text), index=0)
    cell = np.array([[2.0, 0, 0], [0, 4, 0], [1, 0, 8]])
    np.testing.assert_array_equal(atoms.positions, np.array([[0.25, 0.5, 0.5], [0, 0, 0]]) @ cell)
    np.testing.assert_array_equal(atoms.arrays["mlip_type"], [1, 0])
    np.testing.assert_array_equal(atoms.arrays["REF_forces"], [[1, 2, 3], [4, 5, 6]])
    np.testing.assert_array_equal(atoms.arrays["REF_energies"], [-4.5, -3.5])
    np.testing.assert_array_equal(atoms.arrays["REF_charges"], [0.1, -0.1])
    np.testing.assert_array_equal(atoms.arrays["nbh_grades"], [1.25, 0.75])
    np.testing.assert_array_equal(atoms.get_initial_magnetic_moments(), [-1.5, 0.0])
    np.testing.assert_array_equal(atoms.info["REF_stress"], -np.arange(1.0, 7.0) / 64.0)


def test_partial_periodicity(tmp_path: Path) -> None:
    text = """\
BEGIN_CFG
 Size
  1
 Supercell
  2.5 0 0
  0 3.5 0
 AtomData: id type cartes_x cartes_y cartes_z
  1 0 0 0 0
END_CFG
"""
    atoms = read_cfg(write_text(tmp_path, text), index=0)
    assert list(atoms.pbc) == [True, True, False]
    np.testing.assert_array_equal(atoms.cell.array, [[2.5, 0, 0], [0, 3.5, 0], [0, 0, 0]])
    out = tmp_path / "out.cfg"
    write_cfg(out, atoms)
    assert_same_atoms(read_cfg(out, index=0), atoms)


def test_empty_file_and_blank_lines(tmp_path: Path) -> None:
    assert read_cfg(write_text(tmp_path, "")) == []
    assert read_cfg(write_text(tmp_path, "\n  \n")) == []
    spaced = "\n\n" + BASE.replace("\n Energy", "\n\n Energy") + "\n\n" + BASE + "\n\n"
    assert len(read_cfg(write_text(tmp_path, spaced))) == 2


# --------------------------------------------------------------------------- #
# Round trips of random configurations
# --------------------------------------------------------------------------- #

# No example database or patch files: the tests must not write into the repository.
HYPOTHESIS = dict(
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
SPECIES = ["N", "Cr", "Fe"]
any_float = st.floats(allow_nan=False, allow_infinity=False, width=64)
small_float = st.floats(-1e6, 1e6, allow_nan=False)
feature_name = st.text(string.ascii_letters + string.digits + "_-@.", min_size=1, max_size=12).filter(
    lambda s: s != "MV_grade"
)
feature_value = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r"), max_size=16
).filter(lambda s: s == s.strip())


@st.composite
def configurations(draw) -> tuple[Atoms, list[str] | None]:
    n = draw(st.integers(0, 5))
    use_species = draw(st.booleans())
    ntypes = len(SPECIES) if use_species else 9
    types = np.array(draw(st.lists(st.integers(0, ntypes - 1), min_size=n, max_size=n)), dtype=np.int64)
    nper = draw(st.integers(0, 3))
    positions = draw(arrays(np.float64, (n, 3), elements=any_float))
    cell = np.zeros((3, 3))
    if nper:
        cell[:nper] = draw(arrays(np.float64, (nper, 3), elements=st.floats(-20, 20)))
        cell[:nper, :nper] += np.eye(nper) * draw(st.floats(50, 100))
    numbers = [0] * n if not use_species else [{"N": 7, "Cr": 24, "Fe": 26}[SPECIES[t]] for t in types]
    atoms = Atoms(numbers=numbers, positions=positions, cell=cell, pbc=[k < nper for k in range(3)])
    atoms.arrays["mlip_type"] = types
    if draw(st.booleans()):
        atoms.arrays["REF_forces"] = draw(arrays(np.float64, (n, 3), elements=any_float))
    if draw(st.booleans()):
        atoms.set_initial_magnetic_moments(draw(arrays(np.float64, (n,), elements=any_float)))
    if draw(st.booleans()):
        atoms.arrays["REF_magnetic_forces"] = draw(arrays(np.float64, (n,), elements=any_float))
    for name in ("REF_energies", "REF_charges", "nbh_grades"):
        if draw(st.booleans()):
            atoms.arrays[name] = draw(arrays(np.float64, (n,), elements=any_float))
    if draw(st.booleans()):
        atoms.info["REF_energy"] = draw(any_float)
    if nper == 3 and draw(st.booleans()):
        atoms.info["REF_stress"] = draw(arrays(np.float64, (6,), elements=small_float))
    if draw(st.booleans()):
        atoms.info["MV_grade"] = draw(st.floats(0, 1e300))
    features = draw(st.dictionaries(feature_name, feature_value, max_size=3))
    if features:
        atoms.info["mlip_features"] = features
    return atoms, (SPECIES if use_species else None)


@settings(max_examples=150, **HYPOTHESIS)
@given(data=st.lists(configurations(), min_size=1, max_size=4))
def test_random_round_trip(tmp_path: Path, data) -> None:
    path = tmp_path / "random.cfg"
    # Group by species mode: one file per mode, as one file has one type map.
    for mode in (True, False):
        images = [a for a, sp in data if (sp is not None) == mode]
        if not images:
            continue
        species = SPECIES if mode else None
        write_cfg(path, images, species=species)
        again = read_cfg(path, species=species)
        assert len(again) == len(images)
        for a, b in zip(images, again):
            assert_same_atoms(a, b)


def test_round_trip_keeps_stress_exact_for_awkward_volume(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    atoms = Atoms("Fe", cell=np.eye(3) * 2.8665 + rng.normal(0, 0.05, (3, 3)), pbc=True)
    images = []
    for scale in (1e-300, 1e-5, 0.1, 7.0, 1e5, 1e200):
        for _ in range(50):
            a = atoms.copy()
            a.info["REF_stress"] = rng.normal(0, scale, 6)
            images.append(a)
    write_cfg(tmp_path / "s.cfg", images, species=["Fe"])
    for a, b in zip(images, read_cfg(tmp_path / "s.cfg", species=["Fe"])):
        np.testing.assert_array_equal(b.info["REF_stress"], a.info["REF_stress"])


def test_write_is_atomic_and_keeps_old_file_on_error(tmp_path: Path) -> None:
    path = tmp_path / "keep.cfg"
    path.write_text("old contents\n")
    bad = Atoms("Fe", pbc=False)
    bad.arrays["REF_forces"] = np.array([[np.nan, 0.0, 0.0]])
    with pytest.raises(ValueError, match="NaN"):
        write_cfg(path, bad, species=["Fe"])
    assert path.read_text() == "old contents\n"
    write_cfg(path, Atoms("Fe"), species=["Fe"])
    assert read_cfg(path, species=["Fe"], index=0).get_chemical_symbols() == ["Fe"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.cfg"]


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: Atoms("Fe"), "mlip_type"),  # no species, no types
        (lambda: Atoms("Ni"), "not in species"),
        (lambda: Atoms("Fe", cell=np.eye(3), pbc=[True, False, True]), "pbc"),
        (lambda: _with(Atoms("Fe"), info={"REF_stress": np.zeros(6)}), "periodic"),
        (lambda: _with(Atoms("Fe", cell=np.zeros((3, 3)), pbc=True), info={"REF_stress": np.zeros(6)}), "degenerate"),
        (lambda: _with(Atoms("Fe"), info={"REF_energy": np.inf}), "NaN or inf"),
        (lambda: _with(Atoms("Fe"), info={"mlip_features": {"two words": "x"}}), "one word"),
        (lambda: _with(Atoms("Fe"), info={"mlip_features": {"a": "x\ny"}}), "one line"),
        (lambda: _with(Atoms("Fe"), info={"MV_grade": 1.0, "mlip_features": {"MV_grade": "1"}}), "MV_grade"),
        (lambda: _noncollinear(), "collinear"),
    ],
)
def test_write_errors(tmp_path: Path, make, match: str) -> None:
    species = None if match == "mlip_type" else ["Fe"]
    with pytest.raises(ValueError, match=match):
        write_cfg(tmp_path / "w.cfg", make(), species=species)
    assert not any(tmp_path.iterdir())


def _with(atoms: Atoms, info: dict) -> Atoms:
    atoms.info.update(info)
    return atoms


def _noncollinear() -> Atoms:
    atoms = Atoms("Fe")
    atoms.set_initial_magnetic_moments([[0.0, 0.0, 2.0]])
    return atoms


def test_bad_species_argument(tmp_path: Path) -> None:
    path = write_text(tmp_path, BASE)
    with pytest.raises(ValueError, match="chemical symbol"):
        read_cfg(path, species=["N", "Qq"])
    with pytest.raises(ValueError, match="duplicate"):
        read_cfg(path, species=["N", "N"])
    with pytest.raises(TypeError):
        read_cfg(path, species="NCr")


# --------------------------------------------------------------------------- #
# Malformed input: CfgFormatError naming file and line
# --------------------------------------------------------------------------- #


def edit(changes: dict[int, str | None] | None = None, insert: dict[int, str] | None = None, keep: int | None = None):
    """BASE with 1-based line ``k`` replaced (None deletes it), lines inserted before ``k``, cut after ``keep``."""
    lines = list(BASE_LINES)
    out = []
    for k, line in enumerate(lines, start=1):
        if insert and k in insert:
            out.append(insert[k])
        if changes and k in changes:
            if changes[k] is not None:
                out.append(changes[k])
        else:
            out.append(line)
    if keep is not None:
        out = out[:keep]
    return "\n".join(out) + "\n"


ERROR_CASES = [
    # (id, text, species, line, pattern)
    ("truncated_atoms", edit(keep=9), None, 9, "end of file.*needs 2 atom lines"),
    ("truncated_after_size", edit(keep=2), None, 2, "end of file.*Size"),
    ("missing_end_eof", edit({17: None}), None, 16, "missing END_CFG.*line 1"),
    ("missing_end_next_block", edit({17: None}) + BASE, None, 17, "BEGIN_CFG inside.*missing END_CFG"),
    ("text_after_end", edit({17: "END_CFG x"}), None, 17, "after END_CFG"),
    ("garbage_outside", "hello\n" + BASE, None, 1, "expected BEGIN_CFG"),
    ("garbage_between", BASE + "oops\n" + BASE, None, 18, "expected BEGIN_CFG"),
    ("bad_number_atom", edit({10: "    2 1 1.5x 1.5 1.5 -0.1 -0.2 -0.3 -2.0 0 0 -0.5 0 0"}), None, 10, "bad number '1.5x'.*cartes_x"),
    ("fortran_exponent", edit({9: "    1 0 0.0 0.0 0.0 1d-1 0.2 0.3 2.0 0 0 0.5 0 0"}), None, 9, "bad number '1d-1'.*'fx'"),
    ("underscore_number", edit({9: "    1 0 0.0 0.0 0.0 1_0 0.2 0.3 2.0 0 0 0.5 0 0"}), None, 9, "bad number '1_0'"),
    ("unicode_digit", edit({9: "    1 0 0.0 0.0 0.0 \uff11 0.2 0.3 2.0 0 0 0.5 0 0"}), None, 9, "bad number"),
    ("nan_atom", edit({9: "    1 0 0.0 0.0 0.0 nan 0.2 0.3 2.0 0 0 0.5 0 0"}), None, 9, "non-finite.*'fx'"),
    ("inf_atom", edit({10: "    2 1 1.5 1.5 1.5 -0.1 -0.2 -0.3 -inf 0 0 -0.5 0 0"}), None, 10, "non-finite.*magmom_x"),
    ("overflow_atom", edit({10: "    2 1 1.5 1.5 1.5 -0.1 -0.2 -0.3 -2.0 0 0 1e999 0 0"}), None, 10, "non-finite.*en_der_mx"),
    ("too_few_values", edit({9: "    1 0 0.0 0.0 0.0 0.1 0.2 0.3 2.0 0 0 0.5 0"}), None, 9, "13 values.*14 columns"),
    ("too_many_values", edit({10: "    2 1 1.5 1.5 1.5 -0.1 -0.2 -0.3 -2.0 0 0 -0.5 0 0 7"}), None, 10, "15 values"),
    ("fewer_atoms_than_size", edit({3: "    3"}), None, 11, "fewer atom lines than Size = 3"),
    ("more_atoms_than_size", edit({3: "    1"}), None, 10, "more atom lines than Size = 1"),
    ("blank_in_atoms", edit(insert={10: ""}), None, 10, "fewer atom lines.*empty line"),
    ("unknown_column", edit({8: BASE_LINES[7] + " spin"}), None, 8, "unknown AtomData column 'spin'"),
    ("duplicate_column", edit({8: BASE_LINES[7].replace(" fx", " fy")}), None, 8, "duplicate AtomData column 'fy'"),
    ("no_coordinates", edit({8: " AtomData: id type", 9: " 1 0", 10: " 2 1"}), None, 8, "cartes_x"),
    ("partial_forces", edit({8: " AtomData: id type cartes_x cartes_y cartes_z fx", 9: " 1 0 0 0 0 1", 10: " 2 1 1 1 1 1"}), None, 8, "fx fy fz"),
    ("mixed_coordinates", edit({8: " AtomData: id type cartes_x cartes_y direct_z", 9: " 1 0 0 0 0", 10: " 2 1 1 1 1"}), None, 8, "mixes"),
    ("magmom_y_without_x", edit({8: " AtomData: id type cartes_x cartes_y cartes_z magmom_y", 9: " 1 0 0 0 0 0", 10: " 2 1 1 1 1 0"}), None, 8, "magmom_y.*magmom_x"),
    ("no_id", edit({8: " AtomData: type cartes_x cartes_y cartes_z", 9: " 0 0 0 0", 10: " 1 1 1 1"}), None, 8, "'id'"),
    ("type_beyond_species", BASE, ["N"], 10, "type index 1 beyond the 1 species"),
    ("negative_type", edit({9: "    1 -1 0.0 0.0 0.0 0.1 0.2 0.3 2.0 0 0 0.5 0 0"}), None, 9, "bad type index '-1'"),
    ("fractional_type", edit({9: "    1 0.5 0.0 0.0 0.0 0.1 0.2 0.3 2.0 0 0 0.5 0 0"}), None, 9, "bad type index '0.5'"),
    ("huge_type", edit({9: "    1 1e300 0.0 0.0 0.0 0.1 0.2 0.3 2.0 0 0 0.5 0 0"}), None, 9, "bad type index"),
    ("bad_id", edit({10: "    3 1 1.5 1.5 1.5 -0.1 -0.2 -0.3 -2.0 0 0 -0.5 0 0"}), None, 10, "atom id '3', expected 2"),
    ("magmom_y_nonzero", edit({10: "    2 1 1.5 1.5 1.5 -0.1 -0.2 -0.3 -2.0 0.3 0 -0.5 0 0"}), None, 10, "nonzero magmom_y.*collinear"),
    ("en_der_mz_nonzero", edit({9: "    1 0 0.0 0.0 0.0 0.1 0.2 0.3 2.0 0 0 0.5 0 1e-3"}), None, 9, "nonzero en_der_mz"),
    ("bad_energy", edit({12: "    -10.5eV"}), None, 12, "bad number '-10.5eV' in Energy"),
    ("nan_energy", edit({12: "    NaN"}), None, 12, "non-finite.*Energy"),
    ("overflow_energy", edit({12: "    -1e400"}), None, 12, "overflows"),
    ("two_energy_values", edit({12: "    -10.5 1"}), None, 12, "Energy: expected 1 value"),
    ("duplicate_energy", edit(insert={13: " Energy\n  1.0"}), None, 13, "duplicate Energy.*line 11"),
    ("bad_supercell", edit({6: "    0.0 3.0 abc"}), None, 6, "bad number 'abc' in Supercell"),
    ("short_supercell_row", edit({6: "    0.0 3.0"}), None, 6, "3 values, found 2"),
    ("empty_supercell", edit({5: None, 6: None, 7: None}), None, 4, "Supercell without lattice vectors"),
    ("four_supercell_rows", edit(insert={8: "    1 1 1"}), None, 8, "unexpected line of numbers"),
    ("stress_without_cell", edit({4: None, 5: None, 6: None, 7: None}), None, 9, "PlusStress in a configuration that is not periodic"),
    ("stress_partial_cell", edit({7: None}), None, 12, "PlusStress.*not periodic"),
    ("stress_degenerate", edit({7: "    0.0 3.0 0.0"}), None, 13, "degenerate"),
    ("stress_five_values", edit({14: "    1 2 3 4 5"}), None, 14, "PlusStress: expected 6"),
    ("stress_bad_value", edit({14: "    1 2 3 4 5 x"}), None, 14, "bad number 'x' in PlusStress xy"),
    ("stress_bad_labels", edit({13: " PlusStress:  xx yy zz yz xz yx"}), None, 13, "permutation"),
    ("unknown_keyword", edit(insert={11: " Stress"}), None, 11, "unknown keyword 'Stress'"),
    ("mv_grade_text", edit({16: " Feature   MV_grade\thigh"}), None, 16, "bad number 'high' in Feature MV_grade"),
    ("feature_no_name", edit({15: " Feature"}), None, 15, "Feature without a name"),
    ("duplicate_feature", edit(insert={16: " Feature EFS_by other"}), None, 16, "duplicate Feature 'EFS_by'"),
    ("size_not_int", edit({3: "    2.0"}), None, 3, "bad integer '2.0' in Size"),
    ("size_negative", edit({3: "    -2"}), None, 3, "negative Size"),
    ("size_two_values", edit({3: "    2 3"}), None, 3, "Size: expected 1 value"),
    ("no_size", edit({2: None, 3: None}), None, 6, "AtomData before Size"),
    ("no_size_no_atoms", "BEGIN_CFG\n Energy\n 1.0\nEND_CFG\n", None, 1, "without Size"),
    ("no_atomdata", edit({8: None, 9: None, 10: None}), None, 1, "Size 2 without AtomData"),
    ("duplicate_atomdata", edit(insert={11: BASE_LINES[7] + "\n" + BASE_LINES[8] + "\n" + BASE_LINES[9]}), None, 11, "duplicate AtomData"),
    ("direct_without_cell", "BEGIN_CFG\n Size\n 1\n AtomData: id type direct_x direct_y direct_z\n 1 0 0 0 0\nEND_CFG\n", None, 4, "fractional"),
    ("error_in_second_block", BASE + edit({12: "    x"}), None, 17 + 12, "bad number 'x' in Energy"),
]


@pytest.mark.parametrize("text, species, line, pattern", [c[1:] for c in ERROR_CASES], ids=[c[0] for c in ERROR_CASES])
def test_format_errors(tmp_path: Path, text: str, species, line: int, pattern: str) -> None:
    path = write_text(tmp_path, text, name="broken.cfg")
    with pytest.raises(CfgFormatError, match=pattern) as info:
        read_cfg(path, species=species)
    err = info.value
    assert isinstance(err, ValueError)
    assert err.lineno == line, str(err)
    assert str(err).startswith(f"{path}, line {line}: ")


def test_error_pickles(tmp_path: Path) -> None:
    import pickle

    with pytest.raises(CfgFormatError) as info:
        read_cfg(write_text(tmp_path, "junk\n"))
    copy = pickle.loads(pickle.dumps(info.value))
    assert (copy.path, copy.lineno, str(copy)) == (info.value.path, 1, str(info.value))


def test_invalid_utf8_names_line(tmp_path: Path) -> None:
    path = tmp_path / "bytes.cfg"
    path.write_bytes(BASE.encode().replace(b"VASP", b"VA\xffSP"))
    with pytest.raises(CfgFormatError, match="UTF-8") as info:
        read_cfg(path)
    assert info.value.lineno == 15


MUTATIONS = st.sampled_from(["delete", "duplicate", "token", "truncate", "swap"])


@settings(max_examples=300, **HYPOTHESIS)
@given(
    kind=MUTATIONS,
    where=st.integers(0, 10_000),
    junk=st.sampled_from(["x", "", "1e999", "nan", "-", "1.0.0", "END_CFG", "BEGIN_CFG", "Size", "0x1", "2", "-1"]),
)
def test_mutated_files_raise_only_cfg_format_error(tmp_path: Path, kind: str, where: int, junk: str) -> None:
    lines = (BASE + BASE).splitlines()
    k = where % len(lines)
    if kind == "delete":
        del lines[k]
    elif kind == "duplicate":
        lines.insert(k, lines[k])
    elif kind == "swap":
        j = (k + 1) % len(lines)
        lines[k], lines[j] = lines[j], lines[k]
    elif kind == "token":
        tokens = lines[k].split() or [""]
        tokens[where % len(tokens)] = junk
        lines[k] = " " + " ".join(tokens)
    text = "\n".join(lines) + "\n"
    if kind == "truncate":
        text = text[: where % len(text)]
    path = write_text(tmp_path, text, name="mutated.cfg")
    try:
        images = read_cfg(path, species=["N", "Cr"])
    except CfgFormatError as err:
        assert err.lineno is not None and 1 <= err.lineno <= max(1, text.count("\n") + 1)
        assert str(path) in str(err)
    else:
        assert all(isinstance(a, Atoms) for a in images)


# --------------------------------------------------------------------------- #
# Speed: a CrN-sized training set
# --------------------------------------------------------------------------- #


def make_large_cfg(path: Path, nconf: int = 2423, natoms: int = 64, seed: int = 0) -> dict[str, np.ndarray]:
    """Write a set like the public CrN one (all 14 columns) and return its data."""
    rng = np.random.default_rng(seed)
    cells = 8.3 * np.eye(3) + rng.normal(0, 0.05, (nconf, 3, 3))
    types = rng.integers(0, 2, (nconf, natoms))
    pos = rng.uniform(0, 8.3, (nconf, natoms, 3))
    forces = rng.normal(0, 1, (nconf, natoms, 3))
    mag = rng.normal(0, 1.5, (nconf, natoms))
    ender = rng.normal(0, 0.5, (nconf, natoms))
    energy = rng.normal(-400, 5, nconf)
    virial = rng.normal(0, 20, (nconf, 6))
    header = " AtomData:  id type cartes_x cartes_y cartes_z fx fy fz magmom_x magmom_y magmom_z en_der_mx en_der_my en_der_mz"
    row = "%7d %4d" + " %.17g" * 6 + " %.17g 0 0 %.17g 0 0"
    parts = []
    ids = np.arange(1, natoms + 1)
    for c in range(nconf):
        parts.append(f"BEGIN_CFG\n Size\n    {natoms}\n Supercell\n")
        parts.append("".join("    %.17g %.17g %.17g\n" % tuple(r) for r in cells[c]))
        parts.append(header + "\n")
        table = np.column_stack([ids, types[c], pos[c], forces[c], mag[c], ender[c]])
        parts.append("\n".join(row % tuple(r) for r in table.tolist()) + "\n")
        parts.append(" Energy\n    %.17g\n" % energy[c])
        parts.append(" PlusStress:  xx yy zz yz xz xy\n    " + " ".join("%.17g" % v for v in virial[c]) + "\n")
        parts.append(" Feature   EFS_by\tVASP\nEND_CFG\n\n")
    path.write_text("".join(parts))
    return dict(cells=cells, types=types, pos=pos, forces=forces, mag=mag, ender=ender, energy=energy, virial=virial)


def test_large_file_speed(tmp_path: Path) -> None:
    path = tmp_path / "large.cfg"
    ref = make_large_cfg(path)
    t0 = time.perf_counter()
    images = read_cfg(path, species=["N", "Cr"])
    elapsed = time.perf_counter() - t0
    print(f"\nread_cfg: {len(images)} configurations x 64 atoms in {elapsed:.2f} s")
    assert len(images) == 2423
    assert elapsed < 15.0, f"read_cfg took {elapsed:.1f} s"
    for c in (0, 1000, 2422):
        a = images[c]
        np.testing.assert_array_equal(a.cell.array, ref["cells"][c])
        np.testing.assert_array_equal(a.arrays["mlip_type"], ref["types"][c])
        np.testing.assert_array_equal(a.positions, ref["pos"][c])
        np.testing.assert_array_equal(a.arrays["REF_forces"], ref["forces"][c])
        np.testing.assert_array_equal(a.get_initial_magnetic_moments(), ref["mag"][c])
        np.testing.assert_array_equal(a.arrays["REF_magnetic_forces"], -ref["ender"][c])
        assert a.info["REF_energy"] == ref["energy"][c]
        expected = -(ref["virial"][c] / cell_volume(ref["cells"][c]))
        np.testing.assert_allclose(a.info["REF_stress"], expected, rtol=3e-16, atol=0)

    out = tmp_path / "large_copy.cfg"
    t0 = time.perf_counter()
    write_cfg(out, images, species=["N", "Cr"])
    elapsed = time.perf_counter() - t0
    print(f"write_cfg: {len(images)} configurations in {elapsed:.2f} s")
    assert elapsed < 30.0
    again = read_cfg(out, species=["N", "Cr"], index="::500")
    for a, b in zip(images[::500], again):
        assert_same_atoms(a, b)
