"""The configuration of a learning run (``mmtp learn CONFIG.toml``), checked at load time.

Every table is checked against the schemas of :mod:`mmtp_rs.config` before
anything runs: unknown keys, wrong types and nonsensical values raise
:class:`~mmtp_rs.config.ConfigError` naming the file, the section and the key.
Paths are relative to the configuration file.

Structures: ``[system]`` is one structure, ``[[phase]]`` tables are several
(each a prototype of ``ase.build.bulk`` with ``a0``, or ``structure = FILE``,
anything ASE reads: POSCAR, CIF, extxyz), with a ``supercell``, starting
``moments`` per species, and magnetic states by name (FM, AFM along
``afm_direction``, a rock-salt ordering, random) or explicit per-atom
``signs``. Every simulation stage and the initial set run over every phase.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from mmtp_rs.config import MODEL, STRUCTURE, ConfigError, Key, check_fit, check_species_map, check_table, read_toml
from mmtp_rs.simulate import DEFAULT_GAMMA_LOW


__all__ = ["ConfigError", "SystemConfig", "StageConfig", "LearnConfig", "validation_options",
           "validation_enabled", "STATE_NAMES"]

#: Names of magnetic states a phase understands besides its own ``signs``.
STATE_NAMES = ("FM", "AFM", "AFM1", "AFM2", "AFM110_2", "random", "PM")


@dataclass
class SystemConfig:
    """One structure (phase) of a learning run."""

    prototype: str | None = "rocksalt"
    symbols: list = field(default_factory=lambda: ["Cr", "N"])  # rocksalt/b2: [A, B]; bcc/fcc: [A]
    a0: float | None = 4.15  # Å (prototypes); for a file, the length of its first cell vector
    supercell: list = field(default_factory=lambda: [2, 2, 2])  # repeats of the (conventional) cell
    moments: dict = field(default_factory=lambda: {"Cr": 2.4, "N": 0.0})  # μB, starting magnitudes
    name: str = ""
    structure: str | None = None  # a file ASE reads (absolute, or relative to the config file)
    index: int = 0  # image of a multi-image structure file
    afm_direction: object = None  # rock-salt ordering name or Cartesian normal (default: AFM1 / [0, 0, 1])
    afm_layers: int = 1
    signs: dict = field(default_factory=dict)  # name -> per-atom signs of the unit cell

    def __post_init__(self):
        self._unit = None

    def unit_cell(self):
        """The unit cell (before the supercell) at scale 1, read or built once."""
        if self._unit is None:
            from ase.build import bulk

            if self.structure is not None:
                from ase.io import read

                try:
                    atoms = read(self.structure, index=self.index)
                except Exception as exc:  # noqa: BLE001 - any reader failure names the file
                    raise ConfigError(f"{self.structure}: cannot read the structure: {exc}") from None
                atoms.calc = None
                atoms.set_initial_magnetic_moments(None)
                if not atoms.pbc.all():
                    raise ConfigError(f"{self.structure}: the structure must be periodic in 3 dimensions")
            else:
                p, s, a = self.prototype, self.symbols, self.a0
                if p in ("rocksalt", "zincblende", "cesiumchloride", "fluorite", "wurtzite", "b2"):
                    atoms = bulk("".join(s), "cesiumchloride" if p == "b2" else p, a=a,
                                 **({"cubic": True} if p != "wurtzite" else {}))
                else:
                    atoms = bulk(s[0], p, a=a, **({"cubic": True} if p != "hcp" else {}))
            self._unit = atoms
        return self._unit.copy()

    @property
    def reference_length(self) -> float:
        """a0 of a prototype; the length of the first cell vector of a structure file (Å)."""
        if self.structure is None:
            return float(self.a0)
        return float(self.unit_cell().cell.lengths()[0])

    def cell(self, scale: float = 1.0, supercell=None):
        """The supercell, uniformly scaled by ``scale``."""
        atoms = self.unit_cell()
        atoms.set_cell(atoms.cell.array * scale, scale_atoms=True)
        return atoms.repeat([int(k) for k in (self.supercell if supercell is None else supercell)])

    def default_afm(self):
        if self.afm_direction is not None:
            return self.afm_direction
        return "AFM1" if self.prototype == "rocksalt" else [0, 0, 1]

    def state(self, atoms, kind: str, seed: int = 0):
        """Moments (N,) of the state ``kind`` on ``atoms`` (a cell of this phase)."""
        import numpy as np

        from mmtp_rs.magnetism.states import magnitudes, state_moments

        if kind in self.signs:
            unit = np.sign(np.asarray(self.signs[kind], dtype=float))
            n_unit = len(self.unit_cell())
            if len(atoms) % n_unit:
                raise ConfigError(f"signs {kind!r} cover {n_unit} atoms; the cell has {len(atoms)}")
            return magnitudes(atoms, self.moments) * np.tile(unit, len(atoms) // n_unit)
        if kind.upper() == "AFM":
            d = self.default_afm()
            return state_moments(atoms, "AFM", self.moments, direction=d, n_layers=self.afm_layers)
        return state_moments(atoms, kind, self.moments, seed=seed)

    @property
    def species(self) -> list[str]:
        return list(dict.fromkeys(self.unit_cell().get_chemical_symbols()))


@dataclass
class StageConfig:
    kind: str = "relax"  # "moments" (stage 1 only, from random starts), "relax", "md", "mdmc" or "dlm"
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
    engine: str = "ase"  # md: "ase" (in process) or "lammps" (the LAMMPS plugin, over MPI ranks)
    nprocs: int = 1  # md with engine = "lammps": MPI ranks


def _range01(v):
    return None if 0 <= v[0] <= v[1] <= 1 else f"must be [lo, hi] with 0 <= lo <= hi <= 1, got {v}"


STAGE = {
    "kind": Key("str", "relax", choices=tuple(sorted(DEFAULT_GAMMA_LOW))),
    "gamma_low": Key("float", lo=0.0, lo_open=True),
    "gamma_up": Key("float", 10.0, lo=0.0, lo_open=True),
    "starts": Key("strs", lambda: ["FM", "AFM", "random"], nonempty=True),
    "scales": Key("floats", lambda: [1.0], lo=0.5, hi=2.0, nonempty=True),
    "temperatures": Key("floats", lambda: [300.0], lo=0.0, hi=1e5, nonempty=True),
    "steps": Key("int", 200, lo=0, hi=10_000_000),
    "timestep_fs": Key("float", 2.0, lo=0.0, lo_open=True, hi=20.0),
    "thermostat": Key("str", "langevin", choices=("langevin", "nose-hoover", "bussi")),
    "fmax": Key("float", 0.01, lo=0.0, lo_open=True),
    "cell": Key("bool", True),
    "equilibrate": Key("bool", True),
    "frozen": Key("strs", list),
    "moment_range": Key("floats", lambda: [0.5, 1.0], length=2, check=_range01),
    "displacement": Key("float", 0.02, lo=0.0, hi=1.0),
    "strain": Key("float", 0.0, lo=0.0, hi=0.3),
    "engine": Key("str", "ase", choices=("ase", "lammps")),
    "nprocs": Key("int", 1, lo=1, hi=100_000),
}
INITIAL = {
    "scales": Key("floats", lambda: [0.96, 1.0, 1.04], lo=0.5, hi=2.0, nonempty=True),
    "states": Key("strs", lambda: ["FM", "AFM", "random", "random"], nonempty=True),
    "per_state": Key("int", 2, lo=1, hi=1000),
    "displacement": Key("float", 0.05, lo=0.0, hi=1.0),  # Å
    "moment_perturbation": Key("float", 0.15, lo=0.0, hi=1.0),
    "moment_noise": Key("float", 1.0, lo=0.0, hi=1.0),
    "strain": Key("float", 0.0, lo=0.0, hi=0.3),
}
ACTIVE = {
    "mode": Key("str", "configuration", choices=("configuration", "cfg", "neighborhood", "neighbourhood", "nbh")),
    "tol": Key("float", 1e-3, lo=0.0),
    "build_tol": Key("float", 1e-7, lo=0.0),
    "unit_value": Key("float", 1e-5, lo=0.0, lo_open=True),
    "scale_by_atoms": Key("bool", True),
    "batch_size": Key("int", 256, lo=1),
}
LIMITS = {"max_iterations": Key("int", 10, lo=1, hi=10_000), "max_selected": Key("int", 20, lo=1, hi=100_000)}
TEST = {
    "n": Key("int", 0, lo=0, hi=100_000),
    "temperatures": Key("floats", lambda: [300.0, 1000.0], lo=0.0, hi=1e5, nonempty=True),
    "states": Key("strs", lambda: ["AFM", "random", "FM"], nonempty=True),
    "every": Key("int", 10, lo=1),
}
EXECUTOR = {"kind": Key("str", "default", choices=("default", "serial", "process", "dask")),
            "workers": Key("int", 2, lo=1, hi=4096), "address": Key("str")}
REFERENCE_ORACLE = {"kind": Key("str", "reference"), "preset": Key("str", "CrN"), "relax_moments": Key("bool", False),
                    "delay": Key("float", 0.0, lo=0.0), "max_attempts": Key("int", 1, lo=1, hi=100)}
_ABINIT_PATHS = ("pseudo_dir",)
TOP = {"name": Key("str", "mmtp-learn"), "seed": Key("int", 0, lo=0)}


@dataclass
class LearnConfig:
    name: str = "mmtp-learn"
    seed: int = 0
    system: SystemConfig = field(default_factory=SystemConfig)
    phases: list = field(default_factory=list)  # every SystemConfig; phases[0] is `system`
    oracle: dict = field(default_factory=lambda: {"kind": "reference", "preset": "CrN"})
    model: dict = field(default_factory=dict)  # make_potential arguments
    fit: dict = field(default_factory=dict)  # fit arguments (weights, max_iter, restarts, ...)
    initial: dict = field(default_factory=dict)
    stages: list = field(default_factory=lambda: [StageConfig()])
    active: dict = field(default_factory=dict)  # ActiveSet arguments (mode, tol, ...)
    max_iterations: int = 10
    max_selected: int = 20  # labelled configurations per iteration
    test: dict = field(default_factory=dict)  # held-out oracle MD: n, temperatures, states, every
    executor: dict = field(default_factory=dict)  # {"kind": "process"|"serial"|"dask", "workers": n}
    validate: dict = field(default_factory=dict)  # ValidationOptions entries (lattice in Å, ...); see validation_options
    source: str = ""

    def __post_init__(self):
        if not self.phases:
            self.phases = [self.system]

    @classmethod
    def from_toml(cls, path: str | os.PathLike) -> "LearnConfig":
        path = Path(path)
        return cls.from_dict(read_toml(path), source=str(path), base=path.resolve().parent)

    @classmethod
    def from_dict(cls, doc: dict, source: str = "<dict>", base: Path | None = None) -> "LearnConfig":
        known = {"name", "seed", "system", "phase", "oracle", "model", "fit", "initial", "stage", "active", "limits",
                 "test", "executor", "validate"}
        unknown = set(doc) - known
        if unknown:
            raise ConfigError(f"{source}: unknown section(s) {sorted(unknown)}; known: {sorted(known)}")
        cfg = cls(source=source)
        top = check_table({k: doc[k] for k in ("name", "seed") if k in doc}, TOP, f"{source}:")
        cfg.name, cfg.seed = top["name"], top["seed"]
        if "system" in doc and "phase" in doc:
            raise ConfigError(f"{source}: give either [system] (one structure) or [[phase]] tables, not both")
        raw_phases = doc["phase"] if "phase" in doc else [doc.get("system", {})]
        if not isinstance(raw_phases, list) or not raw_phases:
            raise ConfigError(f"{source}: [[phase]] must be a non-empty array of tables")
        cfg.phases = [_phase(p, f"{source}: [{'system' if 'phase' not in doc else f'phase {k}'}]", base)
                      for k, p in enumerate(raw_phases)]
        cfg.system = cfg.phases[0]
        species = sorted({s for ph in cfg.phases for s in ph.species})
        cfg.oracle = _oracle(doc.get("oracle", {"kind": "reference"}), f"{source}: [oracle]", base, species)
        cfg.model = check_table(doc.get("model", {}), MODEL, f"{source}: [model]", base)
        cfg.model = {k: v for k, v in cfg.model.items() if v is not None or k in ("min_dist", "max_moment")}
        cfg.model.pop("init", None)
        if cfg.model.get("species") is not None:
            missing = [s for s in species if s not in cfg.model["species"]]
            if missing:
                raise ConfigError(f"{source}: [model] species {cfg.model['species']} lacks {missing} of the structures")
        if isinstance(cfg.model.get("max_moment"), dict):
            check_species_map(cfg.model["max_moment"], species, f"{source}: [model] max_moment")
            missing = [s for s in species if s not in cfg.model["max_moment"]]
            if missing:
                raise ConfigError(f"{source}: [model] max_moment has no value for {missing}")
        cfg.fit = check_fit(doc.get("fit", {}), f"{source}: [fit]")
        cfg.initial = check_table(doc.get("initial", {}), INITIAL, f"{source}: [initial]")
        stages = doc.get("stage", [])
        if not isinstance(stages, list) or not stages:
            raise ConfigError(f"{source}: at least one [[stage]] is needed")
        cfg.stages = []
        for k, st in enumerate(stages):
            where = f"{source}: [[stage]] {k}"
            sc = StageConfig(**check_table(st, STAGE, where))
            low = sc.gamma_low if sc.gamma_low is not None else DEFAULT_GAMMA_LOW[sc.kind]
            if low > sc.gamma_up:
                raise ConfigError(f"{where}: need gamma_low <= gamma_up, got {low}, {sc.gamma_up}")
            if sc.kind in ("mdmc", "dlm") and sc.thermostat != "langevin":
                raise ConfigError(f"{where} thermostat: the {sc.kind} stage runs Langevin MD only, got {sc.thermostat!r}")
            if sc.engine == "lammps" and sc.kind != "md":
                raise ConfigError(f"{where} engine: LAMMPS runs the md stage kind only, got kind {sc.kind!r}")
            bad = [x for x in sc.frozen if x not in species]
            if bad:
                raise ConfigError(f"{where} frozen: species {bad} are not in the structures ({species})")
            _check_states(cfg.phases, sc.starts, f"{where} starts")
            cfg.stages.append(sc)
        _check_states(cfg.phases, cfg.initial["states"], f"{source}: [initial] states")
        cfg.active = check_table(doc.get("active", {}), ACTIVE, f"{source}: [active]")
        limits = check_table(doc.get("limits", {}), LIMITS, f"{source}: [limits]")
        cfg.max_iterations, cfg.max_selected = limits["max_iterations"], limits["max_selected"]
        cfg.test = check_table(doc.get("test", {}), TEST, f"{source}: [test]")
        if cfg.test["n"]:
            _check_states(cfg.phases, cfg.test["states"], f"{source}: [test] states")
        cfg.executor = check_table(doc.get("executor", {}), EXECUTOR, f"{source}: [executor]")
        if cfg.executor["kind"] == "dask" and cfg.executor["address"] is None:
            cfg.executor.pop("address")
        cfg.validate = dict(doc.get("validate", {}))
        try:
            validation_options(cfg)
        except (TypeError, ValueError) as exc:
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(f"{source}: [validate]: {exc}") from None
        return cfg

    def summary(self) -> str:
        """One paragraph describing what the run will do (``mmtp learn --check``)."""
        ph = ", ".join(f"{p.name or (p.structure or p.prototype)} ({len(p.cell())} atoms)" for p in self.phases)
        st = ", ".join(f"{s.kind} × {len(s.scales) * len(s.starts) * (len(s.temperatures) if s.kind in ('md', 'mdmc', 'dlm') else 1)}"
                       for s in self.stages)
        return (f"{self.name}: phases {ph}; oracle {self.oracle.get('kind')}; stages {st} (per phase); "
                f"at most {self.max_iterations} iterations of {self.max_selected} labels")


def _phase(raw, where: str, base: Path | None) -> SystemConfig:
    t = check_table(raw, STRUCTURE, where, base)
    if t["structure"] is None:
        t["prototype"] = t["prototype"] or "rocksalt"
        if t["symbols"] is None and t["prototype"] == "rocksalt":  # the default system: rock-salt CrN
            t["symbols"] = ["Cr", "N"]
            t["a0"] = 4.15 if t["a0"] is None else t["a0"]
        if not t["symbols"]:
            raise ConfigError(f"{where}: a prototype needs 'symbols'")
        need = 2 if t["prototype"] in ("rocksalt", "b2", "zincblende", "cesiumchloride", "fluorite", "wurtzite") else 1
        if len(t["symbols"]) != need:
            raise ConfigError(f"{where}: prototype {t['prototype']} needs {need} symbols, got {t['symbols']}")
        if t["a0"] is None:
            raise ConfigError(f"{where}: a prototype needs 'a0' (Å)")
    elif t["prototype"] is not None or t["symbols"] is not None or t["a0"] is not None:
        raise ConfigError(f"{where}: give either 'structure' (a file) or 'prototype'/'symbols'/'a0', not both")
    if not t["moments"]:
        t["moments"] = {"Cr": 2.4, "N": 0.0} if t["symbols"] == ["Cr", "N"] else {}
    if not isinstance(t["moments"], dict):
        raise ConfigError(f"{where} moments: give the starting magnitude per species, e.g. {{ Fe = 2.2 }}")
    ph = SystemConfig(prototype=t["prototype"], symbols=t["symbols"], a0=t["a0"], supercell=t["supercell"],
                      moments=t["moments"], name=t["name"] or "", structure=t["structure"], index=t["index"],
                      afm_direction=t["afm_direction"], afm_layers=t["afm_layers"], signs=dict(t["signs"]))
    try:
        species = ph.species
    except ConfigError as exc:
        raise ConfigError(f"{where} structure: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - ase.build errors name the prototype problem
        raise ConfigError(f"{where}: cannot build the structure: {exc}") from None
    check_species_map(ph.moments, species, f"{where} moments")
    n_unit = len(ph.unit_cell())
    for name, signs in ph.signs.items():
        if name in STATE_NAMES:
            raise ConfigError(f"{where} signs: {name!r} is a built-in state name; choose another")
        if (not isinstance(signs, list) or len(signs) != n_unit
                or any(not isinstance(x, (int, float)) or isinstance(x, bool) or x not in (-1, 1) for x in signs)):
            raise ConfigError(f"{where} signs.{name}: need {n_unit} entries of +1 or -1 (one per atom of the "
                              f"unit cell), got {signs!r}")
    return ph


def _check_states(phases, names, where: str) -> None:
    """Every named state must be buildable on every phase (catches typos and incommensurate orders)."""
    for ph in phases:
        cell = ph.cell()
        for name in names:
            if name not in ph.signs and name not in STATE_NAMES and name.upper() not in ("FM", "AFM", "PM",
                                                                                          "RANDOM"):
                raise ConfigError(f"{where}: unknown state {name!r}; known: {list(STATE_NAMES)} and the phase's "
                                  f"signs {sorted(ph.signs)}")
            try:
                ph.state(cell, name, seed=0)
            except ConfigError:
                raise
            except ValueError as exc:
                raise ConfigError(f"{where}: state {name!r} on {ph.name or ph.structure or ph.prototype}: {exc}") \
                    from None


def _oracle(raw, where: str, base: Path | None, species) -> dict:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a table")
    kind = raw.get("kind", "reference")
    if kind == "reference":
        from mmtp_rs.oracles.reference import PRESETS

        out = check_table(raw, REFERENCE_ORACLE, where)
        names = {k.lower(): k for k in PRESETS}
        if out["preset"].lower() not in names:
            raise ConfigError(f"{where} preset: unknown reference-model preset {out['preset']!r}; "
                              f"known: {sorted(PRESETS)}")
        known = PRESETS[names[out["preset"].lower()]]["species"]
        missing = [s for s in species if s not in known]
        if missing:
            raise ConfigError(f"{where} preset {out['preset']!r} has no parameters for {missing}")
        return out
    if kind == "abinit":
        import inspect

        from mmtp_rs.oracles.abinit import AbinitOracle

        allowed = set(inspect.signature(AbinitOracle.__init__).parameters) - {"self"}
        bad = sorted(set(raw) - allowed - {"kind"})
        if bad:
            raise ConfigError(f"{where}: unknown key(s) {bad}; known: {sorted(allowed | {'kind'})}")
        out = dict(raw)
        for key in _ABINIT_PATHS:
            if isinstance(out.get(key), str) and base is not None and not Path(out[key]).is_absolute():
                out[key] = str(base / out[key])
        if isinstance(out.get("pseudopotentials"), dict) and base is not None:
            out["pseudopotentials"] = {s: (p if Path(p).is_absolute() or not (base / p).exists() else str(base / p))
                                       for s, p in out["pseudopotentials"].items()}
        return out
    raise ConfigError(f"{where} kind: must be 'reference' or 'abinit', got {kind!r}")


def validation_options(cfg: LearnConfig):
    """:class:`~mmtp_rs.properties.validation.ValidationOptions` of the ``[validate]`` table.

    ``enabled`` (default true with the reference oracle, false otherwise);
    ``lattice`` in Å (default a0 × [0.976, 0.988, 1, 1.012, 1.024]; for a
    structure file, a0 is the length of its first cell vector); the other
    keys are the fields of ValidationOptions. The first phase is validated.
    """
    from mmtp_rs.properties.validation import ValidationOptions

    v = dict(cfg.validate)
    enabled = v.pop("enabled", None)
    if enabled is not None and not isinstance(enabled, bool):
        raise ConfigError(f"{cfg.source}: [validate] enabled must be true or false, got {enabled!r}")
    a0 = cfg.system.reference_length
    v.setdefault("lattice", [round(a0 * f, 4) for f in (0.976, 0.988, 1.0, 1.012, 1.024)])
    v.setdefault("elastic_lattice", a0)
    v.setdefault("afm_direction", cfg.system.default_afm())
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
