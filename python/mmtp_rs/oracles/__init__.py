"""Labelling oracles: constrained-DFT (ABINIT) and the embedded reference model.

``oracle.label(configurations, workdir, executor=None) -> LabelResult`` is the
common interface; see ``docs/oracles.md``.
"""

from mmtp_rs.oracles.abinit import AbinitOracle, AbinitResult, parse_abinit_output, write_abinit_input
from mmtp_rs.oracles.base import (
    Failure,
    LabelResult,
    Oracle,
    OracleError,
    OracleOutput,
    OracleSetupError,
    OracleTimeout,
    SerialExecutor,
    default_process_pool,
    read_record,
)
from mmtp_rs.oracles.reference import PRESETS, ReferenceCalculator, ReferenceModel, ReferenceOracle


__all__ = [
    "AbinitOracle",
    "AbinitResult",
    "Failure",
    "LabelResult",
    "Oracle",
    "OracleError",
    "OracleOutput",
    "OracleSetupError",
    "OracleTimeout",
    "PRESETS",
    "ReferenceCalculator",
    "ReferenceModel",
    "ReferenceOracle",
    "SerialExecutor",
    "default_process_pool",
    "parse_abinit_output",
    "read_record",
    "write_abinit_input",
]
