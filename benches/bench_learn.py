"""Benchmark of the main job: the CrN-like active-learning loop on the
embedded reference model, run to convergence from an empty state directory.

Prints JSON: wall time and its split (fit, simulate, select, label), the
iterations, and the number of labels needed compared with labelling every
preselected configuration (what maxvol selection saves).

    python benches/bench_learn.py [--config examples/learn_crn_reference.toml]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(config: Path) -> dict:
    from mmtp_rs import get_num_threads
    from mmtp_rs.loop.config import LearnConfig
    from mmtp_rs.loop.learner import Learner

    cfg = LearnConfig.from_toml(config)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        summary = Learner(cfg, Path(tmp) / "state", quiet=True).run()
        wall = time.perf_counter() - t0
    its = summary["iterations"]
    n_initial = its[0]["training_size"] if its else 0
    selected = sum(r["n_selected"] for r in its)
    preselected = sum(r["n_preselected"] for r in its)
    test = (summary.get("report") or {}).get("errors", {}).get("test (held-out oracle MD)", {})
    return {
        "benchmark": "active-learning loop to convergence",
        "config": str(config.relative_to(ROOT)) if config.is_relative_to(ROOT) else str(config),
        "machine": {"nproc": os.cpu_count(), "threads": get_num_threads(), "python": platform.python_version()},
        "converged": summary.get("converged"),
        "iterations": len(its),
        "wall_time_s": wall,
        "split_s": summary.get("timing"),
        "split_fraction": {k: v / wall for k, v in (summary.get("timing") or {}).items()},
        "labels": {
            "initial": n_initial,
            "selected_by_maxvol": selected,
            "preselected": preselected,
            "total_labelled": n_initial + selected,
            "saving_vs_labelling_all_preselected": (preselected / selected) if selected else None,
        },
        "test_rmse": {k: v.get("rmse") for k, v in test.items()},
        "per_iteration": [{k: r[k] for k in ("iteration", "training_size", "n_preselected", "n_selected")}
                          for r in its],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", type=Path, default=ROOT / "examples" / "learn_crn_reference.toml")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = p.parse_args()
    res = run(args.config.resolve())
    text = json.dumps(res, indent=1, default=float)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
