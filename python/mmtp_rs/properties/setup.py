"""How a magnetic state (FM, AFM, PM) is put on any cell of a structure."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from ase import Atoms

from mmtp_rs.magnetism.paramagnetic import ParamagneticCalculator
from mmtp_rs.magnetism.stage1 import equilibrate_moments
from mmtp_rs.magnetism.states import ROCKSALT_AFM, antiferromagnetic, ferromagnetic, magnitudes


__all__ = ["MagneticSetup"]


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
        :data:`~mmtp_rs.magnetism.stage1.ROCKSALT_AFM`) and planes per block
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


