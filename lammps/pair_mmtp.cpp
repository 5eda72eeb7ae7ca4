/* pair_style mmtp: magnetic Moment Tensor Potential of mmtp_rs. MIT licence, part of mmtp_rs.

   Energy, forces, virial and per-atom energy of an mMTP, spin-inversion symmetrised
   (E = (E(M) + E(-M))/2) by default or raw E(M) with the keyword `raw`. Collinear moments
   (μB) come from the per-atom property d_mag and magnetic forces -dE/dm (eV/μB) are written to
   d_tmag, both from `fix property/atom d_mag d_tmag ghost yes`. The site energies of the local
   atoms are evaluated by the Rust core from LAMMPS's full neighbour list (ghosts included);
   forces and dE/dm on ghost atoms are sent back to their owners (newton on). */

#include "pair_mmtp.h"

#include "atom.h"
#include "comm.h"
#include "compute.h"
#include "error.h"
#include "force.h"
#include "memory.h"
#include "modify.h"
#include "neigh_list.h"
#include "neighbor.h"
#include "update.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <mpi.h>

using namespace LAMMPS_NS;

static constexpr size_t ERRLEN = 1024;

PairMMTP::PairMMTP(LAMMPS *lmp) :
    Pair(lmp), model(nullptr), symmetrize(1), nparams(0), nspecies(0), cutoff(0.0), index_mag(-1), index_tmag(-1)
{
  single_enable = 0;
  restartinfo = 0;
  one_coeff = 1;
  manybody_flag = 1;
  no_virial_fdotr_compute = 1;
  centroidstressflag = CENTROID_NOTAVAIL;
  comm_forward = 1;
  comm_reverse = 1;
}

PairMMTP::~PairMMTP()
{
  mmtp_model_free(model);
  if (allocated) {
    memory->destroy(setflag);
    memory->destroy(cutsq);
  }
}

void PairMMTP::allocate()
{
  allocated = 1;
  int n = atom->ntypes + 1;
  memory->create(setflag, n, n, "pair:setflag");
  memory->create(cutsq, n, n, "pair:cutsq");
  for (int i = 0; i < n; i++)
    for (int j = 0; j < n; j++) setflag[i][j] = 0;
  map.assign(n, -1);
}

// pair_style mmtp POTENTIAL [raw]
void PairMMTP::settings(int narg, char **arg)
{
  if (narg < 1 || narg > 2) error->all(FLERR, "Illegal pair_style mmtp command: pair_style mmtp POTENTIAL [raw]");
  char err[ERRLEN] = {0};
  mmtp_model_free(model);
  model = mmtp_model_load(arg[0], err, ERRLEN);
  if (!model) error->all(FLERR, "pair_style mmtp: {}", err);
  mmtp_model_info(model, &cutoff, &nspecies, &nparams, &symmetrize);
  names.clear();
  for (int k = 0; k < nspecies; k++) {
    char buf[64] = {0};
    mmtp_model_species(model, k, buf, sizeof(buf));
    names.emplace_back(buf);
  }
  if (narg == 2) {
    if (strcmp(arg[1], "raw") == 0) symmetrize = 0;
    else if (strcmp(arg[1], "symmetrize") == 0) symmetrize = 1;
    else error->all(FLERR, "pair_style mmtp: unknown keyword {} (raw or symmetrize)", arg[1]);
  }
}

