"""A short active-learning loop with real constrained DFT (ABINIT): 2-atom
bcc Fe cells, a handful of labels."""

import json
import shutil
from pathlib import Path

import pytest

from mmtp_rs.loop.config import LearnConfig
from mmtp_rs.loop.learner import Learner
from mmtp_rs.oracles.base import read_record

pytestmark = pytest.mark.abinit
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "learn_fe_abinit.toml"


@pytest.mark.skipif(shutil.which("abinit") is None, reason="abinit is not installed (apt-get install abinit abinit-data)")
def test_abinit_loop_labels_with_constrained_dft_and_resumes(tmp_path):
    cfg = LearnConfig.from_toml(EXAMPLE)
    summary = Learner(cfg, tmp_path / "run", quiet=True).run()
    its = summary["iterations"]
    assert its[0]["training_size"] >= 3
    records = [read_record(d) for d in (tmp_path / "run" / "labels").iterdir() if d.is_dir()]
    done = [r for r in records if r["status"] == "done"]
    assert 4 <= len(done) <= 10  # a handful of real DFT labels
    assert all(len(r["attempts"]) >= 1 for r in done)
    # constrained moments reached their targets, magnetic forces present
    from ase.io import read

    train = read(tmp_path / "run" / f"iter_{its[-1]['iteration']:03d}" / "training.extxyz", ":")
    for a in train:
        assert "REF_magnetic_forces" in a.arrays and "REF_energy" in a.info
    # rerunning recomputes nothing
    before = {d.name: json.dumps(read_record(d), sort_keys=True) for d in (tmp_path / "run" / "labels").iterdir()}
    Learner(cfg, tmp_path / "run", quiet=True).run()
    after = {d.name: json.dumps(read_record(d), sort_keys=True) for d in (tmp_path / "run" / "labels").iterdir()}
    assert before == after
