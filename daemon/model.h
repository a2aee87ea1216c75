/*
 * Model bundles: load, validate, write; collapsed linear weights; scoring.
 *
 * A bundle is a directory:
 *   manifest.json      format, name, version, created, tokenizer + options,
 *                      features, split, themes (threshold, Platt A/B, C,
 *                      svm file, cross-validated metrics), training digest,
 *                      metrics
 *   idf.tsv            "index<TAB>idf" for every bucket seen in training
 *   svm/<theme>.model  libsvm's own format (svm_save_model), one binary
 *                      C-SVC per theme (one-vs-rest), labels +1 / -1
 * See docs/model-format.md. Loading validates everything and names the
 * file, field and expectation on failure.
 */
#ifndef TD_MODEL_H
#define TD_MODEL_H

#include <jansson.h>
#include <stdatomic.h>

#include "common.h"
#include "features.h"
#include "plugin.h"
#include "text.h"

#define TD_MODEL_FORMAT 1
#define TD_MODEL_MAGIC 0x7d30de11u
#define TD_MAX_THEMES 64

struct svm_model;

typedef struct td_theme {
  char *name;
  double threshold;        /* on the calibrated score, in (0,1) */
  double platt_a, platt_b; /* score = 1 / (1 + exp(a * dec + b)) */
  double C;
  struct svm_model *svm;   /* owned; libsvm's model as loaded */
  int sign;                /* +1 if libsvm's label[0] is +1, else -1 */
} td_theme_t;

typedef struct td_model {
  unsigned magic;
  char *dir;       /* as given to td_model_load */
  char *name;      /* manifest "name", e.g. "rural-themes" */
  char *version;   /* manifest "version" */
  char *label;     /* "name@version", what responses report */
  int multiclass;  /* exactly one theme per passage (argmax) */
  int linear;      /* all SVMs linear: scored via collapsed weights */
  td_feat_config_t feat;
  td_split_opts_t split;
  td_tokenizer_t *tok; /* owned */
  double *idf;     /* feat.buckets entries, owned */
  size_t ntheme;
  td_theme_t *themes;
  double *w;       /* collapsed primal weights, interleaved: w[i*ntheme+k],
                      sign_k folded in; NULL unless linear */
  double *bias;    /* ntheme entries, -sign_k * rho_k, so that
                      dec_k = sum_i w[i*ntheme+k] x_i + bias[k]
                            = sign_k * (w_k . x - rho_k) */
  json_t *manifest; /* owned */
  uint64_t load_ns; /* how long td_model_load took */
  atomic_long refs;
  int svs_released; /* td_model_release_svs ran: the svm_models have no SVs */
  int load_flags;   /* TD_MODEL_LOAD_*, during the load */
} td_model_t;

/*
 * Loads and fully validates the bundle in `dir`, opening its tokenizer from
 * plugin_dir (NULL: td_plugin_default_dir()). On success *out has one
 * reference owned by the caller.
 */
int td_model_load(const char *dir, const char *plugin_dir, td_model_t **out,
                  td_err_t *err);
/* td_model_load for a process that only classifies (the daemon): a linear
 * model's support vectors are collapsed and freed theme by theme while the
 * files are parsed, as td_model_release_svs would after the load, so the
 * load never holds them all (a reload next to the serving model is the
 * daemon's memory peak). The same decisions, bit for bit. */
#define TD_MODEL_LOAD_SERVE 1
int td_model_load_flags(const char *dir, const char *plugin_dir, int flags, td_model_t **out,
                        td_err_t *err);
td_model_t *td_model_ref(td_model_t *m);
/* Drops one reference, frees at zero (from any thread); NULLs *m. */
void td_model_unref(td_model_t **m);

/* Decision values of all themes for x into dec[ntheme]. Linear: sparse dot
 * products over the collapsed weights; otherwise libsvm. */
void td_model_decision(const td_model_t *m, const td_fvec_t *x, double *dec);
/* libsvm's own svm_predict_values for theme k, oriented like td_model_decision
 * (after td_model_release_svs: the collapsed weights, for a linear model). */
