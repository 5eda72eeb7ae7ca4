"""Reproducibility: every parallel sum of the core is cut into chunks fixed by
the problem size and combined in a fixed order, so results are bit-identical at
any thread count, and the same fit gives the same potential file byte for byte."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk
from ase.io import write

import mmtp_rs
from mmtp_rs.fitting.data import Dataset
from mmtp_rs.fitting.optimize import Weights, fit
from mmtp_rs.oracles.reference import ReferenceModel
from test_fitting import crn_configs, label_with, small_pot


@pytest.fixture()
def threads():
    """Run the body at a given thread count; restore the original count afterwards."""
    n0 = mmtp_rs.get_num_threads()
    yield mmtp_rs.set_num_threads
    mmtp_rs.set_num_threads(n0)


def _at_threads(set_threads, counts, fn):
    out = []
    for n in counts:
        set_threads(n)
        out.append(fn())
    return out


def _bits(x) -> bytes:
    return np.ascontiguousarray(x, dtype=float).tobytes()


def test_evaluation_is_bit_identical_at_any_thread_count(threads):
    pot = small_pot(seed=1)
    atoms = bulk("CrN", "rocksalt", a=4.15, cubic=True).repeat((4, 4, 2))  # 256 atoms: several chunks
    rng = np.random.default_rng(0)
    atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
    atoms.set_initial_magnetic_moments(rng.choice([-2.4, 2.4], size=len(atoms)))

    def run():
        out = pot.evaluate(atoms, site_param_grad=True)
        return [_bits(out[k]) for k in ("energy", "forces", "stress", "magnetic_forces", "param_gradient",
                                         "site_param_gradient")]

    first, *rest = _at_threads(threads, (1, 2, 3), run)
    assert all(r == first for r in rest)


def test_loss_and_gradient_are_bit_identical_at_any_thread_count(threads):
    data = Dataset(label_with(ReferenceModel.preset("CrN"), crn_configs(40, seed=4)))
    pot = small_pot(seed=2)
    core = data.to_core(pot)

    def run():
        out = pot._core.loss(core, (1.0, 0.01, 0.001, 0.1))
        return _bits(out["loss"]), _bits(out["gradient"]), _bits(out["sse"])

    first, *rest = _at_threads(threads, (1, 2, 3), run)
    assert all(r == first for r in rest)


def test_short_fit_is_bit_identical_at_one_and_two_threads(threads):
    data = Dataset(label_with(ReferenceModel.preset("CrN"), crn_configs(10, seed=8)))

    def run():
        res = fit(small_pot(seed=6), data, weights=Weights(1.0, 0.01, 0.001, 0.1), max_iter=12, restarts=1,
                  seed=0, quiet=True)
        return _bits(res.potential.params)

    one, two = _at_threads(threads, (1, 2), run)
    assert one == two


def test_cli_train_twice_gives_byte_identical_potentials(tmp_path, threads):
    from mmtp_rs.cli.main import parse_args

    imgs = label_with(ReferenceModel.preset("CrN"), crn_configs(8, seed=6))
    write(tmp_path / "train.xyz", imgs, format="extxyz")
    files = []
    for run, n in (("a", 2), ("b", 2), ("c", 1)):
        threads(n)
        (tmp_path / f"{run}.toml").write_text(
            '[data]\ntrain = ["train.xyz"]\n'
            '[model]\nlevel = 6\nradial_basis_size = 4\nmax_dist = 4.5\n'
            f'[fit]\nmax_iter = 15\nrestarts = 2\nseed = 3\nvalid_fraction = 0.25\n[output]\ndir = "{run}"\nplots = false\n')
        args = parse_args(["train", str(tmp_path / f"{run}.toml"), "--quiet"])
        args.func(args)
        files.append([(tmp_path / run / name).read_bytes() for name in ("potential.json", "potential.mtp")])
    assert files[0] == files[1] == files[2]
