"""Physics checks of the mMTP: every derivative against central finite
differences, every symmetry, basis counts, files and bad input."""

import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mmtp_rs
from mmtp_rs import MMTPCalculator, MMTPError, Potential
from mmtp_rs.io.mtpfile import MtpFormatError

SYMBOLS = ["Fe", "Al", "Cr"]
FAST = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def random_potential(n_species, level, seed, n_psi=3):
    pot = Potential.new(SYMBOLS[:n_species], level=level, radial_basis_size=5, magnetic_basis_size=n_psi,
                        min_dist=1.6, max_dist=4.4,
                        max_moment={s: 2.0 + 0.4 * k for k, s in enumerate(SYMBOLS[:n_species])}, seed=seed)
    rng = np.random.default_rng(seed + 1)
    p = pot.params
    p[pot.param_blocks["moment"]] = rng.normal(size=pot.n_basis)
    p[pot.param_blocks["species"]] = rng.normal(size=n_species)
    pot.params = p
    return pot


def random_atoms(n_species, seed, n=5, pbc=(True, True, True)):
    rng = np.random.default_rng(seed)
    cell = np.diag(rng.uniform(3.4, 4.2, 3)) + rng.uniform(-0.4, 0.4, (3, 3))
    grid = np.array([[i % 2, (i // 2) % 2, i // 4] for i in range(n)], float)
    frac = (grid + 0.5) / np.array([2, 2, max(1, (n + 3) // 4)]) + rng.uniform(-0.06, 0.06, (n, 3))
    a = Atoms(symbols=[SYMBOLS[k] for k in rng.integers(0, n_species, n)], scaled_positions=frac, cell=cell, pbc=pbc)
    a.set_initial_magnetic_moments(rng.uniform(-2.2, 2.2, n))
    return a


def energy(pot, atoms, sym, moments=None):
    return pot.evaluate(atoms, symmetrize=sym, param_grad=False, forces=False, moments=moments)["energy"]


def close(a, b, rtol=1e-6, atol=1e-7):
    np.testing.assert_allclose(a, b, rtol=rtol, atol=atol * max(1.0, np.max(np.abs(b))))


@FAST
@given(n_species=st.integers(1, 3), level=st.sampled_from([4, 6, 8, 10]), sym=st.booleans(),
       seed=st.integers(0, 10_000), pbc=st.sampled_from([(True,) * 3, (True, False, True), (False,) * 3]))
def test_forces_and_magnetic_forces_match_finite_differences(n_species, level, sym, seed, pbc):
    pot = random_potential(n_species, level, seed)
    atoms = random_atoms(n_species, seed, n=5, pbc=pbc)
    out = pot.evaluate(atoms, symmetrize=sym)
    h = 1e-5
    fd = np.zeros((len(atoms), 3))
    for i in range(len(atoms)):
        for k in range(3):
            ap, am = atoms.copy(), atoms.copy()
            ap.positions[i, k] += h
            am.positions[i, k] -= h
            fd[i, k] = -(energy(pot, ap, sym) - energy(pot, am, sym)) / (2 * h)
    close(out["forces"], fd)
    m = atoms.get_initial_magnetic_moments()
    fdm = np.zeros(len(atoms))
    for i in range(len(atoms)):
        mp_, mm_ = m.copy(), m.copy()
        mp_[i] += h
        mm_[i] -= h
        fdm[i] = -(energy(pot, atoms, sym, mp_) - energy(pot, atoms, sym, mm_)) / (2 * h)
    close(out["magnetic_forces"], fdm)
    assert np.isclose(out["energies"].sum(), out["energy"], rtol=1e-12, atol=1e-12)


@FAST
@given(n_species=st.integers(1, 3), level=st.sampled_from([6, 8, 10]), sym=st.booleans(), seed=st.integers(0, 10_000))
def test_stress_matches_strain_derivative(n_species, level, sym, seed):
    pot = random_potential(n_species, level, seed)
    atoms = random_atoms(n_species, seed)
    out = pot.evaluate(atoms, symmetrize=sym)
    h = 1e-5
    vol = atoms.get_volume()
    fd = np.zeros((3, 3))
    for a in range(3):
        for b in range(3):
            vals = []
            for s in (h, -h):
                eps = np.eye(3)
                eps[a, b] += s
                x = atoms.copy()
                x.set_cell(atoms.cell.array @ eps.T, scale_atoms=True)
                vals.append(energy(pot, x, sym))
            fd[a, b] = (vals[0] - vals[1]) / (2 * h) / vol
    fd = 0.5 * (fd + fd.T)
    voigt = np.array([fd[0, 0], fd[1, 1], fd[2, 2], fd[1, 2], fd[0, 2], fd[0, 1]])
    close(out["stress"], voigt)


@FAST
@given(n_species=st.integers(1, 3), level=st.sampled_from([4, 8, 10]), sym=st.booleans(), seed=st.integers(0, 10_000))
def test_parameter_gradient_matches_finite_differences(n_species, level, sym, seed):
    pot = random_potential(n_species, level, seed)
    atoms = random_atoms(n_species, seed, n=4)
    g = pot.evaluate(atoms, symmetrize=sym)["param_gradient"]
    p0 = pot.params
    rng = np.random.default_rng(seed)
    idx = np.unique(np.concatenate([rng.choice(pot.n_params, 40), np.arange(pot.n_params)[pot.param_blocks["species"]],
                                    np.arange(pot.n_params)[pot.param_blocks["moment"]][:10]]))
    h = 1e-6
    for k in idx:
        vals = []
        for s in (h, -h):
            p = p0.copy()
            p[k] += s
            pot.params = p
            vals.append(energy(pot, atoms, sym))
        fd = (vals[0] - vals[1]) / (2 * h)
        assert abs(fd - g[k]) <= 1e-6 * max(1.0, abs(fd)), (k, fd, g[k])
    pot.params = p0
    # the energy is linear in species and basis coefficients: exact identity
    e = energy(pot, atoms, sym)
    lin = np.r_[pot.param_blocks["species"].start:pot.n_params]
    radial_part = e - g[lin] @ p0[lin]
    assert abs(radial_part) < 1e-9 * max(1.0, abs(e))


def rotation(seed):
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    return q * np.sign(np.linalg.det(q))


@FAST
@given(n_species=st.integers(1, 3), seed=st.integers(0, 10_000), sym=st.booleans())
def test_invariances(n_species, seed, sym):
    pot = random_potential(n_species, 10, seed)
    atoms = random_atoms(n_species, seed, n=6)
    ref = pot.evaluate(atoms, symmetrize=sym)
    tol = dict(rtol=1e-10, atol=1e-10 * max(1.0, abs(ref["energy"])))
    # translation
    t = atoms.copy()
    t.translate([0.37, -1.1, 2.3])
    np.testing.assert_allclose(pot.evaluate(t, symmetrize=sym)["forces"], ref["forces"], **tol)
    assert np.isclose(energy(pot, t, sym), ref["energy"], **tol)
    # rotation: energy invariant, forces and stress co-rotate
    rot = rotation(seed)
    r = atoms.copy()
    r.set_cell(atoms.cell.array @ rot.T, scale_atoms=False)
    r.positions = atoms.positions @ rot.T
    out = pot.evaluate(r, symmetrize=sym)
    assert np.isclose(out["energy"], ref["energy"], **tol)
    np.testing.assert_allclose(out["forces"], ref["forces"] @ rot.T, **tol)
    s = ref["stress"]
    sm = np.array([[s[0], s[5], s[4]], [s[5], s[1], s[3]], [s[4], s[3], s[2]]])
    sr = rot @ sm @ rot.T
    np.testing.assert_allclose(out["stress"], [sr[0, 0], sr[1, 1], sr[2, 2], sr[1, 2], sr[0, 2], sr[0, 1]], **tol)
    np.testing.assert_allclose(out["magnetic_forces"], ref["magnetic_forces"], **tol)
    # permutation
    perm = np.random.default_rng(seed).permutation(len(atoms))
    p = atoms[perm]
    out = pot.evaluate(p, symmetrize=sym)
    assert np.isclose(out["energy"], ref["energy"], **tol)
    np.testing.assert_allclose(out["forces"], ref["forces"][perm], **tol)
    np.testing.assert_allclose(out["magnetic_forces"], ref["magnetic_forces"][perm], **tol)
    # supercell: energy extensive, forces repeat
    sc = atoms.repeat((2, 1, 2))
    out = pot.evaluate(sc, symmetrize=sym)
    assert np.isclose(out["energy"], 4 * ref["energy"], **tol)
    np.testing.assert_allclose(out["forces"][: len(atoms)], ref["forces"], **tol)
    np.testing.assert_allclose(out["stress"], ref["stress"], **tol)


@FAST
@given(n_species=st.integers(1, 3), seed=st.integers(0, 10_000))
def test_spin_inversion(n_species, seed):
    pot = random_potential(n_species, 10, seed)
    atoms = random_atoms(n_species, seed, n=6)
    flipped = atoms.copy()
    flipped.set_initial_magnetic_moments(-atoms.get_initial_magnetic_moments())
    a, b = pot.evaluate(atoms, symmetrize=True), pot.evaluate(flipped, symmetrize=True)
    assert np.isclose(a["energy"], b["energy"], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(a["forces"], b["forces"], rtol=1e-10, atol=1e-11)
    np.testing.assert_allclose(a["magnetic_forces"], -b["magnetic_forces"], rtol=1e-10, atol=1e-11)
    np.testing.assert_allclose(a["param_gradient"], b["param_gradient"], rtol=1e-10, atol=1e-11)
    # the raw energy is not invariant
    ra, rb = energy(pot, atoms, False), energy(pot, flipped, False)
    assert abs(ra - rb) > 1e-8 * max(1.0, abs(ra))
    # and the symmetrised one is the average of the two raw ones
    assert np.isclose(a["energy"], 0.5 * (ra + rb), rtol=1e-12, atol=1e-12)


def brute_pairs(atoms, rc):
    """All (i, j, image vector) within rc by explicit enumeration of images (numpy)."""
    inv = np.linalg.inv(atoms.cell.array)
    spread = np.ptp(atoms.positions @ inv, axis=0)
    spacing = 1.0 / np.linalg.norm(inv, axis=0)
    nmax = [int(np.ceil(rc / spacing[a] + spread[a])) + 1 if atoms.pbc[a] else 0 for a in range(3)]
    grid = np.stack(np.meshgrid(*[np.arange(-n, n + 1) for n in nmax], indexing="ij"), -1).reshape(-1, 3)
    shifts = grid @ atoms.cell.array
    out = set()
    n = len(atoms)
    for i in range(n):
        for j in range(n):
            v = atoms.positions[j] - atoms.positions[i] + shifts
            keep = np.einsum("ij,ij->i", v, v) < rc * rc
            if i == j:
                keep &= np.any(grid != 0, axis=1)
            for w in v[keep]:
                out.add((i, j, *np.round(w, 6)))
    return out


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), pbc=st.tuples(st.booleans(), st.booleans(), st.booleans()),
       n=st.integers(1, 6), rc=st.floats(1.5, 6.0))
def test_neighbor_list_matches_brute_force_on_skewed_cells(seed, pbc, n, rc):
    rng = np.random.default_rng(seed)
    cell = np.diag(rng.uniform(1.2, 5.0, 3)) + rng.uniform(-1.5, 1.5, (3, 3))
    if abs(np.linalg.det(cell)) < 1.0 or np.linalg.cond(cell) > 20:
        return  # nearly flat cells: millions of images for the brute force; covered by cargo test
    atoms = Atoms("H" * n, positions=rng.uniform(-3, 8, (n, 3)), cell=cell, pbc=pbc)
    d = atoms.get_all_distances(mic=False) + np.eye(n)
    if d.min() < 1e-3:
        return
    off, idx, vec = mmtp_rs._core.neighbor_list(atoms.cell.array, list(map(bool, pbc)), atoms.positions, rc)
    got = set()
    for i in range(n):
        for k in range(off[i], off[i + 1]):
            got.add((i, int(idx[k]), *np.round(vec[k], 6)))
    assert got == brute_pairs(atoms, rc)


@pytest.mark.parametrize("level,count", [(2, 1), (4, 2), (6, 5), (8, 9), (10, 16), (12, 29), (14, 52), (16, 92),
                                         (18, 163), (20, 288), (22, 500), (24, 864), (26, 1464), (28, 2445)])
def test_basis_counts_match_published(level, count):
    from mmtp_rs.model.potential import basis_tables
    assert len(basis_tables(level)[3]) == count


def test_level16_two_species_has_606_parameters():
    pot = Potential.new(["N", "Cr"], level=16, radial_basis_size=8, magnetic_basis_size=2, min_dist=1.7,
                        max_dist=5.0, max_moment={"Cr": 3.2, "N": 0.1}, seed=1)
    assert pot.n_params == 606
    assert pot.n_radial_functions == 4


def test_files_round_trip_and_per_species_intervals_export_exactly(tmp_path):
    pot = random_potential(2, 10, 3)
    atoms = random_atoms(2, 3, n=6)
    ref = pot.evaluate(atoms, symmetrize=False)
    pot.save(tmp_path / "p.json")
    back = Potential.from_file(tmp_path / "p.json")
    np.testing.assert_array_equal(back.params, pot.params)
    np.testing.assert_array_equal(back.mag_intervals, pot.mag_intervals)
    assert back.species == pot.species and back.level == pot.level and back.symmetrize == pot.symmetrize
    # MLIP-3 has one magnetic interval: per-species intervals are re-expanded exactly
    pot.save(tmp_path / "p.mtp")
    mlip = Potential.from_file(tmp_path / "p.mtp", species=pot.species)
    assert np.ptp(mlip.mag_intervals[:, 0]) == 0
    out = mlip.evaluate(atoms, symmetrize=False)
    assert np.isclose(out["energy"], ref["energy"], rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(out["forces"], ref["forces"], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(out["dedm"], ref["dedm"], rtol=1e-9, atol=1e-9)
    # and saving the reread potential is byte-identical
    mlip.save(tmp_path / "q.mtp")
    assert (tmp_path / "q.mtp").read_text() == (tmp_path / "p.mtp").read_text()


def test_batch_and_threads_agree():
    pot = random_potential(2, 10, 5)
    images = [random_atoms(2, s, n=6) for s in range(8)]
    single = [pot.evaluate(a)["energy"] for a in images]
    batch = [o["energy"] for o in pot.evaluate_many(images)]
    np.testing.assert_allclose(batch, single, rtol=1e-13)
    n0 = mmtp_rs.get_num_threads()
    try:
        mmtp_rs.set_num_threads(1)
        assert mmtp_rs.get_num_threads() == 1
        one = pot.evaluate(images[0].repeat(3))
        mmtp_rs.set_num_threads(2)
        two = pot.evaluate(images[0].repeat(3))
        assert np.isclose(one["energy"], two["energy"], rtol=1e-12)
        np.testing.assert_allclose(one["forces"], two["forces"], rtol=1e-10, atol=1e-12)
    finally:
        mmtp_rs.set_num_threads(n0)
    with pytest.raises(ValueError):
        mmtp_rs.set_num_threads(0)


def _child_energy(args):
    path, seed = args
    pot = Potential.from_file(path)
    return pot.evaluate(random_atoms(2, seed, n=6).repeat(2))["energy"]


def test_safe_in_forked_process_pool(tmp_path):
    pot = random_potential(2, 8, 2)
    pot.save(tmp_path / "p.json")
    expected = [pot.evaluate(random_atoms(2, s, n=6).repeat(2))["energy"] for s in range(4)]  # parent pool is live
    with ProcessPoolExecutor(2, mp_context=mp.get_context("fork")) as ex:
        got = list(ex.map(_child_energy, [(tmp_path / "p.json", s) for s in range(4)], timeout=120))
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_calculator_forces_stress_and_magnetic_forces():
    pot = random_potential(2, 8, 9)
    atoms = random_atoms(2, 9, n=6)
    atoms.calc = MMTPCalculator(pot)
    e = atoms.get_potential_energy()
    assert np.isclose(e, pot.evaluate(atoms)["energy"])
    assert atoms.get_forces().shape == (6, 3)
    assert atoms.get_stress().shape == (6,)
    mf = atoms.calc.get_property("magnetic_forces", atoms)
    assert mf.shape == (6,)
    # changing the moments invalidates the results
    atoms.set_initial_magnetic_moments(atoms.get_initial_magnetic_moments() * 0.5)
    assert not np.isclose(atoms.get_potential_energy(), e)
    cluster = atoms.copy()
    cluster.pbc = False
    cluster.calc = MMTPCalculator(pot)
    cluster.get_potential_energy()
    from ase.calculators.calculator import PropertyNotImplementedError
    with pytest.raises(PropertyNotImplementedError):
        cluster.get_stress()


def test_close_atoms_and_large_moments_are_counted_not_rejected():
    pot = random_potential(1, 8, 4)
    a = bulk("Fe", "bcc", a=2.87, cubic=True).repeat(2)
    a.set_initial_magnetic_moments([1.8] * len(a))  # inside [-2.0, 2.0]
    out = pot.evaluate(a)
    assert out["n_close_atoms"] == 0 and out["n_moments_outside"] == 0
    a.positions[0] = a.positions[1] + [0.5, 0.5, 0.6]  # closer than min_dist
    m = a.get_initial_magnetic_moments()
    m[3] = 7.0
    a.set_initial_magnetic_moments(m)
    out = pot.evaluate(a)
    d = a.get_all_distances(mic=True) + 10 * np.eye(len(a))
    expected = int(np.sum(d.min(axis=1) < pot.min_dist))
    assert expected >= 2
    assert out["n_close_atoms"] == expected and out["n_moments_outside"] == 1
    assert np.isfinite(out["energy"]) and np.all(np.isfinite(out["forces"]))


def test_species_are_mapped_by_symbol_and_foreign_atoms_are_named():
    pot = random_potential(2, 8, 1)
    a = random_atoms(2, 3, n=8)
    syms = a.get_chemical_symbols()
    assert list(pot.types_of(a)) == [SYMBOLS.index(s) for s in syms]
    a.symbols[5] = "Au"
    with pytest.raises(MMTPError, match="atom 5 is Au, which is not a species"):
        pot.evaluate(a)


def test_bad_input_gives_clear_errors(tmp_path):
    pot = random_potential(2, 8, 1)
    good = random_atoms(2, 1, n=4)
    a = good.copy()
    a.positions[2, 1] = np.nan
    with pytest.raises(MMTPError, match="atom 2"):
        pot.evaluate(a)
    a = good.copy()
    m = a.get_initial_magnetic_moments()
    m[1] = np.inf
    with pytest.raises(MMTPError, match="atom 1"):
        pot.evaluate(a, moments=m)
    a = good.copy()
    a[3].symbol = "Cu"
    with pytest.raises(MMTPError, match="atom 3 is Cu"):
        pot.evaluate(a)
    a = good.copy()
    a.positions[1] = a.positions[0]
    with pytest.raises(MMTPError, match="same spot"):
        pot.evaluate(a)
    a = good.copy()
    a.cell[2] = a.cell[0] + a.cell[1]
    with pytest.raises(MMTPError, match="zero volume"):
        pot.evaluate(a)
    with pytest.raises(MMTPError, match="collinear"):
        pot.evaluate(good, moments=np.zeros((4, 3)))
    with pytest.raises(MMTPError, match="3 magnetic moments for 4 atoms"):
        pot.evaluate(good, moments=np.zeros(3))
    with pytest.raises(MMTPError, match="params must have shape"):
        pot.params = np.zeros(3)
    p = pot.params
    p[0] = np.nan
    with pytest.raises(MMTPError, match="parameter 0 is not finite"):
        pot.params = p
    with pytest.raises(MMTPError, match="level"):
        Potential.new(["Fe"], level=1)
    with pytest.raises(MMTPError, match="max_moment"):
        Potential.new(["Fe", "Al"], level=6, max_moment={"Fe": 2.0})
    # files
    pot.save(tmp_path / "ok.mtp")
    lines = (tmp_path / "ok.mtp").read_text().splitlines()
    (tmp_path / "trunc.mtp").write_text("\n".join(lines[: len(lines) // 2]) + "\n")
    with pytest.raises(MtpFormatError, match="trunc.mtp"):
        Potential.from_file(tmp_path / "trunc.mtp")
    bad = list(lines)
    k = next(i for i, s in enumerate(bad) if s.startswith("species_coeffs"))
    bad[k] = "species_coeffs = {1.0, abc}"
    (tmp_path / "bad.mtp").write_text("\n".join(bad) + "\n")
    with pytest.raises(MtpFormatError, match=rf"bad.mtp, line {k + 1}: cannot read 'abc'"):
        Potential.from_file(tmp_path / "bad.mtp")
    with pytest.raises(FileNotFoundError):
        Potential.from_file(tmp_path / "missing.mtp")
    with pytest.raises(MMTPError, match="species_count is 2"):
        Potential.from_file(tmp_path / "ok.mtp", species=["Fe"])
    (tmp_path / "bad.json").write_text('{"format": "mmtp_rs potential",\n "species": ["Fe"\n')
    with pytest.raises(MtpFormatError, match="bad.json, line"):
        Potential.from_file(tmp_path / "bad.json")
