"""Reading and writing MLIP-3 ``.mtp`` potential files.

The parser is strict: every problem raises :class:`MtpFormatError` naming the
file and the 1-based line. Numbers are written with 17 significant digits so
that a written file reads back bit for bit.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._atomic import atomic_write_text


class MtpFormatError(ValueError):
    """A malformed ``.mtp`` file; the message names the file and line."""


@dataclass
class MtpData:
    """The content of an ``.mtp`` file, close to the file's own layout."""

    name: str = ""
    scaling: float = 1.0
    species_count: int = 1
    potential_tag: str = ""
    min_dist: float = 0.0  # Å
    max_dist: float = 5.0  # Å
    radial_basis_size: int = 8
    magnetic: bool = False
    mag_min: float = -1.0  # μB
    mag_max: float = 1.0  # μB
    magnetic_basis_size: int = 1
    radial_funcs_count: int = 0
    # radial_coeffs[(zi, zj)] -> array (radial_funcs_count, R * M * M)
    radial_coeffs: dict = field(default_factory=dict)
    basic: list = field(default_factory=list)  # [(mu, a, b, c)]
    times: list = field(default_factory=list)  # [(i, j, mult, k)]
    moments_count: int = 0
    scalars: list = field(default_factory=list)
    species_coeffs: np.ndarray = field(default_factory=lambda: np.zeros(0))
    moment_coeffs: np.ndarray = field(default_factory=lambda: np.zeros(0))


_NUM = re.compile(r"[-+0-9.eEnNaAiIfF]+")


def _fmt(x: float) -> str:
    return repr(float(x))


class _Reader:
    def __init__(self, path: Path):
        self.path = path
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: no such potential file") from None
        except UnicodeDecodeError as exc:
            raise MtpFormatError(f"{path}: not a text file ({exc})") from None
        self.lines = text.splitlines()
        self.pos = 0

    def error(self, msg: str, line: int | None = None) -> MtpFormatError:
        ln = (self.pos if line is None else line) + 1
        return MtpFormatError(f"{self.path}, line {ln}: {msg}")

    def next_line(self) -> tuple[int, str] | None:
        while self.pos < len(self.lines):
            ln = self.pos
            s = self.lines[ln].strip()
            self.pos += 1
            if s and not s.startswith("#"):
                return ln, s
        return None

    def numbers(self, text: str, ln: int, kind=float) -> list:
        body = text.replace("{", " ").replace("}", " ").replace(",", " ").split()
        out = []
        for tok in body:
            try:
                v = kind(tok) if kind is float else int(tok)
            except ValueError:
                raise self.error(f"cannot read {tok!r} as {'a number' if kind is float else 'an integer'}", ln) from None
            if kind is float and not np.isfinite(v):
                raise self.error(f"non-finite value {tok!r}", ln)
            out.append(v)
        return out

    def braced(self, first: str, ln: int) -> str:
        """Collect a {...} value that may span lines."""
        text = first
        start = ln
        while text.count("{") > text.count("}"):
            nxt = self.next_line()
            if nxt is None:
                raise self.error("unterminated '{' (file ends inside a list)", start)
            text += " " + nxt[1]
        if text.count("{") != text.count("}"):
            raise self.error("unbalanced braces", start)
        return text


