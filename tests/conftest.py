from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


#: MLIP-3's own outputs (conformance data), shipped with the repository
MLIP3_DIR = ROOT / "tests" / "data" / "mlip3"


@pytest.fixture(scope="session")
def mlip3_dir():
    return MLIP3_DIR


EXAMPLE_MAIN_JOB = ROOT / "examples" / "learn_crn_reference.toml"


@pytest.fixture(scope="session")
def main_job_state(tmp_path_factory):
    """State directory of the README main job, run once per test session."""
    from mmtp_rs.loop.config import LearnConfig
    from mmtp_rs.loop.learner import Learner

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
    from mmtp_rs.loop.config import LearnConfig

    cfg = LearnConfig.from_toml(EXAMPLE_MAIN_JOB)
    k = json.loads((main_job_state / "summary.json").read_text())["final_iteration"]
    return cfg, Potential.from_file(main_job_state / f"iter_{k:03d}" / "potential.json")
