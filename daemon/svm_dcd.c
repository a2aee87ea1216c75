#include "svm_dcd.h"

#include <math.h>
#include <string.h>

void td_dcd_param_default(td_dcd_param_t *p) {
  memset(p, 0, sizeof *p);
  p->loss = TD_DCD_L1;
  p->C_pos = p->C_neg = 1;
  p->eps = 0.1;
  p->bias = 1;
  p->max_iter = 1000;
  p->shrinking = 1;
  p->seed = 1;
}

void td_dcd_model_init(td_dcd_model_t *m) { memset(m, 0, sizeof *m); }

void td_dcd_model_free(td_dcd_model_t *m) {
  free(m->w);
  free(m->alpha);
  td_dcd_model_init(m);
}

/* Per-passage constants of the two losses: the dual's diagonal shift D_ii and
 * the upper bound U_i (L1: D = 0, U = C; L2: D = 1/(2C), U = infinity). */
static void loss_consts(const td_dcd_param_t *par, int y, double *diag, double *upper) {
  double C = y > 0 ? par->C_pos : par->C_neg;
  if (par->loss == TD_DCD_L2) {
    *diag = 0.5 / C;
    *upper = INFINITY;
  } else {
    *diag = 0;
    *upper = C;
  }
}

static int check(const td_dcd_problem_t *p, const td_dcd_param_t *par, td_err_t *err) {
  if (par->loss != TD_DCD_L1 && par->loss != TD_DCD_L2)
    return td_err_set(err, TD_EINVAL, "dcd: unknown loss %d", par->loss);
  if (!(par->C_pos > 0) || !(par->C_neg > 0) || !isfinite(par->C_pos) || !isfinite(par->C_neg))
    return td_err_set(err, TD_EINVAL, "dcd: C must be positive, got %g / %g", par->C_pos, par->C_neg);
  if (!(par->eps > 0)) return td_err_set(err, TD_EINVAL, "dcd: eps must be positive, got %g", par->eps);
  if (!(par->bias >= 0) || !isfinite(par->bias))
    return td_err_set(err, TD_EINVAL, "dcd: bias must be >= 0, got %g", par->bias);
  if (par->max_iter < 1) return td_err_set(err, TD_EINVAL, "dcd: max_iter must be >= 1");
  for (size_t i = 0; i < p->l; i++) {
    if (p->y[i] != 1 && p->y[i] != -1)
      return td_err_set(err, TD_EINVAL, "dcd: label of row %zu is %d, not +1 or -1", i, p->y[i]);
    int prev = 0;
    for (const struct svm_node *n = p->x[i]; n->index != -1; n++) {
      if (n->index <= prev || (size_t)n->index > p->dim)
        return td_err_set(err, TD_EINVAL, "dcd: row %zu: feature index %d out of order or past %zu",
                          i, n->index, p->dim);
      prev = n->index;
    }
  }
  return 0;
}

int td_dcd_train(const td_dcd_problem_t *p, const td_dcd_param_t *par, td_dcd_model_t *m,
                 td_err_t *err) {
  td_dcd_model_init(m);
  int rc = check(p, par, err);
  if (rc) return rc;
  size_t l = p->l;
  m->l = l;
  m->dim = p->dim;
  m->w = calloc(p->dim ? p->dim : 1, sizeof *m->w);
  m->alpha = calloc(l ? l : 1, sizeof *m->alpha);
  double *QD = malloc((l ? l : 1) * sizeof *QD);
  size_t *index = malloc((l ? l : 1) * sizeof *index);
  if (!m->w || !m->alpha || !QD || !index) {
    free(QD);
    free(index);
    td_dcd_model_free(m);
    return td_err_set(err, TD_ENOMEM, "out of memory");
  }
  double *w = m->w, *alpha = m->alpha, wb = 0, B = par->bias, B2 = B * B;
  double diag[2], upper[2]; /* [0]: the -1 passages, [1]: the +1 ones */
  loss_consts(par, -1, &diag[0], &upper[0]);
  loss_consts(par, +1, &diag[1], &upper[1]);
  for (size_t i = 0; i < l; i++) {
    double q = B2;
    for (const struct svm_node *n = p->x[i]; n->index != -1; n++) q += n->value * n->value;
    QD[i] = q + diag[p->y[i] > 0];
    index[i] = i;
  }
  uint64_t rs = par->seed;
  size_t active = l;
  double PGmax_old = INFINITY, PGmin_old = -INFINITY;
  int iter = 0;
  m->converged = 0;
  while (iter < par->max_iter) {
    double PGmax_new = -INFINITY, PGmin_new = INFINITY;
    for (size_t s = 0; s + 1 < active; s++) {
      size_t j = s + (size_t)(td_splitmix64(&rs) % (active - s));
      size_t t = index[s];
      index[s] = index[j];
      index[j] = t;
    }
    for (size_t s = 0; s < active; s++) {
      size_t i = index[s];
      int yi = p->y[i], c = yi > 0;
      const struct svm_node *xi = p->x[i];
      double G = wb * B;
      for (const struct svm_node *n = xi; n->index != -1; n++) G += w[n->index - 1] * n->value;
      G = G * yi - 1 + alpha[i] * diag[c];
      double U = upper[c], PG = 0;
      if (alpha[i] == 0) {
        /* At the lower bound with a gradient pointing further out than
         * anything seen last epoch: likely to stay there, skip it. */
        if (par->shrinking && G > PGmax_old) {
          index[s--] = index[--active];
          index[active] = i;
          continue;
        }
        if (G < 0) PG = G;
      } else if (alpha[i] == U) {
        if (par->shrinking && G < PGmin_old) {
          index[s--] = index[--active];
          index[active] = i;
          continue;
        }
        if (G > 0) PG = G;
      } else {
        PG = G;
      }
      if (PG > PGmax_new) PGmax_new = PG;
      if (PG < PGmin_new) PGmin_new = PG;
      if (fabs(PG) > 1e-12) {
        double old = alpha[i], a = old - G / QD[i];
        alpha[i] = a < 0 ? 0 : a > U ? U : a;
        double d = (alpha[i] - old) * yi;
        for (const struct svm_node *n = xi; n->index != -1; n++) w[n->index - 1] += d * n->value;
        wb += d * B;
      }
    }
    iter++;
    if (PGmax_new - PGmin_new <= par->eps || active == 0) {
      if (active == l) {
        m->converged = 1;
        break;
      }
      /* Converged on the shrunken set: check every variable once more. */
      active = l;
      PGmax_old = INFINITY;
      PGmin_old = -INFINITY;
      continue;
    }
    PGmax_old = PGmax_new;
    PGmin_old = PGmin_new;
    if (PGmax_old <= 0) PGmax_old = INFINITY;
    if (PGmin_old >= 0) PGmin_old = -INFINITY;
  }
  m->iter = iter;
  m->b = wb * B;
  free(QD);
  free(index);
  return 0;
}

