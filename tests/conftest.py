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


EXAMPLE_MAIN_JOB = ROOT / "examples" / "learn_crn_reference.toml"


@pytest.fixture(scope="session")
def main_job_state(tmp_path_factory):
    """State directory of the README main job, run once per test session."""
    from mmtp_rs.learn import LearnConfig, Learner

    cfg = LearnConfig.from_toml(EXAMPLE_MAIN_JOB)
    state = tmp_path_factory.mktemp("main_job") / "state"
    summary = Learner(cfg, state, quiet=True).run()
    assert summary["converged"], summary["iterations"]
    return state


@pytest.fixture(scope="session")
def main_job(main_job_state):
    """(config, final potential) of the README main job."""
    import json

    from mmtp_rs import Potential
    from mmtp_rs.learn import LearnConfig

    cfg = LearnConfig.from_toml(EXAMPLE_MAIN_JOB)
    k = json.loads((main_job_state / "summary.json").read_text())["final_iteration"]
    return cfg, Potential.from_file(main_job_state / f"iter_{k:03d}" / "potential.json")
