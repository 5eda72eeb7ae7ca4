import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def shared_dir() -> Path | None:
    env = os.environ.get("MMTP_SHARED")
    cand = Path(env) if env else ROOT.parent / "shared"
    return cand if cand.is_dir() else None


@pytest.fixture(scope="session")
def mlip3_dir():
    d = shared_dir()
    if d is None or not (d / "external" / "mlip3").is_dir():
        pytest.skip("MLIP-3 reference data not found (set MMTP_SHARED to the shared folder)")
    return d / "external" / "mlip3"
