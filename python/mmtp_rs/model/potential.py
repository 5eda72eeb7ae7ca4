"""The magnetic Moment Tensor Potential as a Python object.

:class:`Potential` holds the species, hyperparameters, basis tables and the
parameter vector, evaluates configurations through the Rust core and reads
and writes MLIP-3 ``.mtp`` files and the package's own JSON potential file
(which also stores per-species magnetic intervals and the symmetrisation).

Parameter vector layout (``Potential.params``): the radial coefficients
``c[z_i, z_j, mu, zeta, beta, gamma]`` (MLIP's order), then the species
constants ``s_z``, then the basis coefficients ``xi_alpha``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from ase.data import atomic_numbers
from ase.stress import full_3x3_to_voigt_6_stress

from mmtp_rs import _core
from mmtp_rs.io.atomic import atomic_write_text
from mmtp_rs.io.mtpfile import (
    LIMITS,
    MAX_CUTOFF,
    MAX_MULTIPLICITY,
    MAX_RANK,
    MtpData,
    MtpFormatError,
    check_int,
    check_real,
    radial_vector,
    read_mtp,
    write_mtp,
)


MMTPError = _core.MMTPError
ShapeError = _core.ShapeError
InvalidValueError = _core.InvalidValueError
GeometryError = _core.GeometryError
PotentialError = _core.PotentialError
set_num_threads = _core.set_num_threads
get_num_threads = _core.get_num_threads
#: Return the large freed blocks (neighbour lists and accumulators of big cells)
#: the extension keeps for its next call to the system; returns the bytes
#: released. The cache holds at most ``MMTP_ALLOC_CACHE_MIB`` MiB (default 1024,
#: 0 turns it off).
release_memory = _core.release_memory


def single_blas_thread():
    """Context manager limiting numpy/scipy's BLAS to one thread (threadpoolctl).

    The long-running entry points (learning loop, validation, properties) run
    under it: their dense algebra is on 3x3 cells and small systems, where a
    multithreaded BLAS only competes with the Rust core's rayon threads.
    """
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")

FORMAT_TAG = "mmtp_rs potential"
FORMAT_VERSION = 1
#: Highest MTP level the basis generator supports (the Rust core's MAX_LEVEL).
MAX_LEVEL = 32


def _cheb_vander(y: np.ndarray, n: int) -> np.ndarray:
    return np.polynomial.chebyshev.chebvander(y, n - 1)


def _reexpand(lo_src: float, hi_src: float, lo: float, hi: float, n: int) -> np.ndarray:
    """A with T_b(y_src(m)) = sum_g A[b, g] T_g(y(m)) exactly (polynomials of degree < n)."""
    if n == 1:
        return np.ones((1, 1))
    yk = np.cos(np.pi * (np.arange(n) + 0.5) / n)  # nodes in the target variable
    m = 0.5 * (yk * (hi - lo) + (lo + hi))
    ysrc = (2 * m - (lo_src + hi_src)) / (hi_src - lo_src)
    vt = _cheb_vander(yk, n)
    vs = _cheb_vander(ysrc, n)
    return np.linalg.solve(vt, vs).T


class Potential:
    """A magnetic (or ordinary) Moment Tensor Potential.

    Build one with :meth:`new` (random parameters, basis of a given level) or
    read one with :meth:`from_file`; evaluate with :meth:`evaluate` or through
    :class:`mmtp_rs.MMTPCalculator`.
    """

    def __init__(self, *, species, scaling, min_dist, max_dist, radial_basis_size,
                 magnetic_basis_size, mag_intervals, tables, params, level=None,
                 name="", symmetrize=True):
        self.species = None if species is None else [str(s) for s in species]
        self.level = level
        self.name = name
        self.symmetrize = bool(symmetrize)
        self.scaling = float(scaling)
        self.min_dist = float(min_dist)  # Å
        self.max_dist = float(max_dist)  # Å
        self.radial_basis_size = int(radial_basis_size)
        self.magnetic_basis_size = int(magnetic_basis_size)
        self.mag_intervals = np.array(mag_intervals, dtype=float).reshape(-1, 2)  # μB, (C, 2)
        basic, times, n_moments, scalars = tables
        self.tables = (
            [tuple(int(x) for x in b) for b in basic],
            [(int(i), int(j), float(m), int(k)) for i, j, m, k in times],
            int(n_moments),
            [int(s) for s in scalars],
        )
        n_species = len(self.mag_intervals)
        if self.species is not None:
            if len(self.species) != n_species:
                raise MMTPError(f"{len(self.species)} species names given for a potential of {n_species} species")
            for s in self.species:
                if s not in atomic_numbers:
                    raise MMTPError(f"unknown chemical symbol {s!r} in species")
            if len(set(self.species)) != len(self.species):
                raise MMTPError(f"species names repeat: {self.species}")
        self._core = _core.CorePotential(
            n_species, self.scaling, self.min_dist, self.max_dist, self.radial_basis_size,
            self.magnetic_basis_size, list(self.mag_intervals[:, 0]), list(self.mag_intervals[:, 1]),
            self.tables[0], self.tables[1], self.tables[2], self.tables[3],
            np.ascontiguousarray(params, dtype=float),
        )

    # ------------------------------------------------------------------ build
    @classmethod
    def new(cls, species: Sequence[str], level: int, radial_basis_size: int = 8,
            magnetic_basis_size: int = 2, min_dist: float = 1.7, max_dist: float = 5.0,
            max_moment: Mapping[str, float] | float | None = None, seed: int | None = None,
            scaling: float | None = None, symmetrize: bool = True, name: str = "") -> "Potential":
        """A new potential with the basis of ``level`` and random parameters.

        Parameters
        ----------
        species : chemical symbols, in the order of MLIP type indices 0, 1, ...
        level : MTP level (2..28 or more)
        radial_basis_size : N_phi, Chebyshev polynomials per radial function
        magnetic_basis_size : N_psi, Chebyshev polynomials of the moment (1 = non-magnetic)
        min_dist, max_dist : R_min and R_cut (Å)
        max_moment : M_max per species (μB), as a dict or one number; the magnetic
            basis of species z spans [-M_max^z, M_max^z]. Default 3.0 μB.
        seed : random seed of the initial parameters
        scaling : factor on the radial functions (default: chosen so that
            M_{0,0} is of order one in a condensed phase)
        """
        species = [str(s) for s in species]
        if not species:
            raise MMTPError("at least one species is needed")
        if max_moment is None:
            max_moment = 3.0
        if isinstance(max_moment, Mapping):
            missing = [s for s in species if s not in max_moment]
            if missing:
                raise MMTPError(f"max_moment has no value for species {missing}")
            mm = [float(max_moment[s]) for s in species]
        else:
            mm = [float(max_moment)] * len(species)
        for s, v in zip(species, mm):
            if not (np.isfinite(v) and v > 0):
                raise MMTPError(f"max_moment of {s} must be positive, got {v}")
        tables = basis_tables(level)
        n_radial = max(b[0] for b in tables[0]) + 1
        c = len(species)
        if scaling is None:
            # about 0.08 atoms/Å^3 within R_cut, (R_cut - r)^2 of order ((R_cut - R_min)/2)^2
            n_nb = 0.08 * 4.0 / 3.0 * np.pi * max_dist**3
            scaling = 1.0 / (n_nb * (0.5 * (max_dist - min_dist)) ** 2)
        rng = np.random.default_rng(seed)
        n_rad = c * c * n_radial * radial_basis_size * magnetic_basis_size**2
        decay = 0.7 ** np.arange(radial_basis_size)
        radial = rng.normal(size=(c * c * n_radial, radial_basis_size, magnetic_basis_size**2))
        radial *= decay[None, :, None]
        params = np.concatenate([radial.ravel(), np.zeros(c), 0.01 * rng.normal(size=len(tables[3]))])
        assert params.size == n_rad + c + len(tables[3])
        return cls(species=species, scaling=scaling, min_dist=min_dist, max_dist=max_dist,
                   radial_basis_size=radial_basis_size, magnetic_basis_size=magnetic_basis_size,
                   mag_intervals=[(-v, v) for v in mm], tables=tables, params=params, level=level,
                   name=name, symmetrize=symmetrize)

    @classmethod
    def from_file(cls, path: str | os.PathLike, species: Sequence[str] | None = None) -> "Potential":
        """Read an MLIP-3 ``.mtp`` file or the package's own JSON potential file.

        ``species`` names the MLIP type indices 0, 1, ... by chemical symbol
        (required to evaluate ASE Atoms by symbol; without it, atoms must
        carry an ``mlip_type`` array, as :func:`mmtp_rs.read_cfg` gives).
        """
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such potential file")
        head = path.read_bytes()[:64].lstrip()
        if head.startswith(b"{"):
            return cls._from_json(path, species)
        d = read_mtp(path)
        if species is not None and len(species) != d.species_count:
            raise MMTPError(f"{path}: species_count is {d.species_count} but {len(species)} species names were given ({list(species)})")
        n_radial = max((b[0] for b in d.basic), default=-1) + 1
        m = d.magnetic_basis_size if d.magnetic else 1
        params = np.concatenate([radial_vector(d, n_radial), d.species_coeffs, d.moment_coeffs])
        interval = (d.mag_min, d.mag_max) if d.magnetic else (-1.0, 1.0)
        try:
            return cls(species=species, scaling=d.scaling, min_dist=d.min_dist, max_dist=d.max_dist,
                       radial_basis_size=d.radial_basis_size, magnetic_basis_size=m,
                       mag_intervals=[interval] * d.species_count,
                       tables=(d.basic, d.times, d.moments_count, d.scalars), params=params,
                       name=d.name, symmetrize=True)
        except MMTPError as exc:
            raise MtpFormatError(f"{path}: {exc}") from None

    @classmethod
    def _from_json(cls, path: Path, species):
        try:
            text = path.read_bytes().decode("utf-8")
            doc = json.loads(text)
        except UnicodeDecodeError as exc:
            raise MtpFormatError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        except json.JSONDecodeError as exc:
            raise MtpFormatError(f"{path}, line {exc.lineno}: invalid JSON ({exc.msg})") from None
        except (ValueError, RecursionError) as exc:  # e.g. an integer of more than 4300 digits, deep nesting
            raise MtpFormatError(f"{path}: unreadable JSON ({str(exc)[:100]})") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT_TAG:
            raise MtpFormatError(f"{path}: not an {FORMAT_TAG} file (missing 'format': '{FORMAT_TAG}')")
        try:
            kw = _json_fields(doc)
            if species is not None and list(species) != kw["species"]:
                raise ValueError(f"the file's species are {kw['species']}, not {list(species)}")
            return cls(**kw)
        except KeyError as exc:
            raise MtpFormatError(f"{path}: missing entry {exc.args[0]!r}") from None
        except (TypeError, ValueError) as exc:  # MMTPError is a ValueError
            raise MtpFormatError(f"{path}: {exc}") from None

    # ------------------------------------------------------------------ save
    def save(self, path: str | os.PathLike) -> None:
        """Write the potential: ``.mtp`` -> MLIP-3 format, anything else -> JSON.

        MLIP-3 has one magnetic interval for all species; per-species intervals
        are re-expanded exactly into the common interval (the union), so the
        written ``.mtp`` gives the same raw energies. The symmetrisation flag
        is not stored in ``.mtp`` files (MLIP-3 evaluates E(M) only).
        """
        path = Path(path)
        if path.suffix == ".mtp":
            write_mtp(path, self.to_mtp_data())
            return
        if self.species is None:
            raise MMTPError("name the species (potential.species = [...]) before saving in the JSON format")
        nr = self._core.n_radial_coeffs
        p = self.params
        doc = {
            "format": FORMAT_TAG,
            "version": FORMAT_VERSION,
            "name": self.name,
            "species": self.species,
            "level": self.level,
            "symmetrize": self.symmetrize,
            "scaling": self.scaling,
            "min_dist": self.min_dist,
            "max_dist": self.max_dist,
            "radial_basis_size": self.radial_basis_size,
            "magnetic_basis_size": self.magnetic_basis_size,
            "magnetic_intervals": {s: [float(a), float(b)] for s, (a, b) in zip(self.species, self.mag_intervals)},
            "species_coeffs": {s: float(v) for s, v in zip(self.species, p[nr:nr + len(self.species)])},
            "moment_coeffs": [float(x) for x in p[nr + len(self.species):]],
            "radial_coeffs": [float(x) for x in p[:nr]],
            "basis": {"basic": [list(b) for b in self.tables[0]],
                      "times": [[i, j, m, k] for i, j, m, k in self.tables[1]],
                      "n_moments": self.tables[2], "scalars": self.tables[3]},
        }
        atomic_write_text(path, json.dumps(doc, indent=1) + "\n")

    def to_mtp_data(self) -> MtpData:
        """The potential as MLIP-3 file content (exact re-expansion of per-species intervals)."""
        c = self.n_species
        kr = self._core.n_radial
        p_, m_ = self.radial_basis_size, self.magnetic_basis_size
        nr = self._core.n_radial_coeffs
        params = self.params
        rad = params[:nr].reshape(c, c, kr, p_, m_, m_).copy()
        lo = float(self.mag_intervals[:, 0].min())
        hi = float(self.mag_intervals[:, 1].max())
        if m_ > 1 and not (np.all(self.mag_intervals[:, 0] == lo) and np.all(self.mag_intervals[:, 1] == hi)):
            a = [_reexpand(self.mag_intervals[z, 0], self.mag_intervals[z, 1], lo, hi, m_) for z in range(c)]
            for zi in range(c):
                for zj in range(c):
                    rad[zi, zj] = np.einsum("kpbg,bB,gG->kpBG", rad[zi, zj], a[zi], a[zj])
        d = MtpData(name=self.name, scaling=self.scaling, species_count=c,
                    min_dist=self.min_dist, max_dist=self.max_dist,
                    radial_basis_size=p_, magnetic=m_ > 1, mag_min=lo, mag_max=hi,
                    magnetic_basis_size=m_, radial_funcs_count=kr,
                    radial_coeffs={(zi, zj): rad[zi, zj].reshape(kr, p_ * m_ * m_) for zi in range(c) for zj in range(c)},
                    basic=self.tables[0], times=self.tables[1], moments_count=self.tables[2],
                    scalars=self.tables[3], species_coeffs=params[nr:nr + c],
                    moment_coeffs=params[nr + c:])
        return d

    # ------------------------------------------------------------ parameters
    @property
    def n_species(self) -> int:
        return len(self.mag_intervals)

    @property
    def n_params(self) -> int:
        """Number of parameters (radial + species + basis coefficients)."""
        return self._core.n_params

    @property
    def params(self) -> np.ndarray:
        """A copy of the parameter vector; assign a new array to change it."""
        return self._core.get_params()

    @params.setter
    def params(self, value) -> None:
        v = np.ascontiguousarray(value, dtype=float)
        if v.shape != (self.n_params,):
            raise MMTPError(f"params must have shape ({self.n_params},), got {v.shape}")
        self._core.set_params(v)

    @property
    def param_blocks(self) -> dict[str, slice]:
        """Slices of ``params``: 'radial', 'species', 'moment'."""
        nr = self._core.n_radial_coeffs
        c = self.n_species
        return {"radial": slice(0, nr), "species": slice(nr, nr + c), "moment": slice(nr + c, self.n_params)}

    @property
    def n_basis(self) -> int:
        """Number of scalar basis functions."""
        return len(self.tables[3])

    @property
    def n_radial_functions(self) -> int:
        return self._core.n_radial

    @property
    def max_moment(self) -> dict:
        """Per-species upper end of the magnetic interval (μB)."""
        names = self.species or [str(k) for k in range(self.n_species)]
        return {s: float(b) for s, (a, b) in zip(names, self.mag_intervals)}

    def copy(self) -> "Potential":
        return Potential(species=self.species, scaling=self.scaling, min_dist=self.min_dist,
                         max_dist=self.max_dist, radial_basis_size=self.radial_basis_size,
                         magnetic_basis_size=self.magnetic_basis_size, mag_intervals=self.mag_intervals,
                         tables=self.tables, params=self.params, level=self.level, name=self.name,
                         symmetrize=self.symmetrize)

    def __repr__(self) -> str:
        return (f"Potential(species={self.species}, level={self.level}, n_params={self.n_params}, "
                f"radial_basis_size={self.radial_basis_size}, magnetic_basis_size={self.magnetic_basis_size}, "
                f"R=[{self.min_dist}, {self.max_dist}] Å, symmetrize={self.symmetrize})")

    # ------------------------------------------------------------ evaluation
    def types_of(self, atoms) -> np.ndarray:
        """Species indices of the atoms (by symbol, or from ``atoms.arrays['mlip_type']``)."""
        if self.species is None:
            if "mlip_type" not in atoms.arrays:
                raise MMTPError("this potential has no species names: pass species=[...] to from_file, "
                                "or give the atoms an 'mlip_type' array")
            t = np.asarray(atoms.arrays["mlip_type"], dtype=np.int64)
            bad = np.nonzero((t < 0) | (t >= self.n_species))[0]
            if bad.size:
                raise MMTPError(f"atom {bad[0]} has type {t[bad[0]]}, the potential has {self.n_species} species")
            return t
        from ase.data import atomic_numbers, chemical_symbols

        # a symbol is its atomic number: one table lookup per atom (a Python loop over
        # the symbols cost 30 ms, serial, for a 32768-atom evaluation)
        lut = np.full(len(chemical_symbols), -1, dtype=np.int64)
        for k, s in enumerate(self.species):
            z = atomic_numbers.get(s)
            if z is not None:
                lut[z] = k
        nums = np.asarray(atoms.numbers, dtype=np.int64)
        if nums.size and (nums.min() < 0 or nums.max() >= lut.size):
            i = int(np.nonzero((nums < 0) | (nums >= lut.size))[0][0])
            raise MMTPError(f"atom {i} has atomic number {nums[i]}, which is not a species of this potential "
                            f"{self.species}")
        out = lut[nums]
        bad = np.nonzero(out < 0)[0]
        if bad.size:
            i = int(bad[0])
            raise MMTPError(f"atom {i} is {chemical_symbols[nums[i]]}, which is not a species of this potential "
                            f"{self.species}")
        return out

    def _inputs(self, atoms, moments=None):
        n = len(atoms)
        if moments is None:
            m = np.asarray(atoms.get_initial_magnetic_moments(), dtype=float)
        else:
            m = np.asarray(moments, dtype=float)
        if m.ndim != 1:
            raise MMTPError(f"magnetic moments must be collinear, one number per atom; got shape {m.shape}")
        if m.shape != (n,):
            raise MMTPError(f"{m.shape[0]} magnetic moments for {n} atoms")
        pbc = [bool(x) for x in atoms.pbc]
        cell = np.ascontiguousarray(atoms.cell.array, dtype=float)
        pos = np.ascontiguousarray(atoms.positions, dtype=float)
        return cell, pbc, pos, self.types_of(atoms), np.ascontiguousarray(m)

    def _finish(self, out: dict, atoms) -> dict:
        if "dedm" not in out:  # energies only
            return out
        out["magnetic_forces"] = -out["dedm"]
        if all(atoms.pbc):
            vol = abs(np.linalg.det(atoms.cell.array))
            w = 0.5 * (out["virial"] + out["virial"].T)
            sigma = -w / vol
            out["stress"] = full_3x3_to_voigt_6_stress(sigma)
        return out

    def evaluate(self, atoms, symmetrize: bool | None = None, param_grad: bool = True, moments=None,
                 forces: bool = True, site_param_grad: bool = False) -> dict:
        """Energy and derivatives of one configuration.

        Returns a dict with ``energy`` (eV), ``energies`` (N, eV), ``forces``
        (N, 3, eV/Å), ``stress`` (6, Voigt xx yy zz yz xz xy, eV/Å^3, ASE sign;
        only for 3-D periodic cells), ``virial`` (3x3, eV), ``magnetic_forces``
        (N, -dE/dm, eV/μB), ``dedm`` (+dE/dm), ``param_gradient`` (dE/dtheta),
        and the counts ``n_close_atoms`` (atoms with a neighbour closer than
        min_dist) and ``n_moments_outside`` (moments outside the magnetic
        interval; the polynomials extrapolate there, as in MLIP-3).
        Moments come from ``atoms.get_initial_magnetic_moments()`` unless given.
        With ``forces=False`` the backward pass is skipped (energies only,
        plus ``param_gradient`` if asked for). With ``site_param_grad=True``
        the result also holds ``site_param_gradient`` (N, n_params): row i is
        dE_i/dtheta of the site energy of atom i (rows sum to ``param_gradient``).
        """
        sym = self.symmetrize if symmetrize is None else bool(symmetrize)
        out = self._core.evaluate(*self._inputs(atoms, moments), sym, param_grad, forces, site_param_grad)
        return self._finish(out, atoms)

    def evaluate_many(self, images, symmetrize: bool | None = None, param_grad: bool = False,
                      forces: bool = True, site_param_grad: bool = False) -> list[dict]:
        """Evaluate many configurations in parallel (rayon); same keys as :meth:`evaluate`."""
        sym = self.symmetrize if symmetrize is None else bool(symmetrize)
        inputs = []
        for k, a in enumerate(images):
            try:
                inputs.append(self._inputs(a))
            except MMTPError as exc:
                raise MMTPError(f"configuration {k}: {exc}") from None
        outs = self._core.evaluate_many(inputs, sym, param_grad, forces, site_param_grad)
        return [self._finish(o, a) for o, a in zip(outs, images)]


_JSON_KEYS = {"format", "version", "name", "species", "level", "symmetrize", "scaling", "min_dist", "max_dist",
              "radial_basis_size", "magnetic_basis_size", "magnetic_intervals", "species_coeffs",
              "moment_coeffs", "radial_coeffs", "basis"}


def _json_list(value, key: str, max_len: int) -> list:
    if not isinstance(value, list):
        raise ValueError(f"'{key}' must be a list, got {type(value).__name__}")
    if len(value) > max_len:
        raise ValueError(f"'{key}' has {len(value)} entries, more than the limit {max_len}")
    return value


def _json_reals(value, key: str, max_len: int) -> np.ndarray:
    return np.array([check_real(x, f"{key}[{k}]") for k, x in enumerate(_json_list(value, key, max_len))], dtype=float)


def _json_int_rows(value, key: str, width: int, lo: int, hi: int, max_len: int) -> list[tuple]:
    rows = []
    for k, row in enumerate(_json_list(value, key, max_len)):
        if not isinstance(row, list) or len(row) != width:
            raise ValueError(f"'{key}'[{k}] must be a list of {width} integers, got {str(row)[:60]}")
        rows.append(tuple(check_int(x, f"{key}[{k}][{c}]", lo, hi) for c, x in enumerate(row)))
    return rows


def _json_fields(doc: dict) -> dict:
    """Keyword arguments of :class:`Potential` from a JSON document, every entry
    checked (type, range, size) before anything is allocated; ValueError/KeyError
    name the entry and the value."""
    unknown = sorted(set(doc) - _JSON_KEYS)
    if unknown:
        raise ValueError(f"unknown entries {unknown[:5]}")
    if doc["version"] != FORMAT_VERSION or isinstance(doc["version"], bool):
        raise ValueError(f"unsupported version {doc['version']!r} (this reader knows {FORMAT_VERSION})")
    sp = _json_list(doc["species"], "species", LIMITS["species_count"][1])
    if not sp or not all(isinstance(x, str) for x in sp):
        raise ValueError(f"'species' must be a non-empty list of chemical symbols, got {str(sp)[:60]}")
    level = doc.get("level")
    if level is not None:
        level = check_int(level, "level", 2, MAX_LEVEL)
    name = doc.get("name", "")
    symmetrize = doc.get("symmetrize", True)
    if not isinstance(name, str) or not isinstance(symmetrize, bool):
        raise ValueError(f"'name' must be a string and 'symmetrize' true/false, got {name!r}, {symmetrize!r}")
    for key in ("magnetic_intervals", "species_coeffs", "basis"):
        if not isinstance(doc[key], dict):
            raise ValueError(f"'{key}' must be an object, got {type(doc[key]).__name__}")
    mi = doc["magnetic_intervals"]
    intervals = [tuple(_json_reals(mi[s], f"magnetic_intervals.{s}", 2)) for s in sp]
    if any(len(iv) != 2 for iv in intervals):
        raise ValueError("every magnetic interval must be a pair [min, max]")
    b = doc["basis"]
    n_moments = check_int(b["n_moments"], "basis.n_moments", *LIMITS["alpha_moments_count"])
    top = n_moments - 1
    nmax = LIMITS["alpha_moments_count"][1]
    basic = _json_int_rows(b["basic"], "basis.basic", 4, 0, MAX_RANK, nmax)
    bad = [x for x in basic if x[0] >= LIMITS["radial_funcs_count"][1]]
    if bad:
        raise ValueError(f"basis.basic entry {list(bad[0])} uses radial function {bad[0][0]}, beyond the limit")
    # the multiplicity (third entry) is written as a float: accept integral floats there
    times = [[int(x) if c == 2 and isinstance(x, float) and x.is_integer() and abs(x) <= MAX_MULTIPLICITY else x
              for c, x in enumerate(row)] if isinstance(row, list) else row
             for row in _json_list(b["times"], "basis.times", LIMITS["alpha_index_times_count"][1])]
    times = _json_int_rows(times, "basis.times", 4, -MAX_MULTIPLICITY, MAX_MULTIPLICITY,
                           LIMITS["alpha_index_times_count"][1])
    bad = [x for x in times if min(x[0], x[1], x[3]) < 0 or max(x[0], x[1], x[3]) > top]
    if bad:
        raise ValueError(f"basis.times entry {list(bad[0])} refers to a moment outside [0, {top}]")
    scalars = [check_int(x, f"basis.scalars[{k}]", 0, top) for k, x in enumerate(_json_list(b["scalars"], "basis.scalars", nmax))]
    if level is not None:
        ref = basis_tables(level)
        if (basic, times, n_moments, scalars) != (
                [tuple(x) for x in ref[0]], [(i, j, int(m), k) for i, j, m, k in ref[1]], ref[2], list(ref[3])):
            raise ValueError(f"the basis does not match level {level} (wrong level, or edited tables)")
    size = {key: check_int(doc[key], key, *LIMITS[lim]) for key, lim in
            (("radial_basis_size", "radial_basis_size"), ("magnetic_basis_size", "basis_size"))}
    n_rad = len(sp) ** 2 * (max((x[0] for x in basic), default=-1) + 1) * size["radial_basis_size"] * size["magnetic_basis_size"] ** 2
    radial = _json_reals(doc["radial_coeffs"], "radial_coeffs", max(n_rad, 0))
    sc = doc["species_coeffs"]
    params = np.concatenate([radial, [check_real(sc[s], f"species_coeffs.{s}") for s in sp],
                             _json_reals(doc["moment_coeffs"], "moment_coeffs", nmax)])
    return dict(species=sp, scaling=check_real(doc["scaling"], "scaling"),
                min_dist=check_real(doc["min_dist"], "min_dist", 0.0, MAX_CUTOFF),
                max_dist=check_real(doc["max_dist"], "max_dist", 0.0, MAX_CUTOFF),
                radial_basis_size=size["radial_basis_size"], magnetic_basis_size=size["magnetic_basis_size"],
                mag_intervals=intervals, tables=(basic, times, n_moments, scalars), params=params,
                level=level, name=name, symmetrize=symmetrize)


def basis_tables(level: int):
    """The scalar basis of an MTP level as MLIP tables (basic, times, n_moments, scalars)."""
    if not isinstance(level, (int, np.integer)) or isinstance(level, bool):
        raise MMTPError(f"level must be an integer, got {level!r}")
    d = _core.generate_basis(int(level))
    return d["basic"], d["times"], d["n_moments"], d["scalars"]
