"""Benchmark of the learning loop's refits: a warm-started refit against a cold
fit of the same training set, in one run (JSON on stdout).

Data: the main job's (``examples/learn_crn_reference.toml``) iteration-0
training set S0 and iteration-1 training set S1 = S0 + the configurations
selected and labelled in iteration 0, read from a learn state directory
(``--state DIR``), or made by running iteration 0 of the main job in a
temporary directory (about a minute).

Fits, all with the configuration's ``[fit]`` settings, as the loop runs them:

* ``fit0``: the cold fit of S0 (new potential, linear solve, BFGS from the
  identity; ``max_iter``), which gives the previous potential and inverse Hessian;
* ``cold``: a cold fit of S1 (new potential, seed of iteration 1);
* ``warm``: the loop's refit of S1: from ``fit0``'s potential and inverse
  Hessian, at most ``warm_max_iter`` iterations (default ``max_iter // 4``).

Reported: wall times, loss calls, iterations and final losses; ``cold_over_warm_time``
(target >= 3) and ``warm_loss_over_cold_loss - 1`` (target |.| <= 0.01, or negative).

    python benches/bench_refit.py [--state DIR] [--config TOML]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def training_sets(config: Path, state: Path | None):
    from mmtp_rs.io.images import read_images
    from mmtp_rs.loop.config import LearnConfig
    from mmtp_rs.loop.learner import Learner

    cfg = LearnConfig.from_toml(config)
    tmp = None
    if state is None:
        tmp = tempfile.TemporaryDirectory()
        state = Path(tmp.name) / "state"
        cfg.max_iterations = 1
        Learner(cfg, state, quiet=True).run()
    s0 = read_images(state / "iter_000" / "training.extxyz")
    s1 = s0 + read_images(state / "iter_000" / "labelled.extxyz")
    if tmp is not None:
        tmp.cleanup()
    return cfg, s0, s1


def one_fit(cfg, images, k, previous=None, warm=None):
    from mmtp_rs.config import fit_arguments
    from mmtp_rs.fitting.data import Dataset
    from mmtp_rs.fitting.optimize import fit, make_potential
    from mmtp_rs.loop.learner import warm_max_iter

    data = Dataset.from_atoms(images)
    f = fit_arguments(cfg.fit)
    f.pop("seed", None)
    f.pop("checkpoint_interval", None)
    if previous is None:
        m = dict(cfg.model)
        species = m.pop("species", None) or sorted({s for a in images for s in a.get_chemical_symbols()})
        pot = make_potential(data, species=species, seed=cfg.seed, **m)
    else:
        pot = previous
        f["max_iter"] = warm_max_iter(cfg.fit)
    t0 = time.perf_counter()
    res = fit(pot, data, None, quiet=True, seed=cfg.seed + k, warm=warm, **f)
    wall = time.perf_counter() - t0
    rec = {"wall_s": wall, "loss_calls": res.n_loss_calls, "iterations": len(res.history),
           "max_iter": f["max_iter"], "final_loss": res.best_loss, "n_configs": len(images)}
    return res, rec


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, default=ROOT / "examples" / "learn_crn_reference.toml")
    p.add_argument("--state", type=Path, default=None, help="a learn state directory with iteration 0 done")
    args = p.parse_args(argv)
    import mmtp_rs
    from mmtp_rs.model.potential import single_blas_thread

    with single_blas_thread():
        cfg, s0, s1 = training_sets(args.config, args.state)
        res0, fit0 = one_fit(cfg, s0, 0)
        _, cold = one_fit(cfg, s1, 1)
        _, warm = one_fit(cfg, s1, 1, previous=res0.potential, warm=res0.warm_state())
    out = {
        "benchmark": "warm-started refit vs cold fit of the same set",
        "config": str(args.config.relative_to(ROOT)) if args.config.is_relative_to(ROOT) else str(args.config),
        "machine": {"nproc": os.cpu_count(), "threads": mmtp_rs.get_num_threads(),
                    "python": platform.python_version(), "loadavg": os.getloadavg()},
        "fit0": fit0, "cold": cold, "warm": warm,
        "cold_over_warm_time": cold["wall_s"] / warm["wall_s"],
        "cold_over_warm_loss_calls": cold["loss_calls"] / max(warm["loss_calls"], 1),
        "warm_loss_over_cold_loss_minus_1": warm["final_loss"] / cold["final_loss"] - 1.0,
    }
    json.dump(out, sys.stdout, indent=1)
    print()
    return out


if __name__ == "__main__":
    main()
