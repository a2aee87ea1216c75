#include "calib.h"

#include <math.h>
#include <stdlib.h>

void td_calib_platt_fit(const double *dec, const int *label, size_t n, double *A, double *B) {
  double prior1 = 0, prior0 = 0;
  for (size_t i = 0; i < n; i++) {
    if (label[i] > 0) prior1 += 1;
    else prior0 += 1;
  }
  const int max_iter = 100;
  const double min_step = 1e-10, sigma = 1e-12, eps = 1e-5;
  /* Targets from the priors rather than 0/1 keep the fit from going
   * infinite on separable data (Platt 1999). */
  const double hi = (prior1 + 1.0) / (prior1 + 2.0), lo = 1 / (prior0 + 2.0);
  double a = 0.0, b = log((prior0 + 1.0) / (prior1 + 1.0)), fval = 0.0;
  for (size_t i = 0; i < n; i++) {
    double t = label[i] > 0 ? hi : lo, f = dec[i] * a + b;
    fval += f >= 0 ? t * f + log(1 + exp(-f)) : (t - 1) * f + log(1 + exp(f));
  }
  for (int iter = 0; iter < max_iter; iter++) {
    double h11 = sigma, h22 = sigma, h21 = 0, g1 = 0, g2 = 0;
    for (size_t i = 0; i < n; i++) {
      double f = dec[i] * a + b, p, q;
      if (f >= 0) {
        p = exp(-f) / (1.0 + exp(-f));
        q = 1.0 / (1.0 + exp(-f));
      } else {
        p = 1.0 / (1.0 + exp(f));
        q = exp(f) / (1.0 + exp(f));
      }
      double d2 = p * q, d1 = (label[i] > 0 ? hi : lo) - p;
      h11 += dec[i] * dec[i] * d2;
      h22 += d2;
      h21 += dec[i] * d2;
      g1 += dec[i] * d1;
      g2 += d1;
    }
    if (fabs(g1) < eps && fabs(g2) < eps) break;
    double det = h11 * h22 - h21 * h21;
    double da = -(h22 * g1 - h21 * g2) / det, db = -(-h21 * g1 + h11 * g2) / det;
    double gd = g1 * da + g2 * db, step = 1;
    while (step >= min_step) {
      double na = a + step * da, nb = b + step * db, nf = 0.0;
      for (size_t i = 0; i < n; i++) {
        double t = label[i] > 0 ? hi : lo, f = dec[i] * na + nb;
        nf += f >= 0 ? t * f + log(1 + exp(-f)) : (t - 1) * f + log(1 + exp(f));
      }
      if (nf < fval + 0.0001 * step * gd) {
        a = na;
        b = nb;
        fval = nf;
        break;
      }
      step /= 2.0;
    }
    if (step < min_step) break; /* line search failed: keep the last point */
  }
  *A = a;
  *B = b;
}

double td_calib_platt_score(double A, double B, double dec) {
  double f = dec * A + B;
  /* the two forms avoid overflow of exp() on either side */
  return f >= 0 ? exp(-f) / (1.0 + exp(-f)) : 1.0 / (1.0 + exp(f));
}

static int cmp_scored(const void *a, const void *b) {
  const td_calib_scored_t *x = a, *y = b;
  if (x->s != y->s) return x->s > y->s ? -1 : 1;
  return x->i < y->i ? -1 : x->i > y->i;
}

double td_calib_best_f1(const double *s, const int *lab, size_t n, td_calib_scored_t *tmp, double *thr) {
  size_t P = 0;
  for (size_t i = 0; i < n; i++) {
    tmp[i].s = s[i];
    tmp[i].i = i;
    P += lab[i] > 0;
  }
  qsort(tmp, n, sizeof *tmp, cmp_scored);
  double best = 0, bthr = n ? tmp[0].s + 1 : 1;
  size_t tp = 0, fp = 0;
  for (size_t r = 0; r < n; r++) {
    if (lab[tmp[r].i] > 0) tp++;
    else fp++;
    if (r + 1 < n && tmp[r + 1].s == tmp[r].s) continue;
    double f1 = P ? 2.0 * (double)tp / (double)(2 * tp + fp + (P - tp)) : 0;
    if (f1 > best) {
      best = f1;
      bthr = r + 1 < n ? (tmp[r].s + tmp[r + 1].s) / 2 : tmp[r].s - 0.5 * fabs(tmp[r].s) - 1e-9;
    }
  }
  if (thr) *thr = bthr;
  return best;
}

