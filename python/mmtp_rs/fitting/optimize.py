"""Fitting an mMTP to labelled data.

The objective is the paper's (Kotykhov et al., eq. 5), averaged over the
configurations, plus an optional L2 penalty::

    L(θ) = (1/K) Σ_k [ w_e ΔE_k² + w_f Σ_i |ΔF_ik|² + w_s Σ_ab (V_k Δσ_ab,k)²
                       + w_t Σ_i ΔT_ik² ]  +  λ Σ_{j ∈ radial, basis} θ_j²

(ΔE is the total-energy error, or the per-atom error with
``energy_per_atom=True``; the stress residual is V·Δσ in eV, all nine
components, as MLIP does). Value and exact gradient come from the Rust core
(:meth:`mmtp_rs._core.CorePotential.loss`), streamed configuration by
configuration.

The fit:

1. *Linear solve.* E, F, σ and T are linear in the species constants and
   the basis coefficients, so L restricted to them is an exact quadratic.
   Its Hessian is built column by column from differences of two loss
   gradients (exact for a quadratic; no force Jacobian is ever stored) and
   solved by an eigen-decomposition (pseudo-inverse), or, for large bases,
   by conjugate gradients with the same Hessian-vector products.
2. *Nonlinear fit.* scipy's BFGS (or L-BFGS-B for large models) over all
   parameters, the objective divided by its starting value so that the
   optimiser's tolerances are relative; optionally in variables scaled
   block-wise by estimated curvatures.
3. *Restarts.* Several restarts perturb the radial coefficients; each runs
   steps 1-2.
4. *Early stopping.* With a validation set, its loss is computed every
   iteration; the parameters with the best validation loss are kept, and a
   restart stops after ``patience`` iterations without improvement.

Progress, per iteration: loss and RMSEs (tqdm if installed, else plain
lines). A checkpoint file, written atomically, lets a killed fit resume.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Sequence

import numpy as np

from mmtp_rs.fitting.data import Dataset, DatasetError
from mmtp_rs.io.atomic import atomic_write_json
from mmtp_rs.model.potential import MMTPError, Potential
from mmtp_rs.units import EV_A3_TO_GPA


__all__ = ["Weights", "Objective", "FitResult", "fit", "make_potential", "solve_linear",
           "auto_min_dist", "auto_max_moment", "rmse_from_sse"]


CHECKPOINT_FORMAT = "mmtp_rs fit checkpoint"


@dataclass
class Weights:
    """Weights of the objective's terms (paper defaults)."""

    energy: float = 1.0  # w_e, 1/eV^0 (energy residual in eV)
    forces: float = 0.01  # w_f, Å²
    stress: float = 0.001  # w_s (on V·Δσ, eV)
    magnetic_forces: float = 0.1  # w_t, μB²

    def as_tuple(self) -> tuple[float, float, float, float]:
        return (float(self.energy), float(self.forces), float(self.stress), float(self.magnetic_forces))

    @classmethod
    def coerce(cls, w) -> "Weights":
        if w is None:
            return cls()
        if isinstance(w, Weights):
            return w
        if isinstance(w, dict):
            return cls(**w)
        w = tuple(float(x) for x in w)
        if len(w) != 4:
            raise ValueError(f"weights need 4 numbers (w_e, w_f, w_s, w_t), got {len(w)}")
        return cls(*w)


def rmse_from_sse(sse: Sequence[float], count: Sequence[int]) -> dict[str, float | None]:
    """RMSEs in report units from the core's sums of squared residuals.

    Energy in meV (per configuration, or per atom when the loss was per atom),
    forces meV/Å, stress GPa, magnetic forces meV/μB; None where no labels.
    """
    names = ("energy", "forces", "stress", "magnetic_forces")
    factors = (1e3, 1e3, EV_A3_TO_GPA, 1e3)
    out = {}
    for n, s, c, f in zip(names, sse, count, factors):
        out[n] = None if c == 0 else f * math.sqrt(s / c)
    return out


# --------------------------------------------------------------------------- objective


