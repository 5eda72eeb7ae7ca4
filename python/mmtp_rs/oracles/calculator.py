"""Any oracle as an ASE calculator, through its resumable job directories.

:class:`OracleCalculator` lets the code that runs on calculators (stage 1,
elastic constants, validation) run on an expensive oracle such as ABINIT: every
evaluation is one labelling job in ``workdir`` (hash-named by configuration,
target moments and settings), so a repeated or resumed evaluation is read back,
never recomputed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from ase.calculators.calculator import Calculator, all_changes

from mmtp_rs.oracles.base import Oracle, OracleError


__all__ = ["OracleCalculator", "oracle_calculator"]


class OracleCalculator(Calculator):
    """ASE calculator backed by :meth:`Oracle.label` (constrained moments).

    Properties: ``energy``/``free_energy`` (eV), ``forces`` (eV/Å), ``stress``
    (eV/Å³, ASE sign; 3-D periodic cells), ``magnetic_forces`` (eV/μB) and
    ``magmoms`` (μB, the moments the oracle obtained).

    Parameters
    ----------
    oracle : the oracle
    workdir : directory of its job directories (reused across runs)
    executor : optional executor for the jobs (default: the oracle's)
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress", "magnetic_forces", "magmoms"]

    def __init__(self, oracle: Oracle, workdir: str | Path, executor=None, **kwargs):
        super().__init__(**kwargs)
        self.oracle = oracle
        self.workdir = Path(workdir)
        self.executor = executor
        self.n_jobs = 0

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        res = self.oracle.label([self.atoms], self.workdir, executor=self.executor)
        if res.failures:
            f = res.failures[0]
            raise OracleError(f"oracle {self.oracle.name} failed on a configuration (job {f.directory}): {f.reason}")
        self.n_jobs += len(res.computed)
        lab = res.labelled[0]
        e = float(lab.info["REF_energy"])
        self.results = {
            "energy": e,
            "free_energy": e,
            "forces": np.asarray(lab.arrays["REF_forces"], dtype=float),
            "magnetic_forces": np.asarray(lab.arrays["REF_magnetic_forces"], dtype=float),
            "magmoms": np.asarray(lab.get_initial_magnetic_moments(), dtype=float),
        }
        if "REF_stress" in lab.info:
            self.results["stress"] = np.asarray(lab.info["REF_stress"], dtype=float)


def oracle_calculator(spec: dict[str, Any], workdir: str | Path | None = None, executor=None) -> Calculator:
    """The calculator of an oracle configuration (the ``[oracle]`` table of a learn config).

    The reference model gives its own analytic :class:`ReferenceCalculator`
    (no job directories: it costs milliseconds); any other oracle an
    :class:`OracleCalculator` on ``workdir``.
    """
    o = dict(spec)
    kind = o.pop("kind", "reference")
    if kind == "reference":
        from mmtp_rs.oracles.reference import ReferenceCalculator

        o.pop("delay", None)
        o.pop("max_attempts", None)
        return ReferenceCalculator(o.pop("preset", "CrN"), relax_moments=bool(o.pop("relax_moments", False)))
    if kind == "abinit":
        from mmtp_rs.oracles.abinit import AbinitOracle

        if workdir is None:
            raise ValueError("an ABINIT oracle calculator needs a work directory for its jobs")
        return OracleCalculator(AbinitOracle(**o), workdir, executor=executor)
    raise ValueError(f"unknown oracle kind {kind!r} (reference, abinit)")
