"""``mmtp properties CONFIG.toml``: elastic constants, phonons and QHA for FM/AFM/PM."""

from __future__ import annotations

import argparse

from mmtp_rs.properties.report import run_report


# ================================================================ command line
def add_cli(sub) -> None:
    """Register ``mmtp properties CONFIG.toml`` on an argparse subparsers object."""
    p = sub.add_parser("properties", help="elastic constants, phonons, QHA alpha(T) and C_p(T) of FM/AFM/PM states")
    p.add_argument("config", help="TOML configuration (see docs/properties.md)")
    p.add_argument("--out", default=None, help="output directory (default: [output] dir of the config)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> dict:
    """Entry point of ``mmtp properties``."""
    return run_report(args.config, outdir=args.out, quiet=getattr(args, "quiet", False))


