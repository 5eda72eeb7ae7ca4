"""Seeded mutation fuzzing of the file readers, one batch of cases per process.

``python fuzz_worker.py FORMAT FIRST COUNT WORKDIR`` runs cases FIRST ..
FIRST + COUNT - 1 of FORMAT (``mtp``, ``json`` or ``cfg``): each case mutates
a valid file with a generator seeded by (FORMAT, case), reads it and, if it
loads, evaluates a small structure. It prints one JSON line: the number of
cases, how many loaded, and every case that raised anything but the
package's own exceptions or returned a non-finite result. Before each case it
writes the case number to stderr, so a crash (abort, panic across the FFI)
names its case. Used by ``test_fuzz_readers.py``; run by hand to replay a case.
"""

from __future__ import annotations

import json
import random
import re
import sys
import traceback
from pathlib import Path

import numpy as np
from ase import Atoms

DATA = Path(__file__).resolve().parent / "data" / "mlip3"

# replacement values for numbers: huge, tiny, negative, non-finite, non-integer, not a number
NASTY = ["1e308", "-1e308", "1e100", "-1e100", "6.7e98", "1e-400", "nan", "NaN", "inf", "-inf", "1.5", "-1", "0",
         "-0", "2.5e-7", "9223372036854775808", "18446744073709551617", "1000000000", "200", "1e6", "",
         "true", "null", "x", "1" * 5000, "0x10", "1_000", "\u0661"]
_NUMBER = re.compile(rb"-?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?")


def base_file(fmt: str, workdir: Path) -> bytes:
    """The valid file each case of ``fmt`` starts from."""
    if fmt == "mtp":
        return (DATA / "mag_lev8_Fe.mtp").read_bytes()
    if fmt == "cfg":
        return (DATA / "mag_lev8_Fe.cfg").read_bytes()
    from mmtp_rs import Potential

    path = workdir / "base.json"
    Potential.new(["Fe", "Al"], level=6, radial_basis_size=4, magnetic_basis_size=2, min_dist=1.9,
                  max_dist=4.5, max_moment={"Fe": 3.0, "Al": 0.5}, seed=3).save(path)
    return path.read_bytes()


def mutate(data: bytes, rng: random.Random) -> bytes:
    """Apply one to three random mutations."""
    for _ in range(rng.choice((1, 1, 2, 3))):
        lines = data.split(b"\n")
        op = rng.randrange(9)
        if op <= 2:  # replace a number (the most productive mutation: three times as likely)
            nums = list(_NUMBER.finditer(data))
            if nums:
                m = rng.choice(nums)
                data = data[:m.start()] + rng.choice(NASTY).encode() + data[m.end():]
        elif op == 3 and data:  # flip a byte
            k = rng.randrange(len(data))
            data = data[:k] + bytes([data[k] ^ (1 << rng.randrange(8))]) + data[k + 1:]
        elif op == 4 and len(lines) > 1:  # delete a line
            del lines[rng.randrange(len(lines))]
            data = b"\n".join(lines)
        elif op == 5:  # duplicate a line
            k = rng.randrange(len(lines))
            lines.insert(k, lines[k])
            data = b"\n".join(lines)
        elif op == 6:  # truncate
            data = data[:rng.randrange(len(data) + 1)]
        elif op == 7:  # insert bytes that are not UTF-8
            k = rng.randrange(len(data) + 1)
            data = data[:k] + rng.choice((b"\xff", b"\xc3\x28", b"\x80\x80", b"\xed\xa0\x80")) + data[k:]
        else:  # swap two lines
            i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
            data = b"\n".join(lines)
    return data


def case_bytes(fmt: str, case: int, base: bytes) -> bytes:
    return mutate(base, random.Random(f"{fmt}:{case}"))


def probe_atoms(n_species: int) -> Atoms:
    """A small periodic cell with one atom of the first and one of the last species."""
    a = Atoms("Fe2", positions=[[0, 0, 0], [1.43, 1.44, 1.45]], cell=np.diag([2.87, 2.88, 2.89]), pbc=True)
    a.arrays["mlip_type"] = np.array([0, n_species - 1])
    a.set_initial_magnetic_moments([0.2, -0.1])
    return a


def check_finite(out: dict) -> str | None:
    for key in ("energy", "forces", "stress", "magnetic_forces"):
        if key in out and not np.all(np.isfinite(out[key])):
            return f"non-finite {key} without an exception"
    return None


def run_case(fmt: str, path: Path, good_potential) -> tuple[bool, str | None]:
    """(loaded, problem): problem is None unless the case shows a bug."""
    import mmtp_rs
    from mmtp_rs import CfgFormatError, MMTPError, MtpFormatError, Potential

    allowed = (MMTPError, MtpFormatError, CfgFormatError)
    try:
        if fmt == "cfg":
            images = mmtp_rs.read_cfg(path, species=["Fe"])
            loaded = True
            outs = [good_potential.evaluate(a) for a in images]
        else:
            pot = Potential.from_file(path)
            loaded = True
            outs = [pot.evaluate(probe_atoms(pot.n_species))]
    except allowed:
        return False, None
    except Exception as exc:  # noqa: BLE001 - anything else is what the fuzzer looks for
        tb = traceback.extract_tb(exc.__traceback__)[-1]
        return False, f"{type(exc).__name__}: {str(exc)[:200]} (at {Path(tb.filename).name}:{tb.lineno})"
    for out in outs:
        problem = check_finite(out)
        if problem:
            return loaded, problem
    return loaded, None


def main(argv: list[str]) -> None:
    fmt, first, count, workdir = argv[0], int(argv[1]), int(argv[2]), Path(argv[3])
    import mmtp_rs

    workdir.mkdir(parents=True, exist_ok=True)
    base = base_file(fmt, workdir)
    good = mmtp_rs.Potential.from_file(DATA / "mag_lev8_Fe.mtp", species=["Fe"])
    path = workdir / f"case.{fmt}"
    loaded, bad = 0, []
    for case in range(first, first + count):
        sys.stderr.write(f"case {case}\n")
        sys.stderr.flush()
        path.write_bytes(case_bytes(fmt, case, base))
        ok, problem = run_case(fmt, path, good)
        loaded += ok
        if problem:
            bad.append({"case": case, "problem": problem})
    print(json.dumps({"cases": count, "loaded": loaded, "bad": bad}))


if __name__ == "__main__":
    main(sys.argv[1:])
