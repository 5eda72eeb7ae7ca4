"""Mechanical, dynamical and thermal properties of FM, AFM and PM states.

The properties reported by Kotykhov et al. (PRB 2025) for CrN:

* elastic constants C_ij (6x6, GPa) from stress-strain with internal relaxation
  (:func:`elastic_constants`), Born stability (:func:`born_stability`);
* phonons with phonopy: band structure along the seekpath standard path, DOS,
  optional non-analytic correction (:func:`phonons`);
* quasi-harmonic thermal expansion alpha(T) and isobaric heat capacity C_p(T)
  through phonopy's QHA (:func:`quasi_harmonic`);
* ``mmtp properties CONFIG.toml``: all of it for a set of magnetic states,
  written as JSON, Markdown and PNG (:func:`run_report`, :func:`run`).

A magnetic state is put on any cell by a :class:`MagneticSetup`: FM and
layered AFM moments come from the positions, the PM state is a
:class:`~mmtp_rs.paramagnetic.ParamagneticCalculator` with its own K random
states per cell (moments attach by index). Within one property calculation
every strained or displaced copy shares the moments (or the K states) of its
reference geometry, so finite differences are taken at fixed moments.
"""

from __future__ import annotations

import argparse
import json
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from ase import Atoms

from .magnetic import ROCKSALT_AFM, antiferromagnetic, equilibrate_moments, ferromagnetic, magnitudes
from .paramagnetic import ParamagneticCalculator, convergence, plot_convergence

__all__ = [
    "EV_A3_TO_GPA",
    "MagneticSetup",
    "voigt_strain",
    "elastic_constants",
    "born_stability",
    "cubic_constants",
    "equilibrium_scale",
    "phonons",
    "quasi_harmonic",
    "run_report",
    "load_config",
    "add_cli",
    "run",
]

EV_A3_TO_GPA = 160.21766208
E2_4PIEPS0_EV_A = 14.39964548  # e^2 / (4 pi eps0), eV Å


# ================================================================ magnetic states on cells
@dataclass
class MagneticSetup:
    """How to put one magnetic state on any cell of a structure.

    Parameters
    ----------
    calculator : moment-aware ASE calculator (reads ``initial_magmoms``)
    kind : "FM", "AFM" or "PM"
    moment : magnitudes, μB (number or per-species mapping)
    direction, n_layers : AFM layer normal (Cartesian or a name of
        :data:`~mmtp_rs.magnetic.ROCKSALT_AFM`) and planes per block
    n_states, seed : PM: number of random states K and their seed
    equilibrate : stage 1: equilibrate the moment magnitudes (signs kept) at
        each reference geometry before the property calculation
    name : label used in reports
    """

    calculator: Any
    kind: str = "FM"
    moment: Any = 2.5
    direction: Any = (0, 0, 1)
    n_layers: int = 1
    n_states: int = 50
    seed: int = 0
    equilibrate: bool = True
    name: str = ""

    def __post_init__(self):
        self.kind = self.kind.upper()
        if self.kind not in ("FM", "AFM", "PM"):
            raise ValueError(f"state kind must be FM, AFM or PM, got {self.kind!r}")
        if isinstance(self.direction, str) and self.direction not in ROCKSALT_AFM:
            raise ValueError(f"unknown AFM ordering {self.direction!r}; known: {sorted(ROCKSALT_AFM)}")
        self.name = self.name or self.kind

    @property
    def is_symmetric(self) -> bool:
        """True when the moments keep the crystal's translations (FM; PM on average)."""
        return self.kind != "AFM"

    def signed_moments(self, atoms: Atoms) -> np.ndarray | None:
        """Unequilibrated FM/AFM moments of ``atoms`` (None for PM)."""
        if self.kind == "FM":
            return ferromagnetic(atoms, self.moment)
        if self.kind == "AFM":
            return antiferromagnetic(atoms, self.moment, self.direction, self.n_layers)
        return None

    def attach(self, atoms: Atoms, signs: np.ndarray | None = None) -> Atoms:
        """A copy of ``atoms`` carrying this state's moments and calculator.

        FM/AFM: moments from the positions (or, if ``signs`` is given, these
        signs by index with the configured magnitudes), equilibrated at this
        geometry if requested. PM: a new :class:`ParamagneticCalculator` whose
        K states (same seed, so the same signs by index) are built and
        equilibrated at this geometry.
        """
        at = atoms.copy()
        if self.kind == "PM":
            at.set_initial_magnetic_moments(magnitudes(at, self.moment))
            pm = ParamagneticCalculator(self.calculator, n_states=self.n_states, seed=self.seed,
                                        moment=self.moment, equilibrate="once" if self.equilibrate else "none")
            pm.set_reference(at)
            at.calc = pm
        else:
            if signs is not None:
                m = magnitudes(at, self.moment) * np.sign(np.asarray(signs, dtype=float))
            else:
                m = self.signed_moments(at)
            if self.equilibrate:
                m = equilibrate_moments(at, self.calculator, m)
            at.set_initial_magnetic_moments(m)
            at.calc = self.calculator
        return at

    def reattacher(self, reference: Atoms) -> Callable[[Atoms], Atoms]:
        """``f(deformed) -> attached`` keeping the sign pattern of ``reference`` by index
        (moment magnitudes re-equilibrated at the deformed geometry)."""
        signs = None if self.kind == "PM" else np.sign(reference.get_initial_magnetic_moments())
        return lambda b: self.attach(b, signs=signs)

    def moments_summary(self, atoms: Atoms) -> dict:
        """Mean |m| per species of an attached structure (over the K states for PM), μB."""
        if isinstance(atoms.calc, ParamagneticCalculator):
            ms = np.abs(np.array(atoms.calc.states(atoms)))
        else:
            ms = np.abs(atoms.get_initial_magnetic_moments())[None, :]
        sym = np.array(atoms.get_chemical_symbols())
        return {s: float(ms[:, sym == s].mean()) for s in dict.fromkeys(sym)}


