"""Units of the package, in one place.

Everything is in eV, Å, μB: energies eV, forces eV/Å, stress eV/Å³ (ASE's sign
and Voigt order xx yy zz yz xz xy), magnetic forces -dE/dm in eV/μB. Reports
convert stress and elastic constants to GPa with :data:`EV_A3_TO_GPA`.
"""

from ase import units as _ase


__all__ = ["EV_A3_TO_GPA", "E2_4PIEPS0_EV_A"]

#: 1 eV/Å³ in GPa (ASE's CODATA constants)
EV_A3_TO_GPA = 1.0 / _ase.GPa
#: e²/(4π ε0) in eV Å (the Coulomb factor of phonopy's non-analytic correction)
E2_4PIEPS0_EV_A = _ase.Hartree * _ase.Bohr