class Objective:
    """The training objective as a function of (scaled) parameters.

    ``theta = scale * u``; :meth:`__call__` takes ``u`` and returns the value
    and dL/du. With ``scale=None`` the variables are the parameters.

    Parameters
    ----------
    pot : the potential (copied; the objective sets the copy's parameters)
    data : training :class:`Dataset`
    weights : :class:`Weights` or (w_e, w_f, w_s, w_t)
    regularization : λ of the L2 penalty on radial and basis coefficients
    energy_per_atom : energy residuals per atom instead of per configuration
    symmetrize : spin-inversion symmetrised energy (default: the potential's)
    normalize : divide the data term by the number of configurations
    subset : indices of the configurations to use (default all)
    """

    def __init__(self, pot: Potential, data: Dataset, weights=None, *, regularization: float = 0.0,
                 energy_per_atom: bool = False, symmetrize: bool | None = None, normalize: bool = True,
                 subset: Sequence[int] | None = None, scale: np.ndarray | None = None):
        if len(data) == 0:
            raise DatasetError("the dataset is empty")
        if not (np.isfinite(regularization) and regularization >= 0):
            raise ValueError(f"regularization must be finite and >= 0, got {regularization}")
        self.pot = pot.copy()
        self.data = data
        self.core_data = data.to_core(self.pot)
        self.weights = Weights.coerce(weights)
        for name, v in asdict(self.weights).items():
            if not (np.isfinite(v) and v >= 0):
                raise ValueError(f"weight {name} must be finite and >= 0, got {v}")
        self.regularization = float(regularization)
        self.energy_per_atom = bool(energy_per_atom)
        self.symmetrize = pot.symmetrize if symmetrize is None else bool(symmetrize)
        self.subset = None if subset is None else [int(i) for i in subset]
        k = len(data) if self.subset is None else len(self.subset)
        if k == 0:
            raise DatasetError("the subset of configurations is empty")
        self.norm = 1.0 / k if normalize else 1.0
        n = pot.n_params
        self.reg_mask = np.ones(n)
        self.reg_mask[pot.param_blocks["species"]] = 0.0
        self.scale = np.ones(n) if scale is None else np.asarray(scale, dtype=float).copy()
        self.value_scale = 1.0  # __call__ returns L / value_scale (optimiser tolerances are relative to 1)
        self.n_calls = 0
        self.last: dict | None = None

    @property
    def n_params(self) -> int:
        return self.pot.n_params

    def theta(self, u: np.ndarray) -> np.ndarray:
        return self.scale * np.asarray(u, dtype=float)

    def u(self, theta: np.ndarray) -> np.ndarray:
        return np.asarray(theta, dtype=float) / self.scale

    def evaluate_theta(self, theta: np.ndarray, gradient: bool = True) -> dict:
        """Value (``loss``), ``gradient`` dL/dθ, ``sse``, ``count``, ``rmse`` at parameters θ."""
        theta = np.asarray(theta, dtype=float)
        if not np.all(np.isfinite(theta)):
            raise FloatingPointError("non-finite parameters")
        self.pot.params = theta
        out = self.pot._core.loss(self.core_data, self.weights.as_tuple(), energy_per_atom=self.energy_per_atom,
                                  symmetrize=self.symmetrize, gradient=gradient, subset=self.subset)
        self.n_calls += 1
        rt = self.reg_mask * theta
        value = self.norm * out["loss"] + self.regularization * float(rt @ rt)
        res = {"loss": value, "data_loss": self.norm * out["loss"], "sse": list(out["sse"]),
               "count": list(out["count"]), "rmse": rmse_from_sse(out["sse"], out["count"])}
        if gradient:
            res["gradient"] = self.norm * np.asarray(out["gradient"]) + 2.0 * self.regularization * rt
        self.last = res
        return res

    def __call__(self, u: np.ndarray, gradient: bool = True):
        r = self.evaluate_theta(self.theta(u), gradient)
        if not gradient:
            return r["loss"] / self.value_scale
        return r["loss"] / self.value_scale, (self.scale / self.value_scale) * r["gradient"]


# --------------------------------------------------------------------------- linear solve


def _linear_index(pot: Potential) -> np.ndarray:
    b = pot.param_blocks
    return np.r_[np.arange(b["species"].start, b["species"].stop), np.arange(b["moment"].start, b["moment"].stop)]


