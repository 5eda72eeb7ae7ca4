/* pair_style mmtp: magnetic Moment Tensor Potential of mmtp_rs. MIT licence, part of mmtp_rs. */
#ifndef LMP_PAIR_MMTP_H
#define LMP_PAIR_MMTP_H

#include "mmtp_capi.h"
#include "pair.h"

#include <string>
#include <vector>

namespace LAMMPS_NS {

class PairMMTP : public Pair {
 public:
  PairMMTP(class LAMMPS *);
  ~PairMMTP() override;
  void compute(int, int) override;
  void settings(int, char **) override;
  void coeff(int, char **) override;
  void init_style() override;
  double init_one(int, int) override;
  int pack_forward_comm(int, int *, double *, int, int *) override;    // moments to ghosts
  void unpack_forward_comm(int, int, double *) override;
  int pack_reverse_comm(int, int, double *) override;    // dE/dm of ghosts to owners
  void unpack_reverse_comm(int, int *, double *) override;

  // for fix mmtp/moments and compute mmtp/grade
  double *moments();                      // d_mag of local and ghost atoms (μB)
  double moment_energy(double *tmag);     // global E at the current moments; tmag = -dE/dm of local atoms
  void param_gradient(int symmetrize, bool per_atom, double *grad);    // local dE/dθ (summed or per atom)
  // compute mmtp/grade asks for dE/dθ with the forces on the steps it will be invoked on
  void share_param_gradient(const std::string &compute_id, int symmetrize, bool per_atom);
  // that dE/dθ if it was computed with this step's forces and is still current, else nullptr
  const double *shared_param_gradient(int symmetrize, bool per_atom) const;
  int n_params() const { return nparams; }
  void moment_interval(int type, double &lo, double &hi) const;       // of a LAMMPS type
  const std::string &species_name(int type) const { return names[map[type]]; }

 private:
  MmtpModel *model;
  int symmetrize, nparams, nspecies;
  double cutoff;
  std::vector<int> map;                  // LAMMPS type -> species index (-1: not mapped)
  std::vector<std::string> names;        // species of the potential
  std::vector<int> species;              // species of local + ghost atoms
  std::vector<double> fbuf, dedm, site;  // per-call buffers
  int index_mag, index_tmag;
  // dE/dθ computed with the forces for compute mmtp/grade: valid while no other
  // evaluation came after it on the same step
  std::string grade_id;
  int grade_sym = 0;
  bool grade_per_atom = false;
  std::vector<double> gstash;
  bigint gstash_step = -1;
  long eval_count = 0, gstash_count = -1;
  int gstash_nlocal = -1;

  void allocate();
  void find_properties();
  void forward_moments();
  void evaluate(int want, int sym, double *grad, double *virial9);
};

}    // namespace LAMMPS_NS

#endif
