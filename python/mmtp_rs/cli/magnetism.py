"""``mmtp magnetism CONFIG.toml --out DIR``: spin Monte-Carlo temperature scan and the Néel (Curie) temperature."""

from __future__ import annotations

import argparse

from mmtp_rs.magnetism.report import run_magnetism


def add_cli(sub) -> None:
    """Register ``mmtp magnetism CONFIG.toml`` on an argparse subparsers object."""
    p = sub.add_parser("magnetism", help="spin Monte-Carlo temperature scan: M(T), C(T), chi(T), Neel temperature")
    p.add_argument("config", help="TOML configuration (see docs/magnetism.md)")
    p.add_argument("--out", default=None, help="output directory (default: [output] dir of the config)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="mmtp magnetism")
    sub = p.add_subparsers(dest="command", required=True)
    add_cli(sub)
    return p.parse_args(["magnetism", *(argv or [])])


def run(args: argparse.Namespace) -> dict:
    """Entry point of ``mmtp magnetism``."""
    progress = None if getattr(args, "quiet", False) else (lambda msg: print(msg, flush=True))
    return run_magnetism(args.config, outdir=args.out, progress=progress)


def main(argv=None) -> int:
    from mmtp_rs.cli.main import main as mmtp_main

    return mmtp_main(["magnetism", *(argv or [])])
