/* compute mmtp/grade: maxvol extrapolation grade of mmtp_rs. MIT licence, part of mmtp_rs. */
#ifndef LMP_COMPUTE_MMTP_GRADE_H
#define LMP_COMPUTE_MMTP_GRADE_H

#include "compute.h"
#include "mmtp_capi.h"

#include <string>
#include <vector>

namespace LAMMPS_NS {

class ComputeMMTPGrade : public Compute {
 public:
  ComputeMMTPGrade(class LAMMPS *, int, char **);
  ~ComputeMMTPGrade() override;
  void init() override;
  double compute_scalar() override;
  void compute_peratom() override;
  double memory_usage() override;

 private:
  MmtpActiveSet *aset;
  int m, neighborhood, scale_by_atoms, symmetrize;
  class PairMMTP *pair;
  double gamma_low, gamma_up, grade;
  std::string write_file;
  bigint last_step, last_written;
  int nmax;
  double *grades;
  std::vector<double> grad;

  void grade_all();
  void write_configuration();
};

}    // namespace LAMMPS_NS

#endif
