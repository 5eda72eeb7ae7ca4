"""``mmtp learn CONFIG.toml`` (the active-learning loop) and ``mmtp validate``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mmtp_rs.loop.config import LearnConfig
from mmtp_rs.loop.learner import Learner, run_validation


def add_cli(sub) -> None:
    p = sub.add_parser("learn", help="run (or resume) the active-learning loop of a TOML configuration")
    p.add_argument("config", help="TOML file (see examples/)")
    p.add_argument("--out", "--state", dest="state", default=None, help="state directory (default: runs/<name>)")
    p.add_argument("--check", action="store_true", help="validate the configuration and exit (0: valid)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run)
    v = sub.add_parser("validate", help="compare a potential with the oracle of a learn configuration, moments "
                                        "equilibrated (moments, state energies, E(a), elastic constants, phonons)")
    v.add_argument("config", help="learn TOML file: its [system], [oracle] and [validate] sections are used")
    v.add_argument("--potential", required=True, help="potential file (.json or MLIP-3 .mtp)")
    v.add_argument("--out", default="validation", help="output directory (validation.json/.md/.png)")
    v.add_argument("--check", action="store_true", help="validate the configuration and exit (0: valid)")
    v.add_argument("--quiet", action="store_true")
    v.set_defaults(func=run_validate)


def run_validate(args: argparse.Namespace) -> dict:
    """``mmtp validate``: exits non-zero when a check fails (see validation.md)."""
    from mmtp_rs.model.potential import Potential

    cfg = LearnConfig.from_toml(args.config)
    if getattr(args, "check", False):
        return _checked(cfg)
    pot = Potential.from_file(args.potential, species=cfg.model.get("species"))
    out = Path(args.out)
    say = (lambda msg: None) if args.quiet else (lambda msg: print(msg, flush=True))
    from mmtp_rs.model.potential import single_blas_thread

    with single_blas_thread():
        rep = run_validation(cfg, pot, out, oracle_workdir=out / "oracle_jobs", progress=say)
    if not args.quiet:
        for c in rep["checks"]:
            print(f"  {'pass' if c['pass'] else 'FAIL'}  {c['name']}: {c['value']:.4g} {c['unit']} "
                  f"(tolerance {c['tolerance']:.4g}; {c['where']})")
        print(f"all checks pass: {rep['passed']}; report in {out}/validation.md")
    if not rep["passed"]:
        raise ValidationFailed(f"{sum(not c['pass'] for c in rep['checks'])} validation check(s) failed; "
                               f"see {out / 'validation.md'}")
    return rep


class ValidationFailed(RuntimeError):
    """A potential failed a validation check (``mmtp validate`` exits with 1)."""


def _checked(cfg: LearnConfig) -> dict:
    print(f"{cfg.source}: valid. {cfg.summary()}")
    return {"valid": True, "summary": cfg.summary()}


def run(args: argparse.Namespace) -> dict:
    cfg = LearnConfig.from_toml(args.config)
    if getattr(args, "check", False):
        return _checked(cfg)
    state = args.state or str(Path("runs") / cfg.name)
    learner = Learner(cfg, state, quiet=args.quiet)
    summary = learner.run()
    if not args.quiet:
        print(json.dumps({k: summary[k] for k in ("converged", "final_iteration", "timing", "wall_time_s")
                          if k in summary}, indent=1, default=float))
    return summary


