"""Thermodynamic observables of magnetic samples, with error bars, and the
ordering temperature from a temperature scan.

Error bars: the mean of a correlated series by blocking (Flyvbjerg and
Petersen: the standard error of block means, blocks doubled until fewer than
8 remain; the largest value is kept, a conservative plateau estimate);
fluctuation quantities (specific heat, susceptibility, Binder cumulant) by a
block jackknife over ``n_blocks`` contiguous blocks.

Definitions, per sample, over the ``N_m`` magnetic atoms (``pattern != 0``)::

    M   = Σ m_i / N_m                        (total magnetisation per magnetic atom, μB)
    M_s = Σ s_i m_i / N_m                    (staggered order parameter of the pattern s_i = ±1)
    M_±  = mean of m_i over the sublattice s_i = ±1
    C/k_B = var(E) / (k_B T)² / N            (specific heat per atom, units of k_B)
    χ_s = N_m (⟨M_s²⟩ - ⟨|M_s|⟩²) / (k_B T)  (staggered susceptibility per magnetic atom, μB²/eV)
    χ   = N_m (⟨M²⟩ - ⟨|M|⟩²) / (k_B T)      (uniform susceptibility, μB²/eV)
    U_s = 1 - ⟨M_s⁴⟩ / (3 ⟨M_s²⟩²)           (Binder cumulant of M_s)
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from mmtp_rs.magnetism.montecarlo import KB

__all__ = ["blocking_error", "jackknife", "order_parameters", "thermodynamics", "peak_temperature",
           "binder_crossing", "midpoint_temperature", "TransitionNotFound"]


class TransitionNotFound(ValueError):
    """The scan does not bracket a susceptibility peak or a Binder crossing."""


def blocking_error(x: Sequence[float]) -> tuple[float, float]:
    """Mean and its standard error for a correlated series (blocking)."""
    x = np.asarray(x, dtype=float)
    if x.size == 0:
        raise ValueError("no samples")
    mean = float(x.mean())
    if x.size < 2:
        return mean, float("nan")
    best = 0.0
    y = x.copy()
    while y.size >= 8:
        best = max(best, float(y.std(ddof=1) / np.sqrt(y.size)))
        n = y.size // 2
        y = 0.5 * (y[0:2 * n:2] + y[1:2 * n:2])
    if best == 0.0:
        best = float(x.std(ddof=1) / np.sqrt(x.size))
    return mean, best


def jackknife(func: Callable[..., float], *series: np.ndarray, n_blocks: int = 16) -> tuple[float, float]:
    """Value of ``func(*series)`` and its block-jackknife standard error."""
    n = len(series[0])
    value = float(func(*series))
    nb = min(int(n_blocks), n)
    if nb < 2:
        return value, float("nan")
    edges = np.linspace(0, n, nb + 1).astype(int)
    vals = []
    for b in range(nb):
        keep = np.r_[0:edges[b], edges[b + 1]:n]
        vals.append(func(*[s[keep] for s in series]))
    vals = np.asarray(vals, dtype=float)
    err = float(np.sqrt((nb - 1) / nb * np.sum((vals - vals.mean()) ** 2)))
    return value, err


def order_parameters(moments: np.ndarray, pattern: np.ndarray) -> dict[str, np.ndarray]:
    """Per-sample M, M_s, M_+ and M_- (μB) of a moment trajectory (S, N).

    ``pattern`` (N,) is +1/-1 on magnetic atoms and 0 elsewhere; or (P, N),
    P symmetry-equivalent patterns (e.g. AFM1 layers normal to x, y and z),
    and then M_s is the norm of the P staggered magnetisations (each
    ``Σ s_i m_i / N_m``), which does not depend on the domain the sample
    orders into. Sublattices come from the first pattern.
    """
    m = np.atleast_2d(np.asarray(moments, dtype=float))
    s = np.sign(np.atleast_2d(np.asarray(pattern, dtype=float)))
    mag = s[0] != 0
    if not mag.any() or np.any((s != 0) != mag):
        raise ValueError("the patterns must be non-zero on the same (magnetic) atoms, and on at least one")
    up, dn = s[0] > 0, s[0] < 0
    stag = m[:, mag] @ s[:, mag].T / mag.sum()
    out = {
        "M": m[:, mag].mean(axis=1),
        "Ms": stag[:, 0] if s.shape[0] == 1 else np.linalg.norm(stag, axis=1),
        "M_up": m[:, up].mean(axis=1) if up.any() else np.zeros(len(m)),
        "M_down": m[:, dn].mean(axis=1) if dn.any() else np.zeros(len(m)),
    }
    return out


def thermodynamics(energies: Sequence[float], moments: np.ndarray, pattern: np.ndarray, temperature_K: float,
                   n_atoms: int, n_blocks: int = 16) -> dict[str, float]:
    """Means and error bars of E, |M|, |M_s|, M_±, C, χ, χ_s and U_s at one temperature.

    Returns a flat dict: ``key`` and ``key_err`` for ``energy`` (eV/atom),
    ``abs_M``, ``abs_Ms``, ``M_up``, ``M_down`` (μB), ``C`` (k_B per atom),
    ``chi``, ``chi_s`` (μB²/eV per magnetic atom), ``binder`` (of M_s).
    """
    e = np.asarray(energies, dtype=float)
    op = order_parameters(moments, pattern)
    nm = int(np.count_nonzero(np.atleast_2d(pattern)[0] != 0))
    t = float(temperature_K)
    kt = KB * t if np.isfinite(t) else np.inf
    out: dict[str, float] = {"temperature_K": t, "n_samples": int(e.size)}

    def put(key, pair):
        out[key], out[key + "_err"] = float(pair[0]), float(pair[1])

    put("energy", blocking_error(e / n_atoms))
    put("abs_M", blocking_error(np.abs(op["M"])))
    put("abs_Ms", blocking_error(np.abs(op["Ms"])))
    put("M_up", blocking_error(op["M_up"]))
    put("M_down", blocking_error(op["M_down"]))
    put("C", jackknife(lambda x: np.var(x) / kt**2 / n_atoms, e, n_blocks=n_blocks))
    put("chi", jackknife(lambda q: nm * (np.mean(q**2) - np.mean(np.abs(q)) ** 2) / kt, op["M"],
                         n_blocks=n_blocks))
    put("chi_s", jackknife(lambda q: nm * (np.mean(q**2) - np.mean(np.abs(q)) ** 2) / kt, op["Ms"],
                           n_blocks=n_blocks))
    put("binder", jackknife(lambda q: 1.0 - np.mean(q**4) / (3.0 * np.mean(q**2) ** 2), op["Ms"],
                            n_blocks=n_blocks))
    return out


def _vertex(t: np.ndarray, y: np.ndarray, k: int) -> float:
    lo, hi = max(k - 1, 0), min(k + 2, len(t))
    tt, yy = t[lo:hi], y[lo:hi]
    if len(tt) < 3:
        return float(t[k])
    c = np.polyfit(tt, yy, 2)
    if c[0] >= 0:  # not a maximum: keep the grid point
        return float(t[k])
    return float(np.clip(-c[1] / (2 * c[0]), tt[0], tt[-1]))


def peak_temperature(temperatures: Sequence[float], values: Sequence[float], errors: Sequence[float],
                     n_boot: int = 400, seed: int = 0) -> tuple[float, float]:
    """Temperature (K) of the maximum of a curve (e.g. the susceptibility) and
    its uncertainty.

    The peak is the vertex of a parabola through the largest point and its two
    neighbours. The uncertainty combines, in quadrature, the scatter of the
    vertex when the values are redrawn within their error bars (parametric
    bootstrap) and the grid resolution (a quarter of the local spacing).
    Raises :class:`TransitionNotFound` if the largest value sits at an end of
    the scan.
    """
    t = np.asarray(temperatures, dtype=float)
    y = np.asarray(values, dtype=float)
    dy = np.nan_to_num(np.asarray(errors, dtype=float), nan=0.0)
    order = np.argsort(t)
    t, y, dy = t[order], y[order], dy[order]
    if len(t) < 3:
        raise TransitionNotFound("need at least 3 temperatures to locate a peak")
    k = int(np.argmax(y))
    if k == 0 or k == len(t) - 1:
        raise TransitionNotFound(f"the maximum is at the end of the scan ({t[k]:g} K): widen the temperature range")
    tc = _vertex(t, y, k)
    rng = np.random.default_rng(seed)
    boot = []
    for _ in range(int(n_boot)):
        yb = y + rng.normal(size=y.size) * dy
        kb = int(np.argmax(yb))
        boot.append(_vertex(t, yb, kb))
    spacing = 0.5 * (t[k + 1] - t[k - 1])
    err = float(np.hypot(np.std(boot), 0.25 * spacing))
    return tc, err


def midpoint_temperature(temperatures: Sequence[float], values: Sequence[float], n_high: int = 2) -> float:
    """Temperature (K) where an order parameter measured from the ordered
    state (``abs_Ms`` of a :func:`~mmtp_rs.magnetism.scan.temperature_scan`)
    first falls below the midpoint between its value at the lowest
    temperature and its mean over the ``n_high`` highest temperatures (the
    disordered level of a finite cell); linear interpolation between the two
    temperatures around the crossing.

    Unlike the susceptibility peak, whose flat top makes its position noisy,
    this locates the steepest part of the order-parameter curve, so a few
    hundred sweeps per temperature fix it to a few kelvin. For a first-order
    transition with hysteresis (as in the CrN reference model) it is the
    temperature at which the ordered state is lost on heating, for the given
    cell, sweeps and moves: compare models with the same protocol. Raises
    :class:`TransitionNotFound` if the values never cross the midpoint.
    """
    t = np.asarray(temperatures, dtype=float)
    y = np.asarray(values, dtype=float)
    order = np.argsort(t)
    t, y = t[order], y[order]
    n_high = int(n_high)
    if t.size < n_high + 2 or n_high < 1:
        raise TransitionNotFound(f"need at least {n_high + 2} temperatures, got {t.size}")
    mid = 0.5 * (y[0] + float(np.mean(y[-n_high:])))
    below = np.flatnonzero(y < mid)
    if below.size == 0 or below[0] == 0 or y[0] - mid <= 0:
        raise TransitionNotFound("the order parameter does not fall through its midpoint inside the scan")
    k = int(below[0])
    return float(t[k - 1] + (t[k] - t[k - 1]) * (y[k - 1] - mid) / (y[k - 1] - y[k]))


def binder_crossing(temperatures: Sequence[float], u_small: Sequence[float], du_small: Sequence[float],
                    u_large: Sequence[float], du_large: Sequence[float], n_boot: int = 400,
                    seed: int = 0) -> tuple[float, float]:
    """Temperature (K) where the Binder cumulants of two cell sizes cross (linear
    interpolation of their difference at its first sign change from + to -,
    scanning up in T) and its bootstrap uncertainty."""
    t = np.asarray(temperatures, dtype=float)
    order = np.argsort(t)
    t = t[order]
    a, da = np.asarray(u_large, float)[order], np.nan_to_num(np.asarray(du_large, float)[order])
    b, db = np.asarray(u_small, float)[order], np.nan_to_num(np.asarray(du_small, float)[order])

    def cross(d):
        idx = np.flatnonzero((d[:-1] > 0) & (d[1:] <= 0))
        if idx.size == 0:
            return None
        k = int(idx[0])
        return float(t[k] + (t[k + 1] - t[k]) * d[k] / (d[k] - d[k + 1]))

    tc = cross(a - b)
    if tc is None:
        raise TransitionNotFound("the Binder cumulants of the two sizes do not cross inside the scan")
    rng = np.random.default_rng(seed)
    boot = [cross(a + rng.normal(size=a.size) * da - b - rng.normal(size=b.size) * db) for _ in range(int(n_boot))]
    boot = np.array([x for x in boot if x is not None])
    err = float(np.std(boot)) if boot.size > 1 else float("nan")
    return tc, err