def _sibling(at: Atoms) -> Atoms:
    """Copy sharing the calculator (and therefore the PM states) of ``at``."""
    b = at.copy()
    b.calc = at.calc
    return b


# ================================================================ elastic constants
def voigt_strain(j: int, h: float) -> np.ndarray:
    """Symmetric strain tensor of Voigt component j (0..5; shear as engineering strain h)."""
    pairs = [(0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1)]
    p, q = pairs[j]
    e = np.zeros((3, 3))
    if p == q:
        e[p, p] = h
    else:
        e[p, q] = e[q, p] = h / 2
    return e


def _relax_positions(at: Atoms, fmax: float, steps: int) -> int:
    from ase.optimize import BFGS

    opt = BFGS(at, logfile=None)
    opt.run(fmax=fmax, steps=steps)
    return int(opt.get_number_of_steps())


def elastic_constants(
    atoms: Atoms,
    strain: float = 0.005,
    relax: bool = True,
    fmax: float = 1e-3,
    max_steps: int = 300,
    reattach: Callable[[Atoms], Atoms] | None = None,
) -> dict:
    """Elastic constants from central stress-strain differences.

    C[:, j] = (σ(+h e_j) − σ(−h e_j)) / 2h in Voigt notation (engineering
    shear strains), σ in ASE's sign (positive in tension), so C = +dσ/dε.

    Parameters
    ----------
    atoms : structure with its calculator (and moments) attached; the
        reference geometry (ideally at zero stress)
    strain : h, the strain amplitude (0.005 = ±0.5 %)
    relax : relax internal positions at fixed cell (and fixed moments)
    fmax : force tolerance of the relaxation, eV/Å
    max_steps : step limit of each relaxation
    reattach : optional ``f(strained_atoms) -> atoms`` that re-prepares the
        state at each strain (e.g. :meth:`MagneticSetup.attach`, for
        moments re-equilibrated at each strain); default: the reference
        moments (or PM states) are kept fixed

    Returns
    -------
    dict : ``C`` (6x6 GPa, as computed), ``C_sym`` ((C+Cᵀ)/2), ``asymmetry``
    (max |C−Cᵀ|/2, GPa), ``stress0_GPa`` (stress at zero strain), ``relax_steps``
    """
    cell = atoms.cell.array.copy()
    c = np.zeros((6, 6))
    steps = []
    for j in range(6):
        sig = []
        for sgn in (1.0, -1.0):
            b = atoms.copy()
            b.set_cell(cell @ (np.eye(3) + voigt_strain(j, sgn * strain)), scale_atoms=True)
            if reattach is not None:
                b = reattach(b)
            else:
                b.calc = atoms.calc
            steps.append(_relax_positions(b, fmax, max_steps) if relax else 0)
            sig.append(b.get_stress(voigt=True))
        c[:, j] = (sig[0] - sig[1]) / (2 * strain) * EV_A3_TO_GPA
    s0 = _sibling(atoms).get_stress(voigt=True) * EV_A3_TO_GPA
    csym = 0.5 * (c + c.T)
    return {"C": c, "C_sym": csym, "asymmetry": float(np.abs(c - c.T).max() / 2), "stress0_GPa": s0,
            "relax_steps": steps, "strain": strain, "relaxed": relax}


def cubic_constants(c: np.ndarray) -> dict:
    """Cubic averages C11, C12, C44 (GPa), bulk modulus and the largest deviation from cubic form."""
    c = np.asarray(c)
    c11 = float(np.mean([c[0, 0], c[1, 1], c[2, 2]]))
    c12 = float(np.mean([c[0, 1], c[0, 2], c[1, 2], c[1, 0], c[2, 0], c[2, 1]]))
    c44 = float(np.mean([c[3, 3], c[4, 4], c[5, 5]]))
    ideal = np.zeros((6, 6))
    ideal[:3, :3] = c12
    ideal[np.arange(3), np.arange(3)] = c11
    ideal[np.arange(3, 6), np.arange(3, 6)] = c44
    return {"C11": c11, "C12": c12, "C44": c44, "B": (c11 + 2 * c12) / 3,
            "max_deviation_from_cubic": float(np.abs(c - ideal).max())}


