/* compute ID all mmtp/grade ACTIVE_SET [write FILE] [gamma_low X] [gamma_up Y]
   MIT licence, part of mmtp_rs.

   Extrapolation grade max_j |(b A^-1)_j| of the current configuration against an active
   set written by mmtp_rs.lammps.write_active_set (A^-1 of mmtp_rs.ActiveSet):
   configuration mode: b = dE/dθ of the whole system (summed over ranks), divided by the
   number of atoms if the active set says so; every atom gets the configuration's grade;
   neighbourhood mode: one b per atom (dE_i/dθ of its site energy), per-atom grades, and
   the maximum over all atoms.
   Scalar: the grade (maximum). Per-atom vector: the per-atom grades.
   With `write FILE`, every configuration graded at gamma_low <= grade (default 2) is
   appended to FILE (extended XYZ with species, positions, initial_magmoms and per-atom
   grades; MV_grade and the timestep in the comment line); grades above gamma_up (default
   10) are written too, and a `fix halt` on the scalar stops the run there, e.g.
     variable g equal c_grade
     fix stop all halt 1 v_g > 10.0 error soft */

#include "compute_mmtp_grade.h"

#include "atom.h"
#include "comm.h"
#include "domain.h"
#include "error.h"
#include "force.h"
#include "memory.h"
#include "pair_mmtp.h"
#include "update.h"
#include "utils.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <mpi.h>

using namespace LAMMPS_NS;

static constexpr size_t ERRLEN = 1024;

ComputeMMTPGrade::ComputeMMTPGrade(LAMMPS *lmp, int narg, char **arg) :
    Compute(lmp, narg, arg), aset(nullptr), m(0), neighborhood(0), scale_by_atoms(1), symmetrize(1),
    pair(nullptr), gamma_low(2.0), gamma_up(10.0), grade(0.0), last_step(-1), last_written(-1), nmax(0),
    grades(nullptr)
{
  if (narg < 4) error->all(FLERR, "Illegal compute mmtp/grade command: compute ID all mmtp/grade ACTIVE_SET");
  char err[ERRLEN] = {0};
  aset = mmtp_aset_load(arg[3], err, ERRLEN);
  if (!aset) error->all(FLERR, "compute mmtp/grade: {}", err);
  mmtp_aset_info(aset, &m, &neighborhood, &scale_by_atoms, &symmetrize);
  for (int k = 4; k < narg; k += 2) {
    if (k + 1 >= narg) error->all(FLERR, "compute mmtp/grade: keyword {} needs a value", arg[k]);
    if (strcmp(arg[k], "write") == 0) write_file = arg[k + 1];
    else if (strcmp(arg[k], "gamma_low") == 0) gamma_low = utils::numeric(FLERR, arg[k + 1], false, lmp);
    else if (strcmp(arg[k], "gamma_up") == 0) gamma_up = utils::numeric(FLERR, arg[k + 1], false, lmp);
    else error->all(FLERR, "compute mmtp/grade: unknown keyword {}", arg[k]);
  }
  scalar_flag = 1;
  extscalar = 0;
  timeflag = 1;    // the pair style learns the steps this compute runs on, and computes dE/dθ with the forces
  peratom_flag = 1;
  size_peratom_cols = 0;
  if (!write_file.empty() && comm->me == 0) {    // start a fresh file
    FILE *fp = fopen(write_file.c_str(), "w");
    if (!fp) error->one(FLERR, "compute mmtp/grade: cannot open {}", write_file);
    fclose(fp);
  }
}

ComputeMMTPGrade::~ComputeMMTPGrade()
{
  mmtp_aset_free(aset);
  memory->destroy(grades);
}

void ComputeMMTPGrade::init()
{
  pair = dynamic_cast<PairMMTP *>(force->pair_match("mmtp", 1));
  if (!pair) error->all(FLERR, "compute mmtp/grade requires pair_style mmtp");
  if (pair->n_params() != m)
    error->all(FLERR, "compute mmtp/grade: the active set has {} rows, the potential {} parameters", m,
               pair->n_params());
  if (igroup != 0) error->all(FLERR, "compute mmtp/grade must use group all");
  pair->share_param_gradient(id, symmetrize, neighborhood != 0);
}

