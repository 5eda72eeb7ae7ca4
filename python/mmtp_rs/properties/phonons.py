"""Phonons with phonopy: band structure along seekpath's path, DOS, optional non-analytic correction."""

from __future__ import annotations

import warnings
from typing import Any, Mapping, Sequence

import numpy as np
from ase import Atoms

from mmtp_rs.properties.setup import MagneticSetup, _sibling
from mmtp_rs.units import E2_4PIEPS0_EV_A


__all__ = ["E2_4PIEPS0_EV_A", "band_path", "phonons"]




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


