"""ABINIT adapter: constrained-moment DFT labels.

Writes an ABINIT input with collinear spin (``nsppol 2``), per-atom target
moments (``spinat``) and the constraint variables ``constraint_kind``,
``ratsph``, ``ratsm`` and ``magcon_lambda``; runs ``abinit`` (optionally under
``mpirun -np k``) as a subprocess without a shell; parses the final variable
echo of the main output (``etotal``, ``fcart``, ``strten``, ``grspin``) and the
sphere-integrated moments; converts to eV, Å, μB.

Sign and units: ``grspin`` is +∂E/∂m in Ha/μB, so the magnetic force is
``T = −grspin_z · Ha`` (eV/μB). ``strten`` is in Ha/bohr³ with ASE's sign.

ABINIT-specific settings keep ABINIT's units: ``ecut``, ``pawecutdg`` and
``tsmear`` in Ha, ``ratsph`` in bohr.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers, chemical_symbols
from ase.units import Bohr, Hartree

from mmtp_rs.oracles.base import Oracle, OracleError, OracleOutput, OracleSetupError, OracleTimeout


__all__ = [
    "AbinitOracle",
    "AbinitResult",
    "parse_abinit_output",
    "write_abinit_input",
    "read_pseudo_header",
    "DEFAULT_PSP_DIR",
    "PSP_FAMILIES",
]

#: Debian's pseudopotential folder; override with MMTP_ABINIT_PSP_DIR.
DEFAULT_PSP_DIR = "/usr/share/abinit/psp"

#: Sub-folder and file pattern of the default pseudopotential of each family.
PSP_FAMILIES = {
    "nc": ("Pseudodojo_nc_sr_04_pw_standard_psp8", "{}.psp8"),  # PseudoDojo NC, LDA (PW92)
    "nc-pbe": ("Pseudodojo_nc_sr_04_pbe_standard_psp8", "{}.psp8"),
    "paw": ("Pseudodojo_paw_pbe_standard", "{}.xml"),  # JTH PAW, PBE
}

INPUT_NAME = "run.abi"
OUTPUT_NAME = "run.abo"
LOG_NAME = "run.log"


# ------------------------------------------------------------ pseudopotentials
def read_pseudo_header(path: str | Path) -> tuple[int, bool]:
    """Read the atomic number of a pseudopotential and whether it is PAW.

    Parameters
    ----------
    path : str or path
        A norm-conserving file (psp8, fhi, hgh, ...: the second line starts
        with ``zatom zion``) or a PAW dataset (XML or ABINIT PAW format).

    Returns
    -------
    (int, bool)
        Atomic number, True for PAW.

    Raises
    ------
    OracleSetupError
        If the file is missing, empty or its header cannot be read.
    """
    path = Path(path)
    if not path.is_file():
        raise OracleSetupError(f"pseudopotential file not found: {path}")
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096).decode("utf-8", errors="replace")
    except OSError as err:
        raise OracleSetupError(f"cannot read pseudopotential {path}: {err}") from err
    if not head.strip():
        raise OracleSetupError(f"pseudopotential {path} is empty")
    if "<paw_dataset" in head or head.lstrip().startswith("<?xml"):
        m = re.search(r'<atom\b[^>]*\bZ="\s*([0-9.]+)"', head)
        if not m or "<paw_dataset" not in head:
            raise OracleSetupError(f"pseudopotential {path}: malformed PAW XML header (no <atom Z=...>)")
        return int(round(float(m.group(1)))), True
    lines = head.splitlines()
    try:
        z = float(lines[1].split()[0])
        float(lines[1].split()[1])
    except (IndexError, ValueError):
        raise OracleSetupError(
            f"pseudopotential {path}: malformed header (line 2 should start with 'zatom zion')"
        ) from None
    if not (1 <= z <= 118 and abs(z - round(z)) < 1e-6):
        raise OracleSetupError(f"pseudopotential {path}: implausible atomic number {z}")
    # ABINIT's own PAW format has pspcod = 7 as the first number of line 3
    is_paw = "paw" in path.name.lower() or (len(lines) > 2 and lines[2].split()[:1] == ["7"])
    return int(round(z)), is_paw


# --------------------------------------------------------------------- parsing
@dataclass
class AbinitResult:
    """Raw results of one ABINIT run, in ABINIT units."""

    etotal: float  # Ha
    fcart: np.ndarray  # (N, 3) Ha/bohr
    strten: np.ndarray | None  # (6,) Ha/bohr³, Voigt 11 22 33 23 13 12
    grspin: np.ndarray | None  # (N, 3) Ha/μB, +∂E/∂m
    sphere_moments: np.ndarray | None  # (N,) μB, z moment in the ratsph spheres
    converged: bool
    completed: bool
    warnings: list[str] = field(default_factory=list)

    def to_output(self, constrained: bool = True) -> OracleOutput:
        """Convert to eV, Å, μB. ``constrained=False``: T is set to 0."""
        n = self.fcart.shape[0]
        if constrained:
            if self.grspin is None:
                raise OracleError("ABINIT output has no grspin (was the moment constrained?)")
            tmag = -self.grspin[:, 2] * Hartree
        else:
            tmag = np.zeros(n)
        return OracleOutput(
            energy=self.etotal * Hartree,
            forces=self.fcart * (Hartree / Bohr),
            stress=None if self.strten is None else self.strten * (Hartree / Bohr**3),
            magnetic_forces=tmag,
            moments=np.zeros(n) if self.sphere_moments is None else self.sphere_moments.copy(),
            converged=self.converged,
            message="; ".join(self.warnings),
        )


def _outvars(text: str) -> dict[str, list[float]]:
    """Variables of the final echo ("-outvars: ... after computation")."""
    start = text.rfind("-outvars: echo values of variables after computation")
    if start < 0:
        return {}
    block = text[start:].splitlines()[1:]
    values: dict[str, list[float]] = {}
    current = None
    for line in block:
        if line.startswith("====") or "- Timing analysis" in line:
            break
        tokens = line.split()
        if not tokens:
            continue
        if len(tokens) > 1 and tokens[0] in {"-", "P", "+", "*"} and tokens[1][0].isalpha():
            tokens = tokens[1:]
        if tokens[0][0].isalpha():
            current = tokens[0]
            tokens = tokens[1:]
            values[current] = []
        if current is None:
            continue
        for tok in tokens:
            try:
                values[current].append(float(tok.replace("D", "E").replace("d", "e")))
            except ValueError:
                pass  # units such as Bohr or Hartree
    return values


_SPHERE_HEADER = "Integrated electronic and magnetization densities in atomic spheres"


def _sphere_moments(text: str, natom: int) -> np.ndarray | None:
    start = text.rfind(_SPHERE_HEADER)
    if start < 0:
        return None
    lines = text[start:].splitlines()
    for k, line in enumerate(lines):
        if line.split()[:2] == ["Atom", "Radius"]:
            cols = line.split()
            col = cols.index("Diff(up-dn)")
            rows = lines[k + 1 : k + 1 + natom]
            try:
                out = np.array([float(r.split()[col]) for r in rows])
                idx = [int(r.split()[0]) for r in rows]
            except (ValueError, IndexError):
                return None
            if idx != list(range(1, natom + 1)):
                return None
            return out
    return None


def parse_abinit_output(path: str | Path, natom: int | None = None) -> AbinitResult:
    """Parse the main output file (``.abo``) of a ground-state run.

    Parameters
    ----------
    path : str or path
        The main output file.
    natom : int, optional
        Number of atoms (read from the file if omitted).

    Returns
    -------
    AbinitResult

    Raises
    ------
    OracleError
        If the file is missing or holds no final ``etotal``/``fcart``.
    """
    path = Path(path)
    try:
        text = path.read_text(errors="replace")
    except OSError as err:
        raise OracleError(f"cannot read ABINIT output {path}: {err}") from err
    v = _outvars(text)
    if "etotal" not in v or "fcart" not in v:
        raise OracleError(f"ABINIT output {path} has no final etotal/fcart (run crashed?)")
    if natom is None:
        natom = int(v["natom"][0]) if "natom" in v else len(v["fcart"]) // 3
    fcart = np.array(v["fcart"][: 3 * natom]).reshape(natom, 3)
    strten = np.array(v["strten"][:6]) if len(v.get("strten", [])) >= 6 else None
    grspin = np.array(v["grspin"][: 3 * natom]).reshape(natom, 3) if len(v.get("grspin", [])) >= 3 * natom else None
    warnings = []
    converged = True
    m = re.search(r"nstep=\s*(\d+)\s+was not enough SCF cycles to converge", text)
    if m:
        converged = False
        warnings.append(f"nstep={m.group(1)} was not enough SCF cycles to converge")
    completed = "Calculation completed" in text
    if not completed:
        converged = False
        warnings.append("ABINIT did not report 'Calculation completed'")
    return AbinitResult(
        etotal=float(v["etotal"][0]),
        fcart=fcart,
        strten=strten,
        grspin=grspin,
        sphere_moments=_sphere_moments(text, natom),
        converged=converged,
        completed=completed,
        warnings=warnings,
    )


# -------------------------------------------------------------------- oracle
def _fmt(x: float) -> str:
    return f"{float(x):.15e}"


class AbinitOracle(Oracle):
    """Constrained-moment DFT with ABINIT (≥ 9.6).

    Parameters
    ----------
    pseudopotentials : mapping of str to path, optional
        Pseudopotential per element; relative paths are taken in
        ``pseudo_dir``. Missing elements use the family default.
    pseudo_dir : path, optional
        Folder of pseudopotentials. Default: ``$MMTP_ABINIT_PSP_DIR`` or
        Debian's ``/usr/share/abinit/psp``.
    pseudo_family : {"nc", "nc-pbe", "paw"}
        Default files: PseudoDojo NC (LDA) ``.psp8``, PseudoDojo NC PBE, or
        JTH PAW PBE ``.xml`` (sub-folders of ``pseudo_dir``).
    ecut : float
        Plane-wave cutoff, Ha.
    pawecutdg : float, optional
        Fine-grid cutoff for PAW, Ha (default ``2 * ecut``).
    kpts : (int, int, int), optional
        Monkhorst-Pack grid. Default: from ``kspacing``.
    kspacing : float
        Largest k-point spacing, Å⁻¹ (2π included): ``n_i = ceil(|b_i| / kspacing)``.
    kshift : (float, float, float)
        Grid shift (``shiftk``).
    occopt, tsmear : int, float
        Occupation scheme and smearing (Ha). Default: Gaussian-like
        ``occopt 7`` with 0.01 Ha.
    ratsph : float or mapping
        Sphere radius per element for the moments, bohr (≥ the PAW radius).
    ratsm : float
        Smearing of the sphere edge, bohr.
    magcon_lambda : float
        Step of the constraint's Lagrange-multiplier update.
    constraint_kind : int or mapping
        Per element: 0 none, 1 value and sign (default), 2 direction,
        3 magnitude. Unconstrained atoms get T = 0.
    nstep, tolvrs : int, float
        SCF steps and tolerance on the potential residual.
    extra : mapping, optional
        Additional ABINIT variables written verbatim (``name: value``).
    executable : str
        The ABINIT program.
    mpi_procs : int, optional
        Run ``mpirun -np mpi_procs abinit`` (``mpirun`` configurable).
    relax_moments : bool
        Unconstrained (equilibrium) calculation: ``constraint_kind 0`` and
        ``spinat`` only as the starting guess; labels use the moments found
        and T = 0.
    max_attempts : int
        Attempts per job; retries use more SCF steps and gentler mixing
        (:meth:`attempt_settings`).
    timeout : float, optional
        Wall-time limit per attempt, seconds.
    """

    name = "abinit"

    def __init__(
        self,
        *,
        pseudopotentials: Mapping[str, str | Path] | None = None,
        pseudo_dir: str | Path | None = None,
        pseudo_family: str = "nc",
        ecut: float = 15.0,
        pawecutdg: float | None = None,
        kpts: Sequence[int] | None = None,
        kspacing: float = 0.25,
        kshift: Sequence[float] = (0.5, 0.5, 0.5),
        occopt: int = 7,
        tsmear: float = 0.01,
        ratsph: float | Mapping[str, float] = 2.0,
        ratsm: float = 0.05,
        magcon_lambda: float = 0.01,
        constraint_kind: int | Mapping[str, int] = 1,
        nstep: int = 100,
        tolvrs: float = 1e-10,
        extra: Mapping[str, Any] | None = None,
        executable: str = "abinit",
        mpi_procs: int | None = None,
        mpirun: str = "mpirun",
        relax_moments: bool = False,
        max_attempts: int = 3,
        timeout: float | None = None,
    ):
        super().__init__(relax_moments=relax_moments, max_attempts=max_attempts, timeout=timeout)
        if pseudo_family not in PSP_FAMILIES:
            raise ValueError(f"unknown pseudo_family {pseudo_family!r}; choose from {sorted(PSP_FAMILIES)}")
        self.pseudopotentials = {k: str(v) for k, v in (pseudopotentials or {}).items()}
        for el in self.pseudopotentials:
            if el not in atomic_numbers:
                raise ValueError(f"pseudopotentials: unknown element {el!r}")
        self.pseudo_dir = str(pseudo_dir or os.environ.get("MMTP_ABINIT_PSP_DIR") or DEFAULT_PSP_DIR)
        self.pseudo_family = pseudo_family
        for name, value in (("ecut", ecut), ("kspacing", kspacing), ("tsmear", tsmear),
                            ("tolvrs", tolvrs), ("ratsm", ratsm), ("magcon_lambda", magcon_lambda)):
            if not (np.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        self.ecut = float(ecut)
        self.pawecutdg = None if pawecutdg is None else float(pawecutdg)
        if kpts is not None:
            kpts = tuple(int(k) for k in kpts)
            if len(kpts) != 3 or min(kpts) < 1:
                raise ValueError(f"kpts must be three positive integers, got {kpts!r}")
        self.kpts = kpts
        self.kspacing = float(kspacing)
        self.kshift = tuple(float(x) for x in kshift)
        self.occopt = int(occopt)
        self.tsmear = float(tsmear)
        self.ratsph = ratsph if isinstance(ratsph, Mapping) else float(ratsph)
        self.ratsm = float(ratsm)
        self.magcon_lambda = float(magcon_lambda)
        self.constraint_kind = constraint_kind if isinstance(constraint_kind, Mapping) else int(constraint_kind)
        self.nstep = int(nstep)
        self.tolvrs = float(tolvrs)
        self.extra = dict(extra or {})
        self.executable = str(executable)
        self.mpi_procs = None if mpi_procs is None else int(mpi_procs)
        self.mpirun = str(mpirun)

    # ------------------------------------------------------------- settings
    def settings(self) -> dict[str, Any]:
        return {
            "pseudopotentials": dict(sorted(self.pseudopotentials.items())),
            "pseudo_dir": self.pseudo_dir,
            "pseudo_family": self.pseudo_family,
            "ecut": self.ecut,
            "pawecutdg": self.pawecutdg,
            "kpts": self.kpts,
            "kspacing": self.kspacing,
            "kshift": self.kshift,
            "occopt": self.occopt,
            "tsmear": self.tsmear,
            "ratsph": self.ratsph if not isinstance(self.ratsph, Mapping) else dict(self.ratsph),
            "ratsm": self.ratsm,
            "magcon_lambda": self.magcon_lambda,
            "constraint_kind": self.constraint_kind
            if not isinstance(self.constraint_kind, Mapping)
            else dict(self.constraint_kind),
            "tolvrs": self.tolvrs,
            "extra": {k: str(v) for k, v in self.extra.items()},
        }

    def attempt_settings(self, attempt: int) -> dict[str, Any] | None:
        """Retry ladder: more SCF steps and gentler density mixing.

        Only SCF algorithm settings change, never the physics (cutoff,
        smearing, k-points), so every attempt gives the same labels.
        """
        ladder = [
            {},
            {"nstep": 2 * self.nstep, "diemix": 0.5},
            {"nstep": 4 * self.nstep, "diemix": 0.25, "diemac": 5.0},
        ]
        if attempt < len(ladder):
            return ladder[attempt]
        return {"nstep": (attempt + 1) * self.nstep, "diemix": 0.2, "diemac": 5.0}

    def pseudo_path(self, element: str) -> Path:
        """Path of the pseudopotential used for ``element``."""
        if element in self.pseudopotentials:
            p = Path(self.pseudopotentials[element])
            return p if p.is_absolute() else Path(self.pseudo_dir) / p
        sub, pattern = PSP_FAMILIES[self.pseudo_family]
        return Path(self.pseudo_dir) / sub / pattern.format(element)

    def _species(self, atoms: Atoms) -> list[str]:
        seen: list[str] = []
        for s in atoms.get_chemical_symbols():
            if s not in seen:
                seen.append(s)
        return seen

    def _pseudos(self, atoms: Atoms) -> tuple[list[Path], bool]:
        paths, kinds = [], []
        symbols = atoms.get_chemical_symbols()
        for el in self._species(atoms):
            path = self.pseudo_path(el)
            if not path.is_file():
                raise OracleSetupError(
                    f"no pseudopotential for element {el!r} (atom {symbols.index(el)}): "
                    f"{path} does not exist; pass pseudopotentials={{'{el}': ...}} or set "
                    f"MMTP_ABINIT_PSP_DIR"
                )
            z, is_paw = read_pseudo_header(path)
            if z != atomic_numbers[el]:
                raise OracleSetupError(
                    f"pseudopotential {path} is for Z={z} ({chemical_symbols[z]}), "
                    f"but is given for element {el!r}"
                )
            paths.append(path)
            kinds.append(is_paw)
        if len(set(kinds)) > 1:
            raise OracleSetupError("cannot mix PAW and norm-conserving pseudopotentials")
        return paths, bool(kinds and kinds[0])

    def validate(self, configurations: Sequence[Atoms]) -> None:
        """Check the program, pseudopotentials and geometry of a batch."""
        if shutil.which(self.executable) is None:
            raise OracleSetupError(
                f"ABINIT executable {self.executable!r} not found on PATH "
                "(Debian/Ubuntu: apt-get install abinit abinit-data)"
            )
        if self.mpi_procs and shutil.which(self.mpirun) is None:
            raise OracleSetupError(f"MPI launcher {self.mpirun!r} not found on PATH")
        for k, atoms in enumerate(configurations):
            try:
                self._check_atoms(atoms)
                self._pseudos(atoms)
            except OracleSetupError as err:
                raise OracleSetupError(f"configuration {k}: {err}") from None

    @staticmethod
    def _check_atoms(atoms: Atoms) -> None:
        for k, s in enumerate(atoms.get_chemical_symbols()):
            if s not in atomic_numbers or atomic_numbers[s] == 0:
                raise OracleSetupError(f"unknown element {s!r} (atom {k})")
        if not atoms.pbc.all():
            raise OracleSetupError("ABINIT needs a 3-D periodic cell (pbc all True)")
        if atoms.cell.volume <= 1e-8 or np.linalg.det(atoms.cell.array) <= 0:
            raise OracleSetupError("the cell must be right-handed with positive volume")
        m = atoms.get_initial_magnetic_moments()
        if m.ndim != 1:
            raise OracleSetupError("moments must be collinear (one number per atom)")
        bad = np.flatnonzero(~np.isfinite(m))
        if bad.size:
            raise OracleSetupError(f"moment of atom {bad[0]} is not finite")

    def kpoint_grid(self, atoms: Atoms) -> tuple[int, int, int]:
        """Monkhorst-Pack grid: ``kpts`` or from ``kspacing``."""
        if self.kpts is not None:
            return self.kpts
        b = 2 * np.pi * np.linalg.norm(np.linalg.inv(atoms.cell.array).T, axis=1)
        return tuple(max(1, int(np.ceil(x / self.kspacing - 1e-9))) for x in b)

    def make_input(self, atoms: Atoms, overrides: Mapping[str, Any] | None = None) -> str:
        """ABINIT input text for one configuration.

        Parameters
        ----------
        atoms : ase.Atoms
            Configuration; initial magnetic moments are the targets (μB).
        overrides : mapping, optional
            Variables that replace defaults (retry settings).
        """
        self._check_atoms(atoms)
        overrides = dict(overrides or {})
        species = self._species(atoms)
        pseudos, is_paw = self._pseudos(atoms)
        symbols = atoms.get_chemical_symbols()
        typat = [species.index(s) + 1 for s in symbols]
        moments = atoms.get_initial_magnetic_moments()

        def per_type(value, name):
            if isinstance(value, Mapping):
                missing = [s for s in species if s not in value]
                if missing:
                    raise OracleSetupError(f"{name} has no value for element {missing[0]!r}")
                return [value[s] for s in species]
            return [value] * len(species)

        kinds = [0] * len(species) if self.relax_moments else per_type(self.constraint_kind, "constraint_kind")
        ratsph = per_type(self.ratsph, "ratsph")
        cell_bohr = atoms.cell.array / Bohr
        xred = atoms.get_scaled_positions(wrap=False)
        v: dict[str, str] = {}
        v["natom"] = str(len(atoms))
        v["ntypat"] = str(len(species))
        v["znucl"] = " ".join(str(atomic_numbers[s]) for s in species)
        v["typat"] = " ".join(map(str, typat))
        v["acell"] = "3*1.0"
        v["rprim"] = "\n" + "\n".join("  " + " ".join(_fmt(x) for x in row) for row in cell_bohr)
        v["xred"] = "\n" + "\n".join("  " + " ".join(_fmt(x) for x in row) for row in xred)
        v["pseudos"] = '"' + ", ".join(str(p.resolve()) for p in pseudos) + '"'
        v["nsppol"] = "2"
        v["nspden"] = "2"
        v["spinat"] = "\n" + "\n".join(f"  0 0 {_fmt(m)}" for m in moments)
        v["constraint_kind"] = " ".join(str(int(k)) for k in kinds)
        v["ratsph"] = " ".join(_fmt(r) for r in ratsph)
        v["ratsm"] = _fmt(self.ratsm)
        v["magcon_lambda"] = _fmt(overrides.pop("magcon_lambda", self.magcon_lambda))
        v["ecut"] = _fmt(self.ecut)
        if is_paw:
            v["pawecutdg"] = _fmt(self.pawecutdg or 2.0 * self.ecut)
            v["iscf"] = "7"
        v["ngkpt"] = " ".join(map(str, self.kpoint_grid(atoms)))
        v["nshiftk"] = "1"
        v["shiftk"] = " ".join(_fmt(x) for x in self.kshift)
        v["occopt"] = str(self.occopt)
        v["tsmear"] = _fmt(self.tsmear)
        v["nstep"] = str(int(overrides.pop("nstep", self.nstep)))
        v["tolvrs"] = _fmt(self.tolvrs)
        v["optforces"] = "1"
        v["optstress"] = "1"
        v["chkprim"] = "0"
        v["chksymbreak"] = "0"
        v["prtwf"] = "0"
        v["prtden"] = "0"
        v["prteig"] = "0"
        v["prtebands"] = "0"
        for key, value in {**self.extra, **overrides}.items():
            v[str(key)] = str(value)
        lines = ["# ABINIT input written by mmtp_rs (constrained moments)"]
        lines += [k + ("" if val.startswith("\n") else " ") + val for k, val in v.items()]
        return "\n".join(lines) + "\n"

    def command(self) -> list[str]:
        """The command line (no shell) that runs ABINIT on the input file."""
        cmd = [self.executable, INPUT_NAME]
        if self.mpi_procs:
            cmd = [self.mpirun, "-np", str(self.mpi_procs)] + cmd
        return cmd

    def compute(self, atoms: Atoms, directory: Path, overrides: dict[str, Any]) -> OracleOutput:
        directory = Path(directory)
        if directory.exists():
            shutil.rmtree(directory)  # stale files of an interrupted attempt
        directory.mkdir(parents=True)
        (directory / INPUT_NAME).write_text(self.make_input(atoms, overrides))
        cmd = self.command()
        try:
            with open(directory / LOG_NAME, "w") as log:
                proc = subprocess.run(
                    cmd, cwd=directory, stdout=log, stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL, timeout=self.timeout, check=False,
                )
        except FileNotFoundError as err:
            raise OracleSetupError(f"cannot run {cmd[0]!r}: {err}") from err
        except subprocess.TimeoutExpired:
            raise OracleTimeout(f"ABINIT exceeded {self.timeout} s in {directory}") from None
        out_path = directory / OUTPUT_NAME
        if proc.returncode != 0 or not out_path.is_file():
            raise OracleError(
                f"ABINIT exited with code {proc.returncode} in {directory}: {self._log_errors(directory)}"
            )
        try:
            res = parse_abinit_output(out_path, natom=len(atoms))
        except OracleError as err:
            raise OracleError(f"{err}: {self._log_errors(directory)}") from None
        return res.to_output(constrained=not self.relax_moments)

    @staticmethod
    def _log_errors(directory: Path) -> str:
        try:
            text = (directory / LOG_NAME).read_text(errors="replace")
        except OSError:
            return "no log"
        errs = [ln.strip() for ln in text.splitlines() if "ERROR" in ln or "BUG" in ln]
        k = text.rfind("ERROR")
        detail = text[k : k + 600].strip() if k >= 0 else "\n".join(text.splitlines()[-15:])
        return (errs[0] + " | " if errs else "") + detail


def write_abinit_input(atoms: Atoms, path: str | Path, oracle: AbinitOracle | None = None,
                       overrides: Mapping[str, Any] | None = None) -> Path:
    """Write the ABINIT input of ``atoms`` to ``path`` (default settings if no oracle).

    Returns
    -------
    pathlib.Path
        The written file.
    """
    oracle = oracle or AbinitOracle()
    path = Path(path)
    path.write_text(oracle.make_input(atoms, overrides))
    return path
