/* fix ID group mmtp/moments N tol maxiter [sign_threshold S] [history H]
   MIT licence, part of mmtp_rs.

   Stage 1 every N steps (and at the start of a run): minimise the potential energy of
   pair_style mmtp over the collinear moments d_mag at fixed geometry, with the rule of
   mmtp_rs.magnetic.equilibrate_moments: every moment of the group is free inside
   [-M_max, M_max] of its species (M_max = upper end of the species' magnetic interval), a
   moment starting at |m| >= S (default 0.5 μB) keeps its sign, atoms outside the group keep
   their moment. Converged when the largest projected gradient |P(m - dE/dm) - m| is at most
   tol (eV/μB), as scipy's L-BFGS-B measures it.

   The minimiser is a projected L-BFGS with a backtracking (Armijo) line search: the
   quasi-Newton direction is built on the variables not held at a bound, every dot product is
   a global MPI reduction, so all ranks take the same steps and the result does not depend on
   the domain decomposition beyond round-off. */

#include "fix_mmtp_moments.h"

#include "atom.h"
#include "error.h"
#include "force.h"
#include "pair_mmtp.h"
#include "update.h"
#include "utils.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <deque>
#include <mpi.h>

using namespace LAMMPS_NS;
using namespace FixConst;

FixMMTPMoments::FixMMTPMoments(LAMMPS *lmp, int narg, char **arg) :
    Fix(lmp, narg, arg), period(1), maxiter(500), history(10), tol(1e-5), sign_threshold(0.5), pair(nullptr),
    stats{0, 0, 0, 0}
{
  if (narg < 6) error->all(FLERR, "Illegal fix mmtp/moments command: fix ID group mmtp/moments N tol maxiter");
  period = utils::inumeric(FLERR, arg[3], false, lmp);
  tol = utils::numeric(FLERR, arg[4], false, lmp);
  maxiter = utils::inumeric(FLERR, arg[5], false, lmp);
  for (int k = 6; k < narg; k += 2) {
    if (k + 1 >= narg) error->all(FLERR, "fix mmtp/moments: keyword {} needs a value", arg[k]);
    if (strcmp(arg[k], "sign_threshold") == 0) sign_threshold = utils::numeric(FLERR, arg[k + 1], false, lmp);
    else if (strcmp(arg[k], "history") == 0) history = utils::inumeric(FLERR, arg[k + 1], false, lmp);
    else error->all(FLERR, "fix mmtp/moments: unknown keyword {}", arg[k]);
  }
  if (period < 1 || !(tol > 0) || maxiter < 1 || history < 1 || sign_threshold < 0)
    error->all(FLERR, "fix mmtp/moments: need N >= 1, tol > 0, maxiter >= 1, history >= 1, sign_threshold >= 0");
  vector_flag = 1;
  size_vector = 4;
  global_freq = 1;
  extvector = 0;
}

int FixMMTPMoments::setmask()
{
  return PRE_FORCE;
}

void FixMMTPMoments::init()
{
  pair = dynamic_cast<PairMMTP *>(force->pair_match("mmtp", 1));
  if (!pair) error->all(FLERR, "fix mmtp/moments requires pair_style mmtp");
}

void FixMMTPMoments::setup_pre_force(int)
{
  if (update->ntimestep % period == 0) stage1();
}

void FixMMTPMoments::pre_force(int)
{
  if (update->ntimestep % period == 0) stage1();
}

double FixMMTPMoments::compute_vector(int k)
{
  return stats[k];
}

double FixMMTPMoments::dot(const std::vector<double> &a, const std::vector<double> &b)
{
  double s = 0.0, t = 0.0;
  for (size_t i = 0; i < a.size(); i++) s += a[i] * b[i];
  MPI_Allreduce(&s, &t, 1, MPI_DOUBLE, MPI_SUM, world);
  return t;
}

double FixMMTPMoments::max_abs(const std::vector<double> &a)
{
  double s = 0.0, t = 0.0;
  for (double v : a) s = std::max(s, std::fabs(v));
  MPI_Allreduce(&s, &t, 1, MPI_DOUBLE, MPI_MAX, world);
  return t;
}