def solve_linear(obj: Objective, theta: np.ndarray, method: str = "auto", max_hessian: int = 400,
                 cg_iter: int = 200, rcond: float = 1e-12, log: Callable[[str], None] | None = None) -> tuple[np.ndarray, dict]:
    """Minimise the objective over the linear parameters (species constants and
    basis coefficients) at fixed radial coefficients.

    The objective is an exact quadratic in them, ``L(x) = L(0) + bᵀx + xᵀHx/2``.
    ``method="hessian"`` builds H column by column from gradient differences
    ``H e_j = g(e_j) − g(0)`` (one loss+gradient pass each) and solves with an
    eigen-decomposition (directions with eigenvalues below ``rcond·max`` are
    left at zero), then takes one refinement step. ``method="cg"`` runs
    conjugate gradients with Hessian-vector products from gradient
    differences. ``"auto"``: the Hessian up to ``max_hessian`` linear
    parameters, CG above.

    Returns the new parameter vector and info (``method``, ``passes``,
    ``hessian_diagonal`` when built, ``loss_before``, ``loss_after``).
    """
    idx = _linear_index(obj.pot)
    n = len(idx)
    if method == "auto":
        method = "hessian" if n <= max_hessian else "cg"
    if method not in ("hessian", "cg"):
        raise ValueError(f"unknown linear solve method {method!r} (hessian, cg, auto)")
    theta = np.array(theta, dtype=float)
    before = obj.evaluate_theta(theta, gradient=False)["loss"]
    base = theta.copy()
    base[idx] = 0.0
    g0 = obj.evaluate_theta(base)["gradient"][idx]
    passes = 2
    info: dict = {"method": method, "n_linear": n, "loss_before": before}

    def hv(v: np.ndarray) -> np.ndarray:
        nonlocal passes
        t = np.linalg.norm(v)
        if t == 0:
            return np.zeros_like(v)
        p = base.copy()
        p[idx] = v / t
        passes += 1
        return t * (obj.evaluate_theta(p)["gradient"][idx] - g0)

    if method == "hessian":
        h = np.empty((n, n))
        for j in range(n):
            e = np.zeros(n)
            e[j] = 1.0
            h[:, j] = hv(e)
        h = 0.5 * (h + h.T)
        w, q = np.linalg.eigh(h)
        keep = w > rcond * max(w.max(), 0.0) if w.size else w > 0
        winv = np.where(keep, 1.0 / np.where(keep, w, 1.0), 0.0)

        def solve(rhs):
            return q @ (winv * (q.T @ rhs))

        x = -solve(g0)
        # one refinement step against round-off
        p = base.copy()
        p[idx] = x
        g1 = obj.evaluate_theta(p)["gradient"][idx]
        passes += 1
        x = x - solve(g1)
        info["hessian_diagonal"] = np.diag(h).copy()
        info["rank"] = int(keep.sum())
    else:
        x = np.zeros(n)
        r = -g0.copy()
        d = r.copy()
        rr = r @ r
        r0 = math.sqrt(rr)
        for _ in range(min(cg_iter, n)):
            if math.sqrt(rr) <= 1e-12 * r0 or rr == 0:
                break
            hd = hv(d)
            dhd = d @ hd
            if dhd <= 0:
                break
            a = rr / dhd
            x += a * d
            r -= a * hd
            rr_new = r @ r
            d = r + (rr_new / rr) * d
            rr = rr_new
    out = base.copy()
    out[idx] = x
    after = obj.evaluate_theta(out, gradient=False)["loss"]
    passes += 1
    if not after <= before:  # never make things worse (e.g. a CG stopped early on an indefinite H)
        out, after = theta, before
    info.update(passes=passes, loss_after=after)
    if log:
        log(f"linear solve ({method}, {n} parameters, {passes} passes): loss {before:.6g} -> {after:.6g}")
    return out, info


def _radial_curvature(obj: Objective, theta: np.ndarray, seed: int = 0, eps: float = 1e-4) -> float:
    """Mean diagonal curvature of L over the radial block, vᵀHv for one random unit v."""
    sl = obj.pot.param_blocks["radial"]
    n = sl.stop - sl.start
    if n == 0:
        return 1.0
    v = np.zeros(obj.n_params)
    v[sl] = np.random.default_rng(seed).normal(size=n)
    v /= np.linalg.norm(v)
    scale = max(np.abs(theta[sl]).max(), 1e-3)
    h = eps * scale
    gp = obj.evaluate_theta(theta + h * v)["gradient"]
    gm = obj.evaluate_theta(theta - h * v)["gradient"]
    return float(abs(v @ (gp - gm)) / (2 * h))