def born_stability(c: np.ndarray, cubic_tolerance: float = 2.0) -> dict:
    """Born mechanical stability.

    The general criterion is that the symmetric 6x6 C is positive definite;
    for a (near-)cubic C the classic conditions C11 − C12 > 0, C11 + 2 C12 > 0,
    C44 > 0 are reported too.
    """
    cs = 0.5 * (np.asarray(c) + np.asarray(c).T)
    eig = np.linalg.eigvalsh(cs)
    out = {"stable": bool(eig.min() > 0), "eigenvalues_GPa": eig.tolist()}
    cub = cubic_constants(cs)
    if cub["max_deviation_from_cubic"] <= cubic_tolerance * max(1.0, 0.01 * abs(cub["C11"])):
        out["cubic"] = {"C11-C12": cub["C11"] - cub["C12"], "C11+2C12": cub["C11"] + 2 * cub["C12"],
                        "C44": cub["C44"],
                        "stable": bool(cub["C11"] > cub["C12"] and cub["C11"] + 2 * cub["C12"] > 0
                                       and cub["C44"] > 0)}
    return out


def equilibrium_scale(atoms: Atoms, setup: MagneticSetup, bracket: tuple[float, float] = (0.97, 1.03),
                      tol: float = 1e-5) -> tuple[float, float]:
    """Linear scale s of the cell at which the (averaged) pressure of the state vanishes.

    Each trial cell is re-attached (moments re-equilibrated, PM states rebuilt).
    Returns (s, pressure at s in GPa).
    """
    from scipy.optimize import brentq

    cell = atoms.cell.array.copy()

    def pressure(s):
        b = atoms.copy()
        b.set_cell(cell * s, scale_atoms=True)
        b = setup.attach(b)
        return float(-b.get_stress(voigt=True)[:3].mean() * EV_A3_TO_GPA)

    lo, hi = bracket
    plo, phi = pressure(lo), pressure(hi)
    for _ in range(6):
        if plo * phi < 0:
            break
        lo, hi = 1 - 2 * (1 - lo), 1 + 2 * (hi - 1)
        plo, phi = pressure(lo), pressure(hi)
    else:
        raise RuntimeError("no zero-pressure volume found within ±40 % linear strain")
    s = brentq(pressure, lo, hi, xtol=tol)
    return float(s), pressure(s)


# ================================================================ phonons
def _to_phonopy(atoms: Atoms, magmoms=None):
    from phonopy.structure.atoms import PhonopyAtoms

    return PhonopyAtoms(symbols=atoms.get_chemical_symbols(), cell=atoms.cell.array,
                        scaled_positions=atoms.get_scaled_positions(), magnetic_moments=magmoms)


def _to_ase(cell) -> Atoms:
    return Atoms(symbols=list(cell.symbols), cell=cell.cell, scaled_positions=cell.scaled_positions, pbc=True)


def band_path(cell) -> tuple[list[np.ndarray], list[str], list[bool]]:
    """seekpath's standard path, in fractional coordinates of the reciprocal of ``cell``.

    ``cell`` is an ase.Atoms or PhonopyAtoms (moments ignored: the path of the
    crystal structure). Returns segments (each (2, 3): start, end), segment
    labels "A-B" and, per segment, whether it continues the previous one.
    """
    import seekpath

    if isinstance(cell, Atoms):
        struct = (cell.cell.array, cell.get_scaled_positions(), cell.numbers)
    else:
        struct = (cell.cell, cell.scaled_positions, cell.numbers)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # supercell warning for magnetic cells: path is still right
        res = seekpath.get_path_orig_cell(struct)
    pc = res["point_coords"]
    segs, labels, connected = [], [], []
    prev = None
    for a, b in res["path"]:
        segs.append(np.array([pc[a], pc[b]], dtype=float))
        labels.append(f"{a}-{b}")
        connected.append(prev == a)
        prev = b
    return segs, labels, connected


def _nac_params(primitive, born: Mapping[str, Any], dielectric) -> dict:
    z = []
    for s in primitive.symbols:
        v = np.asarray(born[s], dtype=float)
        z.append(np.eye(3) * float(v) if v.ndim == 0 else v.reshape(3, 3))
    eps = np.asarray(dielectric, dtype=float)
    eps = np.eye(3) * float(eps) if eps.ndim == 0 else eps.reshape(3, 3)
    # factor: e^2/(4 pi eps0) in eV Å (= Hartree * Bohr), the unit conversion for eV/Å/amu inputs
    return {"born": np.array(z), "dielectric": eps, "factor": E2_4PIEPS0_EV_A}


