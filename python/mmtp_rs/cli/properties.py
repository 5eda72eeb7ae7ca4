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
    p.add_argument("--check", action="store_true", help="validate the configuration and exit (0: valid)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> dict:
    """Entry point of ``mmtp properties``."""
    if getattr(args, "check", False):
        from mmtp_rs.properties.report import check_config

        summary = check_config(args.config)
        print(f"{args.config}: valid. {summary}")
        return {"valid": True, "summary": summary}
    return run_report(args.config, outdir=args.out, quiet=getattr(args, "quiet", False))


