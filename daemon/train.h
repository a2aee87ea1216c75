/*
 * Training: one-vs-rest binary linear SVMs, C chosen by grouped k-fold
 * cross-validation (folds by article), Platt calibration fitted on the
 * out-of-fold decision values, per-theme thresholds tuned on out-of-fold
 * scores to maximize F1, final fit on all data, bundle written and re-loaded
 * to validate it. Jobs (theme x C x fold) run on a thread pool.
 * Deterministic for a given seed regardless of thread count.
 *
 * Two solvers (td_train_opts_t.solver). The default, DCD, is dual coordinate
 * descent on the linear SVM (svm_dcd.h, liblinear's algorithm: bias as an
 * augmented constant feature, so b is regularized), hinge or squared hinge;
 * its fits are written as the libsvm LINEAR models they equal, so the bundle
 * format and svm-predict do not change. It needs no Gram matrix and costs
 * one pass over the stored features per epoch.
 *
 * SMO is libsvm's own C-SVC (unregularized b). With the linear kernel
 * every dot product between passages is computed once into a Gram matrix
 * (n x n, used only while it fits in 2 GiB) and the CV and final fits train
 * on it as libsvm PRECOMPUTED kernels; the final models are then rewritten
 * as the LINEAR models they equal. libsvm would otherwise spend nearly all
 * the time recomputing the same dot products in every job.
 */
#ifndef TD_TRAIN_H
#define TD_TRAIN_H

#include <jansson.h>

#include "common.h"
#include "corpus.h"
#include "features.h"
#include "text.h"

typedef void (*td_progress_cb)(void *ud, const char *stage, size_t done, size_t total);

enum {
  TD_SOLVER_DCD = 0,    /* dual coordinate descent, hinge loss (the default) */
  TD_SOLVER_DCD_L2 = 1, /* dual coordinate descent, squared hinge loss */
  TD_SOLVER_SMO = 2,    /* libsvm's SMO (any kernel) */
};

/* "dcd", "dcd-l2", "smo" <-> TD_SOLVER_*: 0 or TD_EINVAL. */
int td_train_solver_parse(const char *s, int *solver);
const char *td_train_solver_name(int solver);

typedef struct td_train_opts {
  const char *out_dir;
  const char *name, *version;        /* bundle name/version */
  const char *tokenizer;             /* plugin name, default "bigram" */
  json_t *tokenizer_options;         /* borrowed object or NULL */
  const char *plugin_dir;            /* NULL: default */
  int folds;                         /* default 5; 1 = no CV (thresholds 0.5; needs one C) */
  int multiclass;
  uint64_t seed;
  int threads;                       /* 0: number of online CPUs */
  const double *c_grid;              /* NULL: default grid */
  size_t nc;
  int solver;                        /* TD_SOLVER_*, default DCD */
  double dcd_eps;                    /* DCD stopping tolerance; 0: default (0.1) */
  int kernel;                        /* libsvm kernel type, LINEAR default; other
                                        kernels need the SMO solver */
  int balanced;                      /* class weights n_neg/n_pos for rare themes */
  td_feat_config_t feat;
  td_split_opts_t split;
  const char *const *theme_order;    /* optional fixed theme order */
  size_t ntheme_order;
  td_progress_cb progress;
  void *progress_ud;
  int no_gram;                       /* SMO: 1: never precompute the linear Gram
                                        matrix for CV (slower; the results are identical) */
} td_train_opts_t;

void td_train_opts_default(td_train_opts_t *o);

/*
 * Trains on corpus c (loaded by the caller, finished) and writes the bundle
 * to o->out_dir. *report (new reference) holds the per-theme CV figures,
 * the chosen C values and thresholds, and timings. `files` lists the data
 * files for the manifest's training digest.
 */
int td_train(const td_train_opts_t *o, const td_corpus_t *c,
             const char *const *files, size_t nfiles, json_t **report,
             td_err_t *err);

/*
 * Grouped k-fold assignment used by td_train: fold[i] in [0,k) for every
 * item, all items of one doc in the same fold. Docs are shuffled with
 * splitmix64(seed), then each goes to the fold with the fewest passages so
 * far. Deterministic for (corpus, k, seed). Needs td_corpus_finish.
 */
int td_train_folds(const td_corpus_t *c, int k, uint64_t seed, int *fold, td_err_t *err);


#endif