// pair_coeff * * SPECIES_OF_TYPE_1 SPECIES_OF_TYPE_2 ... (NULL: not handled)
void PairMMTP::coeff(int narg, char **arg)
{
  if (!allocated) allocate();
  int ntypes = atom->ntypes;
  if (narg != 2 + ntypes)
    error->all(FLERR, "pair_coeff * * needs one species name per atom type ({} types)", ntypes);
  if (strcmp(arg[0], "*") != 0 || strcmp(arg[1], "*") != 0)
    error->all(FLERR, "pair_style mmtp takes pair_coeff * * followed by species names");
  for (int t = 1; t <= ntypes; t++) {
    const char *s = arg[1 + t];
    map[t] = -1;
    if (strcmp(s, "NULL") == 0) continue;
    for (int k = 0; k < nspecies; k++)
      if (names[k] == s) map[t] = k;
    if (map[t] < 0) {
      std::string known;
      for (auto &n : names) known += " " + n;
      error->all(FLERR, "pair_coeff: species {} is not in the potential (species:{})", s, known);
    }
  }
  for (int i = 1; i <= ntypes; i++)
    for (int j = i; j <= ntypes; j++) setflag[i][j] = (map[i] >= 0 && map[j] >= 0) ? 1 : 0;
}

void PairMMTP::init_style()
{
  if (force->newton_pair == 0) error->all(FLERR, "pair_style mmtp requires newton pair on");
  if (!atom->tag_enable) error->all(FLERR, "pair_style mmtp requires atom IDs");
  neighbor->add_request(this, NeighConst::REQ_FULL);
  find_properties();
}

void PairMMTP::find_properties()
{
  int flag, cols, ghost;
  index_mag = atom->find_custom_ghost("mag", flag, cols, ghost);
  if (index_mag < 0 || flag != 1 || cols != 0)
    error->all(FLERR, "pair_style mmtp needs the per-atom moments d_mag: "
                      "fix ID all property/atom d_mag d_tmag ghost yes");
  if (!ghost) error->all(FLERR, "pair_style mmtp: d_mag must be defined with ghost yes");
  index_tmag = atom->find_custom_ghost("tmag", flag, cols, ghost);
  if (index_tmag < 0 || flag != 1 || cols != 0)
    error->all(FLERR, "pair_style mmtp needs d_tmag for the magnetic forces: "
                      "fix ID all property/atom d_mag d_tmag ghost yes");
}

double PairMMTP::init_one(int i, int j)
{
  if (setflag[i][j] == 0) error->all(FLERR, "All pair coeffs are not set");
  return cutoff;
}

double *PairMMTP::moments()
{
  return atom->dvector[index_mag];
}

void PairMMTP::moment_interval(int type, double &lo, double &hi) const
{
  mmtp_model_moment_interval(model, map[type], &lo, &hi);
}

void PairMMTP::forward_moments()
{
  comm->forward_comm(this);
}

int PairMMTP::pack_forward_comm(int n, int *list, double *buf, int /*pbc_flag*/, int * /*pbc*/)
{
  double *mag = moments();
  for (int i = 0; i < n; i++) buf[i] = mag[list[i]];
  return n;
}

void PairMMTP::unpack_forward_comm(int n, int first, double *buf)
{
  double *mag = moments();
  for (int i = 0; i < n; i++) mag[first + i] = buf[i];
}

int PairMMTP::pack_reverse_comm(int n, int first, double *buf)
{
  for (int i = 0; i < n; i++) buf[i] = dedm[first + i];
  return n;
}

void PairMMTP::unpack_reverse_comm(int n, int *list, double *buf)
{
  for (int i = 0; i < n; i++) dedm[list[i]] += buf[i];
}

// one call of the core on this rank's local atoms; forces into fbuf, dE/dm into dedm
// (ghost parts summed into their owners), site energies into site
void PairMMTP::evaluate(int want, int sym, double *grad, double *virial9)
{
  int nlocal = atom->nlocal;
  int nall = nlocal + atom->nghost;
  if (list->inum != nlocal) error->all(FLERR, "pair_style mmtp must act on all atoms (group all)");
  eval_count++;
  forward_moments();
  species.resize(nall);
  int *type = atom->type;
  for (int i = 0; i < nall; i++) {
    species[i] = map[type[i]];
    if (species[i] < 0) error->one(FLERR, "pair_style mmtp: atom type {} is not mapped to a species", type[i]);
  }
  site.resize(nlocal > 0 ? nlocal : 1);
  bool forces = want & MMTP_FORCES;
  if (forces) {
    fbuf.resize(3 * (size_t) nall + 1);
    dedm.resize(nall + 1);
  }
  char err[ERRLEN] = {0};
  int status = mmtp_compute(model, nlocal, nall, nall ? &atom->x[0][0] : nullptr, species.data(), moments(),
                            list->numneigh, list->firstneigh, NEIGHMASK, sym, want, site.data(),
                            forces ? fbuf.data() : nullptr, forces ? dedm.data() : nullptr, virial9, grad,
                            err, ERRLEN);
  if (status) error->one(FLERR, "pair_style mmtp: {}", err);
  if (forces) {
    comm->reverse_comm(this);
  }
}