def phonons(
    unitcell: Atoms,
    setup: MagneticSetup,
    supercell: Sequence[int] | np.ndarray = (2, 2, 2),
    distance: float = 0.01,
    mesh: Sequence[int] = (16, 16, 16),
    npoints: int = 51,
    nac: Mapping[str, Any] | None = None,
    bands: bool = True,
    dos: bool = True,
    temperatures: np.ndarray | None = None,
    primitive_matrix: Any = "default",
) -> dict:
    """Harmonic phonons of one magnetic state with phonopy.

    Force constants come from finite displacements of the supercell; for PM
    every displaced supercell's forces are averaged over the supercell's own
    K random states (the same K for every displacement). Forces of the
    undisplaced supercell are subtracted (exact for FM/AFM where they vanish,
    and removes the residual of a finite PM average).

    Parameters
    ----------
    unitcell : crystal structure (no calculator needed); for AFM it must
        contain the magnetic order (e.g. the conventional rock-salt cell for AFM1)
    setup : the magnetic state
    supercell : supercell matrix (3 ints or 3x3) of ``unitcell``
    distance : displacement, Å
    mesh : q mesh of the DOS and thermal properties
    npoints : q points per path segment
    nac : optional {"born": {species: Z (scalar or 3x3)}, "dielectric": ε (scalar or 3x3)}
    bands, dos : compute the band structure / DOS
    temperatures : if given, thermal properties at these temperatures (K)
    primitive_matrix : phonopy's primitive matrix; default "auto": phonopy (>= 4)
        finds the primitive cell of the structure with the FM/AFM moments
        (the magnetic cell for AFM), the crystallographic one for PM

    Returns
    -------
    dict : ``phonopy`` (the object), ``supercell_energy`` (eV, the undisplaced
    supercell), ``n_displacements``, ``min_frequency_THz``, ``bands`` (path,
    distances, frequencies THz), ``dos`` (frequency points, DOS), ``thermal``
    (per primitive cell: F kJ/mol, S and C_v J/K/mol), ``n_formula_units``
    (in phonopy's primitive cell), ``volume`` (primitive cell, Å³)
    """
    from phonopy import Phonopy

    smat = np.asarray(supercell, dtype=int)
    if smat.shape == (3,):
        smat = np.diag(smat)
    signed = setup.signed_moments(unitcell)
    if primitive_matrix == "default":
        primitive_matrix = "auto"
    with warnings.catch_warnings():  # informative notes on the primitive-cell choice
        warnings.filterwarnings("ignore", message=".*primitive_matrix defaulted.*")
        warnings.filterwarnings("ignore", message=".*magnetic ordering that breaks.*")
        ph = Phonopy(_to_phonopy(unitcell, None if setup.kind == "PM" else signed), supercell_matrix=smat,
                     primitive_matrix=primitive_matrix)
    ph.generate_displacements(distance=distance)
    sc = setup.attach(_to_ase(ph.supercell))
    e0 = float(sc.get_potential_energy())
    f0 = sc.get_forces().copy()
    forces = []
    for d in ph.supercells_with_displacements:
        b = _sibling(sc)
        b.positions = _to_ase(d).positions  # same ordering, so moments / PM states still apply
        forces.append(b.get_forces() - f0)
    ph.forces = np.array(forces)
    ph.produce_force_constants()
    ph.symmetrize_force_constants()
    prim = ph.primitive
    if nac:
        ph.nac_params = _nac_params(prim, nac["born"], nac["dielectric"])
    counts = np.unique(prim.numbers, return_counts=True)[1]
    out: dict[str, Any] = {"phonopy": ph, "supercell_energy": e0, "n_supercell_atoms": len(sc),
                           "n_displacements": len(forces), "n_primitive_atoms": len(prim.numbers),
                           "n_formula_units": int(np.gcd.reduce(counts)),
                           "volume": float(abs(np.linalg.det(prim.cell))),
                           "moments": setup.moments_summary(sc)}
    fmin = []
    if bands:
        segs, labels, connected = band_path(prim)
        qs = [np.linspace(s[0], s[1], npoints) for s in segs]
        ph.run_band_structure(qs)
        freqs = ph.get_band_structure_dict()["frequencies"]
        rec = np.linalg.inv(prim.cell).T  # rows: reciprocal vectors (no 2π)
        x0, dist = 0.0, []
        for q in qs:
            d = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(q @ rec, axis=0), axis=1))])
            dist.append(x0 + d)
            x0 += d[-1]
        out["bands"] = {"labels": labels, "connected": connected,
                        "qpoints": [q.tolist() for q in qs],
                        "distances": [d.tolist() for d in dist],
                        "frequencies_THz": [np.asarray(f).tolist() for f in freqs]}
        fmin.append(min(float(np.min(f)) for f in freqs))
    if dos or temperatures is not None:
        ph.run_mesh(list(mesh), is_gamma_center=True)
        fmin.append(float(np.min(ph.get_mesh_dict()["frequencies"])))
    if dos:
        ph.run_total_dos()
        d = ph.get_total_dos_dict()
        out["dos"] = {"frequency_points_THz": np.asarray(d["frequency_points"]).tolist(),
                      "total_dos": np.asarray(d["total_dos"]).tolist()}
    if temperatures is not None:
        with warnings.catch_warnings():  # acoustic modes at Γ: zero frequency, negligible
            warnings.filterwarnings("ignore", message=".*acoustic mode.*")
            ph.run_thermal_properties(temperatures=np.asarray(temperatures, dtype=float))
        t = ph.get_thermal_properties_dict()
        out["thermal"] = {"temperatures": np.asarray(t["temperatures"]),
                          "free_energy_kJ_mol": np.asarray(t["free_energy"]),
                          "entropy_J_K_mol": np.asarray(t["entropy"]),
                          "cv_J_K_mol": np.asarray(t["heat_capacity"])}
    out["min_frequency_THz"] = min(fmin) if fmin else float("nan")
    return out


