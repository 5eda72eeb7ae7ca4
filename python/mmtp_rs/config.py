"""One configuration module for every command (train, learn, properties, validate).

Every file is TOML. Each table is checked against a schema when the file is
loaded, before anything runs: unknown keys, wrong types and nonsensical values
raise :class:`ConfigError` naming the file, the section and the key. Paths in
a file are relative to that file. The tables that several commands share have
one schema: ``[model]`` (:data:`MODEL`), ``[fit]`` (:data:`FIT`, weights as a
table ``{energy, forces, stress, magnetic_forces}``) and the structure tables
(:data:`STRUCTURE`, any file ASE reads or a prototype).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping


__all__ = ["ConfigError", "Key", "REQUIRED", "read_toml", "check_table", "MODEL", "FIT", "STRUCTURE",
           "check_species_map"]


class ConfigError(ValueError):
    """A bad configuration; the message names the file, the section and the key."""


REQUIRED = object()


@dataclass(frozen=True)
class Key:
    """Schema of one key.

    kind: "int", "float", "bool", "str", "path", "floats" (list of numbers),
    "ints", "strs", "table" (any TOML table), "moments" (a number or a
    per-species table of numbers), "any". ``lo``/``hi`` bound numbers (and the
    entries of lists), ``lo_open`` makes ``lo`` exclusive, ``choices`` lists the
    allowed strings, ``length`` the length of a list, ``nonempty`` requires a
    non-empty list, ``none`` allows an explicit absence (default None).
    """

    kind: str
    default: Any = None
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    choices: tuple | None = None
    length: int | None = None
    nonempty: bool = False
    check: Callable[[Any], str | None] | None = None  # returns an error text or None


def read_toml(path: str | Path) -> dict:
    """Parse a TOML file; any error becomes a :class:`ConfigError` naming the file."""
    try:
        import tomllib
    except ModuleNotFoundError:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such configuration file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _number(v, key: Key, where: str, integer: bool = False):
    if integer:
        if not isinstance(v, int) or isinstance(v, bool):
            raise ConfigError(f"{where} must be an integer, got {v!r}")
    elif not _is_num(v):
        raise ConfigError(f"{where} must be a number, got {v!r}")
    v = int(v) if integer else float(v)
    if not math.isfinite(v):
        raise ConfigError(f"{where} must be finite, got {v!r}")
    if key.lo is not None and (v <= key.lo if key.lo_open else v < key.lo):
        raise ConfigError(f"{where} must be {'>' if key.lo_open else '>='} {key.lo}, got {v!r}")
    if key.hi is not None and v > key.hi:
        raise ConfigError(f"{where} must be <= {key.hi}, got {v!r}")
    return v


def _value(v, key: Key, where: str, base: Path | None):
    k = key.kind
    if k == "any":
        return v
    if k == "int":
        return _number(v, key, where, integer=True)
    if k == "float":
        return _number(v, key, where)
    if k == "bool":
        if not isinstance(v, bool):
            raise ConfigError(f"{where} must be true or false, got {v!r}")
        return v
    if k in ("str", "path"):
        if not isinstance(v, str):
            raise ConfigError(f"{where} must be a string, got {v!r}")
        if key.choices is not None and v not in key.choices:
            raise ConfigError(f"{where} must be one of {list(key.choices)}, got {v!r}")
        if k == "path":
            if not v:
                raise ConfigError(f"{where} is an empty path")
            p = Path(v)
            return str(p if p.is_absolute() or base is None else base / p)
        return v
    if k in ("floats", "ints", "strs"):
        if isinstance(v, (str, bytes)) or not isinstance(v, list):
            raise ConfigError(f"{where} must be a list, got {v!r}")
        if key.nonempty and not v:
            raise ConfigError(f"{where} must not be empty")
        if key.length is not None and len(v) != key.length:
            raise ConfigError(f"{where} must have {key.length} entries, got {len(v)}")
        sub = Key({"floats": "float", "ints": "int", "strs": "str"}[k], lo=key.lo, hi=key.hi, lo_open=key.lo_open,
                  choices=key.choices)
        return [_value(x, sub, f"{where}[{i}]", base) for i, x in enumerate(v)]
    if k == "table":
        if not isinstance(v, dict):
            raise ConfigError(f"{where} must be a table, got {v!r}")
        return dict(v)
    if k == "moments":
        if isinstance(v, dict):
            sub = Key("float", lo=key.lo, hi=key.hi, lo_open=key.lo_open)
            return {str(s): _value(x, sub, f"{where}.{s}", base) for s, x in v.items()}
        return _number(v, key, where)
    raise AssertionError(f"unknown key kind {k}")


def check_table(raw: Any, schema: Mapping[str, Key], where: str, base: Path | None = None) -> dict:
    """Validate one table against ``schema`` and fill in defaults.

    ``where`` is "FILE: [section]" and prefixes every message. A key whose
    schema default is :data:`REQUIRED` must be present.
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a table, got {raw!r}")
    unknown = sorted(set(raw) - set(schema))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known: {sorted(schema)}")
    out = {}
    for name, key in schema.items():
        w = f"{where} {name}"
        if name in raw:
            v = _value(raw[name], key, w, base)
            if key.check is not None:
                msg = key.check(v)
                if msg:
                    raise ConfigError(f"{w}: {msg}")
            out[name] = v
        elif key.default is REQUIRED:
            raise ConfigError(f"{where}: missing required key {name!r}")
        else:
            out[name] = key.default() if callable(key.default) else key.default
    return out


