"""Seeded mutations of the learn configurations (the README main job's and a
POSCAR-free ABINIT one): every load ends either in a valid configuration or in
the package's ConfigError naming the file; never a foreign exception."""

import re
import time
from pathlib import Path

import numpy as np
import pytest

from mmtp_rs.config import ConfigError
from mmtp_rs.loop.config import LearnConfig

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
N_CASES = 800
VALUES = ["-1", "0", "1e308", "-1e308", "nan", "inf", "-inf", "1.5", "true", '"x"', "[]", "[1, 2]", "{}",
          "9223372036854775807", "-9223372036854775808", '"AFM"', "[-1.0]", '["FM", "XX"]', "{ Cr = -3 }"]


def mutate(text: str, rng: np.random.Generator) -> bytes:
    lines = text.splitlines()
    kind = rng.integers(8)
    k = int(rng.integers(len(lines)))
    if kind == 0:
        del lines[k]
    elif kind == 1:
        lines.insert(k, lines[int(rng.integers(len(lines)))])
    elif kind == 2 and "=" in lines[k]:
        key, _, _ = lines[k].partition("=")
        lines[k] = f"{key}= {VALUES[int(rng.integers(len(VALUES)))]}"
    elif kind == 3 and "=" in lines[k]:
        key, _, val = lines[k].partition("=")
        key = key.strip()
        pos = int(rng.integers(max(len(key), 1)))
        lines[k] = key[:pos] + "x" + key[pos + 1:] + " =" + val
    elif kind == 4:
        nums = list(re.finditer(r"-?\d+(\.\d+)?(e-?\d+)?", lines[k]))
        if nums:
            m = nums[int(rng.integers(len(nums)))]
            lines[k] = lines[k][:m.start()] + VALUES[int(rng.integers(len(VALUES)))] + lines[k][m.end():]
    elif kind == 5:
        raw = "\n".join(lines).encode()
        cut = int(rng.integers(len(raw)))
        return raw[:cut]
    elif kind == 6:
        raw = bytearray("\n".join(lines).encode())
        raw[int(rng.integers(len(raw)))] = int(rng.integers(128, 256))
        return bytes(raw)
    else:
        lines.insert(k, f"[{'x' * int(rng.integers(1, 4))}]")
    return "\n".join(lines).encode()


@pytest.mark.parametrize("example", ["learn_crn_reference.toml", "learn_fe_reference.toml"])
def test_mutated_learn_configs_raise_only_config_errors(tmp_path, example):
    text = (EXAMPLES / example).read_text()
    rng = np.random.default_rng(20261130)
    path = tmp_path / "mutated.toml"
    outcomes = {"valid": 0, "rejected": 0}
    t0 = time.perf_counter()
    for case in range(N_CASES // 2):
        path.write_bytes(mutate(text, rng))
        try:
            LearnConfig.from_toml(path)
            outcomes["valid"] += 1
        except ConfigError as exc:
            assert "mutated.toml" in str(exc), (case, str(exc))
            outcomes["rejected"] += 1
        except Exception as exc:  # noqa: BLE001 - the point of the test
            pytest.fail(f"case {case}: {type(exc).__name__}: {exc}\n--- config ---\n{path.read_bytes()[:2000]!r}")
    assert outcomes["rejected"] > N_CASES // 8 and outcomes["valid"] > 0, outcomes
    assert time.perf_counter() - t0 < 120
