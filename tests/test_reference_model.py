"""The embedded Heisenberg-Landau reference model: derivatives and physics.

Derivatives are checked by central finite differences of the energy; the
presets by the physical properties stated in docs/reference_model.md.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize_scalar

from mmtp_rs.oracles import ReferenceCalculator, ReferenceModel

EV_A3_TO_GPA = 160.21766208


# ------------------------------------------------------------------ structures
def crn(a=4.15, rep=1, order="AFM", m=2.5, seed=0):
    """Rock-salt CrN (conventional cell); AFM = alternating (001) Cr layers."""
    at = bulk("CrN", "rocksalt", a=a, cubic=True).repeat(rep)
    z = at.positions[:, 2]
    sign = {"FM": np.ones(len(at)),
            "AFM": (-1.0) ** np.rint(2 * z / a),
            "PM": np.random.default_rng(seed).choice([-1.0, 1.0], len(at))}[order]
    at.set_initial_magnetic_moments(np.where(at.numbers == 24, m * sign, 0.0))
    return at


def fe(a=2.83, rep=1, order="FM", m=2.2):
    at = bulk("Fe", "bcc", a=a, cubic=True).repeat(rep)
    sign = np.ones(len(at)) if order == "FM" else (-1.0) ** np.rint(2 * at.positions.sum(1) / a)
    at.set_initial_magnetic_moments(m * sign)
    return at


def feal(a=2.88, rep=1, m=0.7):
    at = Atoms("FeAl", scaled_positions=[[0, 0, 0], [0.5, 0.5, 0.5]], cell=np.eye(3) * a,
               pbc=True).repeat(rep)
    at.set_initial_magnetic_moments(np.where(at.numbers == 26, m, 0.0))
    return at


def perturbed(atoms, seed=1, moments_sd=1.5):
    rng = np.random.default_rng(seed)
    at = atoms.copy()
    at.rattle(0.08, seed=seed)
    at.set_cell(at.cell.array @ (np.eye(3) + 0.02 * rng.standard_normal((3, 3))), scale_atoms=True)
    at.set_initial_magnetic_moments(at.get_initial_magnetic_moments()
                                    + moments_sd * rng.standard_normal(len(at)))
    return at


CASES = {
    "CrN": lambda: perturbed(crn(order="PM")),
    "Fe": lambda: perturbed(fe(rep=2)),
    "FeAl": lambda: perturbed(feal(rep=2)),
}


# ---------------------------------------------------------------- derivatives
@pytest.mark.parametrize("name", sorted(CASES))
def test_forces_magnetic_forces_and_stress_match_finite_differences(name):
    model = ReferenceModel.preset(name)
    at = CASES[name]()
    out = model.evaluate(at)
    m0 = at.get_initial_magnetic_moments()
    h = 1e-5

    def energy(a, m=None):
        return model.evaluate(a, m)["energy"]

    f_fd = np.zeros((len(at), 3))
    for i in range(len(at)):
        for c in range(3):
            e = []
            for s in (1, -1):
                b = at.copy()
                b.positions[i, c] += s * h
                e.append(energy(b))
            f_fd[i, c] = -(e[0] - e[1]) / (2 * h)
    np.testing.assert_allclose(out["forces"], f_fd, atol=1e-6)

    t_fd = np.zeros(len(at))
    for i in range(len(at)):
        e = []
        for s in (1, -1):
            m = m0.copy()
            m[i] += s * h
            e.append(energy(at, m))
        t_fd[i] = -(e[0] - e[1]) / (2 * h)
    np.testing.assert_allclose(out["magnetic_forces"], t_fd, atol=1e-6)

    cell = at.cell.array.copy()
    sig = np.zeros((3, 3))
    for p in range(3):
        for q in range(3):
            e = []
            for s in (1, -1):
                eps = np.zeros((3, 3))
                eps[p, q] = eps[q, p] = s * h / 2 if p != q else s * h
                b = at.copy()
                b.set_cell(cell @ (np.eye(3) + eps), scale_atoms=True)
                e.append(energy(b))
            sig[p, q] = (e[0] - e[1]) / (2 * h) / at.get_volume()
    voigt = [sig[0, 0], sig[1, 1], sig[2, 2], sig[1, 2], sig[0, 2], sig[0, 1]]
    np.testing.assert_allclose(out["stress"], voigt, atol=1e-7)
    assert np.isclose(out["energies"].sum(), out["energy"])
    assert np.abs(out["forces"].sum(0)).max() < 1e-10  # Newton's third law


@settings(max_examples=15, deadline=None)
@given(shift=st.lists(st.floats(-5, 5), min_size=3, max_size=3),
       seed=st.integers(0, 10_000))
def test_invariances(shift, seed):
    model = ReferenceModel.preset("CrN")
    at = perturbed(crn(order="PM", seed=seed), seed=seed)
    ref = model.evaluate(at)
    moved = at.copy()
    moved.positions += shift  # translation (and wrapping through the cell)
    assert model.evaluate(moved)["energy"] == pytest.approx(ref["energy"], abs=1e-9)
    flipped = model.evaluate(at, -at.get_initial_magnetic_moments())  # spin inversion
    assert flipped["energy"] == pytest.approx(ref["energy"], abs=1e-9)
    np.testing.assert_allclose(flipped["magnetic_forces"], -ref["magnetic_forces"], atol=1e-10)
    np.testing.assert_allclose(flipped["forces"], ref["forces"], atol=1e-10)
    perm = np.random.default_rng(seed).permutation(len(at))
    shuffled = model.evaluate(at[perm])
    np.testing.assert_allclose(shuffled["forces"], ref["forces"][perm], atol=1e-10)


def test_big_cell_uses_ase_neighbour_list_consistently():
    model = ReferenceModel.preset("Fe")
    small = perturbed(fe(rep=2))
    big = small.repeat((5, 5, 4))  # 800 atoms: ASE neighbour list branch
    e_small = model.evaluate(small)["energy"]
    assert model.evaluate(big)["energy"] == pytest.approx(100 * e_small, rel=1e-10)


def test_calculator_and_relaxed_moments():
    at = crn(order="AFM", m=1.0)
    at.calc = ReferenceCalculator("CrN")
    e = at.get_potential_energy()
    assert at.calc.get_property("magnetic_forces").shape == (8,)
    assert at.get_stress().shape == (6,)
    relaxed = crn(order="AFM", m=1.0)
    relaxed.calc = ReferenceCalculator("CrN", relax_moments=True)
    e_relaxed = relaxed.get_potential_energy()
    assert e_relaxed < e
    assert np.abs(relaxed.calc.get_property("magnetic_forces")).max() < 1e-8
    m = relaxed.calc.get_property("magmoms")
    assert np.all(np.sign(m[::2]) == np.sign(at.get_initial_magnetic_moments()[::2]))


def test_speed_64_atoms():
    model = ReferenceModel.preset("CrN")
    at = perturbed(crn(rep=2, order="PM"))
    model.evaluate(at)
    t = time.perf_counter()
    for _ in range(20):
        model.evaluate(at)
    assert (time.perf_counter() - t) / 20 < 0.05  # a few ms in practice


def test_bad_input_is_named():
    model = ReferenceModel.preset("CrN")
    at = crn()
    at.symbols[3] = "Fe"
    with pytest.raises(ValueError, match=r"element 'Fe' \(atom 3\)"):
        model.evaluate(at)
    with pytest.raises(ValueError, match=r"shape \(8,\)"):
        model.evaluate(crn(), np.zeros(3))
    m = crn().get_initial_magnetic_moments()
    m[2] = np.nan
    with pytest.raises(ValueError, match="moment of atom 2"):
        model.evaluate(crn(), m)
    close = crn()
    close.positions[1] = close.positions[0] + 0.1
    with pytest.raises(ValueError, match="too close"):
        model.evaluate(close)
    with pytest.raises(ValueError, match="unknown reference-model preset"):
        ReferenceModel.preset("Unobtainium")
    with pytest.raises(ValueError, match="B must be > 0"):
        ReferenceModel(["Fe"], 3.0, 0.5, {"Fe": {"A0": -1, "A1": 0, "B": 0}}, {})


def test_json_round_trip(tmp_path):
    model = ReferenceModel.preset("FeAl")
    model.to_json(tmp_path / "m.json")
    again = ReferenceModel.from_json(tmp_path / "m.json")
    at = perturbed(feal(rep=2))
    assert again.evaluate(at)["energy"] == model.evaluate(at)["energy"]


# -------------------------------------------------------------------- physics
def relaxed(model, at):
    at = at.copy()
    at.set_initial_magnetic_moments(model.relax_moments(at))
    return at, model.evaluate(at)


def lattice_constant(model, builder, lo, hi):
    """Minimum of E(a) with moments relaxed at every a."""
    grid = np.linspace(lo, hi, 9)
    e = [relaxed(model, builder(a))[1]["energy"] for a in grid]
    k = int(np.argmin(e))
    assert 0 < k < len(grid) - 1, "E(V) minimum outside the scanned range"
    res = minimize_scalar(lambda a: relaxed(model, builder(a))[1]["energy"],
                          bracket=(grid[k - 1], grid[k], grid[k + 1]), tol=1e-8)
    return res.x


def cubic_elastic_constants(model, at, eps=1e-3):
    """C11, C12, C44 (GPa) from stresses at ± finite strains, moments relaxed."""
    cell = at.cell.array.copy()
    cols = []
    for p, q in [(0, 0), (1, 2)]:
        sig = []
        for s in (1, -1):
            e = np.zeros((3, 3))
            e[p, q] = e[q, p] = s * eps if p == q else s * eps / 2
            b = at.copy()
            b.set_cell(cell @ (np.eye(3) + e), scale_atoms=True)
            sig.append(relaxed(model, b)[1]["stress"])
        cols.append((sig[0] - sig[1]) / (2 * eps) * EV_A3_TO_GPA)
    return cols[0][0], cols[0][1], cols[1][3]


def phonon_eigenvalues(model, at, h=1e-3):
    """Eigenvalues (eV/Å²/amu) of the mass-weighted finite-displacement
    force-constant matrix of a supercell at fixed moments: the squared
    frequencies at Γ and at every zone-boundary q commensurate with it."""
    n = len(at)
    k = np.zeros((3 * n, 3 * n))
    for i in range(n):
        for c in range(3):
            f = []
            for s in (1, -1):
                b = at.copy()
                b.positions[i, c] += s * h
                f.append(model.evaluate(b)["forces"].ravel())
            k[3 * i + c] = -(f[0] - f[1]) / (2 * h)
    assert np.abs(k - k.T).max() < 1e-5
    w = 1 / np.sqrt(np.repeat(at.get_masses(), 3))
    return np.linalg.eigvalsh(0.5 * (k + k.T) * np.outer(w, w))


def assert_born_stable(c11, c12, c44):
    assert c11 - c12 > 10 and c11 + 2 * c12 > 10 and c44 > 10, (c11, c12, c44)


def assert_real_phonons(eig):
    assert np.sum(np.abs(eig) < 1e-6) == 3  # the three translations only
    assert eig.min() > -1e-6
    assert np.sort(eig)[3] > 1e-2  # lowest optical/acoustic zone-boundary mode ≳ 3 THz


def test_crn_preset_physics():
    model = ReferenceModel.preset("CrN")
    a0 = lattice_constant(model, lambda a: crn(a, order="AFM"), 3.95, 4.35)
    assert 4.10 <= a0 <= 4.20
    e = {o: relaxed(model, crn(a0, rep=2, order=o))[1]["energy"] / 32 for o in ("FM", "AFM", "PM")}
    assert e["AFM"] < e["PM"] < e["FM"]  # per Cr
    assert 0.02 < e["FM"] - e["AFM"] < 0.2
    at, _ = relaxed(model, crn(a0, order="AFM"))
    m = at.get_initial_magnetic_moments()
    assert np.all((np.abs(m[at.numbers == 24]) > 2.0) & (np.abs(m[at.numbers == 24]) < 3.0))
    assert np.abs(m[at.numbers == 7]).max() < 0.1
    # the relaxed moments are a minimum: nudging them raises the energy
    e0 = model.evaluate(at)["energy"]
    for dm in (0.05, -0.05):
        assert model.evaluate(at, m + dm * np.sign(m))["energy"] > e0
    c11, c12, c44 = cubic_elastic_constants(model, at)
    assert_born_stable(c11, c12, c44)
    assert 150 < (c11 + 2 * c12) / 3 < 350  # bulk modulus, GPa


@pytest.mark.parametrize("order", ["FM", "AFM", "PM"])
def test_crn_phonons_are_real(order):
    model = ReferenceModel.preset("CrN")
    at, _ = relaxed(model, crn(4.15, rep=2, order=order, seed=3))  # 64 atoms: Γ, X, L, W
    assert_real_phonons(phonon_eigenvalues(model, at))


def test_fe_preset_physics():
    model = ReferenceModel.preset("Fe")
    a0 = lattice_constant(model, lambda a: fe(a), 2.7, 2.95)
    assert 2.80 <= a0 <= 2.87
    at, out = relaxed(model, fe(a0))
    m = at.get_initial_magnetic_moments()
    assert np.all((m > 2.0) & (m < 2.4))
    _, afm = relaxed(model, fe(a0, order="AFM"))
    assert afm["energy"] > out["energy"]  # ferromagnetic ground state
    assert_born_stable(*cubic_elastic_constants(model, at))
    sc, _ = relaxed(model, fe(a0, rep=2))  # 16 atoms: Γ, H, N, P
    assert_real_phonons(phonon_eigenvalues(model, sc))


def test_feal_preset_physics():
    model = ReferenceModel.preset("FeAl")
    a0 = lattice_constant(model, lambda a: feal(a), 2.75, 3.0)
    assert 2.85 <= a0 <= 2.92
    at, _ = relaxed(model, feal(a0))
    m = at.get_initial_magnetic_moments()
    assert 0.4 < m[0] < 1.0 and abs(m[1]) < 0.05
    assert_born_stable(*cubic_elastic_constants(model, at))
    sc, _ = relaxed(model, feal(a0, rep=2))  # 16 atoms: Γ, X, M, R
    assert_real_phonons(phonon_eigenvalues(model, sc))
