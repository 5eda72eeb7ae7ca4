"""Strict, fast reader and writer of MLIP ``.cfg`` files.

The MLIP ``.cfg`` format stores one block per configuration::

    BEGIN_CFG
     Size
        2
     Supercell
         2.87 0.0 0.0
         0.0 2.87 0.0
         0.0 0.0 2.87
     AtomData:  id type cartes_x cartes_y cartes_z fx fy fz magmom_x en_der_mx
         1 0 0.0 0.0 0.0 0.1 0.0 0.0 2.2 -0.3
         2 0 1.435 1.435 1.435 -0.1 0.0 0.0 -2.2 0.3
     Energy
        -16.5
     PlusStress:  xx yy zz yz xz xy
        0.1 0.1 0.1 0.0 0.0 0.0
     Feature   EFS_by	VASP
    END_CFG

This module converts such files to and from :class:`ase.Atoms`. Reference
(training) data are stored under the following names:

=====================================  =======================================
``.cfg`` item                          :class:`ase.Atoms` item
=====================================  =======================================
``type``                               ``arrays["mlip_type"]`` (int, always),
                                       chemical symbol ``species[type]``
``cartes_x/y/z`` or ``direct_x/y/z``   ``positions`` (Å, Cartesian)
``fx fy fz``                           ``arrays["REF_forces"]`` (eV/Å)
``magmom_x``                           initial magnetic moments (μB, signed,
                                       collinear), ``arrays["initial_magmoms"]``
``en_der_mx`` (= +dE/dm)               ``arrays["REF_magnetic_forces"]``
                                       = -en_der_mx (eV/μB)
``site_en``                            ``arrays["REF_energies"]`` (eV)
``charge``                             ``arrays["REF_charges"]`` (e)
``nbh_grades``                         ``arrays["nbh_grades"]``
``Energy``                             ``info["REF_energy"]`` (eV)
``PlusStress`` (virial, eV)            ``info["REF_stress"]`` = -PlusStress/V,
                                       Voigt order xx yy zz yz xz xy (eV/Å³)
``Feature MV_grade x``                 ``info["MV_grade"]`` (float)
other ``Feature name value``           ``info["mlip_features"][name]`` (str)
``Supercell`` (1 to 3 rows)            ``cell`` rows, ``pbc`` True along the
                                       given vectors; no ``Supercell`` means a
                                       non-periodic cluster (zero cell)
=====================================  =======================================

Whatever a block does not contain is left out: a configuration without forces
gets no ``REF_forces`` array, never zeros.

Every malformed input raises :class:`CfgFormatError`, a :class:`ValueError`
whose message names the file, the 1-based line number and the problem.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Sequence
from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from fractions import Fraction
from typing import Any

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers


__all__ = ["CfgFormatError", "read_cfg", "write_cfg", "cell_volume"]

#: Order of the ``PlusStress`` components, which is also ASE's Voigt order.
STRESS_LABELS = ("xx", "yy", "zz", "yz", "xz", "xy")

_COORD_CART = ("cartes_x", "cartes_y", "cartes_z")
_COORD_DIRECT = ("direct_x", "direct_y", "direct_z")
_FORCES = ("fx", "fy", "fz")
_MAGMOM = ("magmom_x", "magmom_y", "magmom_z")
_EN_DER = ("en_der_mx", "en_der_my", "en_der_mz")
_SCALAR_COLUMNS = {"site_en": "REF_energies", "charge": "REF_charges", "nbh_grades": "nbh_grades"}
_KNOWN_COLUMNS = frozenset(
    ("id", "type") + _COORD_CART + _COORD_DIRECT + _FORCES + _MAGMOM + _EN_DER + tuple(_SCALAR_COLUMNS)
)
_NUMBER_RE = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\Z")
_NONFINITE_RE = re.compile(r"[+-]?(?:nan|inf|infinity)\Z", re.IGNORECASE)


class CfgFormatError(ValueError):
    """A ``.cfg`` file is malformed.

    Parameters
    ----------
    path : str
        The file being read.
    lineno : int or None
        1-based line number of the offending line (None if not tied to a line).
    reason : str
        What is wrong.

    Attributes
    ----------
    path, lineno, reason
        The constructor arguments, for programmatic use.
    """

    def __init__(self, path: str, lineno: int | None, reason: str) -> None:
        self.path = path
        self.lineno = lineno
        self.reason = reason
        where = f"{path}, line {lineno}" if lineno is not None else f"{path}"
        super().__init__(f"{where}: {reason}")

    def __reduce__(self):  # keep it picklable (e.g. across process pools)
        return (type(self), (self.path, self.lineno, self.reason))


def cell_volume(cell: Any) -> float:
    """Volume of the parallelepiped spanned by the rows of ``cell``.

    The reader and the writer both convert between ``PlusStress`` and
    ``REF_stress`` with this volume, so the conversion is reproducible.

    Parameters
    ----------
    cell : array_like, shape (3, 3)
        Lattice vectors as rows (Å).

    Returns
    -------
    float
        ``|a · (b × c)|`` in Å³.
    """
    (a0, a1, a2), (b0, b1, b2), (c0, c1, c2) = np.asarray(cell, dtype=float).reshape(3, 3).tolist()
    return abs(a0 * (b1 * c2 - b2 * c1) + a1 * (b2 * c0 - b0 * c2) + a2 * (b0 * c1 - b1 * c0))


def _stress_from_virial(tokens: Sequence[str], volume: float) -> np.ndarray:
    """``-PlusStress / V``, correctly rounded from the decimal text of PlusStress.

    Dividing the exact decimal value (not its nearest double) makes the
    conversion exactly invertible by :func:`_virial_text_from_stress`.
    """
    v = Fraction(volume)
    return np.array([float(-Fraction(t) / v) for t in tokens], dtype=float)


def _virial_text_from_stress(stress: np.ndarray, volume: float) -> list[str]:
    """``-stress * V`` as 17-significant-digit decimals.

    The exact product rounded to 17 significant digits (relative error at most
    5e-17) lies within half an ulp of ``stress`` after division by ``V``, so
    :func:`_stress_from_virial` gives back exactly ``stress``.
    """
    v = Fraction(volume)
    out = []
    with localcontext() as ctx:
        ctx.prec = 17
        ctx.rounding = ROUND_HALF_EVEN
        for s in stress.tolist():
            x = -Fraction(s) * v
            d = Decimal(x.numerator) / Decimal(x.denominator)  # correctly rounded to 17 digits
            out.append(format(d, ".17g").replace("E", "e"))
    return out


# --------------------------------------------------------------------------- #
# Reading
# --------------------------------------------------------------------------- #


def _species_numbers(species: Sequence[str] | None) -> np.ndarray | None:
    if species is None:
        return None
    if isinstance(species, str):
        raise TypeError("species must be a sequence of chemical symbols, e.g. ['N', 'Cr'], not a string")
    numbers = []
    for s in species:
        if not isinstance(s, str) or s not in atomic_numbers:
            raise ValueError(f"species: {s!r} is not a chemical symbol")
        numbers.append(atomic_numbers[s])
    if len(set(numbers)) != len(numbers):
        raise ValueError(f"species: duplicate symbols in {list(species)!r}")
    return np.array(numbers, dtype=int)


class _Block:
    """Items of one configuration as they are collected."""

    __slots__ = (
        "begin",
        "size",
        "size_line",
        "cell",
        "cell_line",
        "columns",
        "data",
        "atom_line",
        "energy",
        "energy_line",
        "virial",
        "virial_line",
        "features",
        "mv_grade",
    )

    def __init__(self, begin: int) -> None:
        self.begin = begin
        self.size: int | None = None
        self.size_line = 0
        self.cell: np.ndarray | None = None
        self.cell_line = 0
        self.columns: tuple[str, ...] | None = None
        self.data: np.ndarray | None = None
        self.atom_line = 0  # 0-based index of the AtomData header line
        self.energy: float | None = None
        self.energy_line = 0
        self.virial: list[str] | None = None  # decimal text, in STRESS_LABELS order
        self.virial_line = 0
        self.features: dict[str, str] = {}
        self.mv_grade: float | None = None


class _Reader:
    def __init__(self, path: str, text: str, species: Sequence[str] | None) -> None:
        self.path = path
        lines = text.split("\n")
        # Trailing blank lines carry nothing; without them the last line is the
        # one an "unexpected end of file" error points at.
        while lines and not lines[-1].strip():
            lines.pop()
        self.lines = lines
        self.species = None if species is None else list(species)
        self.species_numbers = _species_numbers(species)

    # -- helpers ---------------------------------------------------------- #
    def error(self, index: int | None, reason: str) -> CfgFormatError:
        """Error for the line with 0-based ``index``."""
        return CfgFormatError(self.path, None if index is None else index + 1, reason)

    def number(self, token: str, index: int, what: str) -> float:
        if len(token) > 64:
            raise self.error(index, f"number {token[:40]!r}... in {what} is too long (over 64 characters)")
        if not _NUMBER_RE.match(token):
            if _NONFINITE_RE.match(token):
                raise self.error(index, f"non-finite value {token!r} in {what}")
            raise self.error(index, f"bad number {token!r} in {what}")
        value = float(token)
        if not math.isfinite(value):
            raise self.error(index, f"value {token!r} in {what} overflows a double")
        if value == 0.0 and "e" in token.lower() and abs(int(token.lower().rpartition("e")[2])) > 400:
            raise self.error(index, f"exponent of {token!r} in {what} is out of range")
        return value

    def integer(self, token: str, index: int, what: str) -> int:
        if not re.fullmatch(r"[+-]?[0-9]{1,18}", token):
            raise self.error(index, f"bad integer {token[:40]!r} in {what} (at most 18 digits)")
        return int(token)

    def value_line(self, index: int, count: int, what: str) -> list[str]:
        """Tokens of the line after a keyword, which must hold ``count`` values."""
        if index >= len(self.lines):
            raise self.error(index - 1, f"unexpected end of file: {what} value(s) missing")
        tokens = self.lines[index].split()
        if len(tokens) != count:
            raise self.error(index, f"{what}: expected {count} value(s), found {len(tokens)} ({self.lines[index].strip()!r})")
        return tokens

    # -- main loop -------------------------------------------------------- #
    def read(self) -> list[Atoms]:
        images = []
        lines = self.lines
        n = len(lines)
        i = 0
        while i < n:
            tokens = lines[i].split()
            if not tokens:
                i += 1
                continue
            if tokens != ["BEGIN_CFG"]:
                raise self.error(i, f"expected BEGIN_CFG, found {lines[i].strip()[:60]!r}")
            block, i = self.read_block(i)
            images.append(self.build(block))
        return images

    def read_block(self, begin: int) -> tuple[_Block, int]:
        lines = self.lines
        n = len(lines)
        block = _Block(begin)
        i = begin + 1
        while True:
            if i >= n:
                raise self.error(
                    n - 1, f"unexpected end of file: missing END_CFG for the configuration begun at line {begin + 1}"
                )
            tokens = lines[i].split()
            if not tokens:
                i += 1
                continue
            key = tokens[0]
            if key == "END_CFG":
                if len(tokens) != 1:
                    raise self.error(i, "unexpected text after END_CFG")
                return block, i + 1
            if key == "BEGIN_CFG":
                raise self.error(i, f"BEGIN_CFG inside the configuration begun at line {begin + 1} (missing END_CFG)")
            if key == "Size":
                i = self.read_size(block, tokens, i)
            elif key == "Supercell":
                i = self.read_supercell(block, tokens, i)
            elif key in ("AtomData:", "AtomData"):
                i = self.read_atoms(block, tokens, i)
            elif key == "Energy":
                i = self.read_energy(block, tokens, i)
            elif key in ("PlusStress:", "PlusStress"):
                i = self.read_stress(block, tokens, i)
            elif key == "Feature":
                self.read_feature(block, lines[i], tokens, i)
                i += 1
            elif _NUMBER_RE.match(key) or _NONFINITE_RE.match(key):
                if block.columns is not None and i == block.atom_line + 1 + block.size:
                    raise self.error(
                        i, f"more atom lines than Size = {block.size} (AtomData at line {block.atom_line + 1})"
                    )
                raise self.error(i, f"unexpected line of numbers {lines[i].strip()[:60]!r}")
            else:
                raise self.error(i, f"unknown keyword {key!r}")

    def check_once(self, seen: Any, i: int, what: str, first: int) -> None:
        if seen is not None:
            raise self.error(i, f"duplicate {what} (first at line {first + 1})")

    def read_size(self, block: _Block, tokens: list[str], i: int) -> int:
        if len(tokens) != 1:
            raise self.error(i, "unexpected text after Size")
        self.check_once(block.size, i, "Size", block.size_line)
        (token,) = self.value_line(i + 1, 1, "Size")
        size = self.integer(token, i + 1, "Size")
        if size < 0:
            raise self.error(i + 1, f"negative Size {size}")
        block.size = size
        block.size_line = i
        return i + 2

    def read_supercell(self, block: _Block, tokens: list[str], i: int) -> int:
        if len(tokens) != 1:
            raise self.error(i, "unexpected text after Supercell")
        self.check_once(block.cell, i, "Supercell", block.cell_line)
        rows = []
        j = i + 1
        while len(rows) < 3 and j < len(self.lines):
            row = self.lines[j].split()
            if not row or not (_NUMBER_RE.match(row[0]) or _NONFINITE_RE.match(row[0])):
                break
            if len(row) != 3:
                raise self.error(j, f"Supercell: a lattice vector needs 3 values, found {len(row)}")
            rows.append([self.number(t, j, "Supercell") for t in row])
            j += 1
        if not rows:
            raise self.error(i, "Supercell without lattice vectors")
        block.cell = np.array(rows, dtype=float)
        block.cell_line = i
        return j

    def read_energy(self, block: _Block, tokens: list[str], i: int) -> int:
        if len(tokens) != 1:
            raise self.error(i, "unexpected text after Energy")
        self.check_once(block.energy, i, "Energy", block.energy_line)
        (token,) = self.value_line(i + 1, 1, "Energy")
        block.energy = self.number(token, i + 1, "Energy")
        block.energy_line = i
        return i + 2

    def read_stress(self, block: _Block, tokens: list[str], i: int) -> int:
        labels = [t for t in tokens[1:] if t != ":"]
        if tokens[0] == "PlusStress" and not labels:
            raise self.error(i, "PlusStress needs the component labels xx yy zz yz xz xy")
        if sorted(labels) != sorted(STRESS_LABELS):
            raise self.error(i, f"PlusStress labels must be a permutation of {' '.join(STRESS_LABELS)}, found {' '.join(labels)!r}")
        self.check_once(block.virial, i, "PlusStress", block.virial_line)
        values = self.value_line(i + 1, 6, "PlusStress")
        for lab, t in zip(labels, values):
            self.number(t, i + 1, f"PlusStress {lab}")
        by_label = dict(zip(labels, values))
        block.virial = [by_label[lab] for lab in STRESS_LABELS]
        block.virial_line = i
        return i + 2

    def read_feature(self, block: _Block, line: str, tokens: list[str], i: int) -> None:
        if len(tokens) < 2:
            raise self.error(i, "Feature without a name")
        name = tokens[1]
        parts = line.split(None, 2)
        value = parts[2].strip() if len(parts) == 3 else ""
        if name == "MV_grade":
            if block.mv_grade is not None:
                raise self.error(i, "duplicate Feature MV_grade")
            if len(tokens) != 3:
                raise self.error(i, "Feature MV_grade needs exactly one number")
            block.mv_grade = self.number(tokens[2], i, "Feature MV_grade")
            return
        if name in block.features:
            raise self.error(i, f"duplicate Feature {name!r}")
        block.features[name] = value

    def read_atoms(self, block: _Block, tokens: list[str], i: int) -> int:
        columns = tuple(t for t in tokens[1:] if t != ":")
        if block.columns is not None:
            raise self.error(i, f"duplicate AtomData (first at line {block.atom_line + 1})")
        if block.size is None:
            raise self.error(i, "AtomData before Size")
        self.check_columns(columns, i)
        n = block.size
        ncol = len(columns)
        start = i + 1
        stop = start + n
        if stop > len(self.lines):
            raise self.error(
                len(self.lines) - 1,
                f"unexpected end of file: AtomData at line {i + 1} needs {n} atom lines (Size), "
                f"found {len(self.lines) - start}",
            )
        block_lines = self.lines[start:stop]
        rows = [line.split() for line in block_lines]
        if n == 0:
            data = np.zeros((0, ncol))
        else:
            try:
                data = np.array(rows, dtype=float)
                if data.shape != (n, ncol):
                    raise ValueError("shape")
            except ValueError:
                self.diagnose_atoms(rows, start, columns, n, i)
                raise self.error(i, "malformed AtomData") from None  # pragma: no cover
            # float() also takes '1_000' and non-ASCII digits; the strict check is
            # only needed if such characters occur at all.
            if any("_" in line or not line.isascii() for line in block_lines):
                self.diagnose_atoms(rows, start, columns, n, i)
            finite = np.isfinite(data)
            if not finite.all():
                r, c = np.argwhere(~finite)[0]
                raise self.error(start + r, f"non-finite value {rows[r][c]!r} in column {columns[c]!r}")
        block.columns = columns
        block.data = data.reshape(n, ncol)
        block.atom_line = i
        return stop

    def check_columns(self, columns: tuple[str, ...], i: int) -> None:
        seen = set()
        for c in columns:
            if c not in _KNOWN_COLUMNS:
                raise self.error(i, f"unknown AtomData column {c!r}")
            if c in seen:
                raise self.error(i, f"duplicate AtomData column {c!r}")
            seen.add(c)
        for required in ("id", "type"):
            if required not in seen:
                raise self.error(i, f"AtomData lacks the {required!r} column")
        has_cart = [c in seen for c in _COORD_CART]
        has_direct = [c in seen for c in _COORD_DIRECT]
        if any(has_cart) and any(has_direct):
            raise self.error(i, "AtomData mixes cartes_* and direct_* coordinates")
        if not (all(has_cart) or all(has_direct)):
            raise self.error(i, "AtomData needs all of cartes_x cartes_y cartes_z (or direct_x direct_y direct_z)")
        group = [c in seen for c in _FORCES]
        if any(group) and not all(group):
            raise self.error(i, "AtomData needs all of fx fy fz or none")
        for x, rest in ((_MAGMOM[0], _MAGMOM[1:]), (_EN_DER[0], _EN_DER[1:])):
            for c in rest:
                if c in seen and x not in seen:
                    raise self.error(i, f"AtomData has {c!r} but not {x!r}")

    def diagnose_atoms(self, rows: list[list[str]], start: int, columns: tuple[str, ...], n: int, header: int) -> None:
        """Raise an error naming the first bad atom line, if there is one."""
        ncol = len(columns)
        for r, tokens in enumerate(rows):
            j = start + r
            if not tokens or not (_NUMBER_RE.match(tokens[0]) or _NONFINITE_RE.match(tokens[0])):
                found = repr(self.lines[j].strip()[:40]) if tokens else "an empty line"
                raise self.error(
                    j,
                    f"fewer atom lines than Size = {n}: found {found} where atom line {r + 1} "
                    f"of the AtomData at line {header + 1} was expected",
                )
            if len(tokens) != ncol:
                raise self.error(j, f"atom line has {len(tokens)} values, AtomData has {ncol} columns")
            for c, t in enumerate(tokens):
                self.number(t, j, f"column {columns[c]!r}")

    # -- conversion to Atoms ---------------------------------------------- #
    def build(self, b: _Block) -> Atoms:
        if b.size is None:
            raise self.error(b.begin, "configuration without Size")
        n = b.size
        if b.columns is None:
            if n:
                raise self.error(b.begin, f"configuration of Size {n} without AtomData")
            columns: tuple[str, ...] = ("id", "type") + _COORD_CART
            data = np.zeros((0, 5))
        else:
            columns = b.columns
            data = b.data
        col = {c: k for k, c in enumerate(columns)}
        first = b.atom_line + 1  # 0-based index of the first atom line

        def bad_row(mask: np.ndarray) -> int:
            return first + int(np.argmax(mask))

        ids = data[:, col["id"]]
        expected = np.arange(1, n + 1, dtype=float)
        if not np.array_equal(ids, expected):
            r = bad_row(ids != expected)
            raise self.error(r, f"atom id {self.lines[r].split()[col['id']]!r}, expected {r - first + 1} (ids run 1..Size)")
        tf = data[:, col["type"]]
        bad = ~((tf >= 0) & (tf < 2**31) & (np.floor(tf) == tf))
        if bad.any():
            r = bad_row(bad)
            raise self.error(r, f"bad type index {self.lines[r].split()[col['type']]!r} (must be an integer >= 0)")
        types = tf.astype(np.int64)
        if self.species_numbers is not None:
            bad = types >= len(self.species_numbers)
            if bad.any():
                r = bad_row(bad)
                raise self.error(
                    r,
                    f"type index {types[r - first]} beyond the {len(self.species_numbers)} species {self.species}",
                )
            numbers = self.species_numbers[types]
        else:
            numbers = np.zeros(n, dtype=int)

        if b.cell is None:
            cell = np.zeros((3, 3))
            nper = 0
        else:
            nper = len(b.cell)
            cell = np.zeros((3, 3))
            cell[:nper] = b.cell
        pbc = [k < nper for k in range(3)]

        if "cartes_x" in col:
            positions = data[:, [col[c] for c in _COORD_CART]]
        else:
            if nper != 3:
                raise self.error(b.atom_line, "direct_* (fractional) coordinates need a Supercell with 3 lattice vectors")
            positions = data[:, [col[c] for c in _COORD_DIRECT]] @ cell
            far = ~np.isfinite(positions).all(axis=1)
            if far.any():
                r = bad_row(far)
                raise self.error(r, "direct coordinates times the Supercell overflow")

        atoms = Atoms(numbers=numbers, positions=positions, cell=cell, pbc=pbc)
        atoms.arrays["mlip_type"] = types

        if "fx" in col:
            atoms.arrays["REF_forces"] = data[:, [col[c] for c in _FORCES]]
        for group, what in ((_MAGMOM, "magnetic moment"), (_EN_DER, "en_der")):
            for c in group[1:]:
                if c in col:
                    bad = data[:, col[c]] != 0.0
                    if bad.any():
                        r = bad_row(bad)
                        raise self.error(
                            r,
                            f"nonzero {c} = {self.lines[r].split()[col[c]]!r}: only collinear {what}s "
                            f"(along x) are supported",
                        )
        if "magmom_x" in col:
            atoms.set_initial_magnetic_moments(data[:, col["magmom_x"]].copy())
        if "en_der_mx" in col:
            atoms.arrays["REF_magnetic_forces"] = -data[:, col["en_der_mx"]]
        for c, name in _SCALAR_COLUMNS.items():
            if c in col:
                atoms.arrays[name] = data[:, col[c]].copy()

        if b.energy is not None:
            atoms.info["REF_energy"] = b.energy
        if b.virial is not None:
            if nper != 3:
                raise self.error(
                    b.virial_line, "PlusStress in a configuration that is not periodic in 3 dimensions (Supercell needs 3 vectors)"
                )
            volume = cell_volume(cell)
            if not volume > 0.0:
                raise self.error(b.virial_line, "PlusStress with a degenerate Supercell (volume 0)")
            if not math.isfinite(volume):
                raise self.error(b.cell_line, f"the Supercell volume overflows ({volume})")
            stress = _stress_from_virial(b.virial, volume)
            if not np.isfinite(stress).all():
                raise self.error(b.virial_line, "PlusStress / volume overflows")
            atoms.info["REF_stress"] = stress
        if b.mv_grade is not None:
            atoms.info["MV_grade"] = b.mv_grade
        if b.features:
            atoms.info["mlip_features"] = dict(b.features)
        return atoms


def _select(images: list[Atoms], index: int | slice | str) -> Atoms | list[Atoms]:
    if isinstance(index, str):
        text = index.strip()
        if ":" in text:
            parts = text.split(":")
            if len(parts) > 3:
                raise ValueError(f"bad index {index!r}")
            try:
                bounds = [int(p) if p.strip() else None for p in parts]
            except ValueError:
                raise ValueError(f"bad index {index!r}") from None
            index = slice(*bounds)
        else:
            try:
                index = int(text)
            except ValueError:
                raise ValueError(f"bad index {index!r}") from None
    if isinstance(index, slice):
        return images[index]
    if isinstance(index, (int, np.integer)):
        k = int(index)
        if not -len(images) <= k < len(images):
            raise IndexError(f"configuration index {k} out of range for a file of {len(images)} configurations")
        return images[k]
    raise TypeError(f"index must be an int, a slice or a string like ':' or '2:10:2', not {type(index).__name__}")


def read_cfg(
    path: str | os.PathLike[str],
    species: Sequence[str] | None = None,
    index: int | slice | str = ":",
) -> Atoms | list[Atoms]:
    """Read configurations from an MLIP ``.cfg`` file.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.cfg`` file.
    species : sequence of str, optional
        Chemical symbols of the MLIP type indices 0, 1, ..., e.g.
        ``["N", "Cr"]``. A type index beyond this list is an error. If None,
        every atom gets the ASE dummy element ``"X"`` (atomic number 0): the
        file holds no chemistry, and no element is guessed. The raw type
        indices are always kept in ``atoms.arrays["mlip_type"]``.
    index : int, slice or str, default ":"
        Which configurations to return: an int gives one :class:`ase.Atoms`;
        a slice or a string such as ``":"``, ``"-1"`` or ``"10:20:2"`` gives
        a list (a string without a colon gives one Atoms). The whole file is
        always parsed and validated.

    Returns
    -------
    ase.Atoms or list of ase.Atoms
        See the module docstring for where each item of the file goes.

    Raises
    ------
    CfgFormatError
        If the file is malformed. The message names the file and the 1-based
        line number.
    ValueError
        If ``species`` holds something other than distinct chemical symbols.
    IndexError
        If an integer ``index`` is out of range.
    """
    path = os.fspath(path)
    _species_numbers(species)  # validate before reading
    species_checked = None if species is None else list(species)
    with open(path, "rb") as fh:
        raw = fh.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        lineno = raw.count(b"\n", 0, exc.start) + 1
        raise CfgFormatError(path, lineno, f"not valid UTF-8 text ({exc.reason})") from None
    images = _Reader(path, text, species_checked).read()
    return _select(images, index)


# --------------------------------------------------------------------------- #
# Writing
# --------------------------------------------------------------------------- #


def _g(x: float) -> str:
    return "%.17g" % x


def _finite(name: str, k: int, arr: np.ndarray) -> np.ndarray:
    if not np.isfinite(arr).all():
        raise ValueError(f"image {k}: {name} holds NaN or inf")
    return arr


def _per_atom(atoms: Atoms, name: str, k: int, shape: tuple[int, ...]) -> np.ndarray:
    arr = np.asarray(atoms.arrays[name], dtype=float)
    if arr.shape != shape:
        raise ValueError(f"image {k}: arrays[{name!r}] has shape {arr.shape}, expected {shape}")
    return _finite(f"arrays[{name!r}]", k, arr)


def _types(atoms: Atoms, species: Sequence[str] | None, k: int) -> np.ndarray:
    n = len(atoms)
    if species is not None:
        index = {s: t for t, s in enumerate(species)}
        symbols = atoms.get_chemical_symbols()
        missing = sorted({s for s in symbols if s not in index})
        if missing:
            raise ValueError(f"image {k}: symbols {missing} are not in species {list(species)}")
        return np.array([index[s] for s in symbols], dtype=np.int64)
    if "mlip_type" not in atoms.arrays:
        raise ValueError(
            f"image {k}: give species (chemical symbols of the type indices) or set atoms.arrays['mlip_type']"
        )
    raw = np.asarray(atoms.arrays["mlip_type"])
    types = raw.astype(np.int64)
    if types.shape != (n,) or not np.array_equal(types, raw) or (types < 0).any():
        raise ValueError(f"image {k}: arrays['mlip_type'] must hold {n} integers >= 0")
    return types


def _format_atoms(atoms: Atoms, species: Sequence[str] | None, k: int) -> str:
    n = len(atoms)
    types = _types(atoms, species, k)
    pbc = [bool(p) for p in atoms.pbc]
    nper = sum(pbc)
    if pbc != [j < nper for j in range(3)]:
        raise ValueError(
            f"image {k}: pbc {pbc} cannot be written; the periodic directions must be the first cell vectors"
        )
    cell = _finite("cell", k, np.array(atoms.cell.array, dtype=float))

    columns = ["id", "type", *_COORD_CART]
    blocks = [_finite("positions", k, np.asarray(atoms.positions, dtype=float))]
    zeros2 = np.zeros((n, 2))
    arrays = atoms.arrays
    if "REF_forces" in arrays:
        columns += _FORCES
        blocks.append(_per_atom(atoms, "REF_forces", k, (n, 3)))
    if "initial_magmoms" in arrays:
        m = np.asarray(arrays["initial_magmoms"], dtype=float)
        if m.shape != (n,):
            raise ValueError(f"image {k}: only collinear (1-D) initial magnetic moments can be written, got shape {m.shape}")
        columns += _MAGMOM
        blocks += [_finite("initial_magmoms", k, m)[:, None], zeros2]
    if "REF_magnetic_forces" in arrays:
        columns += _EN_DER
        blocks += [-_per_atom(atoms, "REF_magnetic_forces", k, (n,))[:, None], zeros2]
    for c, name in _SCALAR_COLUMNS.items():
        if name in arrays:
            columns.append(c)
            blocks.append(_per_atom(atoms, name, k, (n,))[:, None])
    floats = np.hstack(blocks) if n else np.zeros((0, len(columns) - 2))

    out = ["BEGIN_CFG", " Size", f"    {n}"]
    if nper:
        out.append(" Supercell")
        for row in cell[:nper]:
            out.append("    " + " ".join(f"{_g(x):>24}" for x in row))
    out.append(" AtomData:  " + " ".join(columns))
    fmt = "%7d %4d" + " %24.17g" * floats.shape[1]
    out.extend(fmt % (j + 1, t, *row) for j, (t, row) in enumerate(zip(types.tolist(), floats.tolist())))

    info = atoms.info
    if "REF_energy" in info:
        e = float(info["REF_energy"])
        _finite("info['REF_energy']", k, np.array(e))
        out += [" Energy", f"    {_g(e)}"]
    if "REF_stress" in info:
        s = np.array(info["REF_stress"], dtype=float)
        if s.shape == (3, 3):
            s = s[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]
        if s.shape != (6,):
            raise ValueError(f"image {k}: info['REF_stress'] must be a Voigt 6-vector or 3x3, got shape {s.shape}")
        _finite("info['REF_stress']", k, s)
        if nper != 3:
            raise ValueError(f"image {k}: REF_stress needs a cell periodic in 3 dimensions")
        volume = cell_volume(cell)
        if not volume > 0.0:
            raise ValueError(f"image {k}: REF_stress with a degenerate cell (volume 0)")
        virial = _virial_text_from_stress(s, volume)
        _finite("PlusStress (-REF_stress * volume)", k, np.array([float(x) for x in virial]))
        out += [" PlusStress:  " + " ".join(STRESS_LABELS), "    " + " ".join(virial)]
    features = info.get("mlip_features") or {}
    if "MV_grade" in info:
        if "MV_grade" in features:
            raise ValueError(f"image {k}: MV_grade both in info and in info['mlip_features']")
        g = float(info["MV_grade"])
        _finite("info['MV_grade']", k, np.array(g))
        out.append(f" Feature   MV_grade\t{_g(g)}")
    for name, value in features.items():
        name = str(name)
        value = str(value)
        if not name or name.split() != [name]:
            raise ValueError(f"image {k}: feature name {name!r} must be one word")
        if value != value.strip() or "\n" in value or "\r" in value:
            raise ValueError(f"image {k}: feature {name!r}: value {value!r} must be one line without surrounding blanks")
        out.append(f" Feature   {name}\t{value}".rstrip())
    out.append("END_CFG")
    return "\n".join(out) + "\n"


def write_cfg(
    path: str | os.PathLike[str],
    images: Atoms | Iterable[Atoms],
    species: Sequence[str] | None = None,
) -> None:
    """Write configurations to an MLIP ``.cfg`` file.

    Only the items present are written (see the module docstring for the
    names): an Atoms without ``REF_forces`` gets no ``fx fy fz`` columns.
    Collinear moments and ``REF_magnetic_forces`` are written as three
    columns each (``magmom_x/y/z``, ``en_der_mx/my/mz``, the y and z columns
    zero), as MLIP does. Numbers are written with 17 significant digits, so
    reading the file back gives identical arrays; ``PlusStress`` is chosen so
    that ``-PlusStress/V`` reproduces ``REF_stress`` exactly whenever a
    double allows it (otherwise to within one unit in the last place).

    Periodicity: the cell vectors along which ``pbc`` is True are written as
    ``Supercell`` rows; the periodic directions must be the leading ones
    (``pbc`` like ``[True, True, False]``). The cell of a non-periodic
    configuration is not written (it reads back as a zero cell).

    The file is written to a temporary file in the same directory and moved
    into place with :func:`os.replace`, so readers never see half a file.

    Parameters
    ----------
    path : str or os.PathLike
        Destination file (overwritten).
    images : ase.Atoms or iterable of ase.Atoms
        The configurations.
    species : sequence of str, optional
        Chemical symbols of the type indices 0, 1, ...; the types are then
        taken from the chemical symbols. If None, ``atoms.arrays["mlip_type"]``
        must hold them.

    Raises
    ------
    ValueError
        If an image cannot be written: a symbol not in ``species``, no types,
        NaN/inf values, non-collinear moments, periodic directions that are
        not the leading cell vectors, or ``REF_stress`` without a 3-D
        periodic, non-degenerate cell. Nothing is written then.
    """
    _species_numbers(species)
    if species is not None:
        species = list(species)
    if isinstance(images, Atoms):
        images = [images]
    text = "\n".join(_format_atoms(atoms, species, k) for k, atoms in enumerate(images))
    from mmtp_rs.io.atomic import atomic_write_text

    atomic_write_text(path, text)