double td_model_decision_libsvm(const td_model_t *m, size_t k, const td_fvec_t *x);
/*
 * Frees the support vectors of a linear model: once collapsed into w they
 * serve only td_model_decision_libsvm (tests, tools), and they are most of
 * a model's memory (41 MiB of the default bundle's ~60). The svm_model
 * headers stay (kernel, rho, labels, l = 0). A no-op for a non-linear
 * model. Call it before the model is shared (right after td_model_load);
 * a process that only classifies loads with TD_MODEL_LOAD_SERVE instead,
 * which never holds all the support vectors at once (the daemon does).
 */
void td_model_release_svs(td_model_t *m);
/* Platt-calibrated score in [0,1]. */
double td_model_score(const td_theme_t *t, double dec);
/* Index of a theme by name, or -1. */
long td_model_theme_index(const td_model_t *m, const char *name);

/* Everything a training run hands to the writer. All members borrowed. */
typedef struct td_bundle_spec {
  const char *name, *version;
  int multiclass;
  const char *tokenizer;           /* plugin name */
  const json_t *tokenizer_options; /* object */
  const td_feat_config_t *feat;
  const td_split_opts_t *split;
  const uint32_t *df;              /* feat->buckets document frequencies */
  size_t n_docs;                   /* passages the df counts are over */
  size_t ntheme;
  const char *const *themes;
  struct svm_model *const *svms;
  const double *thresholds, *platt_a, *platt_b, *C;
  const json_t *const *theme_cv;   /* per-theme CV metrics objects, or NULL */
  const json_t *training;          /* {"files":[...],"sha256":"...",...} */
  const json_t *metrics;           /* cross-validated summary */
} td_bundle_spec_t;

/*
 * Writes the bundle `spec` describes at dir, replacing the bundle there as a
 * whole (docs/model-format.md, "How a bundle is written"): the new bundle is
 * built in a sibling directory "<dir>.new.<pid>.<n>" and put in place by
 * td_model_install. A reader (td_model_load) sees the old bundle or the new
 * one, never a mix; after a crash dir holds one of the two, complete. On
 * failure the old bundle is untouched and the sibling is removed.
 *
 * dir may not exist (it is created, with its parents). If it is a symlink,
 * the directory it resolves to is replaced and the link kept. An existing
 * dir must be a bundle (have a manifest.json) or be empty: anything else is
 * refused (TD_EINVAL) before anything is written. The new directory holds
 * exactly the bundle's files (manifest.json, idf.tsv, svm/<theme>.model):
 * whatever else the old one held is gone with it, so a file the bundle
 * needs besides (a tokenizer dictionary) is added by writing to a staging
 * directory and installing that (what themectl train does).
 */
int td_model_write(const char *dir, const td_bundle_spec_t *spec, td_err_t *err);

/*
 * The bundle's files alone, into the empty directory `staged` (made, with
 * its parents, if missing): nothing synced, nothing swapped. For a caller that adds files of its own
 * (a dictionary) and validates before it calls td_model_install.
 */
int td_model_write_files(const char *staged, const td_bundle_spec_t *spec, td_err_t *err);

/*
 * 0 if a bundle may be written or installed at dir (td_model_write's rules:
 * missing, or a directory that is a bundle or is empty), else the error
 * td_model_install would give. For a check before work that would be lost.
 */
int td_model_check_target(const char *dir, td_err_t *err);

/*
 * Makes the complete bundle in directory `staged` the bundle at dir:
 * fsyncs every file and directory under staged, gives it the old bundle's
 * permission bits, swaps it with dir in one renameat2(RENAME_EXCHANGE)
 * (a plain rename when dir does not exist), fsyncs the parent
 * directories, and removes the old bundle. staged must be on dir's file
 * system (beside it is best). dir's rules are td_model_write's (a symlink
 * is followed; an existing dir must be a bundle or empty).
 *
 * On success staged no longer exists. On failure before the swap nothing
 * has changed at dir and staged is left for the caller to remove; a
 * failure after it (fsync of the parent) says so in err: dir is then the
 * new bundle, the old one is removed, and the swap may not survive a
 * crash. A file system without RENAME_EXCHANGE gets two renames, with a
 * moment in which dir is missing (a reader fails, and sees no mix).
 */
int td_model_install(const char *staged, const char *dir, td_err_t *err);

#endif