def check_species_map(mapping: Mapping[str, Any], species, where: str) -> None:
    """Every key of a per-species table must be a known species."""
    from ase.data import atomic_numbers

    for s in mapping:
        if s not in atomic_numbers:
            raise ConfigError(f"{where}: {s!r} is not a chemical symbol")
        if species is not None and s not in species:
            raise ConfigError(f"{where}: species {s!r} is not in the structure ({sorted(species)})")


def _level(v):
    return None if v % 2 == 0 else f"must be even (MTP levels are 2, 4, 6, ...), got {v}"


#: ``[model]``: the mMTP to create (shared by train and learn).
MODEL: dict[str, Key] = {
    "species": Key("strs", nonempty=True),  # type order; default: the species present, by atomic number
    "init": Key("path"),  # start from this potential file instead of a new one (train)
    "level": Key("int", 16, lo=2, hi=28, check=_level),
    "radial_basis_size": Key("int", 8, lo=2, hi=64),
    "magnetic_basis_size": Key("int", 2, lo=1, hi=64),
    "min_dist": Key("float", lo=0.0, lo_open=True, hi=20.0),  # Å; default: just below the smallest distance
    "max_dist": Key("float", 5.0, lo=0.0, lo_open=True, hi=20.0),  # Å
    "max_moment": Key("moments", lo=0.0, lo_open=True, hi=100.0),  # μB; default: max |m| per species + 10 %
}

#: ``[fit]``: the objective and the optimiser (shared by train and learn).
FIT: dict[str, Key] = {
    "weights": Key("table", lambda: {"energy": 1.0, "forces": 0.01, "stress": 0.001, "magnetic_forces": 0.1}),
    "energy_per_atom": Key("bool", False),
    "regularization": Key("float", 0.0, lo=0.0),
    "optimizer": Key("str", "auto", choices=("auto", "BFGS", "L-BFGS-B")),
    "max_iter": Key("int", 1000, lo=1),
    "restarts": Key("int", 1, lo=1),
    "restart_scale": Key("float", 0.3, lo=0.0),
    "patience": Key("int", 100, lo=0),  # 0: no early stopping
    "linear_solve": Key("str", "auto", choices=("auto", "hessian", "cg", "none")),
    "seed": Key("int", 0),
    "checkpoint_interval": Key("float", 30.0, lo=0.0),  # s
    "valid_fraction": Key("float", 0.0, lo=0.0, hi=0.9),  # random validation split
    # learn: refits after iteration 0 start from the previous potential, with at most
    # warm_max_iter iterations (0: max_iter); once a round preselects nothing, a final
    # refit of final_max_iter iterations (default 2 max_iter, 0: none) is sampled
    # again and delivered (see loop.learner.warm_max_iter and final_max_iter)
    "warm_max_iter": Key("int", 0, lo=0),
    "final_max_iter": Key("int", None, lo=0),
}

_WEIGHTS = {"energy": Key("float", 1.0, lo=0.0), "forces": Key("float", 0.01, lo=0.0),
            "stress": Key("float", 0.001, lo=0.0), "magnetic_forces": Key("float", 0.1, lo=0.0)}


def check_fit(raw: Any, where: str) -> dict:
    """``[fit]`` with its weights table checked (the one weight format of the package)."""
    out = check_table(raw, FIT, where)
    out["weights"] = check_table(out["weights"], _WEIGHTS, f"{where} weights")
    return out


def fit_arguments(fit: Mapping[str, Any]) -> dict:
    """Keyword arguments of :func:`mmtp_rs.fitting.optimize.fit` from a checked ``[fit]`` table."""
    f = dict(fit)
    f.pop("valid_fraction", None)
    f.pop("warm_max_iter", None)
    f.pop("final_max_iter", None)
    f["patience"] = None if f["patience"] == 0 else f["patience"]
    f["linear_solve"] = None if f["linear_solve"] == "none" else f["linear_solve"]
    return f


#: A structure table (``[system]`` of learn, ``[structure]`` of properties, each ``[[system.phase]]``):
#: a file ASE reads, or a prototype of ase.build.bulk.
STRUCTURE: dict[str, Key] = {
    "name": Key("str"),
    "structure": Key("path"),  # POSCAR, CIF, extxyz, ... (anything ase.io.read reads)
    "index": Key("int", 0),  # image of a multi-image file
    "prototype": Key("str", choices=("rocksalt", "bcc", "b2", "fcc", "hcp", "diamond", "zincblende",
                                     "cesiumchloride", "fluorite", "wurtzite")),
    "symbols": Key("strs", nonempty=True),  # prototype: the elements (rocksalt/b2: [A, B])
    "a0": Key("float", lo=0.5, hi=50.0),  # Å, prototype lattice parameter
    "supercell": Key("ints", lambda: [1, 1, 1], lo=1, hi=64, length=3),
    "moments": Key("moments", lambda: {}, lo=0.0, hi=20.0),  # μB, starting magnitudes per species
    "afm_direction": Key("any"),  # name of a rock-salt ordering or a Cartesian normal (default AFM1 / [0, 0, 1])
    "afm_layers": Key("int", 1, lo=1, hi=16),
    "signs": Key("table", lambda: {}),  # named explicit states: {name = [+1, -1, ...] per atom of the cell}
}