void ComputeMMTPGrade::grade_all()
{
  if (last_step == update->ntimestep) return;
  last_step = update->ntimestep;
  int nlocal = atom->nlocal;
  if (atom->nmax > nmax) {
    memory->destroy(grades);
    nmax = atom->nmax;
    memory->create(grades, nmax, "mmtp/grade:grades");
    vector_atom = grades;
  }
  char err[ERRLEN] = {0};
  double local_max = 0.0;
  if (neighborhood) {
    // the rows from the pair style's evaluation of this step when it made them
    const double *rows = pair->shared_param_gradient(symmetrize, true);
    if (!rows) {
      grad.resize((size_t) std::max(nlocal, 1) * m);
      pair->param_gradient(symmetrize, true, grad.data());
      rows = grad.data();
    }
    if (mmtp_aset_grades(aset, rows, nlocal, grades, err, ERRLEN))
      error->one(FLERR, "compute mmtp/grade: {}", err);
    for (int i = 0; i < nlocal; i++) local_max = std::max(local_max, grades[i]);
    MPI_Allreduce(&local_max, &grade, 1, MPI_DOUBLE, MPI_MAX, world);
  } else {
    const double *local = pair->shared_param_gradient(symmetrize, false);
    if (!local) {
      grad.resize(m);
      pair->param_gradient(symmetrize, false, grad.data());
      local = grad.data();
    }
    std::vector<double> total(m);
    MPI_Allreduce(local, total.data(), m, MPI_DOUBLE, MPI_SUM, world);
    if (scale_by_atoms && atom->natoms > 0)
      for (double &v : total) v /= (double) atom->natoms;
    if (mmtp_aset_grades(aset, total.data(), 1, &grade, err, ERRLEN))
      error->one(FLERR, "compute mmtp/grade: {}", err);
    for (int i = 0; i < nlocal; i++) grades[i] = grade;
  }
  if (!write_file.empty() && grade >= gamma_low && last_written != update->ntimestep) write_configuration();
}

double ComputeMMTPGrade::compute_scalar()
{
  invoked_scalar = update->ntimestep;
  grade_all();
  scalar = grade;
  return scalar;
}

void ComputeMMTPGrade::compute_peratom()
{
  invoked_peratom = update->ntimestep;
  grade_all();
}

// gather (tag, type, x, moment, grade) on rank 0 and append one extended-XYZ frame
void ComputeMMTPGrade::write_configuration()
{
  last_written = update->ntimestep;
  const int nv = 7;
  int nlocal = atom->nlocal;
  std::vector<double> mine((size_t) nlocal * nv);
  double *mag = pair->moments();
  for (int i = 0; i < nlocal; i++) {
    double *r = &mine[(size_t) i * nv];
    r[0] = (double) atom->tag[i];
    r[1] = atom->type[i];
    for (int k = 0; k < 3; k++) r[2 + k] = atom->x[i][k] - domain->boxlo[k];
    r[5] = mag[i];
    r[6] = grades[i];
  }
  int count = nlocal * nv, nprocs = comm->nprocs;
  std::vector<int> counts(nprocs), displs(nprocs);
  MPI_Gather(&count, 1, MPI_INT, counts.data(), 1, MPI_INT, 0, world);
  std::vector<double> all;
  if (comm->me == 0) {
    int total = 0;
    for (int p = 0; p < nprocs; p++) {
      displs[p] = total;
      total += counts[p];
    }
    all.resize(std::max(total, 1));
  }
  MPI_Gatherv(mine.data(), count, MPI_DOUBLE, all.data(), counts.data(), displs.data(), MPI_DOUBLE, 0, world);
  if (comm->me != 0) return;
  size_t n = all.size() / nv;
  std::vector<size_t> order(n);
  for (size_t i = 0; i < n; i++) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return all[a * nv] < all[b * nv]; });
  FILE *fp = fopen(write_file.c_str(), "a");
  if (!fp) error->one(FLERR, "compute mmtp/grade: cannot open {}", write_file);
  const double *h = domain->h;    // xprd yprd zprd yz xz xy
  fprintf(fp, "%zu\n", n);
  fprintf(fp,
          "Lattice=\"%.17g 0 0 %.17g %.17g 0 %.17g %.17g %.17g\" "
          "Properties=species:S:1:pos:R:3:initial_magmoms:R:1:nbh_grades:R:1 "
          "MV_grade=%.17g timestep=" BIGINT_FORMAT " pbc=\"%c %c %c\"\n",
          h[0], h[5], h[1], h[4], h[3], h[2], grade, update->ntimestep, domain->xperiodic ? 'T' : 'F',
          domain->yperiodic ? 'T' : 'F', domain->zperiodic ? 'T' : 'F');
  for (size_t k : order) {
    const double *r = &all[k * nv];
    fprintf(fp, "%s %.17g %.17g %.17g %.17g %.17g\n", pair->species_name((int) r[1]).c_str(), r[2], r[3], r[4],
            r[5], r[6]);
  }
  fclose(fp);
}

double ComputeMMTPGrade::memory_usage()
{
  return (double) nmax * sizeof(double) + (double) grad.size() * sizeof(double);
}