def read_mtp(path: str | os.PathLike) -> MtpData:
    """Read an MLIP-3 ``.mtp`` file (magnetic or not)."""
    r = _Reader(Path(path))
    d = MtpData()
    first = r.next_line()
    if first is None:
        raise MtpFormatError(f"{r.path}: the file is empty")
    if first[1] != "MTP":
        raise r.error(f"expected 'MTP' on the first line, found {first[1]!r}", first[0])
    seen: dict[str, int] = {}
    radial_done = False
    while True:
        item = r.next_line()
        if item is None:
            break
        ln, s = item
        if s == "radial_coeffs":
            if "radial_funcs_count" not in seen:
                raise r.error("radial_coeffs before radial_funcs_count", ln)
            npairs = d.species_count * d.species_count
            per = d.radial_basis_size * d.magnetic_basis_size**2
            for _ in range(npairs):
                hdr = r.next_line()
                if hdr is None:
                    raise r.error("file ends inside radial_coeffs")
                hln, h = hdr
                m = re.fullmatch(r"(\d+)\s*-\s*(\d+)", h)
                if not m:
                    raise r.error(f"expected a species pair like '0-1', found {h!r}", hln)
                zi, zj = int(m.group(1)), int(m.group(2))
                if zi >= d.species_count or zj >= d.species_count:
                    raise r.error(f"species pair {h} beyond species_count {d.species_count}", hln)
                if (zi, zj) in d.radial_coeffs:
                    raise r.error(f"species pair {h} given twice", hln)
                rows = []
                for mu in range(d.radial_funcs_count):
                    row = r.next_line()
                    if row is None:
                        raise r.error(f"file ends inside radial_coeffs block {h}")
                    rln, rs = row
                    if not rs.startswith("{"):
                        raise r.error(f"expected '{{...}}' with {per} numbers for radial function {mu} of pair {h}, found {rs[:40]!r}", rln)
                    vals = r.numbers(r.braced(rs, rln), rln)
                    if len(vals) != per:
                        raise r.error(f"radial function {mu} of pair {h} has {len(vals)} coefficients, expected {per} (radial_basis_size x magnetic basis_size^2)", rln)
                    rows.append(vals)
                d.radial_coeffs[(zi, zj)] = np.array(rows, dtype=float)
            radial_done = True
            continue
        if "=" not in s:
            if s.split()[0] in ("BEGIN_CFG",):
                raise r.error("this looks like a .cfg configuration file, not a potential", ln)
            raise r.error(f"expected 'key = value', found {s[:60]!r}", ln)
        key, _, value = (t.strip() for t in s.partition("="))
        if key in seen:
            raise r.error(f"{key} given twice (first on line {seen[key] + 1})", ln)
        seen[key] = ln
        if value.startswith("{"):
            value = r.braced(value, ln)
        try:
            if key == "version":
                pass
            elif key == "potential_name":
                d.name = value
            elif key == "potential_tag":
                d.potential_tag = value
            elif key == "scaling":
                d.scaling = r.numbers(value, ln)[0]
            elif key == "species_count":
                d.species_count = int(value)
            elif key == "radial_basis_type":
                if value != "RBChebyshev":
                    raise r.error(f"unsupported radial_basis_type {value!r} (only RBChebyshev)", ln)
            elif key == "magnetic_basis_type":
                if value != "BChebyshev":
                    raise r.error(f"unsupported magnetic_basis_type {value!r} (only BChebyshev)", ln)
                d.magnetic = True
            elif key == "min_dist":
                d.min_dist = r.numbers(value, ln)[0]
            elif key == "max_dist":
                d.max_dist = r.numbers(value, ln)[0]
            elif key == "radial_basis_size":
                d.radial_basis_size = int(value)
            elif key == "min_val":
                d.mag_min = r.numbers(value, ln)[0]
            elif key == "max_val":
                d.mag_max = r.numbers(value, ln)[0]
            elif key == "basis_size":
                d.magnetic_basis_size = int(value)
            elif key == "radial_funcs_count":
                d.radial_funcs_count = int(value)
            elif key == "alpha_moments_count":
                d.moments_count = int(value)
            elif key in ("alpha_index_basic_count", "alpha_index_times_count", "alpha_scalar_moments"):
                int(value)
            elif key == "alpha_index_basic":
                v = r.numbers(value, ln, int)
                if len(v) % 4:
                    raise r.error("alpha_index_basic must hold groups of 4 integers", ln)
                d.basic = [tuple(v[k:k + 4]) for k in range(0, len(v), 4)]
            elif key == "alpha_index_times":
                v = r.numbers(value, ln, int)
                if len(v) % 4:
                    raise r.error("alpha_index_times must hold groups of 4 integers", ln)
                d.times = [(v[k], v[k + 1], float(v[k + 2]), v[k + 3]) for k in range(0, len(v), 4)]
            elif key == "alpha_moment_mapping":
                d.scalars = r.numbers(value, ln, int)
            elif key == "species_coeffs":
                d.species_coeffs = np.array(r.numbers(value, ln), dtype=float)
            elif key == "moment_coeffs":
                d.moment_coeffs = np.array(r.numbers(value, ln), dtype=float)
            else:
                raise r.error(f"unknown key {key!r}", ln)
        except ValueError as exc:
            if isinstance(exc, MtpFormatError):
                raise
            raise r.error(f"bad value for {key}: {value[:60]!r}", ln) from None
    # consistency
    for key in ("species_count", "min_dist", "max_dist", "radial_basis_size", "radial_funcs_count",
                "alpha_moments_count", "alpha_index_basic", "alpha_moment_mapping", "species_coeffs",
                "moment_coeffs"):
        if key not in seen:
            raise MtpFormatError(f"{r.path}: missing '{key}' (the file may be truncated)")
    if not radial_done:
        raise MtpFormatError(f"{r.path}: missing radial_coeffs (the file may be truncated)")
    for key, n in (("alpha_index_basic_count", len(d.basic)), ("alpha_index_times_count", len(d.times)),
                   ("alpha_scalar_moments", len(d.scalars))):
        if key in seen:
            declared = int(r.lines[seen[key]].partition("=")[2])
            if declared != n:
                raise r.error(f"{key} = {declared} but {n} entries are listed", seen[key])
    if len(d.radial_coeffs) != d.species_count**2:
        raise MtpFormatError(f"{r.path}: radial_coeffs has {len(d.radial_coeffs)} species pairs, expected {d.species_count**2}")
    if len(d.species_coeffs) != d.species_count:
        raise r.error(f"species_coeffs has {len(d.species_coeffs)} values, expected species_count = {d.species_count}", seen["species_coeffs"])
    if len(d.moment_coeffs) != len(d.scalars):
        raise r.error(f"moment_coeffs has {len(d.moment_coeffs)} values, expected alpha_scalar_moments = {len(d.scalars)}", seen["moment_coeffs"])
    nrad = max((b[0] for b in d.basic), default=-1) + 1
    if nrad > d.radial_funcs_count:
        raise r.error(f"alpha_index_basic uses radial function {nrad - 1} but radial_funcs_count = {d.radial_funcs_count}", seen["alpha_index_basic"])
    if d.magnetic and not d.mag_max > d.mag_min:
        raise MtpFormatError(f"{r.path}: magnetic basis needs min_val < max_val, got {d.mag_min}, {d.mag_max}")
    return d