# ================================================================ quasi-harmonic approximation
def quasi_harmonic(
    unitcell: Atoms,
    setup: MagneticSetup,
    supercell: Sequence[int] = (2, 2, 2),
    volume_range: float = 0.03,
    n_volumes: int = 7,
    t_min: float = 0.0,
    t_max: float = 1000.0,
    t_step: float = 10.0,
    mesh: Sequence[int] = (16, 16, 16),
    distance: float = 0.01,
    eos: str = "vinet",
) -> dict:
    """Thermal expansion α(T) and isobaric heat capacity C_p(T) in the QHA.

    At ``n_volumes`` volumes V0(1+x), x in [−range, +range], the state is
    re-attached (moments re-equilibrated, new PM states), the static energy
    of the phonon supercell and the phonon free energy are computed; phonopy's
    ``PhonopyQHA`` fits F(V; T) and gives α = (1/V) dV/dT and C_p.

    Temperatures at which the equilibrium volume V(T) leaves the sampled
    volume range are dropped (``t_max_valid_K``): widen ``volume_range`` to
    reach higher T.

    Returns
    -------
    dict : temperatures (K), alpha_per_K, cp_J_K_mol (per mole of formula
    units), cp_J_K_mol_atoms (per mole of atoms), volume_A3 (per formula
    unit), bulk_modulus_GPa(T), and the E(V) data per formula unit.
    """
    from phonopy import PhonopyQHA

    temps = np.arange(t_min, t_max + 3.5 * t_step, t_step)
    xs = np.linspace(-volume_range, volume_range, n_volumes)
    cell = unitcell.cell.array.copy()
    vols, energies, fe, ent, cv = [], [], [], [], []
    nfu = napf = None
    for x in xs:
        b = unitcell.copy()
        b.set_cell(cell * (1 + x) ** (1 / 3), scale_atoms=True)
        r = phonons(b, setup, supercell=supercell, distance=distance, mesh=mesh, bands=False, dos=False,
                    temperatures=temps)
        nfu, napf = r["n_formula_units"], r["n_primitive_atoms"] / r["n_formula_units"]
        nprim = r["n_primitive_atoms"]
        vols.append(r["volume"] / nfu)
        energies.append(r["supercell_energy"] * nprim / r["n_supercell_atoms"] / nfu)
        th = r["thermal"]
        fe.append(th["free_energy_kJ_mol"] / nfu)
        ent.append(th["entropy_J_K_mol"] / nfu)
        cv.append(th["cv_J_K_mol"] / nfu)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        qha = PhonopyQHA(volumes=np.array(vols), electronic_energies=np.array(energies), temperatures=temps,
                         free_energy=np.array(fe).T, cv=np.array(cv).T, entropy=np.array(ent).T,
                         t_max=t_max, eos=eos)
    alpha = np.asarray(qha.thermal_expansion)
    vt = np.asarray(qha.volume_temperature)
    n = len(alpha)
    # beyond the sampled volumes the F(V) fit extrapolates: keep only T with V(T) inside
    inside = (vt[:n] >= min(vols)) & (vt[:n] <= max(vols))
    if not inside.all():
        n = int(np.argmin(inside))  # first temperature outside
    cp = np.asarray(qha.heat_capacity_P_polyfit)[:n]
    alpha = alpha[:n]
    return {"temperatures": temps[:n].tolist(), "alpha_per_K": alpha.tolist(), "cp_J_K_mol": cp.tolist(),
            "t_max_valid_K": float(temps[n - 1]) if n else None,
            "cp_J_K_mol_atoms": (cp / napf).tolist(),
            "volume_A3": np.asarray(qha.volume_temperature)[:n].tolist(),
            "bulk_modulus_GPa": np.asarray(qha.bulk_modulus_temperature)[:n].tolist(),
            "static_volumes_A3": vols, "static_energies_eV": energies,
            "units": "per formula unit; alpha 1/K; C_p J/(K mol formula units) and J/(K mol atoms)"}


# ================================================================ configuration
def _toml_load(path: Path) -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    with open(path, "rb") as fh:
        return tomllib.load(fh)


DEFAULTS: dict[str, Any] = {
    "structure": {"prototype": "rocksalt", "symbols": "CrN", "a": 4.15, "cubic": True, "relax_volume": True},
    "calculator": {"reference": "CrN"},
    "moments": {"equilibrate": True},
    "states": {"FM": {"kind": "FM"}, "AFM": {"kind": "AFM", "direction": "AFM1"},
               "PM": {"kind": "PM", "n_states": 50, "seed": 0}},
    "elastic": {"enabled": True, "supercell": [2, 2, 2], "strain": 0.005, "fmax": 1e-3, "relax": True, "max_steps": 300,
                "moments": "relaxed"},
    "phonons": {"enabled": True, "supercell": [2, 2, 2], "distance": 0.01, "mesh": [16, 16, 16], "npoints": 51},
    "qha": {"enabled": True, "n_volumes": 7, "volume_range": 0.05, "t_min": 0.0, "t_max": 1000.0,
            "t_step": 10.0, "mesh": [12, 12, 12]},
    "convergence": {"enabled": True, "k_max": 50, "n_pool": 400},
    "output": {"dir": "properties"},
}


