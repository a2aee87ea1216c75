/*
 * Dual coordinate descent for the linear SVM (Hsieh, Chang, Lin, Keerthi,
 * Sundararajan, ICML 2008; liblinear's solve_l2r_l1l2_svc): one pass over
 * the dual variables in a fresh random order per epoch, each alpha_i moved
 * to the minimum of the dual along its own coordinate and clipped to
 * [0, U_i]; w = sum_i y_i alpha_i x_i is kept up to date, so a step costs
 * one sparse dot product and one sparse update. Shrinking drops variables
 * stuck at a bound; the run stops when the spread of the projected gradient
 * (max - min over the active set) is at most eps, then checks the whole set
 * once more.
 *
 * Problem (primal), with xb_i = [x_i, B] (liblinear's bias: an augmented
 * constant feature B, regularized like every other weight):
 *   L1 (hinge):          min 1/2 |wb|^2 + sum_i C_i max(0, 1 - y_i wb.xb_i)
 *   L2 (squared hinge):  min 1/2 |wb|^2 + sum_i C_i max(0, 1 - y_i wb.xb_i)^2
 * C_i = C_pos or C_neg by the class of passage i. The decision value is
 * w.x + b with b = wb[last] * B.
 *
 * No Gram matrix: the cost of an epoch is the number of stored features,
 * and w is dense (the feature space is hashed into a fixed number of
 * buckets). Deterministic for a given seed: the order comes from the seed
 * alone, so a caller running fits on several threads gets the same result
 * as on one.
 */
#ifndef TD_SVM_DCD_H
#define TD_SVM_DCD_H

#include <libsvm/svm.h>

#include "common.h"

enum { TD_DCD_L1 = 1, TD_DCD_L2 = 2 };

typedef struct td_dcd_param {
  int loss;          /* TD_DCD_L1 (hinge) or TD_DCD_L2 (squared hinge) */
  double C_pos, C_neg; /* C of the +1 and of the -1 passages */
  double eps;        /* stop when max PG - min PG <= eps (liblinear's default 0.1) */
  double bias;       /* B, the value of the augmented feature; 0: no bias term */
  int max_iter;      /* epochs at most (liblinear: 1000) */
  int shrinking;     /* 1: drop variables stuck at a bound (liblinear always does) */
  uint64_t seed;     /* permutation seed */
} td_dcd_param_t;

void td_dcd_param_default(td_dcd_param_t *p);

/* Borrowed rows: x[i] is a libsvm node array (indices 1..dim ascending,
 * terminated by index -1), y[i] is +1 or -1. */
typedef struct td_dcd_problem {
  size_t l;
  const struct svm_node *const *x;
  const int *y;
  size_t dim;
} td_dcd_problem_t;

/* A fit. Owns w and alpha; init/free pair. */
typedef struct td_dcd_model {
  double *w;      /* dim: decision value w.x + b */
  double b;       /* bias weight times B */
  double *alpha;  /* l: dual variables, the support vectors have alpha > 0 */
  size_t l, dim;
  int iter;       /* epochs run */
  int converged;  /* 0: stopped at max_iter */
} td_dcd_model_t;

void td_dcd_model_init(td_dcd_model_t *m);
void td_dcd_model_free(td_dcd_model_t *m);

/* Trains *m (initialized or freed before) on p. TD_EINVAL on a bad
 * parameter, a label other than +-1 or a feature index outside 1..dim. */
int td_dcd_train(const td_dcd_problem_t *p, const td_dcd_param_t *par, td_dcd_model_t *m,
                 td_err_t *err);

/* w.x + b for one node array (indices past dim are ignored). */
double td_dcd_decision(const td_dcd_model_t *m, const struct svm_node *x);

/* Objectives, for checking a solution: the primal of (w, b) and the dual of
 * alpha (w recomputed from alpha). For the exact optimum they are equal;
 * primal - dual >= 0 bounds the distance to it from above. */
double td_dcd_primal(const td_dcd_problem_t *p, const td_dcd_param_t *par, const double *w, double b);
double td_dcd_dual(const td_dcd_problem_t *p, const td_dcd_param_t *par, const double *alpha);

/*
 * The fit as the libsvm LINEAR C-SVC model it equals: support vectors are
 * the rows with alpha > 0 (positives first), sv_coef = y_i alpha_i,
 * rho = -b, labels {+1, -1}, so svm_predict_values gives w.x + b and
 * svm_save_model writes a file svm-predict reads. The SV pointers borrow
 * p->x (free_sv = 0): the rows must outlive the model. Free with
 * svm_free_and_destroy_model. NULL with *err set when no alpha is positive
 * (libsvm files need a support vector) or out of memory.
 */
struct svm_model *td_dcd_to_svm(const td_dcd_problem_t *p, const td_dcd_model_t *m, double C,
                                td_err_t *err);

#endif
