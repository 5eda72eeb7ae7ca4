"""Mutation fuzzing of the readers (.mtp, JSON potential, .cfg) and targeted hardening checks.

Each format gets N_CASES seeded mutations of a valid file (number replacement
with huge/negative/NaN/inf/non-integer values, byte flips, line deletions and
duplications, truncation, non-UTF-8 bytes), run in batches in subprocesses
(``fuzz_worker.py``) so that an abort or a hang is caught and named: only the
package's exceptions may escape, and a file that loads must evaluate to
finite results or raise.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms

import mmtp_rs
from mmtp_rs import CfgFormatError, MMTPError, MtpFormatError, Potential

HERE = Path(__file__).resolve().parent
WORKER = HERE / "fuzz_worker.py"
N_CASES = 2400  # per format
BATCH = 400  # cases per subprocess
BATCH_TIMEOUT = 60  # s


def _run_batch(fmt: str, first: int, workdir: Path) -> dict:
    env = dict(os.environ, MMTP_NUM_THREADS="1")
    cmd = [sys.executable, str(WORKER), fmt, str(first), str(BATCH), str(workdir / f"{fmt}{first}")]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=BATCH_TIMEOUT, env=env)
    except subprocess.TimeoutExpired as exc:
        err = (exc.stderr or b"").decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        last = err.strip().splitlines()[-1:] or ["before the first case"]
        return {"fmt": fmt, "first": first, "crash": f"hang: batch exceeded {BATCH_TIMEOUT} s at {last[0]}"}
    if p.returncode != 0:
        cases = [ln for ln in p.stderr.splitlines() if ln.startswith("case ")]
        return {"fmt": fmt, "first": first,
                "crash": f"exit code {p.returncode} at {cases[-1] if cases else 'start'}: {p.stderr[-1500:]}"}
    out = json.loads(p.stdout.strip().splitlines()[-1])
    out.update(fmt=fmt, first=first)
    return out


@pytest.mark.parametrize("fmt", ["mtp", "json", "cfg"])
def test_mutated_files_raise_only_package_errors(fmt, tmp_path):
    batches = range(0, N_CASES, BATCH)
    with ThreadPoolExecutor(max_workers=2) as ex:
        results = list(ex.map(lambda first: _run_batch(fmt, first, tmp_path), batches))
    crashes = [r["crash"] for r in results if "crash" in r]
    assert not crashes, f"{fmt}: replay with `python tests/fuzz_worker.py {fmt} CASE 1 DIR`: {crashes}"
    bad = [b for r in results for b in r["bad"]]
    assert not bad, f"{fmt}: {len(bad)} cases misbehave, first: {bad[:5]}"
    cases = sum(r["cases"] for r in results)
    loaded = sum(r["loaded"] for r in results)
    assert cases == N_CASES
    assert 0.02 * cases < loaded < 0.5 * cases, f"{fmt}: {loaded} of {cases} mutated files loaded"


# ---------------------------------------------------------------- targeted cases
DATA = HERE / "data" / "mlip3"
FE = (DATA / "mag_lev8_Fe.mtp").read_text()
FE_CFG = (DATA / "mag_lev8_Fe.cfg").read_text()


def _replace_value(text: str, key: str, value: str) -> str:
    lines = text.split("\n")
    k = next(i for i, ln in enumerate(lines) if ln.strip().startswith(f"{key} ="))
    indent = lines[k][: len(lines[k]) - len(lines[k].lstrip())]
    lines[k] = f"{indent}{key} = {value}"
    return "\n".join(lines)


@pytest.mark.parametrize("key,value,match", [
    ("alpha_moments_count", "9223372036854775808", "alpha_moments_count"),
    ("alpha_moments_count", "1000000000", "alpha_moments_count"),
    ("max_dist", "200", "max_dist"),
    ("max_dist", "1e6", "max_dist"),
    ("scaling", "", "scaling"),
    ("scaling", "1e308", "scaling"),
    ("species_count", "1.5", "species_count"),
    ("version", "2.0", "version"),
    ("radial_basis_size", "-3", "radial_basis_size"),
])
def test_mtp_bad_values_name_key_and_line(tmp_path, key, value, match):
    path = tmp_path / "bad.mtp"
    path.write_text(_replace_value(FE, key, value))
    with pytest.raises(MtpFormatError, match=match) as info:
        Potential.from_file(path)
    assert "line" in str(info.value) and str(path) in str(info.value)


@pytest.mark.parametrize("key", ["min_val", "max_val", "basis_size", "version", "alpha_index_times"])
def test_mtp_required_keys(tmp_path, key):
    path = tmp_path / "missing.mtp"
    path.write_text("\n".join(ln for ln in FE.split("\n") if not ln.strip().startswith(f"{key} =")))
    with pytest.raises(MtpFormatError, match=key):
        Potential.from_file(path)


def test_mtp_huge_radial_coefficient(tmp_path):
    lines = FE.split("\n")
    k = next(i for i, ln in enumerate(lines) if ln.strip().startswith("{"))
    lines[k] = lines[k].replace("{", "{1e308, ", 1).replace(", ", ", ", 1)
    first = lines[k].split(",")
    lines[k] = first[0] + "," + ",".join(first[2:])  # keep the count: replace the first number
    path = tmp_path / "huge.mtp"
    path.write_text("\n".join(lines))
    with pytest.raises(MtpFormatError, match=r"radial_coeffs 0-0.*1e\+?308"):
        Potential.from_file(path)


@pytest.fixture()
def json_potential(tmp_path):
    pot = Potential.new(["Fe", "Al"], level=6, radial_basis_size=4, magnetic_basis_size=2, seed=3)
    path = tmp_path / "pot.json"
    pot.save(path)
    return path, json.loads(path.read_text())


@pytest.mark.parametrize("edit,match", [
    (lambda d: d["basis"]["basic"][0].__setitem__(1, 1.5), "basis.basic"),
    (lambda d: d["basis"]["basic"][0].__setitem__(1, True), "basis.basic"),
    (lambda d: d.__setitem__("version", 7), "version"),
    (lambda d: d.__setitem__("level", 10), "level 10"),
    (lambda d: d.__setitem__("level", 1000), "level"),
    (lambda d: d.__setitem__("radial_basis_size", True), "radial_basis_size"),
    (lambda d: d["basis"].__setitem__("n_moments", 10**30), "n_moments"),
    (lambda d: d.__setitem__("max_dist", 200.0), "max_dist"),
    (lambda d: d["radial_coeffs"].__setitem__(3, 1e308), r"radial_coeffs\[3\]"),
    (lambda d: d.pop("magnetic_intervals"), "magnetic_intervals"),
    (lambda d: d.__setitem__("species", "FeAl"), "species"),
])
def test_json_bad_entries(json_potential, edit, match):
    path, doc = json_potential
    edit(doc)
    path.write_text(json.dumps(doc))
    with pytest.raises(MtpFormatError, match=match):
        Potential.from_file(path)


@pytest.mark.parametrize("row,value,match", [
    ("Supercell", "-1e308", "lattice vector 0"),
    ("atom", "6.7e98", "magnetic moment of atom 0"),
    ("atom", "1e100", "position of atom 0"),
])
def test_cfg_extreme_values_read_but_do_not_evaluate(tmp_path, fe_potential, row, value, match):
    """The .cfg reader keeps any finite number (files round-trip); evaluation refuses absurd ones."""
    lines = FE_CFG.split("\n")
    if row == "Supercell":
        k = lines.index(next(ln for ln in lines if ln.strip() == "Supercell")) + 1
        parts = lines[k].split()
        lines[k] = " ".join([value] + parts[1:])
    else:
        h = next(i for i, ln in enumerate(lines) if ln.strip().startswith("AtomData"))
        cols = lines[h].split()[1:]
        parts = lines[h + 1].split()
        parts[cols.index("magmom_x" if "magnetic" in match else "cartes_x")] = value
        lines[h + 1] = " ".join(parts)
    path = tmp_path / "bad.cfg"
    path.write_text("\n".join(lines))
    try:
        atoms = mmtp_rs.read_cfg(path, species=["Fe"], index=0)
    except CfgFormatError as exc:  # PlusStress with an overflowing volume
        assert "Supercell" in str(exc) and str(path) in str(exc)
        return
    with pytest.raises(MMTPError, match=match):
        fe_potential.evaluate(atoms)


@pytest.fixture(scope="module")
def fe_potential():
    return Potential.from_file(DATA / "mag_lev8_Fe.mtp", species=["Fe"])


def _fe2(edge=2.87, moments=(2.0, -2.0)):
    a = Atoms("Fe2", scaled_positions=[[0, 0, 0], [0.5, 0.5, 0.5]], cell=np.eye(3) * edge, pbc=True)
    a.set_initial_magnetic_moments(list(moments))
    return a


def test_absurd_moment_is_an_error_but_outside_interval_is_evaluated(fe_potential):
    with pytest.raises(MMTPError, match="atom 1"):
        fe_potential.evaluate(_fe2(moments=(2.0, 1e100)))
    out = fe_potential.evaluate(_fe2(moments=(2.0, 5.0)))  # outside [-2.7, 2.9]: extrapolated and counted
    assert out["n_moments_outside"] >= 1 and np.isfinite(out["energy"])


@pytest.mark.parametrize("edge", [0.01, 0.03, 1e-100])
def test_tiny_cell_is_refused_before_allocating(fe_potential, edge):
    a = Atoms("Fe", positions=[[0, 0, 0]], cell=np.eye(3) * edge, pbc=True)
    with pytest.raises(MMTPError, match="pairs"):
        fe_potential.evaluate(a)


def test_far_coordinates_are_an_error(fe_potential):
    a = _fe2()
    a.positions[1] = [1e100, 0, 0]
    with pytest.raises(MMTPError, match="position of atom 1"):
        fe_potential.evaluate(a)


def test_overflow_raises_instead_of_nan():
    # parameters and moments within every limit whose polynomials still overflow a double
    pot = Potential.new(["Fe"], level=8, radial_basis_size=4, magnetic_basis_size=4, seed=1, scaling=1e30)
    pot.params = np.full(pot.n_params, 1e29)
    with pytest.raises(MMTPError, match="not finite"):
        pot.evaluate(_fe2(moments=(290.0, -290.0)))
    with pytest.raises(MMTPError, match="not finite"):
        pot.evaluate_many([_fe2(moments=(290.0, -290.0))])