def load_config(path_or_dict) -> tuple[dict, Path]:
    """Read a TOML config (or take a dict) and fill defaults; returns (config, base directory)."""
    if isinstance(path_or_dict, Mapping):
        raw, base = dict(path_or_dict), Path.cwd()
    else:
        path = Path(path_or_dict)
        raw, base = _toml_load(path), path.resolve().parent
    unknown = set(raw) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown config sections: {sorted(unknown)}")
    cfg: dict[str, Any] = {}
    for sec, dflt in DEFAULTS.items():
        if sec == "states":
            cfg[sec] = raw.get(sec, dflt)
        else:
            cfg[sec] = {**dflt, **raw.get(sec, {})}
    if "moments" not in raw or not (set(raw["moments"]) - {"equilibrate"}):
        cfg["moments"].setdefault("Cr", 2.5)
    return cfg, base


def build_structure(scfg: Mapping[str, Any], base: Path) -> Atoms:
    """The unit cell described by the [structure] section (prototype via ase.build.bulk, or a file)."""
    if "file" in scfg:
        from ase.io import read

        p = Path(scfg["file"])
        return read(p if p.is_absolute() else base / p)
    from ase.build import bulk

    return bulk(scfg["symbols"], scfg["prototype"], a=float(scfg["a"]), cubic=bool(scfg.get("cubic", True)))


def build_calculator(ccfg: Mapping[str, Any], base: Path):
    """The moment-aware calculator of the [calculator] section."""
    if "potential" in ccfg:
        from .calculator import MMTPCalculator
        from .potential import Potential

        p = Path(ccfg["potential"])
        pot = Potential.from_file(str(p if p.is_absolute() else base / p), species=ccfg.get("species"))
        return MMTPCalculator(pot)
    if "reference" in ccfg:
        from .oracles.reference import ReferenceCalculator

        return ReferenceCalculator(str(ccfg["reference"]))
    raise ValueError("[calculator] needs 'reference = PRESET' or 'potential = FILE' (+ 'species')")


def _setups(cfg: dict, calc) -> list[MagneticSetup]:
    mom = {k: float(v) for k, v in cfg["moments"].items() if k != "equilibrate"}
    eq = bool(cfg["moments"].get("equilibrate", True))
    out = []
    for name, s in cfg["states"].items():
        s = dict(s)
        kind = s.pop("kind", name)
        allowed = {"direction", "n_layers", "n_states", "seed"}
        if set(s) - allowed:
            raise ValueError(f"state {name}: unknown keys {sorted(set(s) - allowed)}")
        out.append(MagneticSetup(calc, kind=kind, moment=mom, equilibrate=eq, name=name, **s))
    return out


# ================================================================ report
def _progress(msg: str, quiet: bool):
    if not quiet:
        print(msg, flush=True)


