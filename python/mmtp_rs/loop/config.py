"""The configuration of a learning run (``mmtp learn CONFIG.toml``), checked at load time."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from mmtp_rs.simulate import DEFAULT_GAMMA_LOW, default_thresholds


try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = ["ConfigError", "PROTOTYPES", "SystemConfig", "StageConfig", "LearnConfig", "validation_options", "validation_enabled"]


class ConfigError(ValueError):
    """A bad learning configuration; the message names the file and entry."""


PROTOTYPES = ("rocksalt", "bcc", "b2", "fcc")


@dataclass
class SystemConfig:
    prototype: str = "rocksalt"
    symbols: list = field(default_factory=lambda: ["Cr", "N"])  # rocksalt/b2: [A, B]; bcc/fcc: [A]
    a0: float = 4.15  # Å
    supercell: list = field(default_factory=lambda: [2, 2, 2])  # repeats of the conventional cubic cell
    moments: dict = field(default_factory=lambda: {"Cr": 2.4, "N": 0.0})  # μB, starting magnitudes


@dataclass
class StageConfig:
    kind: str = "relax"  # "moments" (stage 1 only, from random starts), "relax" or "md"
    gamma_low: float | None = None  # default: 2 (moments, relax), 4 (md)
    gamma_up: float = 10.0
    starts: list = field(default_factory=lambda: ["FM", "AFM", "random"])
    scales: list = field(default_factory=lambda: [1.0])  # lattice-parameter factors
    temperatures: list = field(default_factory=lambda: [300.0])  # K (md)
    steps: int = 200  # MD steps or optimiser steps
    timestep_fs: float = 2.0
    thermostat: str = "langevin"
    fmax: float = 0.01  # eV/Å (relax)
    cell: bool = True  # relax the cell too
    equilibrate: bool = True  # stage 1 before this stage
    frozen: list = field(default_factory=list)  # species whose moments stage 1 holds fixed (explicit only)
    moment_range: list = field(default_factory=lambda: [0.5, 1.0])  # moments: |m|/M_max of magnetic atoms
    displacement: float = 0.02  # Å, std of random displacements of relax/moments starts
    strain: float = 0.0  # max |component| of a random symmetric cell strain of relax/moments starts


@dataclass
class LearnConfig:
    name: str = "mmtp-learn"
    seed: int = 0
    system: SystemConfig = field(default_factory=SystemConfig)
    oracle: dict = field(default_factory=lambda: {"kind": "reference", "preset": "CrN"})
    model: dict = field(default_factory=dict)  # make_potential arguments
    fit: dict = field(default_factory=dict)  # fit arguments (weights, max_iter, restarts, ...)
    initial: dict = field(default_factory=dict)
    stages: list = field(default_factory=lambda: [StageConfig()])
    active: dict = field(default_factory=dict)  # ActiveSet arguments (mode, tol, ...)
    max_iterations: int = 10
    max_selected: int = 20  # labelled configurations per iteration
    test: dict = field(default_factory=dict)  # held-out oracle MD: n, temperatures, steps
    executor: dict = field(default_factory=dict)  # {"kind": "process"|"serial"|"dask", "workers": n}
    validate: dict = field(default_factory=dict)  # ValidationOptions entries (lattice in Å, ...); see validation_options
    source: str = ""

    @classmethod
    def from_toml(cls, path: str | os.PathLike) -> "LearnConfig":
        path = Path(path)
        try:
            doc = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: no such configuration file") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: invalid TOML: {exc}") from None
        return cls.from_dict(doc, source=str(path))

    @classmethod
    def from_dict(cls, doc: dict, source: str = "<dict>") -> "LearnConfig":
        known = {"name", "seed", "system", "oracle", "model", "fit", "initial", "stage", "active", "limits",
                 "test", "executor", "validate"}
        unknown = set(doc) - known
        if unknown:
            raise ConfigError(f"{source}: unknown section(s) {sorted(unknown)}; known: {sorted(known)}")
        cfg = cls(source=source)
        cfg.name = str(doc.get("name", cfg.name))
        cfg.seed = int(doc.get("seed", 0))
        sysd = dict(doc.get("system", {}))
        bad = set(sysd) - set(SystemConfig.__dataclass_fields__)
        if bad:
            raise ConfigError(f"{source}: [system] has unknown entries {sorted(bad)}")
        cfg.system = SystemConfig(**sysd)
        s = cfg.system
        if s.prototype not in PROTOTYPES:
            raise ConfigError(f"{source}: [system] prototype {s.prototype!r} is not one of {PROTOTYPES}")
        need = 2 if s.prototype in ("rocksalt", "b2") else 1
        if len(s.symbols) != need:
            raise ConfigError(f"{source}: [system] prototype {s.prototype} needs {need} symbols, got {s.symbols}")
        if not (isinstance(s.a0, (int, float)) and s.a0 > 0):
            raise ConfigError(f"{source}: [system] a0 must be a positive length in Å, got {s.a0!r}")
        if len(s.supercell) != 3 or any(int(k) < 1 for k in s.supercell):
            raise ConfigError(f"{source}: [system] supercell must be three positive integers, got {s.supercell}")
        cfg.oracle = dict(doc.get("oracle", cfg.oracle))
        if cfg.oracle.get("kind", "reference") not in ("reference", "abinit"):
            raise ConfigError(f"{source}: [oracle] kind must be 'reference' or 'abinit', got {cfg.oracle.get('kind')!r}")
        cfg.model = dict(doc.get("model", {}))
        cfg.fit = dict(doc.get("fit", {}))
        cfg.initial = dict(doc.get("initial", {}))
        stages = doc.get("stage", [])
        if not isinstance(stages, list) or not stages:
            raise ConfigError(f"{source}: at least one [[stage]] is needed")
        cfg.stages = []
        for k, st in enumerate(stages):
            bad = set(st) - set(StageConfig.__dataclass_fields__)
            if bad:
                raise ConfigError(f"{source}: [[stage]] {k} has unknown entries {sorted(bad)}")
            sc = StageConfig(**st)
            if sc.kind not in DEFAULT_GAMMA_LOW:
                raise ConfigError(f"{source}: [[stage]] {k} kind must be one of {sorted(DEFAULT_GAMMA_LOW)}, "
                                  f"got {sc.kind!r}")
            try:
                default_thresholds(sc.kind, sc.gamma_low, sc.gamma_up)
            except ValueError as exc:
                raise ConfigError(f"{source}: [[stage]] {k}: {exc}") from None
            lo_hi = [float(x) for x in sc.moment_range]
            if len(lo_hi) != 2 or not (0 <= lo_hi[0] <= lo_hi[1] <= 1):
                raise ConfigError(f"{source}: [[stage]] {k} moment_range must be [lo, hi] with 0 <= lo <= hi <= 1 "
                                  f"(fractions of M_max), got {sc.moment_range}")
            if not (0 <= sc.strain < 0.5 and sc.displacement >= 0):
                raise ConfigError(f"{source}: [[stage]] {k} needs 0 <= strain < 0.5 and displacement >= 0 Å, "
                                  f"got {sc.strain}, {sc.displacement}")
            bad = [x for x in sc.frozen if x not in s.symbols]
            if bad:
                raise ConfigError(f"{source}: [[stage]] {k} frozen species {bad} are not in [system] symbols")
            cfg.stages.append(sc)
        cfg.active = dict(doc.get("active", {}))
        limits = dict(doc.get("limits", {}))
        cfg.max_iterations = int(limits.get("max_iterations", cfg.max_iterations))
        cfg.max_selected = int(limits.get("max_selected", cfg.max_selected))
        if cfg.max_iterations < 1 or cfg.max_selected < 1:
            raise ConfigError(f"{source}: [limits] max_iterations and max_selected must be >= 1")
        cfg.test = dict(doc.get("test", {}))
        cfg.executor = dict(doc.get("executor", {}))
        cfg.validate = dict(doc.get("validate", {}))
        try:
            validation_options(cfg)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{source}: [validate]: {exc}") from None
        return cfg


def validation_options(cfg: LearnConfig):
    """:class:`~mmtp_rs.properties.validation.ValidationOptions` of the ``[validate]`` table.

    ``enabled`` (default true with the reference oracle, false otherwise);
    ``lattice`` in Å (default a0 × [0.976, 0.988, 1, 1.012, 1.024]); the other
    keys are the fields of ValidationOptions.
    """
    from mmtp_rs.properties.validation import ValidationOptions

    v = dict(cfg.validate)
    v.pop("enabled", None)
    a0 = cfg.system.a0
    v.setdefault("lattice", [round(a0 * f, 4) for f in (0.976, 0.988, 1.0, 1.012, 1.024)])
    v.setdefault("elastic_lattice", a0)
    if cfg.system.prototype == "rocksalt":
        v.setdefault("afm_direction", "AFM1")
    else:
        v.setdefault("afm_direction", [0, 0, 1])
    fields = ValidationOptions.__dataclass_fields__
    bad = set(v) - set(fields)
    if bad:
        raise ValueError(f"unknown entries {sorted(bad)}; known: {sorted(set(fields) | {'enabled'})}")
    opts = ValidationOptions(**v)
    if not opts.lattice or any(not (float(a) > 0) for a in opts.lattice):
        raise ValueError(f"lattice must be a non-empty list of positive lattice parameters (Å), got {opts.lattice}")
    bad = [s for s in list(opts.states) + list(opts.elastic_states)
           if s.upper() not in ("FM", "AFM", "RANDOM", "PM")]
    if bad:
        raise ValueError(f"unknown states {bad} (FM, AFM, random; elastic: FM, AFM, PM)")
    return opts


def validation_enabled(cfg: LearnConfig) -> bool:
    return bool(cfg.validate.get("enabled", cfg.oracle.get("kind", "reference") == "reference"))


