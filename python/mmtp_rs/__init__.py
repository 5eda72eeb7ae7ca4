"""mmtp_rs: self-training magnetic Moment Tensor Potentials.

The compiled core (``mmtp_rs._core``) is loaded on first use of one of the
names that need it, so the pure-Python parts (oracles, file readers) can be
imported on their own.

Layout: ``model/`` (potential, ASE calculator), ``io/`` (MLIP-3 .mtp and .cfg,
exact extxyz, labels, atomic writes), ``fitting/`` (datasets, objective and
optimiser, reports, ensembles), ``magnetism/`` (magnetic states, stage 1,
paramagnetic average), ``active.py`` (maxvol active set, grades),
``simulate.py`` (two-stage simulation), ``loop/`` (the learning loop: config,
structures, learner, report), ``properties/`` (setup, elastic, phonons, QHA,
report, validation), ``oracles/`` (reference model, ABINIT), ``cli/`` (one
module per command), ``config.py`` (the config schema), ``units.py``.
"""

from __future__ import annotations

import importlib
import os


# The package's heavy work runs in Rust (rayon threads); numpy/scipy only see
# 3x3 cells and small dense systems, where multithreaded OpenBLAS busy-waits
# against rayon and slows ASE's cell filter and L-BFGS-B some 20x on 2 cores.
# One BLAS thread unless the user chose otherwise (effective when mmtp_rs is
# imported before numpy, as by the ``mmtp`` command; the long-running entry
# points also limit it with threadpoolctl, see :func:`mmtp_rs.potential.single_blas_thread`).
for _var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

__version__ = "0.1.0"

_LAZY = {
    "Potential": "mmtp_rs.model.potential",
    "MMTPCalculator": "mmtp_rs.model.calculator",
    "set_num_threads": "mmtp_rs.model.potential",
    "get_num_threads": "mmtp_rs.model.potential",
    "release_memory": "mmtp_rs.model.potential",
    "MMTPError": "mmtp_rs.model.potential",
    "ShapeError": "mmtp_rs.model.potential",
    "InvalidValueError": "mmtp_rs.model.potential",
    "GeometryError": "mmtp_rs.model.potential",
    "PotentialError": "mmtp_rs.model.potential",
    "MtpFormatError": "mmtp_rs.io.mtpfile",
    "CfgFormatError": "mmtp_rs.io.cfg",
    "DatasetError": "mmtp_rs.fitting.data",
    "read_cfg": "mmtp_rs.io.cfg",
    "write_cfg": "mmtp_rs.io.cfg",
    "Dataset": "mmtp_rs.fitting.data",
    "fit": "mmtp_rs.fitting.optimize",
    "ActiveSet": "mmtp_rs.active",
    "GradingCalculator": "mmtp_rs.active",
    "equilibrate_moments": "mmtp_rs.magnetism.stage1",
    "ParamagneticCalculator": "mmtp_rs.magnetism.paramagnetic",
    "ReferenceOracle": "mmtp_rs.oracles",
    "AbinitOracle": "mmtp_rs.oracles",
    "ConfigError": "mmtp_rs.config",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mmtp_rs' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