void FixMMTPMoments::stage1()
{
  const int n = atom->nlocal;
  int *mask = atom->mask;
  int *type = atom->type;
  double *mag = pair->moments();
  std::vector<double> lo(n), hi(n), x(n), g(n), t(n), pg(n), d(n), xn(n), gn(n), q(n), step(n);
  for (int i = 0; i < n; i++) {
    double m0 = mag[i];
    if (!(mask[i] & groupbit)) {
      lo[i] = hi[i] = m0;
    } else {
      double l, h;
      pair->moment_interval(type[i], l, h);
      lo[i] = -h;
      hi[i] = h;
      if (std::fabs(m0) >= sign_threshold) (m0 > 0 ? lo[i] : hi[i]) = 0.0;
    }
    x[i] = std::min(std::max(m0, lo[i]), hi[i]);
  }
  auto evaluate = [&](const std::vector<double> &xx, std::vector<double> &grad) {
    for (int i = 0; i < n; i++) mag[i] = xx[i];
    double e = pair->moment_energy(t.data());
    for (int i = 0; i < n; i++) grad[i] = -t[i];
    stats[3] += 1;
    return e;
  };
  auto project = [&](int i, double v) { return std::min(std::max(v, lo[i]), hi[i]); };
  stats[0] = stats[2] = stats[3] = 0;
  double e = evaluate(x, g);
  const double e0 = e;
  std::deque<std::vector<double>> S, Y;
  std::deque<double> rho;
  int it = 0;
  double pgmax = 0.0;
  for (;; it++) {
    for (int i = 0; i < n; i++) pg[i] = project(i, x[i] - g[i]) - x[i];
    pgmax = max_abs(pg);
    if (pgmax <= tol || it >= maxiter) break;
    // direction: L-BFGS on the variables not held at a bound
    for (int i = 0; i < n; i++) {
      bool held = lo[i] == hi[i] || (x[i] <= lo[i] && g[i] > 0) || (x[i] >= hi[i] && g[i] < 0);
      q[i] = held ? 0.0 : g[i];
    }
    std::vector<double> alpha(S.size());
    for (int k = (int) S.size() - 1; k >= 0; k--) {
      alpha[k] = rho[k] * dot(S[k], q);
      for (int i = 0; i < n; i++) q[i] -= alpha[k] * Y[k][i];
    }
    double gamma = S.empty() ? std::min(1.0, 0.1 / std::max(max_abs(g), 1e-300))
                             : dot(S.back(), Y.back()) / dot(Y.back(), Y.back());
    for (int i = 0; i < n; i++) q[i] *= gamma;
    for (size_t k = 0; k < S.size(); k++) {
      double beta = rho[k] * dot(Y[k], q);
      for (int i = 0; i < n; i++) q[i] += S[k][i] * (alpha[k] - beta);
    }
    for (int i = 0; i < n; i++) {
      bool held = lo[i] == hi[i] || (x[i] <= lo[i] && g[i] > 0) || (x[i] >= hi[i] && g[i] < 0);
      d[i] = held ? 0.0 : -q[i];
    }
    if (dot(g, d) >= 0) {    // not a descent direction: restart from the scaled gradient
      S.clear();
      Y.clear();
      rho.clear();
      double s = std::min(1.0, 0.1 / std::max(max_abs(pg), 1e-300));
      for (int i = 0; i < n; i++) d[i] = s * pg[i];
    }
    // projected backtracking line search (Armijo, with room for the round-off of E)
    double a = 1.0, en = e;
    bool accepted = false;
    for (int ls = 0; ls < 40 && !accepted; ls++, a *= 0.5) {
      for (int i = 0; i < n; i++) {
        xn[i] = project(i, x[i] + a * d[i]);
        step[i] = xn[i] - x[i];
      }
      double decrease = dot(g, step);
      if (max_abs(step) == 0.0) break;
      en = evaluate(xn, gn);
      accepted = en <= e + 1e-4 * decrease + 1e-13 * std::fabs(e);
    }
    if (!accepted) break;    // no further progress possible at this precision
    for (int i = 0; i < n; i++) q[i] = gn[i] - g[i];
    double sy = dot(step, q);
    if (sy > 1e-14 * std::sqrt(dot(step, step) * dot(q, q))) {
      S.push_back(step);
      Y.push_back(q);
      rho.push_back(1.0 / sy);
      if ((int) S.size() > history) {
        S.pop_front();
        Y.pop_front();
        rho.pop_front();
      }
    }
    x.swap(xn);
    g.swap(gn);
    e = en;
  }
  for (int i = 0; i < n; i++) mag[i] = x[i];
  stats[0] = it;
  stats[1] = pgmax;
  stats[2] = e - e0;
}