def run_report(config, outdir: str | Path | None = None, quiet: bool = False) -> dict:
    """Compute the configured properties for every state and write the report.

    Writes ``report.json``, ``report.md`` and PNG plots (elastic.png,
    phonons.png, thermal_expansion.png, heat_capacity.png,
    pm_convergence.png) into the output directory; returns the report dict
    (including ``timings_s``, the split of the wall time).
    """
    cfg, base = load_config(config)
    out = Path(outdir) if outdir is not None else Path(cfg["output"]["dir"])
    if not out.is_absolute() and outdir is None:
        out = base / out
    out.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    timings: dict[str, float] = {}
    calc = build_calculator(cfg["calculator"], base)
    cell0 = build_structure(cfg["structure"], base)
    setups = _setups(cfg, calc)
    report: dict[str, Any] = {"config": cfg, "n_atoms_unit_cell": len(cell0), "states": {}}

    def tick(key, t0):
        timings[key] = timings.get(key, 0.0) + time.perf_counter() - t0

    for st in setups:
        r: dict[str, Any] = {"kind": st.kind}
        report["states"][st.name] = r
        t0 = time.perf_counter()
        scale, p = 1.0, None
        if cfg["structure"].get("relax_volume", True):
            ecell = cell0.repeat(cfg["elastic"]["supercell"])
            scale, p = equilibrium_scale(ecell, st)
        unit = cell0.copy()
        unit.set_cell(cell0.cell.array * scale, scale_atoms=True)
        r["lattice_scale"] = scale
        r["cell_lengths_A"] = unit.cell.lengths().tolist()
        r["pressure_at_scale_GPa"] = p
        tick(f"{st.name}/volume", t0)
        _progress(f"[{st.name}] cell scale {scale:.5f} (a = {unit.cell.lengths()[0]:.4f} Å)", quiet)

        if cfg["elastic"]["enabled"]:
            t0 = time.perf_counter()
            ec = cfg["elastic"]
            at = st.attach(unit.repeat(ec["supercell"]))
            res = elastic_constants(at, strain=float(ec["strain"]), relax=bool(ec["relax"]),
                                    fmax=float(ec["fmax"]), max_steps=int(ec["max_steps"]),
                                    reattach=st.reattacher(at) if ec["moments"] == "relaxed" else None)
            r["elastic"] = {"C_GPa": res["C"].tolist(), "C_sym_GPa": res["C_sym"].tolist(),
                            "asymmetry_GPa": res["asymmetry"], "stress0_GPa": res["stress0_GPa"].tolist(),
                            "cubic": cubic_constants(res["C_sym"]), "born": born_stability(res["C_sym"]),
                            "relax_steps": res["relax_steps"], "n_atoms": len(at),
                            "moments_muB": st.moments_summary(at)}
            tick(f"{st.name}/elastic", t0)
            cc = r["elastic"]["cubic"]
            _progress(f"[{st.name}] C11 {cc['C11']:.1f}  C12 {cc['C12']:.1f}  C44 {cc['C44']:.1f} GPa "
                      f"(Born stable: {r['elastic']['born']['stable']})", quiet)

        pc = cfg["phonons"]
        if pc["enabled"]:
            t0 = time.perf_counter()
            nac = pc.get("nac")
            ph = phonons(unit, st, supercell=pc["supercell"], distance=float(pc["distance"]), mesh=pc["mesh"],
                         npoints=int(pc["npoints"]), nac=nac)
            r["phonons"] = {k: ph[k] for k in ("bands", "dos", "min_frequency_THz", "n_displacements",
                                               "n_supercell_atoms", "n_primitive_atoms", "moments")}
            r["phonons"]["nac"] = bool(nac)
            tick(f"{st.name}/phonons", t0)
            _progress(f"[{st.name}] phonons: {ph['n_displacements']} displacements, "
                      f"min frequency {ph['min_frequency_THz']:.3f} THz", quiet)

        qc = cfg["qha"]
        if qc["enabled"]:
            t0 = time.perf_counter()
            r["qha"] = quasi_harmonic(unit, st, supercell=pc["supercell"], volume_range=float(qc["volume_range"]),
                                      n_volumes=int(qc["n_volumes"]), t_min=float(qc["t_min"]),
                                      t_max=float(qc["t_max"]), t_step=float(qc["t_step"]), mesh=qc["mesh"],
                                      distance=float(pc["distance"]))
            tick(f"{st.name}/qha", t0)
            if not r["qha"]["temperatures"]:
                _progress(f"[{st.name}] QHA: equilibrium volume outside the sampled range at all T", quiet)
                continue
            i300 = int(np.argmin(np.abs(np.array(r["qha"]["temperatures"]) - 300)))
            _progress(f"[{st.name}] QHA: alpha(300 K) = {r['qha']['alpha_per_K'][i300]:.3e} 1/K, "
                      f"C_p(300 K) = {r['qha']['cp_J_K_mol'][i300]:.2f} J/(K mol)", quiet)

    cc = cfg["convergence"]
    pm = [s for s in setups if s.kind == "PM"]
    if cc["enabled"] and pm:
        t0 = time.perf_counter()
        st = pm[0]
        s = report["states"][st.name]["lattice_scale"]
        cell = cell0.repeat(cfg["elastic"]["supercell"])
        cell.set_cell(cell.cell.array * s, scale_atoms=True)
        conv = convergence(calc, cell, k_max=int(cc["k_max"]), seed=st.seed, moment=st.moment,
                           equilibrate="once" if st.equilibrate else "none", n_pool=int(cc["n_pool"]))
        report["pm_convergence"] = conv
        tick("pm_convergence", t0)

    t0 = time.perf_counter()
    write_report(report, out)
    tick("report_writing", t0)
    timings["total"] = time.perf_counter() - t_all
    report["timings_s"] = timings
    (out / "report.json").write_text(json.dumps(_jsonable(report), indent=1))
    _progress(f"report written to {out}", quiet)
    return report


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items() if k != "phonopy"}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, (np.floating, float)):
        return None if not math.isfinite(float(x)) else float(x)
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.bool_,)):
        return bool(x)
    return x


def _markdown(report: dict) -> str:
    lines = ["# Property report", ""]
    states = report["states"]
    lines += ["## Structure", "", "| state | cell lengths (Å) | mean |m| (μB) |", "|---|---|---|"]
    for n, r in states.items():
        mom = (r.get("elastic") or r.get("phonons") or {}).get("moments_muB") or \
            (r.get("phonons") or {}).get("moments") or {}
        ls = ", ".join(f"{v:.4f}" for v in r["cell_lengths_A"])
        lines.append(f"| {n} | {ls} | " + ", ".join(f"{k} {v:.3f}" for k, v in mom.items()) + " |")
    if any("elastic" in r for r in states.values()):
        lines += ["", "## Elastic constants (GPa)", "",
                  "| state | C11 | C12 | C44 | B | max dev. from cubic | Born stable |", "|---|---|---|---|---|---|---|"]
        for n, r in states.items():
            if "elastic" in r:
                c = r["elastic"]["cubic"]
                lines.append(f"| {n} | {c['C11']:.1f} | {c['C12']:.1f} | {c['C44']:.1f} | {c['B']:.1f} | "
                             f"{c['max_deviation_from_cubic']:.1f} | {r['elastic']['born']['stable']} |")
        for n, r in states.items():
            if "elastic" in r:
                lines += ["", f"Full C_ij of {n} (GPa, symmetrised):", "", "```"]
                lines += ["  ".join(f"{v:8.1f}" for v in row) for row in r["elastic"]["C_sym_GPa"]]
                lines += ["```"]
    if any("phonons" in r for r in states.values()):
        lines += ["", "## Phonons", "", "| state | min frequency (THz) | displacements | supercell atoms | NAC |",
                  "|---|---|---|---|---|"]
        for n, r in states.items():
            if "phonons" in r:
                p = r["phonons"]
                lines.append(f"| {n} | {p['min_frequency_THz']:.3f} | {p['n_displacements']} | "
                             f"{p['n_supercell_atoms']} | {p['nac']} |")
    if any("qha" in r for r in states.values()):
        lines += ["", "## Quasi-harmonic thermal properties", "",
                  "| state | T (K) | α (1e-6/K) | C_p (J/(K mol f.u.)) | V (Å³/f.u.) |", "|---|---|---|---|---|"]
        for n, r in states.items():
            if "qha" in r:
                q = r["qha"]
                t = np.array(q["temperatures"])
                for tt in (100, 300, 500, 800, 1000):
                    if t.size and t.min() <= tt <= t.max():
                        i = int(np.argmin(np.abs(t - tt)))
                        lines.append(f"| {n} | {t[i]:.0f} | {q['alpha_per_K'][i] * 1e6:.2f} | "
                                     f"{q['cp_J_K_mol'][i]:.2f} | {q['volume_A3'][i]:.3f} |")
    if "pm_convergence" in report:
        lines += ["", "## Convergence of the PM average", "", "| quantity | mean (K = k_max) | standard error | "
                  "log-log slope of the K-mean scatter (−0.5 expected) |", "|---|---|---|---|"]
        for name, d in report["pm_convergence"]["quantities"].items():
            lines.append(f"| {name} | {d['final']:.6g} | {d['final_sem']:.2g} | {d['batch']['loglog_slope']:.3f} |")
    lines.append("")
    return "\n".join(lines)