void PairMMTP::compute(int eflag, int vflag)
{
  ev_init(eflag, vflag);
  double w[9] = {0};
  int nlocal = atom->nlocal;
  // a grade wanted on this step: its dE/dθ from the same evaluation as the forces
  Compute *gc = grade_id.empty() ? nullptr : modify->get_compute_by_id(grade_id);
  bool share = gc && grade_sym == symmetrize && gc->matchstep(update->ntimestep);
  int want = MMTP_FORCES;
  if (share) {
    want |= grade_per_atom ? MMTP_SITE_PARAM_GRAD : MMTP_PARAM_GRAD;
    gstash.resize(grade_per_atom ? (size_t) std::max(nlocal, 1) * nparams : (size_t) nparams);
  }
  evaluate(want, symmetrize, share ? gstash.data() : nullptr, w);
  if (share) {
    gstash_step = update->ntimestep;
    gstash_count = eval_count;
    gstash_nlocal = nlocal;
  }
  int nall = nlocal + atom->nghost;
  double **f = atom->f;
  for (int i = 0; i < nall; i++)
    for (int k = 0; k < 3; k++) f[i][k] += fbuf[3 * i + k];
  double *tmag = atom->dvector[index_tmag];
  for (int i = 0; i < nlocal; i++) tmag[i] = -dedm[i];
  if (eflag_global)
    for (int i = 0; i < nlocal; i++) eng_vdwl += site[i];
  if (eflag_atom)
    for (int i = 0; i < nlocal; i++) eatom[i] += site[i];
  if (vflag_global) {
    virial[0] += w[0];
    virial[1] += w[4];
    virial[2] += w[8];
    virial[3] += 0.5 * (w[1] + w[3]);
    virial[4] += 0.5 * (w[2] + w[6]);
    virial[5] += 0.5 * (w[5] + w[7]);
  }
  if (vflag_atom) error->all(FLERR, "pair_style mmtp does not compute per-atom virials");
}

double PairMMTP::moment_energy(double *tmag)
{
  double w[9];
  evaluate(MMTP_FORCES, symmetrize, nullptr, w);
  int nlocal = atom->nlocal;
  double e = 0.0, etot = 0.0;
  for (int i = 0; i < nlocal; i++) {
    e += site[i];
    tmag[i] = -dedm[i];
  }
  MPI_Allreduce(&e, &etot, 1, MPI_DOUBLE, MPI_SUM, world);
  return etot;
}

const double *PairMMTP::shared_param_gradient(int sym, bool per_atom) const
{
  bool current = gstash_count == eval_count && gstash_step == update->ntimestep && sym == grade_sym &&
      per_atom == grade_per_atom && gstash_nlocal == atom->nlocal;
  return current ? gstash.data() : nullptr;
}

void PairMMTP::param_gradient(int sym, bool per_atom, double *grad)
{
  evaluate(per_atom ? MMTP_SITE_PARAM_GRAD : MMTP_PARAM_GRAD, sym, grad, nullptr);
}

void PairMMTP::share_param_gradient(const std::string &compute_id, int sym, bool per_atom)
{
  grade_id = compute_id;
  grade_sym = sym;
  grade_per_atom = per_atom;
  gstash_count = -1;
}