def radial_vector(d: MtpData, n_radial: int) -> np.ndarray:
    """Radial coefficients in the core's order, keeping the first ``n_radial`` functions."""
    blocks = []
    for zi in range(d.species_count):
        for zj in range(d.species_count):
            blocks.append(d.radial_coeffs[(zi, zj)][:n_radial].ravel())
    return np.concatenate(blocks) if blocks else np.zeros(0)


def write_mtp(path: str | os.PathLike, d: MtpData) -> None:
    """Write an MLIP-3 ``.mtp`` file atomically."""
    out = ["MTP", "version = 1.1.0", f"potential_name = {d.name}"]
    out.append(f"scaling = {_fmt(d.scaling)}")
    out.append(f"species_count = {d.species_count}")
    out.append(f"potential_tag = {d.potential_tag}")
    out.append("radial_basis_type = RBChebyshev")
    out.append(f"\tmin_dist = {_fmt(d.min_dist)}")
    out.append(f"\tmax_dist = {_fmt(d.max_dist)}")
    out.append(f"\tradial_basis_size = {d.radial_basis_size}")
    if d.magnetic:
        out.append("magnetic_basis_type = BChebyshev")
        out.append(f"\tmin_val = {_fmt(d.mag_min)}")
        out.append(f"\tmax_val = {_fmt(d.mag_max)}")
        out.append(f"\tbasis_size = {d.magnetic_basis_size}")
    out.append(f"\tradial_funcs_count = {d.radial_funcs_count}")
    out.append("\tradial_coeffs")
    for zi in range(d.species_count):
        for zj in range(d.species_count):
            out.append(f"\t\t{zi}-{zj}")
            for row in d.radial_coeffs[(zi, zj)]:
                out.append("\t\t\t{" + ", ".join(_fmt(x) for x in row) + "}")
    out.append(f"alpha_moments_count = {d.moments_count}")
    out.append(f"alpha_index_basic_count = {len(d.basic)}")
    out.append("alpha_index_basic = {" + ", ".join("{" + ", ".join(str(int(x)) for x in b) + "}" for b in d.basic) + "}")
    out.append(f"alpha_index_times_count = {len(d.times)}")
    out.append("alpha_index_times = {" + ", ".join(
        "{" + f"{int(i)}, {int(j)}, {int(round(m))}, {int(k)}" + "}" for i, j, m, k in d.times) + "}")
    out.append(f"alpha_scalar_moments = {len(d.scalars)}")
    out.append("alpha_moment_mapping = {" + ", ".join(str(int(s)) for s in d.scalars) + "}")
    out.append("species_coeffs = {" + ", ".join(_fmt(x) for x in d.species_coeffs) + "}")
    out.append("moment_coeffs = {" + ", ".join(_fmt(x) for x in d.moment_coeffs) + "}")
    atomic_write_text(path, "\n".join(out) + "\n")
