/* fix mmtp/moments: stage 1 (moments at fixed geometry) of mmtp_rs. MIT licence, part of mmtp_rs. */
#ifndef LMP_FIX_MMTP_MOMENTS_H
#define LMP_FIX_MMTP_MOMENTS_H

#include "fix.h"

#include <vector>

namespace LAMMPS_NS {

class FixMMTPMoments : public Fix {
 public:
  FixMMTPMoments(class LAMMPS *, int, char **);
  int setmask() override;
  void init() override;
  void setup_pre_force(int) override;
  void pre_force(int) override;
  double compute_vector(int) override;

 private:
  int period, maxiter, history;
  double tol, sign_threshold;
  class PairMMTP *pair;
  double stats[4];    // iterations, max projected gradient (eV/μB), energy change (eV), evaluations

  void stage1();
  double dot(const std::vector<double> &, const std::vector<double> &);
  double max_abs(const std::vector<double> &);
};

}    // namespace LAMMPS_NS

#endif
