"""Exact extended-XYZ files for the learning loop's state.

ASE writes extxyz numbers with 8 decimals, so a configuration read back is not
the configuration written: a resumed run would label rounded coordinates (new
job ids, energies 1e-8 eV off) and diverge from an uninterrupted one. These
writers use 17 significant digits (``%.17g``, exact for IEEE doubles) in the
same extxyz layout, so ASE and every extxyz tool still read the files, and a
round trip is bit-identical. Writes are atomic.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from ase import Atoms

from mmtp_rs.io.atomic import atomic_write_text


__all__ = ["write_images", "read_images", "images_text", "plain_copy"]


def _num(x) -> str:
    return "%.17g" % float(x)


def _info_value(key: str, v) -> str | None:
    if isinstance(v, (bool, np.bool_)):
        return "T" if v else "F"
    if isinstance(v, (int, np.integer)):
        return "%d" % int(v)
    if isinstance(v, (float, np.floating)):
        return _num(v)
    if isinstance(v, str):
        if any(c in v for c in '"\\\n'):
            raise ValueError(f"info value {key}={v!r} cannot be written to extxyz (quote, backslash or newline)")
        return f'"{v}"' if (" " in v or "=" in v or not v) else v
    arr = np.asarray(v)
    if arr.dtype.kind in "fi" and arr.ndim == 1 and arr.size:
        return '"' + " ".join(_num(x) if arr.dtype.kind == "f" else "%d" % x for x in arr) + '"'
    return None  # not representable: left out (documented: numbers, strings, 1-D numeric arrays)


def _columns(atoms: Atoms) -> list[tuple[str, np.ndarray, str]]:
    cols = []
    for key in atoms.arrays:
        if key in ("numbers", "positions"):
            continue
        arr = np.asarray(atoms.arrays[key])
        kind = {"f": "R", "i": "I", "u": "I", "b": "L"}.get(arr.dtype.kind)
        if kind is None or arr.ndim > 2:
            continue
        cols.append((key, arr.reshape(len(atoms), -1), kind))
    return cols


def images_text(images: list[Atoms]) -> str:
    """The extxyz text of ``images`` at full precision."""
    out = []
    for a in images:
        cols = _columns(a)
        props = "species:S:1:pos:R:3" + "".join(f":{k}:{t}:{arr.shape[1]}" for k, arr, t in cols)
        head = []
        if a.cell.rank > 0 or a.pbc.any():
            head.append('Lattice="' + " ".join(_num(x) for x in a.cell.array.ravel()) + '"')
        head.append(f"Properties={props}")
        for key, v in a.info.items():
            s = _info_value(key, v)
            if s is not None and key not in ("Lattice", "Properties", "pbc"):
                head.append(f"{key}={s}")
        head.append('pbc="' + " ".join("T" if p else "F" for p in a.pbc) + '"')
        out.append(str(len(a)))
        out.append(" ".join(head))
        syms = a.get_chemical_symbols()
        for i in range(len(a)):
            fields = [syms[i]] + [_num(x) for x in a.positions[i]]
            for _, arr, t in cols:
                fields += [("T" if x else "F") if t == "L" else (_num(x) if t == "R" else "%d" % x) for x in arr[i]]
            out.append(" ".join(fields))
    return "\n".join(out) + ("\n" if out else "")


def write_images(path: str | Path, images: list[Atoms]) -> None:
    """Atomic, exact extxyz write (an empty list gives an empty file)."""
    atomic_write_text(Path(path), images_text(list(images)))


def read_images(path: str | Path) -> list[Atoms]:
    """Read an extxyz file (as written by :func:`write_images`) back, exactly."""
    from ase.io import read

    path = Path(path)
    if path.stat().st_size == 0:
        return []
    images = read(path, index=":", format="extxyz")
    for a in images:
        a.calc = None
    return images


def plain_copy(atoms: Atoms, moments=None, info_keys=("MV_grade", "stage", "run", "origin")) -> Atoms:
    """Species, geometry and moments of ``atoms`` (``moments`` if given), plus the
    listed ``info`` keys and MLIP types; no calculator, no labels, no results."""
    b = Atoms(numbers=atoms.numbers.copy(), positions=atoms.positions.copy(), cell=atoms.cell.array.copy(),
              pbc=atoms.pbc.copy())
    m = atoms.get_initial_magnetic_moments() if moments is None else moments
    b.set_initial_magnetic_moments(np.asarray(m, dtype=float).reshape(len(atoms)))
    if "mlip_type" in atoms.arrays:
        b.arrays["mlip_type"] = np.asarray(atoms.arrays["mlip_type"]).copy()
    for key in info_keys:
        if key in atoms.info:
            b.info[key] = atoms.info[key]
    return b