def write_report(report: dict, out: Path) -> None:
    """Markdown tables and PNG plots of a report (the JSON is written by :func:`run_report`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    (out / "report.md").write_text(_markdown(report))
    states = report["states"]
    el = {n: r["elastic"] for n, r in states.items() if "elastic" in r}
    if el:
        fig, axes = plt.subplots(1, len(el), figsize=(4.2 * len(el), 4), squeeze=False)
        for ax, (n, e) in zip(axes[0], el.items()):
            c = np.array(e["C_sym_GPa"])
            vmax = np.abs(c).max()
            ax.imshow(c, cmap="RdBu_r", vmin=-vmax, vmax=vmax)
            for i in range(6):
                for j in range(6):
                    ax.text(j, i, f"{c[i, j]:.0f}", ha="center", va="center", fontsize=7)
            ax.set_xticks(range(6), [str(i + 1) for i in range(6)])
            ax.set_yticks(range(6), [str(i + 1) for i in range(6)])
            ax.set_title(f"{n}: C_ij (GPa)")
        fig.tight_layout()
        fig.savefig(out / "elastic.png", dpi=120)
        plt.close(fig)
    ph = {n: r["phonons"] for n, r in states.items() if "phonons" in r and "bands" in r["phonons"]}
    if ph:
        fig, axes = plt.subplots(len(ph), 2, figsize=(10, 3.6 * len(ph)), squeeze=False,
                                 gridspec_kw={"width_ratios": [4, 1]})
        for row, (n, p) in zip(axes, ph.items()):
            ax = row[0]
            b = p["bands"]
            ticks, tlabels = [], []
            for k, (d, f) in enumerate(zip(b["distances"], b["frequencies_THz"])):
                ax.plot(d, f, color="C0", lw=0.8)
                a, z = b["labels"][k].split("-")
                a, z = a.replace("GAMMA", "Γ"), z.replace("GAMMA", "Γ")
                if not b["connected"][k] and ticks:
                    tlabels[-1] = f"{tlabels[-1]}|{a}"
                elif not ticks:
                    ticks.append(d[0])
                    tlabels.append(a)
                ticks.append(d[-1])
                tlabels.append(z)
            for t in ticks:
                ax.axvline(t, color="k", lw=0.5)
            ax.axhline(0, color="k", lw=0.5, ls=":")
            ax.set_xticks(ticks, tlabels)
            ax.set_xlim(ticks[0], ticks[-1])
            ax.set_ylabel("frequency (THz)")
            ax.set_title(f"{n}" + (" (NAC)" if p.get("nac") else ""))
            if "dos" in p:
                row[1].plot(p["dos"]["total_dos"], p["dos"]["frequency_points_THz"], color="C1")
                row[1].set_ylim(ax.get_ylim())
                row[1].set_xlabel("DOS")
            else:
                row[1].axis("off")
        fig.tight_layout()
        fig.savefig(out / "phonons.png", dpi=120)
        plt.close(fig)
    qh = {n: r["qha"] for n, r in states.items() if "qha" in r}
    for key, fname, ylabel, scale in (("alpha_per_K", "thermal_expansion.png", "α (10⁻⁶/K)", 1e6),
                                      ("cp_J_K_mol", "heat_capacity.png", "C_p (J/(K mol f.u.))", 1.0)):
        if not qh:
            break
        fig, ax = plt.subplots(figsize=(5.5, 4))
        for n, q in qh.items():
            ax.plot(q["temperatures"], np.array(q[key]) * scale, label=n)
        ax.set_xlabel("T (K)")
        ax.set_ylabel(ylabel)
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / fname, dpi=120)
        plt.close(fig)
    if "pm_convergence" in report:
        plot_convergence(report["pm_convergence"], out / "pm_convergence.png")


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
