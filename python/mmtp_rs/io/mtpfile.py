"""Reading and writing MLIP-3 ``.mtp`` potential files.

The parser is strict: every problem raises :class:`MtpFormatError` naming the
file, the 1-based line, the key and the value. Sizes and counts are checked
against :data:`LIMITS` before anything is allocated, real values must be
finite with ``|x| <= MAX_ABS_VALUE``, and every key a potential needs is
required. Numbers are written with 17 significant digits so that a written
file reads back bit for bit.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmtp_rs.io.atomic import atomic_write_text


class MtpFormatError(ValueError):
    """A malformed ``.mtp`` file; the message names the file and line."""


#: The MLIP-3 file version this reader understands.
MTP_VERSION = "1.1.0"
#: Largest |value| of any real number in a potential file (as in the Rust core).
MAX_ABS_VALUE = 1e30
#: Largest cutoff radius max_dist (Å), as in the Rust core.
MAX_CUTOFF = 20.0
#: Bounds (inclusive) of the integer keys; they mirror the Rust core's limits
#: and are checked before any table is allocated.
LIMITS = {
    "species_count": (1, 128),
    "radial_basis_size": (1, 64),
    "basis_size": (1, 64),
    "radial_funcs_count": (1, 64),
    "alpha_moments_count": (1, 100_000),
    "alpha_index_basic_count": (1, 100_000),
    "alpha_index_times_count": (0, 1_000_000),
    "alpha_scalar_moments": (1, 100_000),
}
#: Largest tensor rank of a basic moment and largest |multiplicity| in alpha_index_times.
MAX_RANK = 31
MAX_MULTIPLICITY = 10**6


def check_real(value, where: str, lo: float = -MAX_ABS_VALUE, hi: float = MAX_ABS_VALUE) -> float:
    """``value`` as a float in ``[lo, hi]``, or ValueError naming ``where`` and the value."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{where} must be a number, got {value!r}")
    try:
        v = float(value)
    except OverflowError:
        raise ValueError(f"{where} = {value!r} is out of range") from None
    if not np.isfinite(v):
        raise ValueError(f"{where} is not finite: {value!r}")
    if not lo <= v <= hi:
        raise ValueError(f"{where} = {value!r} is outside [{lo:g}, {hi:g}]")
    return v