def _scale_vector(obj: Objective, theta: np.ndarray, lin_info: dict | None, seed: int) -> np.ndarray:
    """Block-wise scaling θ = s·u so that the curvatures in u are of order one."""
    n = obj.n_params
    s = np.ones(n)
    c_rad = _radial_curvature(obj, theta, seed)
    if c_rad > 0 and np.isfinite(c_rad):
        s[obj.pot.param_blocks["radial"]] = 1.0 / math.sqrt(c_rad)
    if lin_info is not None and "hessian_diagonal" in lin_info:
        d = np.asarray(lin_info["hessian_diagonal"], dtype=float)
        if d.size:
            floor = max(d.max(), 1e-300) * 1e-10
            s[_linear_index(obj.pot)] = 1.0 / np.sqrt(np.maximum(d, floor))
    return s


# --------------------------------------------------------------------------- automatic hyperparameters


def auto_min_dist(data: Dataset, margin: float = 0.95, cutoff: float = 4.0) -> float:
    """R_min slightly below the smallest interatomic distance of the data (Å)."""
    dmin = data.min_distance(cutoff)
    if not np.isfinite(dmin):
        raise DatasetError(f"no two atoms closer than {cutoff} Å in the data: give min_dist explicitly")
    return math.floor(margin * dmin * 100.0) / 100.0


def max_moment_rule(largest: float, margin: float = 1.1, floor: float = 0.1) -> float:
    """M_max of a species whose largest |m| is ``largest``: ``margin`` × it, rounded up to 0.01 μB, at least ``floor``."""
    return max(floor, math.ceil(margin * largest * 100.0) / 100.0)


def auto_max_moment(data: Dataset, species: Sequence[str], margin: float = 1.1, floor: float = 0.1) -> dict[str, float]:
    """Per-species M_max: :func:`max_moment_rule` of the largest |m| of the species in ``data``."""
    mm = data.max_abs_moment()
    return {s: max_moment_rule(mm.get(s, 0.0), margin, floor) for s in species}


def make_potential(data: Dataset, species: Sequence[str] | None = None, level: int = 16,
                   radial_basis_size: int = 8, magnetic_basis_size: int = 2, min_dist: float | None = None,
                   max_dist: float = 5.0, max_moment=None, seed: int | None = 0,
                   scaling: float | None = None, symmetrize: bool = True) -> Potential:
    """A new potential for ``data``, choosing R_min and per-species M_max from it when not given.

    ``species`` defaults to the species present (sorted by atomic number);
    ``min_dist`` to :func:`auto_min_dist`; ``max_moment`` to :func:`auto_max_moment`.
    """
    species = list(species) if species is not None else data.species
    if min_dist is None:
        min_dist = auto_min_dist(data, cutoff=max_dist)
    if min_dist >= max_dist:
        raise MMTPError(f"min_dist {min_dist} Å must be below max_dist {max_dist} Å")
    if max_moment is None:
        max_moment = auto_max_moment(data, species)
    return Potential.new(species, level=level, radial_basis_size=radial_basis_size,
                         magnetic_basis_size=magnetic_basis_size, min_dist=min_dist, max_dist=max_dist,
                         max_moment=max_moment, seed=seed, scaling=scaling, symmetrize=symmetrize)


# --------------------------------------------------------------------------- fit


@dataclass
class FitResult:
    """Outcome of :func:`fit`.

    ``potential`` holds the best parameters (best validation loss if a
    validation set was given, else best training loss). ``history`` has one
    dict per iteration: restart, iteration, loss (training objective),
    train_rmse, and valid_loss / valid_rmse with a validation set, time (s).
    """

    potential: Potential
    history: list = field(default_factory=list)
    best_restart: int = 0
    best_iteration: int = 0
    best_loss: float = math.inf  # training objective at the kept parameters
    best_valid_loss: float | None = None
    restarts: list = field(default_factory=list)  # per restart: final and best values, linear-solve info
    n_loss_calls: int = 0
    elapsed: float = 0.0  # s
    resumed: bool = False

    def to_dict(self) -> dict:
        return {"best_restart": self.best_restart, "best_iteration": self.best_iteration,
                "best_loss": self.best_loss, "best_valid_loss": self.best_valid_loss,
                "restarts": self.restarts, "n_loss_calls": self.n_loss_calls, "elapsed_s": self.elapsed,
                "resumed": self.resumed, "history": self.history}


