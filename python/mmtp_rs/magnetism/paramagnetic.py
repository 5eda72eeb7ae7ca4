"""Paramagnetic averaging over random collinear states.

The paramagnetic (PM) state is modelled, as in Kotykhov et al. (PRB 2025), by
an average over K random collinear configurations with half the moments up
and half down (the paper uses K = 50). Within one state the moments are fixed
(constrained); optionally their magnitudes are first equilibrated at the
reference geometry (stage 1).

:class:`ParamagneticCalculator` wraps any moment-aware ASE calculator and
returns the energy, forces and stress averaged over the K states. The same K
states (one seeded set per atom ordering) are used for every configuration it
sees, so displaced or strained copies of one structure are evaluated with
*correlated sampling*: finite differences of averaged quantities are smooth
and their statistical noise largely cancels.

:func:`convergence` and :func:`plot_convergence` report how the average
converges with K (standard error ~ 1/sqrt(K); cf. Fig. 5 of the paper).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes

from mmtp_rs.io.atomic import save_figure
from mmtp_rs.magnetism.stage1 import equilibrate_moments
from mmtp_rs.magnetism.states import magnitudes, random_states
from mmtp_rs.units import EV_A3_TO_GPA


__all__ = ["ParamagneticCalculator", "convergence", "batch_scatter", "plot_convergence"]



class ParamagneticCalculator(Calculator):
    """Average of a moment-aware calculator over K random collinear 50/50 states.

    Properties: ``energy``/``free_energy`` (eV), ``forces`` (eV/Å), ``stress``
    (eV/Å³, ASE sign) averaged over the states, plus ``energy_sem`` (eV),
    ``forces_sem`` (N, 3) and ``stress_sem`` (6,) (standard errors of the
    means), ``state_energies`` (K,) and ``state_stresses`` (K, 6).

    Parameters
    ----------
    calculator : ASE calculator reading moments from ``initial_magmoms``
    n_states : K, number of random states
    seed : seed of the states (the same seed gives the same states)
    moment : magnitudes, μB: a number, a per-species mapping or None to take
        ``|atoms.get_initial_magnetic_moments()|`` of the first structure seen
    equilibrate : "none" (moments as given), "once" (each state's moments are
        equilibrated at the first geometry of that atom ordering, then fixed)
        or "always" (re-equilibrated at every geometry: adiabatic moments)

    Notes
    -----
    States are generated per atom ordering (the tuple of atomic numbers) on
    first use and attach to atoms by index: a supercell gets its own states.
    Call :meth:`set_reference` to (re)build them at a chosen geometry.
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress", "energy_sem", "forces_sem",
                              "stress_sem", "state_energies", "state_stresses"]

    def __init__(self, calculator, n_states: int = 50, seed: int = 0,
                 moment: float | Mapping[str, float] | None = None, equilibrate: str = "none", **kwargs):
        super().__init__(**kwargs)
        if n_states < 1:
            raise ValueError("n_states must be >= 1")
        if equilibrate not in ("none", "once", "always"):
            raise ValueError("equilibrate must be 'none', 'once' or 'always'")
        self.base = calculator
        self.n_states = int(n_states)
        self.seed = int(seed)
        self.moment = moment
        self.equilibrate = equilibrate
        self._states: dict[tuple, list[np.ndarray]] = {}
        self.n_evaluations = 0

    # ------------------------------------------------------------- states
    def set_reference(self, atoms: Atoms) -> list[np.ndarray]:
        """Generate (and, unless equilibrate == "none", equilibrate) the K states at this geometry."""
        mag = magnitudes(atoms, self.moment if self.moment is not None
                         else np.abs(atoms.get_initial_magnetic_moments()))
        states = random_states(atoms, mag, self.n_states, self.seed)
        if self.equilibrate != "none":
            states = [equilibrate_moments(atoms, self.base, m) for m in states]
        self._states[tuple(atoms.numbers)] = states
        return states

    def states(self, atoms: Atoms) -> list[np.ndarray]:
        """The K moment vectors used for configurations with this atom ordering."""
        key = tuple(atoms.numbers)
        if key not in self._states:
            return self.set_reference(atoms)
        return self._states[key]

    # ---------------------------------------------------------- calculate
    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        at = self.atoms.copy()
        at.calc = None
        periodic = bool(all(at.pbc))
        if "stress" in properties and not periodic:
            raise PropertyNotImplementedError("stress needs a cell periodic in all three directions")
        props = ["energy", "forces"] + (["stress"] if periodic else [])
        e, f, s = [], [], []
        for m in self.states(at):
            if self.equilibrate == "always":
                m = equilibrate_moments(at, self.base, m)
            at.set_initial_magnetic_moments(m)
            self.base.calculate(at, props, all_changes)
            r = self.base.results
            e.append(float(r["energy"]))
            f.append(np.array(r["forces"], dtype=float))
            if periodic:
                s.append(np.array(r["stress"], dtype=float))
            self.n_evaluations += 1
        e, f = np.array(e), np.array(f)
        k = len(e)
        sem = (lambda x: x.std(axis=0, ddof=1) / np.sqrt(k)) if k > 1 else (lambda x: np.zeros(x.shape[1:]))
        self.results = {
            "energy": float(e.mean()),
            "free_energy": float(e.mean()),
            "forces": f.mean(axis=0),
            "energy_sem": float(sem(e)),
            "forces_sem": sem(f),
            "state_energies": e,
        }
        if periodic:
            s = np.array(s)
            self.results.update(stress=s.mean(axis=0), stress_sem=sem(s), state_stresses=s)


