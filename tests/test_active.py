"""Active learning: maxvol, Sherman-Morrison updates, grades, selection, persistence, CLI."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from ase.build import bulk
from hypothesis import given, settings, strategies as st

import mmtp_rs
from mmtp_rs import _core
from mmtp_rs.active import ActiveSet, GradingCalculator

ActiveMatrix = _core.ActiveMatrix
FAST = settings(max_examples=15, deadline=None)


# ----------------------------------------------------------------- helpers
def crn(rng, rep=1, disp=0.08, strain=0.02, cr_moment=(2.0, 2.8)):
    """A perturbed rock-salt CrN cell with random collinear moments."""
    a = bulk("CrN", "rocksalt", a=4.15, cubic=True).repeat(rep)
    f = np.eye(3) + strain * rng.normal(size=(3, 3))
    a.set_cell(a.cell.array @ f, scale_atoms=True)
    a.positions += disp * rng.normal(size=a.positions.shape)
    cr = np.array([s == "Cr" for s in a.get_chemical_symbols()])
    mag = rng.choice([-1.0, 1.0], len(a)) * rng.uniform(*cr_moment, len(a))
    a.set_initial_magnetic_moments(np.where(cr, mag, rng.normal(0, 0.02, len(a))))
    return a


@pytest.fixture(scope="module")
def pot():
    return mmtp_rs.Potential.new(["N", "Cr"], level=8, radial_basis_size=4, magnetic_basis_size=2,
                                 min_dist=1.7, max_dist=5.0, max_moment={"Cr": 3.2, "N": 0.1}, seed=1)


@pytest.fixture(scope="module")
def train():
    rng = np.random.default_rng(0)
    return [crn(rng) for _ in range(200)]


@pytest.fixture(scope="module")
def aset(pot, train):
    return ActiveSet.from_training(pot, train)


@pytest.fixture(scope="module")
def aset_nbh(pot, train):
    return ActiveSet.from_training(pot, train[:40], mode="neighborhood")


def fresh_grades(m: ActiveMatrix, b: np.ndarray) -> np.ndarray:
    return np.abs(b @ np.linalg.inv(m.matrix)).max(axis=1)


# --------------------------------------------------------- the matrix core
def test_rank_one_updates_match_fresh_inverse_after_thousands_of_swaps():
    rng = np.random.default_rng(1)
    m = 20
    s = ActiveMatrix(m)
    for t in range(3000):
        row = rng.normal(scale=3.0, size=m)
        c = row @ s.inverse
        j = int(np.argmax(np.abs(c)))
        s.swap(j, row, t)
    inv = np.linalg.inv(s.matrix)
    rel = np.abs(s.inverse - inv).max() / np.abs(inv).max()
    assert rel < 1e-9
    st_ = s.stats()
    assert st_["n_swaps"] == 3000
    assert st_["max_error"] < 1e-9  # measured drift stays far below the refresh threshold
    # with refreshes disabled, the drift is still bounded for maxvol-type swaps
    s2 = ActiveMatrix(m)
    s2.refresh_tol = float("inf")
    for t in range(3000):
        row = rng.normal(scale=3.0, size=m)
        s2.swap(int(np.argmax(np.abs(row @ s2.inverse))), row, t)
    inv2 = np.linalg.inv(s2.matrix)
    assert np.abs(s2.inverse - inv2).max() / np.abs(inv2).max() < 1e-9
    assert s2.stats()["n_refreshes"] == 0
    assert s2.inverse_error() < 1e-9


def test_refresh_when_error_exceeds_threshold():
    s = ActiveMatrix(6)
    s.refresh_tol = 0.0
    s.check_every = 1
    rng = np.random.default_rng(2)
    for t in range(20):
        s.swap(t % 6, rng.normal(size=6) * 4, t)
    assert s.stats()["n_refreshes"] > 0
    assert np.allclose(s.inverse, np.linalg.inv(s.matrix), rtol=0, atol=1e-12 * np.abs(s.inverse).max())


@FAST
@given(k=st.integers(1, 120), m=st.integers(1, 12), seed=st.integers(0, 2**32 - 1),
       greedy=st.booleans(), scale=st.sampled_from([0.3, 2.0, 50.0]))
def test_maxvol_det_grows_and_candidates_end_inside(k, m, seed, greedy, scale):
    rng = np.random.default_rng(seed)
    b = rng.normal(scale=scale, size=(k, m))
    s = ActiveMatrix(m)
    ld0 = s.log_abs_det()
    rep = s.maxvol(b, np.arange(k), tol=1e-3, greedy_init=greedy)
    f = rep["det_factors"]
    assert np.all(f > 1 + 1e-3)  # every step multiplied |det A| by > 1 + tol
    assert s.log_abs_det() - ld0 == pytest.approx(np.log(f).sum(), abs=1e-8 * (1 + np.log(f).sum()))
    assert rep["converged"]
    assert fresh_grades(s, b).max() <= 1 + 1e-3 + 1e-9
    # a row of A has grade 1, in its own column
    g, j = s.grades(s.matrix)
    assert np.allclose(g, 1.0, atol=1e-12)
    assert np.array_equal(j, np.arange(m))


def _det(a):
    return abs(np.linalg.det(a))


@FAST
@given(m=st.integers(1, 3), extra=st.integers(0, 4), seed=st.integers(0, 2**32 - 1))
def test_maxvol_against_brute_force(m, extra, seed):
    rng = np.random.default_rng(seed)
    k = m + extra
    b = rng.normal(scale=2.0, size=(k, m))
    s = ActiveMatrix(m)
    s.maxvol(b, np.arange(k), tol=1e-9)
    got = _det(s.matrix)
    ids = s.ids
    # brute force over all m-subsets of candidates + the unit rows still in A
    pool = np.vstack([b, np.eye(m)])
    best = max(_det(pool[list(c)]) for c in itertools.combinations(range(len(pool)), m))
    assert got <= best * (1 + 1e-9)
    assert got >= best / m ** (m / 2) * (1 - 1e-9)  # bound of a locally maximal volume
    for j in range(m):  # no single swap with a candidate increases |det|
        for r in range(k):
            a = s.matrix.copy()
            a[j] = b[r]
            assert _det(a) <= got * (1 + 1e-6)
    assert set(ids[ids >= 0]).issubset(range(k))


def test_maxvol_usually_finds_the_global_optimum():
    hits = 0
    for seed in range(30):
        rng = np.random.default_rng(seed)
        m, k = 3, 8
        b = rng.normal(scale=3.0, size=(k, m))
        s = ActiveMatrix(m)
        s.maxvol(b, np.arange(k), tol=1e-9)
        best = max(_det(b[list(c)]) for c in itertools.combinations(range(k), m))
        hits += _det(s.matrix) >= best * (1 - 1e-9)
    assert hits >= 24


def test_maxvol_degenerate_inputs():
    rng = np.random.default_rng(3)
    m = 8
    # rank-deficient rows: 3-dimensional span, so 5 unit rows stay and A stays invertible
    b = rng.normal(size=(60, 3)) @ rng.normal(scale=3, size=(3, m))
    s = ActiveMatrix(m)
    s.maxvol(b, np.arange(60))
    assert (s.ids < 0).sum() == 5
    assert np.isfinite(s.log_abs_det())
    assert fresh_grades(s, b).max() <= 1 + 1e-3 + 1e-9
    # duplicates: one copy enters
    d = np.tile(rng.normal(scale=5, size=m), (10, 1))
    s = ActiveMatrix(m)
    s.maxvol(d, np.arange(10))
    assert (s.ids >= 0).sum() == 1
    # K < m, K = 0
    s = ActiveMatrix(m)
    s.maxvol(rng.normal(scale=5, size=(2, m)), np.arange(2))
    assert (s.ids >= 0).sum() == 2
    assert s.maxvol(np.zeros((0, m)), np.zeros(0, np.int64))["n_swaps"] == 0
    assert s.grades(np.zeros((0, m)))[0].shape == (0,)
    # NaN, shapes, ids, singular restore: MMTPError (a ValueError), never a panic
    bad = rng.normal(size=(3, m))
    bad[1, 2] = np.nan
    with pytest.raises(mmtp_rs.MMTPError, match="row 1"):
        s.maxvol(bad, np.arange(3))
    with pytest.raises(mmtp_rs.MMTPError, match="non-finite"):
        s.grades(bad)
    with pytest.raises(mmtp_rs.MMTPError, match="shape"):
        s.grades(np.zeros((2, m + 1)))
    with pytest.raises(mmtp_rs.MMTPError):
        s.maxvol(np.ones((2, m)), np.arange(3))
    with pytest.raises(mmtp_rs.MMTPError, match="negative"):
        s.maxvol(np.ones((2, m)), np.array([0, -2]))
    with pytest.raises(mmtp_rs.MMTPError, match="singular"):
        ActiveMatrix.from_rows(np.array([[1.0, 2.0], [2.0, 4.0]]), np.array([0, 1]))
    with pytest.raises(mmtp_rs.MMTPError):
        ActiveMatrix(0)
    with pytest.raises(mmtp_rs.MMTPError, match="singular"):
        s.swap(0, np.zeros(m), 1)
    with pytest.raises(mmtp_rs.MMTPError):
        s.maxvol(np.ones((2, m)), np.arange(2), tol=float("nan"))


def test_group_limit():
    rng = np.random.default_rng(4)
    b = rng.normal(scale=3, size=(200, 10))
    groups = np.arange(200) // 4
    s = ActiveMatrix(10)
    s.maxvol(b, np.arange(200), groups=groups, max_groups=3)
    chosen = set(s.ids[s.ids >= 0] // 4)
    assert 1 <= len(chosen) <= 3


# ------------------------------------------------------------ active set
def test_training_grades_and_far_configuration(aset, train, pot):
    assert aset.grades(train).max() <= 1 + 1e-6  # build tolerance is 1e-7
    for a in train[:5]:
        assert aset.grade(a.copy()) <= 1 + 1e-6  # copied from the training set
    rng = np.random.default_rng(5)
    far = crn(rng, disp=0.3, strain=0.12)
    assert aset.grade(far) > 10
    # a near-copy of a training configuration grades about 1, far below the outlier
    near = train[3].copy()
    near.positions += 1e-4 * rng.normal(size=near.positions.shape)
    assert aset.grade(near) < 1.1


@pytest.mark.parametrize("mode", ["configuration", "neighborhood"])
@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_grades_invariant(mode, seed, aset, aset_nbh):
    s = aset if mode == "configuration" else aset_nbh
    rng = np.random.default_rng(seed)
    a = crn(rng, disp=0.15, strain=0.05)
    g = s.grade(a)
    b = a.copy()
    b.positions += rng.normal(size=3) * 3.0  # translation
    b.wrap()
    c = a.copy()
    c.rotate(rng.uniform(0, 360), rng.normal(size=3), rotate_cell=True)  # rotation
    p = rng.permutation(len(a))  # permutation
    d = a[p]
    e = a.copy()
    e.set_initial_magnetic_moments(-a.get_initial_magnetic_moments())  # spin inversion (symmetrised)
    for x in (b, c, d, e):
        assert s.grade(x) == pytest.approx(g, rel=1e-7, abs=1e-9)
    if mode == "neighborhood":
        assert np.allclose(s.atom_grades(d), s.atom_grades(a)[p], rtol=1e-7, atol=1e-9)
        assert s.atom_grades(a).max() == pytest.approx(g)


def test_neighbourhood_mode(aset_nbh, train):
    assert aset_nbh.mode == "neighborhood"
    assert aset_nbh.grades(train[:40]).max() <= 1 + 1e-6
    a = train[0].copy()
    aset_nbh.grades([a], store=True)
    assert a.arrays["nbh_grades"].shape == (len(a),)
    assert a.info["MV_grade"] == pytest.approx(a.arrays["nbh_grades"].max())
    owners = aset_nbh.row_owners()
    assert np.all(owners[owners[:, 0] >= 0, 1] >= 0)


def test_select_skips_near_duplicates_and_respects_limit(aset):
    rng = np.random.default_rng(6)
    far = crn(rng, disp=0.3, strain=0.12)
    dups = []
    for _ in range(6):
        x = far.copy()
        x.positions += 1e-7 * rng.normal(size=x.positions.shape)
        dups.append(x)
    pool = [crn(rng, disp=0.2) for _ in range(10)] + dups
    idx = aset.select(pool, return_indices=True)
    assert sum(i >= 10 for i in idx) == 1  # one of the near-duplicates
    assert len(aset.select(pool, limit=2)) <= 2
    assert aset.select(pool, limit=0) == []
    assert aset.select([]) == []
    before = aset.matrix.ids.copy()
    aset.select(pool)
    assert np.array_equal(aset.matrix.ids, before)  # select does not change the active set
    # after adding them, the selected configurations grade <= 1 and a second select takes nothing new from them
    s2 = ActiveSet.from_training(aset.potential, [])
    s2.update(new_images=[pool[i] for i in idx])
    assert s2.grades([pool[i] for i in idx]).max() <= 1 + 1e-6


def test_calculator_reports_grade(aset, pot, train):
    a = train[7].copy()
    calc = aset.calculator()
    assert isinstance(calc, GradingCalculator)
    a.calc = calc
    e = a.get_potential_energy()
    g = calc.get_property("extrapolation_grade", a)
    assert g == pytest.approx(aset.grade(a), rel=1e-12)
    assert "extrapolation_grade" in GradingCalculator.implemented_properties
    ref = a.copy()
    ref.calc = mmtp_rs.MMTPCalculator(pot)
    assert e == pytest.approx(ref.get_potential_energy(), rel=1e-12)
    assert np.allclose(a.get_forces(), ref.get_forces(), rtol=1e-12, atol=1e-12)


def test_calculator_neighbourhood(aset_nbh, train):
    a = train[1].copy()
    a.calc = aset_nbh.calculator()
    a.get_potential_energy()
    assert a.calc.get_property("extrapolation_grade", a) == pytest.approx(aset_nbh.grade(a), rel=1e-12)
    assert a.calc.results["nbh_grades"].shape == (len(a),)


def test_update_after_refit_and_save_load(tmp_path, pot, train):
    p = pot.copy()
    s = ActiveSet.from_training(p, train[:60])
    path = tmp_path / "active.npz"
    s.save(path)
    r = ActiveSet.load(path, p)
    assert np.array_equal(r.matrix.ids, s.matrix.ids)
    assert np.array_equal(r.matrix.matrix, s.matrix.matrix)
    x = crn(np.random.default_rng(7), disp=0.2)
    assert r.grade(x) == pytest.approx(s.grade(x), rel=1e-10)
    assert sorted(r.configs) == sorted(s.configs)
    # refit: grading refuses stale rows until update()
    p.params = p.params * 1.1
    with pytest.raises(mmtp_rs.MMTPError, match="update"):
        s.grade(x)
    s.update()  # rebuild from the stored configurations
    assert s.grades(train[:60]).max() <= 1 + 1e-6 or s.grade(x) > 0
    s.update(training=train[:60])  # full rebuild
    assert s.grades(train[:60]).max() <= 1 + 1e-6
    # loading with a different potential rebuilds from the stored configurations
    q = ActiveSet.load(path, p)
    assert q.grades(list(q.configs.values())).max() <= 1 + 1e-6
    # errors
    with pytest.raises(FileNotFoundError):
        ActiveSet.load(tmp_path / "missing.npz", p)
    (tmp_path / "junk.npz").write_text("not a zip")
    with pytest.raises(mmtp_rs.MMTPError):
        ActiveSet.load(tmp_path / "junk.npz", p)
    with pytest.raises(mmtp_rs.MMTPError):
        ActiveSet(p, mode="bogus")


def test_empty_and_nan_configurations(pot):
    s = ActiveSet(pot)
    assert s.n_unit_rows == s.m
    assert s.add([])["n_swaps"] == 0
    a = crn(np.random.default_rng(8))
    assert s.grade(a) > 1  # nothing learnt yet: unit rows make everything extrapolative
    a.positions[0, 0] = np.nan
    with pytest.raises(mmtp_rs.MMTPError):
        s.grade(a)


def test_level16_crn_active_set_handles_dependent_basis(mlip3_dir):
    """MLIP's level-16 basis has an exactly linearly dependent basis function, so
    the site-gradient rows have a null space: those directions keep unit rows,
    A stays invertible and training configurations grade <= 1."""
    pot = mmtp_rs.Potential.from_file(mlip3_dir / "mag_lev16_CrN.mtp", species=["N", "Cr"])
    rng = np.random.default_rng(9)
    train = [crn(rng, rep=2, disp=0.1, strain=0.03) for _ in range(12)]  # 768 rows > 606
    s = ActiveSet.from_training(pot, train, mode="neighborhood")
    b, _, _ = s.rows(train)
    assert b.shape == (768, 606)
    mom = np.linalg.svd(b[:, pot.param_blocks["moment"]], compute_uv=False)
    assert mom[-1] < 1e-14 * mom[0]  # the dependent basis function
    sv = np.linalg.svd(b, compute_uv=False)
    n_null = int((sv < 1e-13 * sv[0]).sum()) + (606 - len(sv))
    assert n_null >= 1
    assert s.n_unit_rows >= n_null
    assert np.isfinite(s.matrix.log_abs_det())
    assert s.grades(train).max() <= 1 + 1e-6
    assert s.grade(crn(rng, rep=2, disp=0.35, strain=0.12)) > 100


def test_cli_select_and_grade(tmp_path, pot, train, capsys):
    from mmtp_rs import cli
    from mmtp_rs.io.cfg import read_cfg, write_cfg

    pfile = tmp_path / "pot.json"
    pot.save(pfile)
    write_cfg(tmp_path / "train.cfg", train[:80], species=["N", "Cr"])
    rng = np.random.default_rng(10)
    pool = [crn(rng, disp=0.25) for _ in range(8)]
    write_cfg(tmp_path / "pool.cfg", pool, species=["N", "Cr"])
    out = tmp_path / "sel.cfg"
    rep = cli.run(cli.parse_args(["select", str(pfile), str(tmp_path / "train.cfg"), str(tmp_path / "pool.cfg"),
                                  "-o", str(out), "--limit", "3", "--save-state", str(tmp_path / "a.npz")]))
    sel = read_cfg(out, species=["N", "Cr"])
    assert len(sel) == rep["n_selected"] <= 3
    assert all("MV_grade" in a.info for a in sel)
    g = cli.run(cli.parse_args(["grade", str(pfile), str(tmp_path / "a.npz"), str(tmp_path / "pool.cfg"),
                                "-o", str(tmp_path / "graded.cfg")]))
    graded = read_cfg(tmp_path / "graded.cfg", species=["N", "Cr"])
    assert [a.info["MV_grade"] for a in graded] == pytest.approx(g["grades"])
    assert cli.main(["grade", str(pfile), str(tmp_path / "nope.cfg"), str(tmp_path / "pool.cfg")]) == 2
