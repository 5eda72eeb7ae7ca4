"""Quasi-harmonic thermal expansion alpha(T) and heat capacity C_p(T) through phonopy's QHA."""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
from ase import Atoms

from mmtp_rs.properties.phonons import phonons
from mmtp_rs.properties.setup import MagneticSetup


__all__ = ["quasi_harmonic"]


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