# ------------------------------------------------------------ convergence
def _state_values(calculator, atoms: Atoms, n_states: int, seed: int, moment=None,
                  equilibrate: str = "none") -> dict[str, np.ndarray]:
    pm = ParamagneticCalculator(calculator, n_states=n_states, seed=seed, moment=moment,
                                equilibrate=equilibrate)
    pm.calculate(atoms, ["energy", "stress"], all_changes)
    n = len(atoms)
    out = {"energy_per_atom": pm.results["state_energies"] / n}
    if "state_stresses" in pm.results:
        out["pressure_GPa"] = -pm.results["state_stresses"][:, :3].mean(axis=1) * EV_A3_TO_GPA
    return out


def batch_scatter(values: np.ndarray, ks: Sequence[int]) -> dict[str, list[float]]:
    """Observed scatter of K-state means.

    The values of many states are cut into disjoint batches of K; the standard
    deviation of the batch means, compared with sigma/sqrt(K), tests the
    1/sqrt(K) law directly. Returns ks, the observed scatter, the prediction
    and the fitted log-log slope (-0.5 expected).
    """
    values = np.asarray(values, dtype=float)
    sigma = values.std(ddof=1)
    used, obs = [], []
    for k in ks:
        nb = len(values) // k
        if nb < 4:  # too few batches for a meaningful scatter
            continue
        means = values[: nb * k].reshape(nb, k).mean(axis=1)
        used.append(int(k))
        obs.append(float(means.std(ddof=1)))
    ok = np.array(obs) > 0  # identical states (e.g. a tiny cell) have no scatter
    slope = (float(np.polyfit(np.log(np.array(used)[ok]), np.log(np.array(obs)[ok]), 1)[0])
             if ok.sum() >= 2 else float("nan"))
    return {"k": used, "observed": obs, "predicted": [float(sigma / np.sqrt(k)) for k in used],
            "loglog_slope": slope}


def convergence(calculator, atoms: Atoms, k_max: int = 50, seed: int = 0, moment=None,
                equilibrate: str = "none", n_pool: int | None = None) -> dict:
    """Convergence of the PM average with the number of states K.

    Parameters
    ----------
    calculator : moment-aware ASE calculator
    atoms : structure (moment magnitudes from ``moment`` or its initial moments)
    k_max : largest K of the running average
    seed : seed of the states
    moment, equilibrate : as in :class:`ParamagneticCalculator`
    n_pool : number of states for the 1/sqrt(K) batch test (default 8 * k_max)

    Returns
    -------
    dict with, for each quantity ("energy_per_atom" in eV/atom, "pressure_GPa"):
    ``running_mean`` and ``standard_error`` for K = 1..k_max (first k_max
    states), ``final`` and ``final_sem``, and ``batch`` (see :func:`batch_scatter`).
    """
    n_pool = n_pool or 8 * k_max
    vals = _state_values(calculator, atoms, max(n_pool, k_max), seed, moment, equilibrate)
    ks = np.arange(1, k_max + 1)
    report: dict = {"k": ks.tolist(), "n_pool": int(max(n_pool, k_max)), "quantities": {}}
    for name, v in vals.items():
        first = v[:k_max]
        csum = np.cumsum(first)
        run = csum / ks
        var = np.array([first[:k].var(ddof=1) if k > 1 else np.nan for k in ks])
        se = np.sqrt(var / ks)
        report["quantities"][name] = {
            "running_mean": run.tolist(), "standard_error": se.tolist(),
            "final": float(run[-1]), "final_sem": float(se[-1]),
            "batch": batch_scatter(v, sorted({1, 2, 4, 8, 16, 32, 64, k_max})),
        }
    return report


def plot_convergence(report: dict, path, title: str = "Paramagnetic average vs number of states"):
    """Running mean ± standard error against K and the batch-scatter log-log test (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    q = report["quantities"]
    names = list(q)
    fig, axes = plt.subplots(2, len(names), figsize=(5 * len(names), 7), squeeze=False)
    ks = np.array(report["k"])
    labels = {"energy_per_atom": "E (eV/atom)", "pressure_GPa": "P (GPa)"}
    for c, name in enumerate(names):
        d = q[name]
        run, se = np.array(d["running_mean"]), np.array(d["standard_error"])
        ax = axes[0, c]
        ax.plot(ks, run, "o-", ms=3, label="running mean")
        ax.fill_between(ks, run - se, run + se, alpha=0.3, label="± standard error")
        ax.axhline(d["final"], color="k", lw=0.8)
        ax.set_xlabel("number of random states K")
        ax.set_ylabel(labels.get(name, name))
        ax.legend(fontsize=8)
        b = d["batch"]
        ax = axes[1, c]
        if max(b["observed"], default=0) > 0:
            ax.loglog(b["k"], b["observed"], "o", label=f"scatter of K-means (slope {b['loglog_slope']:.2f})")
            ax.loglog(b["k"], b["predicted"], "-", label="σ/√K")
        else:
            ax.text(0.5, 0.5, "all states equivalent: no scatter", ha="center", transform=ax.transAxes)
        ax.set_xlabel("K")
        ax.set_ylabel("std of the K-state mean")
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    plt.close(fig)