def check_int(value, where: str, lo: int, hi: int) -> int:
    """``value`` as an int in ``[lo, hi]`` (no bools, no non-integral floats), or ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{where} must be an integer, got {value!r}")
    if not lo <= int(value) <= hi:
        raise ValueError(f"{where} = {value!r} is outside [{lo}, {hi}]")
    return int(value)


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
            raw = path.read_bytes()
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: no such potential file") from None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = raw.count(b"\n", 0, exc.start) + 1
            raise MtpFormatError(f"{path}, line {line}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
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

    def numbers(self, text: str, ln: int, kind=float, key: str = "", lo=None, hi=None) -> list:
        """The numbers of ``text`` (braces and commas ignored), each checked in [lo, hi]."""
        body = text.replace("{", " ").replace("}", " ").replace(",", " ").split()
        what = f"{key}: " if key else ""
        out = []
        for tok in body:
            if len(tok) > 40:
                raise self.error(f"{what}number {tok[:40]!r}... is too long", ln)
            try:
                v = float(tok) if kind is float else int(tok)
            except ValueError:
                raise self.error(f"cannot read {tok!r} as {'a number' if kind is float else 'an integer'}"
                                 f"{f' in {key}' if key else ''}", ln) from None
            try:
                if kind is float:
                    check_real(v, "value", -MAX_ABS_VALUE if lo is None else lo, MAX_ABS_VALUE if hi is None else hi)
                else:
                    check_int(v, "value", lo, hi)
            except ValueError as exc:
                raise self.error(f"{what}{exc} ({tok!r})", ln) from None
            out.append(v)
        return out

    def scalar(self, value: str, ln: int, key: str, kind=float, lo=None, hi=None):
        """The one number of a ``key = value`` line."""
        if kind is int and lo is None:
            lo, hi = LIMITS[key]
        v = self.numbers(value, ln, kind, key, lo, hi)
        if len(v) != 1:
            raise self.error(f"{key} needs one number, found {value[:60]!r}", ln)
        return v[0]

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


_MAGNETIC_KEYS = ("min_val", "max_val", "basis_size")
_REQUIRED = ("version", "species_count", "radial_basis_type", "min_dist", "max_dist",
             "radial_basis_size", "radial_funcs_count", "alpha_moments_count", "alpha_index_basic",
             "alpha_index_times", "alpha_moment_mapping", "species_coeffs", "moment_coeffs")


def read_mtp(path: str | os.PathLike) -> MtpData:
    """Read an MLIP-3 ``.mtp`` file (magnetic or not)."""
    r = _Reader(Path(path))
    d = MtpData()
    first = r.next_line()
    if first is None:
        raise MtpFormatError(f"{r.path}: the file is empty")
    if first[1] != "MTP":
        raise r.error(f"expected 'MTP' on the first line, found {first[1][:60]!r}", first[0])
    seen: dict[str, int] = {}
    radial_done = False
    while True:
        item = r.next_line()
        if item is None:
            break
        ln, s = item
        if s == "radial_coeffs":
            _read_radial(r, d, seen, ln)
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
        _read_key(r, d, key, value, ln, seen)
    _check_complete(r, d, seen, radial_done)
    return d


def _read_key(r: _Reader, d: MtpData, key: str, value: str, ln: int, seen: dict) -> None:
    if key in _MAGNETIC_KEYS and "magnetic_basis_type" not in seen:
        raise r.error(f"{key} outside a magnetic basis (it must follow 'magnetic_basis_type = BChebyshev')", ln)
    if key == "version":
        if value != MTP_VERSION:
            raise r.error(f"unsupported version {value[:40]!r} (this reader knows {MTP_VERSION})", ln)
    elif key == "potential_name":
        d.name = value
    elif key == "potential_tag":
        d.potential_tag = value
    elif key == "scaling":
        d.scaling = r.scalar(value, ln, key)
    elif key in ("species_count", "radial_basis_size", "basis_size", "radial_funcs_count", "alpha_moments_count"):
        if key == "radial_funcs_count" and "radial_coeffs" in seen:
            raise r.error("radial_funcs_count after radial_coeffs", ln)
        v = r.scalar(value, ln, key, int)
        attr = {"basis_size": "magnetic_basis_size", "alpha_moments_count": "moments_count"}.get(key, key)
        setattr(d, attr, v)
    elif key in ("alpha_index_basic_count", "alpha_index_times_count", "alpha_scalar_moments"):
        r.scalar(value, ln, key, int)
    elif key == "radial_basis_type":
        if value != "RBChebyshev":
            raise r.error(f"unsupported radial_basis_type {value[:40]!r} (only RBChebyshev)", ln)
    elif key == "magnetic_basis_type":
        if value != "BChebyshev":
            raise r.error(f"unsupported magnetic_basis_type {value[:40]!r} (only BChebyshev)", ln)
        d.magnetic = True
    elif key == "min_dist":
        d.min_dist = r.scalar(value, ln, key, lo=0.0, hi=MAX_CUTOFF)
    elif key == "max_dist":
        d.max_dist = r.scalar(value, ln, key, lo=0.0, hi=MAX_CUTOFF)
    elif key == "min_val":
        d.mag_min = r.scalar(value, ln, key)
    elif key == "max_val":
        d.mag_max = r.scalar(value, ln, key)
    elif key in ("alpha_index_basic", "alpha_index_times", "alpha_moment_mapping"):
        if "alpha_moments_count" not in seen:
            raise r.error(f"{key} before alpha_moments_count", ln)
        top = d.moments_count - 1
        if key == "alpha_moment_mapping":
            d.scalars = r.numbers(value, ln, int, key, 0, top)
            return
        v = r.numbers(value, ln, int, key, -MAX_MULTIPLICITY, MAX_MULTIPLICITY)
        if len(v) % 4:
            raise r.error(f"{key} must hold groups of 4 integers, found {len(v)} integers", ln)
        groups = [tuple(v[k:k + 4]) for k in range(0, len(v), 4)]
        for g in groups:
            if key == "alpha_index_basic":
                bad = min(g) < 0 or g[0] >= LIMITS["radial_funcs_count"][1] or sum(g[1:]) > MAX_RANK
                rule = f"mu in [0, {LIMITS['radial_funcs_count'][1] - 1}], powers >= 0 of total rank <= {MAX_RANK}"
            else:
                bad = min(g[0], g[1], g[3]) < 0 or max(g[0], g[1], g[3]) > top
                rule = f"moment indices in [0, {top}] (alpha_moments_count = {d.moments_count})"
            if bad:
                raise r.error(f"{key} entry {{{', '.join(map(str, g))}}} breaks the rule: {rule}", ln)
        if key == "alpha_index_basic":
            d.basic = groups
        else:
            d.times = [(i, j, float(m), k) for i, j, m, k in groups]
    elif key in ("species_coeffs", "moment_coeffs"):
        setattr(d, key, np.array(r.numbers(value, ln, float, key), dtype=float))
    else:
        raise r.error(f"unknown key {key[:40]!r}", ln)


def _read_radial(r: _Reader, d: MtpData, seen: dict, ln: int) -> None:
    if "radial_coeffs" in seen:
        raise r.error(f"radial_coeffs given twice (first on line {seen['radial_coeffs'] + 1})", ln)
    seen["radial_coeffs"] = ln
    for key in ("species_count", "radial_basis_size", "radial_funcs_count") + (
            ("basis_size",) if d.magnetic else ()):
        if key not in seen:
            raise r.error(f"radial_coeffs before {key}", ln)
    npairs = d.species_count * d.species_count
    m = d.magnetic_basis_size if d.magnetic else 1
    per = d.radial_basis_size * m * m
    for _ in range(npairs):
        hdr = r.next_line()
        if hdr is None:
            raise r.error("file ends inside radial_coeffs")
        hln, h = hdr
        match = re.fullmatch(r"(\d{1,4})\s*-\s*(\d{1,4})", h)
        if not match:
            raise r.error(f"expected a species pair like '0-1', found {h[:40]!r}", hln)
        zi, zj = int(match.group(1)), int(match.group(2))
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
            vals = r.numbers(r.braced(rs, rln), rln, float, f"radial_coeffs {h}")
            if len(vals) != per:
                raise r.error(f"radial function {mu} of pair {h} has {len(vals)} coefficients, expected {per} (radial_basis_size x magnetic basis_size^2)", rln)
            rows.append(vals)
        d.radial_coeffs[(zi, zj)] = np.array(rows, dtype=float)


def _check_complete(r: _Reader, d: MtpData, seen: dict, radial_done: bool) -> None:
    required = _REQUIRED + (_MAGNETIC_KEYS if d.magnetic else ())
    for key in required:
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
    if not d.max_dist > d.min_dist:
        raise r.error(f"max_dist = {d.max_dist} must exceed min_dist = {d.min_dist}", seen["max_dist"])
    if d.moments_count < len(d.basic):
        raise r.error(f"alpha_moments_count = {d.moments_count} is below the {len(d.basic)} basic moments",
                      seen["alpha_moments_count"])
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
        raise r.error(f"magnetic basis needs min_val < max_val, got min_val = {d.mag_min}, max_val = {d.mag_max}", seen["max_val"])


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
