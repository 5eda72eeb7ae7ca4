/* C interface of the Rust core (rust/mmtp-lammps). MIT licence, part of mmtp_rs. */
#ifndef MMTP_CAPI_H
#define MMTP_CAPI_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct Model MmtpModel;
typedef struct ActiveSet MmtpActiveSet;

/* potential file written by mmtp_rs.lammps.write_potential; NULL + message on failure */
MmtpModel *mmtp_model_load(const char *path, char *err, size_t errlen);
void mmtp_model_free(MmtpModel *m);
void mmtp_model_info(const MmtpModel *m, double *cutoff, int *n_species, int *n_params, int *symmetrize);
int mmtp_model_species(const MmtpModel *m, int k, char *buf, size_t len);
void mmtp_model_moment_interval(const MmtpModel *m, int k, double *lo, double *hi);

/* bits of `want` */
enum { MMTP_FORCES = 1, MMTP_PARAM_GRAD = 2, MMTP_SITE_PARAM_GRAD = 4 };

/* local atoms of one rank from their full neighbour list; 0 on success */
int mmtp_compute(const MmtpModel *m, int nlocal, int nall, const double *x, const int *species,
                 const double *mag, const int *numneigh, const int *const *firstneigh, int mask,
                 int symmetrize, int want, double *eatom, double *f, double *dedm, double *virial,
                 double *grad, char *err, size_t errlen);

/* active set written by mmtp_rs.lammps.write_active_set */
MmtpActiveSet *mmtp_aset_load(const char *path, char *err, size_t errlen);
void mmtp_aset_free(MmtpActiveSet *a);
void mmtp_aset_info(const MmtpActiveSet *a, int *m, int *neighborhood, int *scale_by_atoms, int *symmetrize);
int mmtp_aset_grades(const MmtpActiveSet *a, const double *rows, int k, double *out, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif

#endif