class _Progress:
    def __init__(self, quiet: bool, total: int, every: int):
        self.quiet = quiet
        self.every = max(1, every)
        self.bar = None
        if not quiet:
            try:
                from tqdm.auto import tqdm

                self.bar = tqdm(total=total, desc="fit", unit="it", file=sys.stderr)
            except ImportError:
                self.bar = None

    def log(self, msg: str) -> None:
        if self.quiet:
            return
        if self.bar is not None:
            self.bar.write(msg)
        else:
            print(msg, file=sys.stderr, flush=True)

    def step(self, rec: dict) -> None:
        if self.quiet:
            return
        text = _fmt(rec)
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix_str(text, refresh=False)
        elif rec["iteration"] % self.every == 0:
            print(f"[restart {rec['restart']} it {rec['iteration']:5d}] {text}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _fmt(rec: dict) -> str:
    def r(d):
        parts = []
        for k, lab in (("energy", "E"), ("forces", "F"), ("stress", "S"), ("magnetic_forces", "T")):
            v = d.get(k) if d else None
            if v is not None:
                parts.append(f"{lab} {v:.4g}")
        return " ".join(parts)

    s = f"loss {rec['loss']:.6g} | {r(rec.get('train_rmse'))}"
    if rec.get("valid_loss") is not None:
        s += f" | valid {rec['valid_loss']:.6g} {r(rec.get('valid_rmse'))}"
    return s


def _fingerprint(pot: Potential, train: Dataset, settings: dict) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"n_params": pot.n_params, "species": pot.species, "level": pot.level,
                         "rmin": pot.min_dist, "rcut": pot.max_dist, "n_train": len(train),
                         "n_atoms": train.n_atoms, **settings}, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


class _BFGS:
    """Dense BFGS with a Wolfe line search whose whole state can be saved and restored exactly.

    The iteration is the classic one of scipy's BFGS (same update, same line
    searches, same iterates), but its state is ours: a checkpointed fit
    resumes bit for bit. ``fun(u) -> (value, gradient)``.
    State: ``x``, ``f``, ``g``, ``H`` (inverse Hessian), ``f_prev`` (for the
    line search's first step), ``k`` (iterations done), ``message``.
    """

    def __init__(self, fun, x0=None, state: dict | None = None):
        self.fun = fun
        self._cache: dict = {}
        if state is not None:
            self.x = np.array(state["x"], dtype=float)
            self.f = float(state["f"])
            self.g = np.array(state["g"], dtype=float)
            self.H = np.array(state["H"], dtype=float).reshape(self.x.size, self.x.size)
            self.f_prev = None if state["f_prev"] is None else float(state["f_prev"])
            self.k = int(state["k"])
        else:
            self.x = np.array(x0, dtype=float)
            self.f, self.g = self._eval(self.x)
            self.H = None
            # first trial step of length ~1 along -g/|g| (as in scipy's BFGS)
            self.f_prev = self.f + float(np.linalg.norm(self.g)) / 2
            self.k = 0

    def _eval(self, x):
        key = x.tobytes()
        if key not in self._cache:
            self._cache.clear()
            f, g = self.fun(x)
            self._cache[key] = (float(f), np.array(g, dtype=float))
        return self._cache[key]

    def state(self) -> dict:
        return {"x": self.x, "f": self.f, "g": self.g,
                "H": np.eye(self.x.size) if self.H is None else self.H, "f_prev": self.f_prev, "k": self.k}

    def step(self, gtol: float) -> str | None:
        """One iteration (the classic BFGS update on the inverse Hessian, H0 = I, a
        Wolfe line search: MINPACK's first, the zoom search if it fails); returns a
        stop message or None."""
        import warnings

        from scipy.optimize import line_search as wolfe2

        try:  # MINPACK's line search, the first choice of scipy's own BFGS
            from scipy.optimize._linesearch import line_search_wolfe1 as wolfe1
        except ImportError:  # pragma: no cover - older/newer scipy layouts
            wolfe1 = None
        if not np.max(np.abs(self.g)) > gtol:
            return "gradient below gtol"
        n = self.x.size
        h = np.eye(n) if self.H is None else self.H
        p = -(h @ self.g)
        fun = (lambda x: self._eval(x)[0])
        jac = (lambda x: self._eval(x)[1])
        alpha = None
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The line search algorithm")
            if wolfe1 is not None:
                alpha, _, _, f_new, f_old, g_new = wolfe1(fun, jac, self.x, p, self.g, self.f, self.f_prev,
                                                          amin=1e-100, amax=1e100)
            if alpha is None:
                alpha, _, _, f_new, f_old, g_new = wolfe2(fun, jac, self.x, p, self.g, self.f, self.f_prev,
                                                          amax=1e100)
        if alpha is None:
            return "line search failed to find a better point"
        sv = alpha * p
        x_new = self.x + sv
        if g_new is None:
            g_new = jac(x_new)
        g_new = np.asarray(g_new, dtype=float)
        yv = g_new - self.g
        self.x, self.g, self.f, self.f_prev = x_new, g_new, float(f_new), float(f_old)
        self.k += 1
        if not np.isfinite(self.f):
            return "non-finite objective"
        sy = float(yv @ sv)
        rho = 1000.0 if sy == 0.0 else 1.0 / sy
        eye = np.eye(n)
        a1 = eye - sv[:, None] * yv[None, :] * rho
        a2 = eye - yv[:, None] * sv[None, :] * rho
        self.H = a1 @ (h @ a2) + (rho * sv[:, None] * sv[None, :])
        return None


