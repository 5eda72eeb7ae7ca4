"""The extension's allocator keeps large freed blocks for reuse (see
``mmtp_core::alloc``): reused blocks must never leak old contents into results,
and ``release_memory`` gives them back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from ase.build import bulk

import mmtp_rs

POT = Path(__file__).parent / "data" / "mlip3" / "mag_lev16_CrN.mtp"

SCRIPT = """
import json, sys
import numpy as np
from ase.build import bulk
import mmtp_rs
pot = mmtp_rs.Potential.from_file(sys.argv[1], species=["N", "Cr"])
a = bulk("CrN", "rocksalt", a=4.15, cubic=True).repeat((6, 6, 5))
rng = np.random.default_rng(3)
a.positions += 0.05 * rng.normal(size=a.positions.shape)
cr = np.array(a.get_chemical_symbols()) == "Cr"
a.set_initial_magnetic_moments(np.where(cr, 2.4, 0.0) * rng.choice([-1, 1], len(a)))
out = pot.evaluate(a, param_grad=True)
print(json.dumps({k: np.asarray(out[k]).tobytes().hex() for k in ("energies", "forces", "magnetic_forces", "stress",
                                                                  "param_gradient")}))
"""


def _run(env_extra: dict) -> dict:
    env = dict(os.environ, **env_extra)
    res = subprocess.run([sys.executable, "-c", SCRIPT, str(POT)], env=env, capture_output=True, text=True,
                         check=True)
    return json.loads(res.stdout)


def test_results_do_not_depend_on_the_block_cache():
    """The same 1440-atom evaluation (blocks well above the cache's threshold)
    with the cache off and on, and in process after the cache was filled by a
    larger cell and by the same cell, and after it was released: bit-identical."""
    off = _run({"MMTP_ALLOC_CACHE_MIB": "0"})
    on = _run({"MMTP_ALLOC_CACHE_MIB": "1024"})
    assert off == on

    pot = mmtp_rs.Potential.from_file(POT, species=["N", "Cr"])
    big = bulk("CrN", "rocksalt", a=4.15, cubic=True).repeat(6)  # blocks up to 20 % larger
    big.set_initial_magnetic_moments(np.where(np.array(big.get_chemical_symbols()) == "Cr", 2.0, 0.0))
    pot.evaluate(big, param_grad=True)  # leaves large blocks with other contents in the cache
    ns: dict = {}
    exec(SCRIPT.split("out = pot.evaluate")[0].replace("sys.argv[1]", repr(str(POT))), ns)
    a = ns["a"]
    pot.evaluate(a, param_grad=True)
    warm = pot.evaluate(a, param_grad=True)  # on blocks the same call has just filled
    released = mmtp_rs.release_memory()
    assert released > 0
    cold = pot.evaluate(a, param_grad=True)
    for k in ("energies", "forces", "magnetic_forces", "stress", "param_gradient"):
        assert np.asarray(warm[k]).tobytes().hex() == off[k], k
        assert np.asarray(cold[k]).tobytes().hex() == off[k], k
