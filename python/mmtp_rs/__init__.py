"""mmtp_rs: self-training magnetic Moment Tensor Potentials.

The compiled core (``mmtp_rs._core``) is loaded on first use of one of the
names that need it, so the pure-Python parts (oracles, file readers) can be
imported on their own.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "Potential": "mmtp_rs.potential",
    "MMTPCalculator": "mmtp_rs.calculator",
    "set_num_threads": "mmtp_rs.potential",
    "get_num_threads": "mmtp_rs.potential",
    "MMTPError": "mmtp_rs.potential",
    "MtpFormatError": "mmtp_rs.mtpfile",
    "CfgFormatError": "mmtp_rs.cfg",
    "DatasetError": "mmtp_rs.data",
    "read_cfg": "mmtp_rs.cfg",
    "write_cfg": "mmtp_rs.cfg",
    "Dataset": "mmtp_rs.data",
    "fit": "mmtp_rs.fitting",
    "ActiveSet": "mmtp_rs.active",
    "GradingCalculator": "mmtp_rs.active",
    "ParamagneticCalculator": "mmtp_rs.paramagnetic",
    "ReferenceOracle": "mmtp_rs.oracles",
    "AbinitOracle": "mmtp_rs.oracles",
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