def fit(pot: Potential, train: Dataset, valid: Dataset | None = None, *, weights=None,
        regularization: float = 0.0, energy_per_atom: bool = False, symmetrize: bool | None = None,
        optimizer: str = "auto", max_iter: int = 1000, restarts: int = 1, restart_scale: float = 0.3,
        linear_solve: str | None = "auto", precondition: bool = False, patience: int | None = 100,
        gtol: float = 1e-10, ftol: float = 1e-14, seed: int = 0, checkpoint: str | os.PathLike | None = None,
        checkpoint_interval: float = 30.0, quiet: bool = False, print_every: int = 10,
        callback: Callable[[dict], None] | None = None) -> FitResult:
    """Fit the parameters of ``pot`` to ``train``.

    Parameters
    ----------
    pot : starting potential (not modified; the result holds a fitted copy)
    train, valid : training and (optional) validation :class:`Dataset`
    weights : :class:`Weights` or (w_e, w_f, w_s, w_t); default (1, 0.01, 0.001, 0.1)
    regularization : λ of the L2 penalty on radial and basis coefficients
    energy_per_atom : energy residuals per atom (default: total energies, as in the paper)
    optimizer : "BFGS", "L-BFGS-B" (scipy) or "auto": dense BFGS up to 3000
        parameters (it converged several times faster than L-BFGS-B in our
        teacher-student tests), L-BFGS-B above
    max_iter : optimiser iterations per restart
    restarts : number of starts; start 0 uses ``pot``'s parameters, the
        others perturb its radial coefficients by ``restart_scale`` × their RMS
    linear_solve : "auto", "hessian", "cg", or None (skip the initial linear solve)
    precondition : scale variables block-wise by estimated curvatures (off by
        default: it did not speed up the teacher-student fits we measured)
    patience : with ``valid``, stop a restart after this many iterations
        without a better validation loss (None: never)
    checkpoint : file to save progress to (atomically) every
        ``checkpoint_interval`` seconds and at the end of each restart; if it
        exists and matches this fit, the fit resumes from it
    quiet : no progress output; ``print_every``: iterations between plain lines
    callback : called with each iteration's history record

    Returns
    -------
    FitResult
    """
    from scipy.optimize import minimize

    if optimizer == "auto":
        optimizer = "BFGS" if pot.n_params <= 3000 else "L-BFGS-B"
    if optimizer not in ("L-BFGS-B", "BFGS"):
        raise ValueError(f"optimizer must be 'auto', 'L-BFGS-B' or 'BFGS', got {optimizer!r}")
    if restarts < 1:
        raise ValueError("restarts must be >= 1")
    if valid is not None and len(valid) == 0:
        valid = None
    t_start = time.perf_counter()
    weights = Weights.coerce(weights)
    obj = Objective(pot, train, weights, regularization=regularization, energy_per_atom=energy_per_atom,
                    symmetrize=symmetrize)
    vobj = None if valid is None else Objective(pot, valid, weights, regularization=0.0,
                                                energy_per_atom=energy_per_atom, symmetrize=symmetrize)
    settings = {"weights": asdict(weights), "regularization": regularization, "energy_per_atom": energy_per_atom,
                "symmetrize": obj.symmetrize, "optimizer": optimizer, "restarts": restarts, "seed": seed,
                "restart_scale": restart_scale, "n_valid": 0 if valid is None else len(valid)}
    fp = _fingerprint(pot, train, settings)
    theta0 = pot.params
    rad = pot.param_blocks["radial"]
    rng = np.random.default_rng(seed)
    starts = [theta0]
    for _ in range(1, restarts):
        t = theta0.copy()
        rms = math.sqrt(float(np.mean(theta0[rad] ** 2))) if rad.stop > rad.start else 0.0
        t[rad] += restart_scale * rms * rng.normal(size=rad.stop - rad.start)
        starts.append(t)

    state = {"format": CHECKPOINT_FORMAT, "fingerprint": fp, "restart": 0, "iteration": 0, "theta": None,
             "bfgs": None, "since_best": 0,
             "scale": None, "linear_done": False, "best_theta": None, "best_score": None, "best_loss": None,
             "best_valid": None, "best_restart": 0, "best_iteration": 0, "history": [], "restarts": [],
             "done": False}
    resumed = False
    ck = Path(checkpoint) if checkpoint is not None else None
    prog = _Progress(quiet, max_iter * restarts, print_every)
    if ck is not None and ck.exists():
        try:
            doc = json.loads(ck.read_text())
        except (OSError, json.JSONDecodeError):
            doc = None
        if doc and doc.get("format") == CHECKPOINT_FORMAT and doc.get("fingerprint") == fp:
            state = doc
            resumed = True
            prog.log(f"resuming from {ck}: restart {state['restart']}, iteration {state['iteration']}")
        else:
            prog.log(f"checkpoint {ck} belongs to another fit; starting afresh")

    last_save = [time.perf_counter()]

    def save(force: bool = False) -> None:
        if ck is None:
            return
        now = time.perf_counter()
        if force or now - last_save[0] >= checkpoint_interval:
            doc = dict(state)
            for k in ("theta", "scale", "best_theta"):
                if doc[k] is not None:
                    doc[k] = [float(x) for x in doc[k]]
            if doc.get("bfgs") is not None:
                doc["bfgs"] = {k: (np.asarray(v, dtype=float).ravel().tolist() if isinstance(v, np.ndarray) else v)
                               for k, v in doc["bfgs"].items()}
            atomic_write_json(ck, doc, indent=None)
            last_save[0] = now

    def consider(theta, loss, vloss, r, it) -> bool:
        score = vloss if vloss is not None else loss
        if state["best_score"] is None or score < state["best_score"]:
            state.update(best_theta=np.array(theta), best_score=score, best_loss=loss, best_valid=vloss,
                         best_restart=r, best_iteration=it)
            return True
        return False

    if state["best_theta"] is not None:
        state["best_theta"] = np.asarray(state["best_theta"], dtype=float)

    try:
        while not state["done"] and state["restart"] < restarts:
            r = state["restart"]
            if state["theta"] is None:
                theta = starts[r].copy()
                lin_info = None
                if linear_solve:
                    theta, lin_info = solve_linear(obj, theta, linear_solve, log=prog.log)
                scale = _scale_vector(obj, theta, lin_info, seed + r) if precondition else np.ones(obj.n_params)
                l0 = obj.evaluate_theta(theta, gradient=False)["loss"]
                state.update(theta=theta, scale=scale, value_scale=l0 if l0 > 0 else 1.0, linear_done=True,
                             iteration=0)
                if lin_info is not None:
                    state["restarts"].append({"restart": r, "linear_solve": {k: v for k, v in lin_info.items()
                                                                             if k != "hessian_diagonal"}})
                else:
                    state["restarts"].append({"restart": r})
                save(force=True)
            theta = np.asarray(state["theta"], dtype=float)
            scale = np.asarray(state["scale"], dtype=float)
            obj.scale = scale
            obj.value_scale = float(state.get("value_scale") or 1.0)
            # the starting point counts as iteration `it0`
            it0 = int(state["iteration"])
            ev = obj.evaluate_theta(theta, gradient=False)
            vl = vobj.evaluate_theta(theta, gradient=False) if vobj else None
            consider(theta, ev["loss"], vl["loss"] if vl else None, r, it0)
            since_best = [int(state.get("since_best", 0))]
            cache: dict = {}

            def fun(u):
                val, g = obj(u)
                cache.clear()
                cache[u.tobytes()] = obj.last
                return val, g

            def cb(intermediate_result):
                u = np.asarray(intermediate_result.x)
                last = cache.get(u.tobytes())
                if last is None:
                    obj(u)
                    last = obj.last
                th = obj.theta(u)
                state["iteration"] += 1
                it = state["iteration"]
                rec = {"restart": r, "iteration": it, "loss": last["loss"], "train_rmse": last["rmse"],
                       "time": time.perf_counter() - t_start}
                vloss = None
                if vobj is not None:
                    v = vobj.evaluate_theta(th, gradient=False)
                    vloss = v["loss"]
                    rec.update(valid_loss=vloss, valid_rmse=v["rmse"])
                improved = consider(th, last["loss"], vloss, r, it)
                since_best[0] = 0 if improved else since_best[0] + 1
                state["since_best"] = since_best[0]
                state["theta"] = th
                state["history"].append(rec)
                prog.step(rec)
                save()
                if callback is not None:
                    callback(rec)
                if vobj is not None and patience is not None and since_best[0] >= patience:
                    prog.log(f"restart {r}: no better validation loss in {patience} iterations, stopping")
                    raise StopIteration
                if it >= max_iter:
                    raise StopIteration

            remaining = max_iter - it0
            msg = "iteration limit reached"
            if remaining > 0 and optimizer == "BFGS":
                # our own BFGS: its state is checkpointed with the fit, so a resumed
                # fit follows the same iterates as an uninterrupted one, bit for bit
                bs = state.get("bfgs")
                opt = _BFGS(fun, obj.u(theta)) if bs is None else _BFGS(fun, state=bs)
                try:
                    while state["iteration"] < max_iter:
                        stop = opt.step(gtol)
                        if stop is not None:
                            msg = stop
                            break
                        state["bfgs"] = opt.state()
                        cb(SimpleNamespace(x=opt.x))
                except StopIteration:
                    msg = "stopped early" if state["iteration"] < max_iter else msg
                th = obj.theta(opt.x)
                if np.all(np.isfinite(th)):
                    state["theta"] = th
            elif remaining > 0:
                opts = {"maxiter": remaining, "gtol": gtol}
                if optimizer == "L-BFGS-B":
                    opts.update(ftol=ftol, maxcor=20, maxfun=4 * remaining + 20)
                res = minimize(fun, obj.u(theta), jac=True, method=optimizer, callback=cb, options=opts)
                msg = str(res.message)
                th = obj.theta(res.x)
                if np.all(np.isfinite(th)):
                    state["theta"] = th
            state["restarts"][-1].update(final_iteration=state["iteration"], message=msg)
            prog.log(f"restart {r} finished after {state['iteration']} iterations: {msg}")
            state.update(restart=r + 1, theta=None, scale=None, linear_done=False, iteration=0, bfgs=None,
                         since_best=0)
            save(force=True)
        state["done"] = True
        save(force=True)
    finally:
        prog.close()

    best = pot.copy()
    best.params = np.asarray(state["best_theta"], dtype=float)
    n_calls = obj.n_calls + (vobj.n_calls if vobj else 0)
    return FitResult(potential=best, history=list(state["history"]), best_restart=state["best_restart"],
                     best_iteration=state["best_iteration"], best_loss=state["best_loss"],
                     best_valid_loss=state["best_valid"], restarts=state["restarts"], n_loss_calls=n_calls,
                     elapsed=time.perf_counter() - t_start, resumed=resumed)
