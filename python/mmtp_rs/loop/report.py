"""The final report of an active-learning run: learning curve, grade
histograms, errors against held-out oracle labels (PNG plots, JSON, Markdown)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mmtp_rs.fitting.data import Dataset
from mmtp_rs.io.atomic import atomic_write_text, save_figure


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_learning_report(learner, pot, test: list) -> dict:
    """Write ``report/`` of a finished (or stopped) run; returns its summary."""
    from mmtp_rs.fitting.report import error_report, parity_plots, to_markdown

    out = learner.state / "report"
    out.mkdir(exist_ok=True)
    its = learner.summary.get("iterations", [])
    last = its[-1]["iteration"] if its else 0
    training = Dataset.from_atoms(_read(learner.state / f"iter_{last:03d}" / "training.extxyz"))
    sets = {"train": training}
    if test:
        sets["test (held-out oracle MD)"] = Dataset.from_atoms(test)
    errors = error_report(pot, sets)
    atomic_write_text(out / "errors.json", json.dumps(errors, indent=1) + "\n")
    md = [f"# Active learning: {learner.cfg.name}", "",
          f"Converged: {learner.summary.get('converged')} after iteration {learner.summary.get('final_iteration')}",
          "", "## Iterations", "",
          "| iteration | fit | training size | preselected | selected | labelled | max grade |",
          "|---|---|---|---|---|---|---|"]
    for r in its:
        mg = max(r["max_grades"]) if r.get("max_grades") else 0.0
        md.append(f"| {r['iteration']} | {r.get('fit', '')} | {r['training_size']} | {r['n_preselected']} | "
                  f"{r['n_selected']} | {r.get('n_labelled', 0)} | {mg:.3g} |")
    md += ["", "## Errors of the final potential", "", to_markdown(errors)]
    validation = None
    from mmtp_rs.loop.config import validation_enabled
    from mmtp_rs.loop.learner import run_validation

    if validation_enabled(learner.cfg):
        validation = run_validation(learner.cfg, pot, out, oracle_workdir=learner.state / "labels",
                                    progress=learner.log)
        from mmtp_rs.properties.validation import validation_markdown

        md += [validation_markdown(validation)]
        learner.log(f"validation: all checks pass: {validation['passed']}")
    t = learner.summary.get("timing", {})
    if t:
        md += ["## Wall time (s)", "", " | ".join(f"{k}: {v:.1f}" for k, v in t.items()), ""]
    atomic_write_text(out / "report.md", "\n".join(md) + "\n")
    plots = []
    try:
        plt = _plt()
        # learning curve
        fig, ax = plt.subplots(1, 2, figsize=(10, 4))
        x = [r["iteration"] for r in its]
        ax[0].plot(x, [r["training_size"] for r in its], "o-", label="training set")
        ax[0].plot(x, [r["n_preselected"] for r in its], "s--", label="preselected")
        ax[0].plot(x, [r["n_selected"] for r in its], "^:", label="selected")
        from matplotlib.ticker import MaxNLocator

        for axis in ax:
            axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax[0].set_xlabel("iteration")
        ax[0].set_ylabel("configurations")
        ax[0].legend()
        for q, unit, lab in (("energy", "meV/atom", "energy"), ("forces", "meV/Å", "forces"),
                             ("magnetic_forces", "meV/μB", "magnetic forces")):
            ys = [((r.get("test_errors") or {}).get("test") or {}).get(q, {}).get("rmse") for r in its]
            if any(y is not None for y in ys):
                ax[1].semilogy(x, [np.nan if y is None else y for y in ys], "o-", label=f"{lab} ({unit})")
        ax[1].set_xlabel("iteration")
        ax[1].set_ylabel("test RMSE")
        if ax[1].lines:
            ax[1].legend()
        fig.tight_layout()
        save_figure(fig, out / "learning_curve.png", dpi=110)
        plt.close(fig)
        plots.append("learning_curve.png")
        # grade histograms
        fig, ax = plt.subplots(figsize=(6, 4))
        for r in its:
            g = np.asarray(r.get("max_grades") or [], float)
            if g.size:
                ax.hist(np.log10(np.maximum(g, 1e-3)), bins=20, histtype="step", label=f"iteration {r['iteration']}")
        ax.set_xlabel("log10 (max grade of a simulation)")
        ax.set_ylabel("simulations")
        if ax.patches:
            ax.legend(fontsize=7)
        fig.tight_layout()
        save_figure(fig, out / "grade_histograms.png", dpi=110)
        plt.close(fig)
        plots.append("grade_histograms.png")
        if test:
            plots += [p.name for p in parity_plots(pot, {"test": Dataset.from_atoms(test)}, out)]
    except ImportError:  # matplotlib missing: tables only
        pass
    if validation is not None:
        plots += [f for f in validation["files"] if f.endswith(".png")]
    return {"errors": errors, "plots": plots, "directory": str(out),
            "validation": None if validation is None else {
                "passed": validation["passed"],
                "failed_checks": [c["name"] for c in validation["checks"] if not c["pass"]]}}


def _read(path: Path):
    from ase.io import read

    if not path.exists() or path.stat().st_size == 0:
        return []
    return read(path, index=":", format="extxyz")