double td_dcd_decision(const td_dcd_model_t *m, const struct svm_node *x) {
  double s = m->b;
  for (; x->index != -1; x++)
    if (x->index >= 1 && (size_t)x->index <= m->dim) s += m->w[x->index - 1] * x->value;
  return s;
}

/* |wb|^2 with wb = [w, b/B] (b is the bias weight times B). */
static double wnorm2(const double *w, size_t dim, double b, double B) {
  double s = 0;
  for (size_t j = 0; j < dim; j++) s += w[j] * w[j];
  if (B > 0) s += (b / B) * (b / B);
  return s;
}

double td_dcd_primal(const td_dcd_problem_t *p, const td_dcd_param_t *par, const double *w, double b) {
  double loss = 0;
  for (size_t i = 0; i < p->l; i++) {
    double f = b;
    for (const struct svm_node *n = p->x[i]; n->index != -1; n++) f += w[n->index - 1] * n->value;
    double xi = 1 - p->y[i] * f, C = p->y[i] > 0 ? par->C_pos : par->C_neg;
    if (xi > 0) loss += C * (par->loss == TD_DCD_L2 ? xi * xi : xi);
  }
  return 0.5 * wnorm2(w, p->dim, b, par->bias) + loss;
}

double td_dcd_dual(const td_dcd_problem_t *p, const td_dcd_param_t *par, const double *alpha) {
  double *w = calloc(p->dim ? p->dim : 1, sizeof *w), wb = 0, sa = 0, sd = 0;
  if (!w) return NAN;
  for (size_t i = 0; i < p->l; i++) {
    double d = alpha[i] * p->y[i], diag, upper;
    loss_consts(par, p->y[i], &diag, &upper);
    sa += alpha[i];
    sd += diag * alpha[i] * alpha[i];
    for (const struct svm_node *n = p->x[i]; n->index != -1; n++) w[n->index - 1] += d * n->value;
    wb += d * par->bias;
  }
  double nw = 0;
  for (size_t j = 0; j < p->dim; j++) nw += w[j] * w[j];
  free(w);
  return sa - 0.5 * (nw + wb * wb) - 0.5 * sd;
}

struct svm_model *td_dcd_to_svm(const td_dcd_problem_t *p, const td_dcd_model_t *m, double C,
                                td_err_t *err) {
  int npos = 0, nneg = 0;
  for (size_t i = 0; i < m->l; i++)
    if (m->alpha[i] > 0) {
      if (p->y[i] > 0) npos++;
      else nneg++;
    }
  int nsv = npos + nneg;
  if (nsv == 0) {
    td_err_set(err, TD_EINVAL, "dcd: the fit has no support vector");
    return NULL;
  }
  /* malloc'd piece by piece: svm_free_and_destroy_model frees each member */
  struct svm_model *s = calloc(1, sizeof *s);
  if (!s) goto oom;
  s->param.svm_type = C_SVC;
  s->param.kernel_type = LINEAR;
  s->param.C = C;
  s->nr_class = 2;
  s->l = nsv;
  s->free_sv = 0;
  s->SV = malloc((size_t)nsv * sizeof *s->SV);
  s->sv_coef = malloc(sizeof *s->sv_coef);
  if (s->sv_coef) s->sv_coef[0] = malloc((size_t)nsv * sizeof **s->sv_coef);
  s->rho = malloc(sizeof *s->rho);
  s->label = malloc(2 * sizeof *s->label);
  s->nSV = malloc(2 * sizeof *s->nSV);
  s->sv_indices = malloc((size_t)nsv * sizeof *s->sv_indices);
  if (!s->SV || !s->sv_coef || !s->sv_coef[0] || !s->rho || !s->label || !s->nSV || !s->sv_indices) {
    svm_free_and_destroy_model(&s); /* frees what was made, NULLs are fine */
    goto oom;
  }
  s->rho[0] = -m->b;
  s->label[0] = 1;
  s->label[1] = -1;
  s->nSV[0] = npos;
  s->nSV[1] = nneg;
  int ip = 0, in = npos;
  for (size_t i = 0; i < m->l; i++) {
    if (!(m->alpha[i] > 0)) continue;
    int at = p->y[i] > 0 ? ip++ : in++;
    s->SV[at] = (struct svm_node *)p->x[i]; /* borrowed: free_sv = 0 */
    s->sv_coef[0][at] = p->y[i] * m->alpha[i];
    s->sv_indices[at] = (int)i + 1;
  }
  return s;
oom:
  td_err_set(err, TD_ENOMEM, "out of memory");
  return NULL;
}
