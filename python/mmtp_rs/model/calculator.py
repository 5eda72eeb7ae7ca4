"""ASE calculator of an mMTP."""

from __future__ import annotations

from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes

from mmtp_rs.model.potential import Potential


class MMTPCalculator(Calculator):
    """ASE calculator for a :class:`mmtp_rs.Potential`.

    Moments are read from ``atoms.get_initial_magnetic_moments()``.
    Properties: ``energy``, ``free_energy``, ``energies`` (eV), ``forces``
    (eV/Å), ``stress`` (eV/Å^3, Voigt, ASE sign; 3-D periodic cells only) and
    ``magnetic_forces`` (-dE/dm_i, eV/μB).

    Parameters
    ----------
    potential : Potential, or a path to a potential file
    symmetrize : spin-inversion symmetrised energy (default: the potential's setting)
    species : species names when ``potential`` is a path to an ``.mtp`` file
    """

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress", "magnetic_forces"]

    def __init__(self, potential, symmetrize: bool | None = None, species=None, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(potential, Potential):
            potential = Potential.from_file(potential, species=species)
        self.potential = potential
        self.symmetrize = symmetrize

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        if "stress" in properties and not all(self.atoms.pbc):
            raise PropertyNotImplementedError("stress needs a cell periodic in all three directions")
        out = self.potential.evaluate(self.atoms, symmetrize=self.symmetrize, param_grad=False)
        self.results = {
            "energy": out["energy"],
            "free_energy": out["energy"],
            "energies": out["energies"],
            "forces": out["forces"],
            "magnetic_forces": out["magnetic_forces"],
        }
        if "stress" in out:
            self.results["stress"] = out["stress"]
        self.results["n_close_atoms"] = out["n_close_atoms"]
        self.results["n_moments_outside"] = out["n_moments_outside"]
