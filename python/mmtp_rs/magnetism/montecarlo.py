"""Finite-temperature magnetism: Metropolis spin Monte Carlo, MD+MC and DLM-MD.

Spin moves act on collinear signed moments at fixed positions: a sign flip, or
a magnitude move ``|m| -> |m| + d`` (``d`` uniform in ``±step·M_max``,
reflected into ``[0, M_max]``, sign kept). Both proposals are symmetric, so
Metropolis acceptance samples ``exp(-E(m)/kT) dm`` with the flat measure of a
collinear moment. Two samplers implement the same moves and the same
interface (``energy``, ``moments``, ``delta_energy``, ``set_moment``,
``attempt``, ``sweep``):

* :class:`mmtp_rs._core.SpinSampler` (Rust) for an mMTP: the energy change of
  a move comes from the affected site energies only, so a sweep of N moves
  costs about one energy evaluation;
* :class:`ReferenceSpinSampler` (numpy) for the embedded reference model,
  whose magnetic energy at fixed positions is ``Σ a_i m_i² + b_i m_i⁴ - ½ mᵀJm``.

:func:`spin_sampler` builds the right one from a calculator. On top of them:
:func:`mc_sweeps` (Metropolis sweeps, optionally grading every accepted
move), :func:`run_mdmc` (ASE Langevin MD at fixed moments interleaved with MC
sweeps at the same temperature) and :func:`run_dlm` (disordered local
moments: signs redrawn 50/50 every k MD steps, magnitudes equilibrated by the
package's one stage 1, :func:`mmtp_rs.magnetism.stage1.equilibrate_moments`).
Both watch the extrapolation grade (a :class:`mmtp_rs.simulate.GradeWatcher`)
at every MD step and every accepted spin move.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np
from ase import Atoms, units

__all__ = ["KB", "MCSettings", "ReferenceSpinSampler", "spin_sampler", "moment_limits", "beta_of",
           "mc_sweeps", "MagneticSample", "run_mdmc", "run_dlm", "sample_spins"]

#: Boltzmann constant, eV/K (ASE's value, the one in the Rust core).
KB = float(units.kB)


@dataclass(frozen=True)
class MCSettings:
    """Spin moves: ``p_flip`` probability of a sign flip (else a magnitude
    move), ``step`` largest magnitude change as a fraction of M_max."""

    p_flip: float = 0.5
    step: float = 0.2

    def __post_init__(self):
        if not (0.0 <= self.p_flip <= 1.0):
            raise ValueError(f"p_flip must be in [0, 1], got {self.p_flip}")
        if not (np.isfinite(self.step) and self.step >= 0):
            raise ValueError(f"step must be >= 0, got {self.step}")


def beta_of(temperature_K: float) -> float:
    """1/kT in 1/eV (0 at infinite temperature)."""
    t = float(temperature_K)
    if not (t > 0):
        raise ValueError(f"temperature must be > 0 K (or inf), got {temperature_K}")
    return 0.0 if np.isinf(t) else 1.0 / (KB * t)


def moment_limits(atoms: Atoms, m_max: float | Mapping[str, float] | Sequence[float]) -> np.ndarray:
    """Per-atom bound M_max (N,), μB, from one number, a per-symbol mapping
    (symbols not listed: 0, never moved) or a per-atom sequence."""
    n = len(atoms)
    if isinstance(m_max, Mapping):
        lim = np.array([float(m_max.get(s, 0.0)) for s in atoms.get_chemical_symbols()])
    elif np.ndim(m_max) == 0:
        lim = np.full(n, float(m_max))
    else:
        lim = np.asarray(m_max, dtype=float)
        if lim.shape != (n,):
            raise ValueError(f"{lim.shape} moment bounds for {n} atoms")
    if not np.all(np.isfinite(lim) & (lim >= 0)):
        raise ValueError("moment bounds must be finite and >= 0")
    return lim


# ------------------------------------------------------------ reference sampler
class ReferenceSpinSampler:
    """Metropolis sampler of the reference model's moments at fixed positions.

    The same moves, acceptance rule and interface as the Rust sampler; the
    energy change of a move is local: ``Δ(a m² + b m⁴) - Δm (Jm)_i - ½ J_ii Δm²``.
    """

    def __init__(self, model, atoms: Atoms, moments, m_max: np.ndarray, seed: int = 0):
        geo = model._geometry(atoms)
        m = np.array(moments, dtype=float)
        n = len(atoms)
        if m.shape != (n,) or np.asarray(m_max).shape != (n,):
            raise ValueError(f"need ({n},) moments and bounds")
        a, b, _, _ = model._magnetic_terms(geo, m)
        self._a, self._b = np.asarray(a, float), np.asarray(b, float)
        jm = np.zeros((n, n))
        np.add.at(jm, (geo["i"], geo["j"]), geo["J"])
        self._j = 0.5 * (jm + jm.T)
        self._jd = np.diag(self._j).copy()
        self._e0 = float(model._evaluate(atoms, geo, np.zeros(n))["energy"])
        self._m = m
        self._h = self._j @ m
        self._mmax = np.asarray(m_max, dtype=float)
        self._rng = np.random.default_rng(seed)

    @property
    def energy(self) -> float:
        m = self._m
        return self._e0 + float(np.sum(self._a * m**2 + self._b * m**4) - 0.5 * m @ self._h)

    @property
    def moments(self) -> np.ndarray:
        return self._m.copy()

    @property
    def m_max(self) -> np.ndarray:
        return self._mmax.copy()

    def delta_energy(self, i: int, new_m: float) -> float:
        m = self._m[i]
        d = new_m - m
        return float(self._a[i] * (new_m**2 - m**2) + self._b[i] * (new_m**4 - m**4)
                     - d * self._h[i] - 0.5 * self._jd[i] * d * d)

    def set_moment(self, i: int, new_m: float) -> None:
        d = new_m - self._m[i]
        self._h += self._j[:, i] * d
        self._m[i] = new_m

    def _propose(self, i: int, p_flip: float, step: float) -> tuple[bool, float]:
        m, mmax = self._m[i], self._mmax[i]
        if self._rng.random() < p_flip:
            return True, -m
        x = abs(m) + (2.0 * self._rng.random() - 1.0) * min(step, 1.0) * mmax
        if x < 0:
            x = -x
        if x > mmax:
            x = 2 * mmax - x
        x = min(max(x, 0.0), mmax)
        return False, (-x if m < 0 else x)

    def attempt(self, i: int, beta: float, p_flip: float, step: float) -> tuple[bool, bool, float, float]:
        if self._mmax[i] == 0:
            return False, False, 0.0, float(self._m[i])
        flip, new = self._propose(i, p_flip, step)
        de = self.delta_energy(i, new)
        ok = de <= 0 or self._rng.random() < np.exp(-beta * de)
        if ok:
            self.set_moment(i, new)
        return bool(ok), flip, de, float(self._m[i])

    def sweep(self, beta: float, p_flip: float = 0.5, step: float = 0.2, n_sweeps: int = 1,
              sites: Sequence[int] | None = None) -> dict[str, int]:
        st = dict(flips_tried=0, flips_accepted=0, mags_tried=0, mags_accepted=0)
        order = range(len(self._m)) if sites is None else list(sites)
        for _ in range(int(n_sweeps)):
            for i in order:
                if self._mmax[i] == 0:
                    continue
                ok, flip, _, _ = self.attempt(i, beta, p_flip, step)
                key = "flips" if flip else "mags"
                st[key + "_tried"] += 1
                st[key + "_accepted"] += int(ok)
        return st


def _potential_of(calc):
    pot = getattr(calc, "potential", None)
    if pot is not None:
        return pot, getattr(calc, "symmetrize", None)
    base = getattr(calc, "base", None)
    if base is not None and base is not calc:
        return _potential_of(base)
    return None, None


def spin_sampler(calc, atoms: Atoms, moments=None, m_max: str | float | Mapping[str, float] = "auto",
                 seed: int = 0):
    """A spin sampler of ``calc``'s energy for ``atoms`` at fixed positions.

    ``calc``: an :class:`~mmtp_rs.MMTPCalculator` (or GradingCalculator, or a
    :class:`~mmtp_rs.Potential`) -> the Rust sampler; a
    :class:`~mmtp_rs.oracles.ReferenceCalculator` (or ReferenceModel) -> the
    numpy one. ``m_max``: "auto" (the potential's M_max per species; for the
    reference model 1.3 × the largest starting |m| of each species), a number,
    a per-symbol mapping or per-atom values. Starting moments beyond the
    bound are clipped into it.
    """
    from mmtp_rs.model.potential import Potential

    m0 = np.array(atoms.get_initial_magnetic_moments() if moments is None else moments, dtype=float)
    pot, sym = (calc, None) if isinstance(calc, Potential) else _potential_of(calc)
    model = calc if hasattr(calc, "_magnetic_terms") else getattr(calc, "model", None)
    if isinstance(m_max, str):
        if m_max != "auto":
            raise ValueError(f"m_max must be 'auto', a number or a mapping, got {m_max!r}")
        if pot is not None:
            m_max = pot.max_moment
        else:
            syms = np.array(atoms.get_chemical_symbols())
            m_max = {s: 1.3 * float(np.max(np.abs(m0[syms == s]))) for s in set(syms)}
    lim = moment_limits(atoms, m_max)
    m0 = np.where(lim > 0, np.clip(m0, -lim, lim), m0)
    if pot is not None:
        from mmtp_rs import _core

        sym = pot.symmetrize if sym is None else bool(sym)
        cell, pbc, pos, types, m = pot._inputs(atoms, m0)
        return _core.SpinSampler(pot._core, cell, pbc, pos, types, m, np.ascontiguousarray(lim), sym, int(seed))
    if model is not None:
        return ReferenceSpinSampler(model, atoms, m0, lim, seed)
    raise TypeError(f"no spin sampler for a {type(calc).__name__}: need an mMTP or the reference model")


def mc_sweeps(sampler, temperature_K: float, n_sweeps: int = 1, settings: MCSettings = MCSettings(),
              watcher=None, atoms: Atoms | None = None) -> dict[str, int]:
    """Metropolis sweeps at ``temperature_K`` (``inf``: infinite temperature).

    With a ``watcher`` (:class:`mmtp_rs.simulate.GradeWatcher`) the atoms
    (with the sampler's moments) are graded after every accepted move; the
    moves and random numbers are the same as without it.
    """
    beta = beta_of(temperature_K)
    if watcher is None:
        return sampler.sweep(beta, settings.p_flip, settings.step, int(n_sweeps))
    if atoms is None:
        raise ValueError("grading every accepted move needs the atoms")
    st = dict(flips_tried=0, flips_accepted=0, mags_tried=0, mags_accepted=0)
    movable = np.flatnonzero(np.asarray(sampler.m_max) > 0)  # the atoms sweep() visits
    for _ in range(int(n_sweeps)):
        for i in movable:
            ok, flip, _, _ = sampler.attempt(int(i), beta, settings.p_flip, settings.step)
            key = "flips" if flip else "mags"
            st[key + "_tried"] += 1
            st[key + "_accepted"] += int(ok)
            if ok:
                m = sampler.moments
                atoms.set_initial_magnetic_moments(m)
                watcher.check(atoms, m)
    return st


@dataclass
class MagneticSample:
    """A trajectory of samples: total energy (eV), moments (μB) and, for MD
    samplers, the potential energy at fixed moments (eV) per sample."""

    energies: list = field(default_factory=list)
    moments: list = field(default_factory=list)
    stats: dict = field(default_factory=lambda: dict(flips_tried=0, flips_accepted=0, mags_tried=0,
                                                      mags_accepted=0))

    def add_stats(self, st: Mapping[str, int]) -> None:
        for k, v in st.items():
            self.stats[k] = self.stats.get(k, 0) + int(v)

    @property
    def acceptance(self) -> float:
        t = self.stats["flips_tried"] + self.stats["mags_tried"]
        return (self.stats["flips_accepted"] + self.stats["mags_accepted"]) / t if t else 0.0


def sample_spins(atoms: Atoms, calc, temperature_K: float, n_equil: int, n_samples: int, *, moments=None,
                 m_max="auto", settings: MCSettings = MCSettings(), seed: int = 0, sweeps_per_sample: int = 1,
                 watcher=None, progress: Callable[[int], None] | None = None) -> MagneticSample:
    """Spin Monte Carlo at fixed positions: ``n_equil`` sweeps, then one
    sample (energy, moments) every ``sweeps_per_sample`` sweeps."""
    s = spin_sampler(calc, atoms, moments, m_max=m_max, seed=seed)
    work = atoms.copy() if watcher is not None else None
    if work is not None:
        work.calc = atoms.calc
    out = MagneticSample()
    out.add_stats(mc_sweeps(s, temperature_K, n_equil, settings, watcher, work))
    for k in range(int(n_samples)):
        out.add_stats(mc_sweeps(s, temperature_K, sweeps_per_sample, settings, watcher, work))
        out.energies.append(float(s.energy))
        out.moments.append(np.asarray(s.moments))
        if progress is not None:
            progress(k)
    return out


def _langevin(atoms: Atoms, temperature_K: float, timestep_fs: float, friction_per_fs: float, rng):
    from ase.md import velocitydistribution as vd
    from ase.md.langevin import Langevin

    if hasattr(vd, "thermalize_momenta"):
        vd.thermalize_momenta(atoms, temperature_K=temperature_K, rng=rng)
    else:  # ASE < 3.28
        vd.MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_K, rng=rng)
    vd.Stationary(atoms)
    return Langevin(atoms, timestep_fs * units.fs, temperature_K=temperature_K,
                    friction=friction_per_fs / units.fs, rng=rng, fixcm=False)


def _check_md_inputs(atoms, temperature_K, n_cycles, md_steps):
    if atoms.calc is None:
        raise ValueError("MD needs atoms with a calculator")
    if not (np.isfinite(temperature_K) and temperature_K > 0):
        raise ValueError(f"temperature must be > 0 K, got {temperature_K}")
    if n_cycles < 1 or md_steps < 0:
        raise ValueError(f"need n_cycles >= 1 and md_steps >= 0, got {n_cycles}, {md_steps}")


def run_mdmc(atoms: Atoms, temperature_K: float, n_cycles: int, md_steps: int = 10, mc_sweeps_per_cycle: int = 1,
             *, settings: MCSettings = MCSettings(), m_max="auto", timestep_fs: float = 1.0,
             friction_per_fs: float = 0.01, seed: int = 0, watcher=None, reequilibrate: bool = False,
             progress: Callable[[int], None] | None = None) -> MagneticSample:
    """MD+MC: Langevin MD at fixed moments (``md_steps`` per cycle) interleaved
    with ``mc_sweeps_per_cycle`` Metropolis sweeps of the moments at the same
    temperature, ``n_cycles`` times. ``atoms.calc`` gives the energy (mMTP or
    reference model); moments live in ``atoms``' initial magnetic moments.
    ``reequilibrate``: after each MC block, relax the magnitudes with stage 1
    (signs kept). One sample (energy, moments) per cycle."""
    from mmtp_rs.simulate import _attach_watch

    _check_md_inputs(atoms, temperature_K, n_cycles, md_steps)
    rng = np.random.default_rng(seed)
    dyn = _langevin(atoms, temperature_K, timestep_fs, friction_per_fs, rng)
    _attach_watch(dyn, atoms, watcher, f"MD+MC at {temperature_K} K")
    out = MagneticSample()
    calc = atoms.calc
    for c in range(int(n_cycles)):
        if md_steps:
            dyn.run(int(md_steps))
        s = spin_sampler(calc, atoms, m_max=m_max, seed=int(rng.integers(2**63)))
        out.add_stats(mc_sweeps(s, temperature_K, mc_sweeps_per_cycle, settings, watcher, atoms))
        m = np.asarray(s.moments)
        if reequilibrate:
            from mmtp_rs.simulate import equilibrate_watched

            atoms.set_initial_magnetic_moments(m)
            m = equilibrate_watched(atoms, watcher)
        atoms.set_initial_magnetic_moments(m)
        out.energies.append(float(atoms.get_potential_energy()))
        out.moments.append(m.copy())
        if progress is not None:
            progress(c)
    return out


def run_dlm(atoms: Atoms, temperature_K: float, n_cycles: int, md_steps: int = 10, *, magnitude=None,
            equilibrate: bool = True, timestep_fs: float = 1.0, friction_per_fs: float = 0.01, seed: int = 0,
            watcher=None, progress: Callable[[int], None] | None = None) -> MagneticSample:
    """DLM-MD: every ``md_steps`` MD steps the signs of the magnetic moments
    are redrawn 50/50 (exactly half of each species up, as in
    :func:`~mmtp_rs.magnetism.states.random_collinear` and the paramagnetic
    average of :mod:`~mmtp_rs.magnetism.paramagnetic`; magnitudes ``magnitude``: number or per-species mapping,
    default the current |m|), the magnitudes are equilibrated with stage 1
    (:func:`~mmtp_rs.magnetism.stage1.equilibrate_moments`, signs kept; off
    with ``equilibrate=False``) and MD continues at those fixed moments. One
    sample (energy, moments) per cycle, taken right after the redraw."""
    from mmtp_rs.magnetism.states import magnitudes, random_collinear
    from mmtp_rs.simulate import _attach_watch, equilibrate_watched

    _check_md_inputs(atoms, temperature_K, n_cycles, md_steps)
    rng = np.random.default_rng(seed)
    mag = magnitudes(atoms, np.abs(atoms.get_initial_magnetic_moments()) if magnitude is None else magnitude)
    dyn = _langevin(atoms, temperature_K, timestep_fs, friction_per_fs, rng)
    _attach_watch(dyn, atoms, watcher, f"DLM-MD at {temperature_K} K")
    out = MagneticSample()
    for c in range(int(n_cycles)):
        m = random_collinear(atoms, mag, rng)
        atoms.set_initial_magnetic_moments(m)
        if equilibrate:
            m = equilibrate_watched(atoms, watcher)
        elif watcher is not None:
            watcher.check(atoms, m)
        out.energies.append(float(atoms.get_potential_energy()))
        out.moments.append(np.array(m))
        if progress is not None:
            progress(c)
        if md_steps:
            dyn.run(int(md_steps))
    return out
