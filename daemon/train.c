#include "train.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <libsvm/svm.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "calib.h"
#include "model.h"
#include "plugin.h"
#include "pool.h"
#include "sha256.h"
#include "svm_dcd.h"

static const double default_grid[] = {0.125, 0.25, 0.5, 1, 2, 4};

void td_train_opts_default(td_train_opts_t *o) {
  memset(o, 0, sizeof *o);
  o->version = "1.0.0";
  o->tokenizer = "bigram";
  o->folds = 5;
  o->seed = 1;
  o->solver = TD_SOLVER_DCD;
  o->kernel = LINEAR;
  td_feat_config_default(&o->feat);
  td_split_opts_default(&o->split);
}

static const char *const solver_names[] = {[TD_SOLVER_DCD] = "dcd", [TD_SOLVER_DCD_L2] = "dcd-l2",
                                           [TD_SOLVER_SMO] = "smo"};

int td_train_solver_parse(const char *s, int *solver) {
  for (int i = 0; i < (int)(sizeof solver_names / sizeof *solver_names); i++)
    if (s && !strcmp(s, solver_names[i])) {
      *solver = i;
      return 0;
    }
  return TD_EINVAL;
}

const char *td_train_solver_name(int solver) {
  return solver >= 0 && solver < (int)(sizeof solver_names / sizeof *solver_names) ? solver_names[solver]
                                                                                 : "?";
}

/* ---- grouped folds ---- */

int td_train_folds(const td_corpus_t *c, int k, uint64_t seed, int *fold, td_err_t *err) {
  if (k < 1) return td_err_set(err, TD_EINVAL, "folds must be at least 1, got %d", k);
  if ((size_t)k > c->ndocs)
    return td_err_set(err, TD_EINVAL, "%d folds need at least %d docs, the corpus has %zu",
                      k, k, c->ndocs);
  size_t *order = malloc(c->ndocs * sizeof *order);
  size_t *size = calloc((size_t)k, sizeof *size);
  if (!order || !size) {
    free(order);
    free(size);
    return td_err_set(err, TD_ENOMEM, "out of memory");
  }
  for (size_t d = 0; d < c->ndocs; d++) order[d] = d;
  uint64_t s = seed;
  for (size_t d = c->ndocs; d > 1; d--) {
    size_t j = (size_t)(td_splitmix64(&s) % d);
    size_t t = order[d - 1];
    order[d - 1] = order[j];
    order[j] = t;
  }
  /* Greedy: each doc goes to the fold with the fewest passages so far, so
   * folds stay balanced by passages even though docs vary in length. */
  for (size_t r = 0; r < c->ndocs; r++) {
    size_t d = order[r], best = 0;
    for (size_t f = 1; f < (size_t)k; f++)
      if (size[f] < size[best]) best = f;
    for (size_t i = c->doc_start[d]; i < c->doc_start[d + 1]; i++) fold[i] = (int)best;
    size[best] += c->doc_start[d + 1] - c->doc_start[d];
  }
  free(order);
  free(size);
  return 0;
}

/* ---- state of one run ---- */

typedef struct trainer {
  const td_train_opts_t *o;
  const td_corpus_t *c;
  size_t n, K, nc, F;
  double *grid;             /* sorted ascending, so ties go to the smaller C */
  size_t *perm;             /* theme k -> corpus theme bit */
  int *lab;                 /* K * n: +1 / -1, lab[k*n+i] */
  struct svm_node *pool;    /* all passages' nodes, contiguous */
  struct svm_node **x;      /* n pointers into pool */
  struct svm_node *gram;    /* linear CV only: n rows of n+2 precomputed nodes */
  struct svm_node **gx;     /* n pointers into gram, or NULL */
  int *fold;
  double *oof;              /* K * nc * n out-of-fold decision values */
  struct svm_model **final; /* K */
  td_dcd_model_t *final_dcd; /* K, DCD only: the dense w of each final fit */
  const double *chosen_c;   /* K, for the final fits */
  pthread_mutex_t mu;       /* guards unconverged (the jobs run on daemon/pool.c) */
  size_t unconverged; /* DCD fits that stopped at max_iter (liblinear warns) */
  char *name;               /* the bundle's name: o->name or from out */
  char *out;                /* out_dir as the bundle's path (resolve_out) */
} trainer_t;

static void svm_quiet(const char *s) { (void)s; }

static void set_param(int kernel, double C, struct svm_parameter *p) {
  memset(p, 0, sizeof *p);
  p->svm_type = C_SVC;
  p->kernel_type = kernel;
  p->degree = 3;
  p->gamma = 1.0; /* vectors are L2-normalized: 1 is the natural scale */
  p->coef0 = 0;
  p->cache_size = 100;
  p->eps = 1e-3;
  p->C = C;
  p->shrinking = 1;
  p->probability = 0;
}

/* Weight of the positive passages' C (1 unless balanced). */
static double pos_weight(const trainer_t *t, size_t npos, size_t nneg) {
  if (!t->o->balanced || npos == 0) return 1;
  double r = (double)nneg / (double)npos;
  return r > 10 ? 10 : r;
}

static int is_dcd(const trainer_t *t) { return t->o->solver != TD_SOLVER_SMO; }

/* The permutation seed of one fit: a function of the run's seed, the theme,
 * the value of C and the fold alone (never of the thread that runs it, nor
 * of the rest of the grid). fold -1: the final fit. */
static uint64_t fit_seed(const trainer_t *t, size_t k, double C, int fold) {
  uint64_t c;
  memcpy(&c, &C, sizeof c);
  uint64_t s = t->o->seed ^ ((uint64_t)k * 1000003u + (uint64_t)(fold + 1) * 1009u);
  s ^= td_splitmix64(&s) ^ c;
  return td_splitmix64(&s);
}

/* DCD: trains theme k at C on every passage outside fold skip_fold (-1: all). *dm gets the fit (dm->w NULL when the selection holds
 * one class only: *constant gets its sign); with svm, *svm gets the libsvm
 * model of the fit as well. 0 or a TD_E* code. */
static int fit_dcd(trainer_t *t, size_t k, double C, int skip_fold, td_dcd_model_t *dm,
                   struct svm_model **svm, int *constant, td_err_t *err) {
  size_t n = t->n, l = 0, npos = 0;
  const struct svm_node **x = malloc(n * sizeof *x);
  int *y = malloc(n * sizeof *y);
  int rc = 0;
  td_dcd_model_init(dm);
  *constant = 0;
  if (svm) *svm = NULL;
  if (!x || !y) {
    rc = td_err_set(err, TD_ENOMEM, "out of memory");
    goto out;
  }
  for (size_t i = 0; i < n; i++) {
    if (skip_fold >= 0 && t->fold[i] == skip_fold) continue;
    x[l] = t->x[i];
    y[l] = t->lab[k * n + i];
    npos += y[l] > 0;
    l++;
  }
  if (npos == 0 || npos == l) {
    *constant = npos ? 1 : -1;
    goto out;
  }
  td_dcd_problem_t p = {.l = l, .x = x, .y = y, .dim = t->o->feat.buckets};
  td_dcd_param_t par;
  td_dcd_param_default(&par);
  par.loss = t->o->solver == TD_SOLVER_DCD_L2 ? TD_DCD_L2 : TD_DCD_L1;
  par.C_neg = C;
  par.C_pos = C * pos_weight(t, npos, l - npos);
  if (t->o->dcd_eps > 0) par.eps = t->o->dcd_eps;
  par.seed = fit_seed(t, k, C, skip_fold);
  if ((rc = td_dcd_train(&p, &par, dm, err))) goto out;
  if (!dm->converged) {
    pthread_mutex_lock(&t->mu);
    t->unconverged++;
    pthread_mutex_unlock(&t->mu);
  }
  if (svm && !(*svm = td_dcd_to_svm(&p, dm, C, err))) rc = err ? err->code : TD_ENOMEM;
out:
  free(x);
  free(y);
  return rc;
}

/* Trains theme k at C on every passage outside fold skip_fold (-1: all),
 * on rows x (features, or precomputed kernel rows with kernel PRECOMPUTED);
 * NULL model when the selection holds one class only (*constant gets its
 * sign). */
static struct svm_model *fit_one(trainer_t *t, struct svm_node **x, int kernel, size_t k,
                                 double C, int skip_fold, int *constant, int *oom) {
  size_t n = t->n, l = 0, npos = 0;
  struct svm_problem prob;
  prob.y = malloc(n * sizeof *prob.y);
  prob.x = malloc(n * sizeof *prob.x);
  *constant = 0;
  *oom = 0;
  if (!prob.y || !prob.x) {
    free(prob.y);
    free(prob.x);
    *oom = 1;
    return NULL;
  }
  for (size_t i = 0; i < n; i++) {
    if (skip_fold >= 0 && t->fold[i] == skip_fold) continue;
    int y = t->lab[k * n + i];
    prob.y[l] = y;
    prob.x[l] = x[i];
    npos += y > 0;
    l++;
  }
  prob.l = (int)l;
  struct svm_model *m = NULL;
  if (npos == 0 || npos == l) {
    *constant = npos ? 1 : -1;
  } else {
    struct svm_parameter p;
    int wl[2];
    double w[2];
    set_param(kernel, C, &p);
    if (t->o->balanced && npos > 0) {
      wl[0] = +1;
      wl[1] = -1;
      w[0] = pos_weight(t, npos, l - npos);
      w[1] = 1;
      p.nr_weight = 2;
      p.weight_label = wl;
      p.weight = w;
    }
    m = svm_train(&prob, &p);
    if (!m) *oom = 1;
  }
  free(prob.y);
  free(prob.x);
  return m;
}

/* Decision value oriented so > 0 means the theme is present. */
static double decision(const struct svm_model *m, const struct svm_node *x) {
  double dv = 0;
  svm_predict_values(m, x, &dv);
  return m->label[0] == 1 ? dv : -dv;
}

/* Decision value of final model k for passage row x, from the dense w when
 * DCD kept one (the same value as the libsvm model's, without summing over
 * every support vector). */
static double final_decision(const trainer_t *t, size_t k, const struct svm_node *x) {
  if (t->final_dcd && t->final_dcd[k].w) return td_dcd_decision(&t->final_dcd[k], x);
  return decision(t->final[k], x);
}

static int cv_job(void *ctx, size_t j, td_err_t *err) {
  trainer_t *t = ctx;
  /* Large C converges slowest: hand those jobs out first. */
  size_t F = t->F, nc = t->nc;
  size_t f = j % F, ci = nc - 1 - (j / F) % nc, k = j / (F * nc);
  int constant, oom;
  if (is_dcd(t)) {
    td_dcd_model_t dm;
    int rc = fit_dcd(t, k, t->grid[ci], (int)f, &dm, NULL, &constant, err);
    double *out = t->oof + (k * nc + ci) * t->n;
    for (size_t i = 0; !rc && i < t->n; i++)
      if (t->fold[i] == (int)f) out[i] = dm.w ? td_dcd_decision(&dm, t->x[i]) : constant;
    td_dcd_model_free(&dm);
    return rc;
  }
  struct svm_node **x = t->gx ? t->gx : t->x;
  int kernel = t->gx ? PRECOMPUTED : t->o->kernel;
  struct svm_model *m = fit_one(t, x, kernel, k, t->grid[ci], (int)f, &constant, &oom);
  double *out = t->oof + (k * nc + ci) * t->n;
  for (size_t i = 0; i < t->n; i++) {
    if (t->fold[i] != (int)f) continue;
    out[i] = m ? decision(m, x[i]) : constant;
  }
  if (m) svm_free_and_destroy_model(&m);
  return oom ? td_err_set(err, TD_ENOMEM, "out of memory in training") : 0;
}

/* A model trained on precomputed kernel rows, turned into the linear model
 * it equals: the solver saw the very same kernel values (svm_dot is
 * libsvm's dot), so alphas and rho are those a LINEAR fit would find; only
 * the support vectors must point at feature rows instead of kernel rows. */
static void linearize(const trainer_t *t, struct svm_model *m) {
  for (int i = 0; i < m->l; i++) m->SV[i] = t->x[(size_t)m->SV[i][0].value - 1];
  m->param.kernel_type = LINEAR;
}

static int fit_job(void *ctx, size_t k, td_err_t *err) {
  trainer_t *t = ctx;
  int constant, oom;
  if (is_dcd(t)) {
    int rc = fit_dcd(t, k, t->chosen_c[k], -1, &t->final_dcd[k], &t->final[k], &constant, err);
    if (!rc && !t->final[k]) /* one class only */
      rc = td_err_set(err, TD_EINVAL, "a theme has only one class of passages");
    return rc;
  }
  struct svm_node **x = t->gx ? t->gx : t->x;
  int kernel = t->gx ? PRECOMPUTED : t->o->kernel;
  t->final[k] = fit_one(t, x, kernel, k, t->chosen_c[k], -1, &constant, &oom);
  if (t->final[k] && t->gx) linearize(t, t->final[k]);
  if (t->final[k]) return 0;
  return oom ? td_err_set(err, TD_ENOMEM, "out of memory in training")
             : td_err_set(err, TD_EINVAL, "a theme has only one class of passages");
}

/* ---- the precomputed linear kernel ---- */

/* Exactly libsvm's Kernel::dot (same order of additions), so a kernel value
 * read from the Gram matrix equals the one libsvm would compute itself and
 * the CV models match what the final linear fits would be. */
static double svm_dot(const struct svm_node *px, const struct svm_node *py) {
  double sum = 0;
  while (px->index != -1 && py->index != -1) {
    if (px->index == py->index) {
      sum += px->value * py->value;
      ++px;
      ++py;
    } else if (px->index > py->index) {
      ++py;
    } else {
      ++px;
    }
  }
  return sum;
}

/* Row i of libsvm's PRECOMPUTED format: node 0 holds the 1-based serial,
 * node j+1 holds K(i, j). Job i fills K(i, j) and K(j, i) for j >= i. */
static int gram_job(void *ctx, size_t i, td_err_t *err) {
  struct trainer *t = ctx;
  size_t n = t->n;
  for (size_t j = i; j < n; j++) {
    double v = svm_dot(t->x[i], t->x[j]);
    t->gx[i][j + 1].value = v;
    t->gx[j][i + 1].value = v;
  }
  return 0;
}

/* The CV jobs train the same passages over and over: computing every dot
 * product once instead of once per job makes cross-validation many times
 * faster (libsvm spends nearly all its time in Kernel::dot otherwise). Only
 * when the matrix fits in TD_TRAIN_GRAM_MAX_BYTES; 0 means "not used". */
#define TD_TRAIN_GRAM_MAX_BYTES ((size_t)2 << 30) /* 10,000 passages: 1.6 GB */

static int gram_alloc(struct trainer *t) {
  size_t n = t->n, row = n + 2;
  if (t->o->no_gram || t->o->kernel != LINEAR || is_dcd(t) || n > (size_t)1 << 20 ||
      row * n > TD_TRAIN_GRAM_MAX_BYTES / sizeof(struct svm_node))
    return 0;
  t->gram = malloc(row * n * sizeof *t->gram);
  t->gx = malloc(n * sizeof *t->gx);
  if (!t->gram || !t->gx) {
    free(t->gram);
    free(t->gx);
    t->gram = NULL;
    t->gx = NULL;
    return 0; /* fall back to computing kernels inside libsvm */
  }
  for (size_t i = 0; i < n; i++) {
    struct svm_node *r = t->gx[i] = t->gram + i * row;
    r[0].index = 0;
    r[0].value = (double)(i + 1);
    for (size_t j = 0; j < n; j++) r[j + 1].index = (int)(j + 1);
    r[n + 1].index = -1;
  }
  return 1;
}

/* Runs njobs jobs of fn on the pool (daemon/pool.c), with the caller's
 * thread count and progress callback under the name of the stage. */
typedef struct stage_progress {
  const td_train_opts_t *o;
  const char *stage;
} stage_progress_t;

static void on_progress(void *ud, size_t done, size_t total) {
  const stage_progress_t *sp = ud;
  sp->o->progress(sp->o->progress_ud, sp->stage, done, total);
}

static int run_pool(trainer_t *t, size_t njobs, td_pool_job_fn fn, const char *stage,
                    td_err_t *err) {
  stage_progress_t sp = {t->o, stage};
  size_t nth = t->o->threads > 0 ? (size_t)t->o->threads : 0;
  return td_pool_run(nth, njobs, fn, t, t->o->progress ? on_progress : NULL, &sp, err);
}

/* ---- features ---- */

static int featurize(trainer_t *t, td_tokenizer_t *tok, uint32_t **df_out, td_err_t *err) {
  const td_train_opts_t *o = t->o;
  const td_corpus_t *c = t->c;
  size_t maxd = 0;
  for (size_t d = 0; d < c->ndocs; d++)
    if (c->doc_start[d + 1] - c->doc_start[d] > maxd) maxd = c->doc_start[d + 1] - c->doc_start[d];
  int rc = 0;
  uint32_t *df = calloc(o->feat.buckets, sizeof *df);
  double *idf = malloc(o->feat.buckets * sizeof *idf);
  td_span_t *spans = malloc(maxd * sizeof *spans);
  td_passage_t *ps = malloc(maxd * sizeof *ps);
  td_fvec_t *vec = malloc(maxd * sizeof *vec);
  size_t *off = malloc((t->n + 1) * sizeof *off);
  td_fscratch_t *s = td_fscratch_new();
  size_t pool_cap = 0, pool_len = 0;
  if (vec)
    for (size_t j = 0; j < maxd; j++) td_fvec_init(&vec[j]);
  if (!df || !idf || !spans || !ps || !vec || !off || !s) {
    rc = td_err_set(err, TD_ENOMEM, "out of memory");
    goto out;
  }
  for (int pass = 0; pass < 2; pass++) {
    for (size_t d = 0; d < c->ndocs; d++) {
      size_t b = c->doc_start[d], nd = c->doc_start[d + 1] - b, pos = 0, cpos = 0;
      /* The article as serving sees it: passages in order, headings marked
       * and linked, offsets as if the rows were joined by "\n". */
      for (size_t j = 0; j < nd; j++) {
        const td_item_t *it = &c->items[b + j];
        size_t nch = td_text_count_chars(it->text, it->len);
        spans[j].s = it->text;
        spans[j].len = it->len;
        ps[j].start = pos;
        ps[j].end = pos + it->len;
        ps[j].cstart = cpos;
        ps[j].cend = cpos + nch;
        ps[j].is_heading = td_text_is_heading(it->text, it->len, o->split.heading_chars);
        ps[j].context = -1;
        pos += it->len + 1;
        cpos += nch + 1;
      }
      td_text_link_headings(ps, nd);
      if (pass == 0) {
        rc = td_features_doc_df(&o->feat, tok, spans, ps, nd, s, df, err);
      } else {
        rc = td_features_doc(&o->feat, tok, idf, spans, ps, nd, s, vec, err);
        for (size_t j = 0; !rc && j < nd; j++) {
          size_t need = pool_len + vec[j].count + 1;
          if (need > pool_cap) {
            size_t cap = pool_cap ? pool_cap : 4096;
            while (cap < need) cap *= 2;
            struct svm_node *p = realloc(t->pool, cap * sizeof *p);
            if (!p) {
              rc = td_err_set(err, TD_ENOMEM, "out of memory");
              break;
            }
            t->pool = p;
            pool_cap = cap;
          }
          off[b + j] = pool_len;
          for (size_t q = 0; q < vec[j].count; q++) {
            t->pool[pool_len].index = (int)vec[j].items[q].index + 1;
            t->pool[pool_len++].value = vec[j].items[q].value;
          }
          t->pool[pool_len++].index = -1;
        }
      }
      if (rc) {
        td_err_prefix(err, "doc \"%s\"", c->items[b].doc);
        goto out;
      }
      if (o->progress && (d + 1 == c->ndocs || d % 64 == 0))
        o->progress(o->progress_ud, pass ? "features" : "df", d + 1, c->ndocs);
    }
    if (pass == 0)
      for (uint32_t q = 0; q < o->feat.buckets; q++) idf[q] = td_features_idf(df[q], t->n);
  }
  if (!(t->x = malloc(t->n * sizeof *t->x))) {
    rc = td_err_set(err, TD_ENOMEM, "out of memory");
    goto out;
  }
  for (size_t i = 0; i < t->n; i++) t->x[i] = t->pool + off[i];
out:
  if (vec)
    for (size_t j = 0; j < maxd; j++) td_fvec_free(&vec[j]);
  td_fscratch_free(&s);
  free(vec);
  free(ps);
  free(spans);
  free(off);
  free(idf);
  if (rc) free(df);
  else *df_out = df;
  return rc;
}

/* ---- thresholds and metrics ---- */

typedef struct prf {
  size_t tp, fp, fn, support;
  double p, r, f1;
} prf_t;

static void prf_finish(prf_t *m) {
  m->p = m->tp + m->fp ? (double)m->tp / (double)(m->tp + m->fp) : 0;
  m->r = m->tp + m->fn ? (double)m->tp / (double)(m->tp + m->fn) : 0;
  m->f1 = m->tp ? 2.0 * (double)m->tp / (double)(2 * m->tp + m->fp + m->fn) : 0;
  m->support = m->tp + m->fn;
}

static json_t *prf_json(const prf_t *m) {
  return json_pack("{s:f,s:f,s:f,s:I}", "precision", m->p, "recall", m->r, "f1", m->f1,
                   "support", (json_int_t)m->support);
}

/* ---- the training digest ---- */

static int digest_files(const char *const *files, size_t nfiles, json_t *training,
                        td_err_t *err) {
  json_t *arr = json_array();
  if (!arr) return td_err_set(err, TD_ENOMEM, "out of memory");
  json_object_set_new(training, "files", arr);
  td_sha256_t all;
  td_sha256_init(&all);
  for (size_t f = 0; f < nfiles; f++) {
    char *data = NULL;
    size_t len = 0;
    int rc = td_read_file(files[f], &data, &len, err);
    if (rc) return rc;
    td_sha256_t one;
    td_sha256_init(&one);
    td_sha256_update(&one, data, len);
    td_sha256_update(&all, data, len);
    char hex[TD_SHA256_HEX_LEN + 1];
    td_sha256_final_hex(&one, hex);
    size_t items = 0;
    for (size_t p = 0; p < len;) {
      const char *nl = memchr(data + p, '\n', len - p);
      size_t e = nl ? (size_t)(nl - data) : len, q = p;
      while (q < e && (data[q] == ' ' || data[q] == '\t' || data[q] == '\r')) q++;
      items += q < e;
      p = e + 1;
    }
    free(data);
    const char *base = strrchr(files[f], '/');
    json_array_append_new(arr, json_pack("{s:s,s:s,s:I}", "path", base ? base + 1 : files[f],
                                         "sha256", hex, "items", (json_int_t)items));
  }
  char hex[TD_SHA256_HEX_LEN + 1];
  td_sha256_final_hex(&all, hex);
  json_object_set_new(training, "sha256", json_string(hex));
  return 0;
}

/* ---- choosing C, calibrating, tuning thresholds ---- */

typedef struct outcome {
  double *C, *A, *B, *thr; /* K each */
  size_t *best_ci;         /* K */
  double *grid_score;      /* K * nc: OOF F1 (multi-label) or accuracy (multiclass) */
  prf_t *m;                /* K: CV figures at the chosen threshold */
  double micro_f1, macro_f1, exact, accuracy;
} outcome_t;

static double clamp_thr(double x) { return x < 0.01 ? 0.01 : x > 0.99 ? 0.99 : x; }

static int select_multilabel(trainer_t *t, outcome_t *r, td_err_t *err) {
  size_t n = t->n, K = t->K, nc = t->nc;
  td_calib_scored_t *tmp = malloc(n * sizeof *tmp);
  double *sc = malloc(K * n * sizeof *sc);
  if (!tmp || !sc) {
    free(tmp);
    free(sc);
    return td_err_set(err, TD_ENOMEM, "out of memory");
  }
  for (size_t k = 0; k < K; k++) {
    const int *lab = t->lab + k * n;
    size_t best = 0;
    for (size_t ci = 0; ci < nc; ci++) {
      double f1 = td_calib_best_f1(t->oof + (k * nc + ci) * n, lab, n, tmp, NULL);
      r->grid_score[k * nc + ci] = f1;
      if (f1 > r->grid_score[k * nc + best]) best = ci;
    }
    r->best_ci[k] = best;
    r->C[k] = t->grid[best];
    const double *dec = t->oof + (k * nc + best) * n;
    td_calib_platt_fit(dec, lab, n, &r->A[k], &r->B[k]);
    double *s = sc + k * n;
    for (size_t i = 0; i < n; i++) s[i] = td_calib_platt_score(r->A[k], r->B[k], dec[i]);
    double thr;
    td_calib_best_f1(s, lab, n, tmp, &thr);
    r->thr[k] = clamp_thr(thr);
  }
  /* Figures at the thresholds actually recorded (after clamping). */
  size_t exact = 0;
  prf_t micro = {0};
  memset(r->m, 0, K * sizeof *r->m);
  for (size_t i = 0; i < n; i++) {
    int ok = 1;
    for (size_t k = 0; k < K; k++) {
      int pred = sc[k * n + i] >= r->thr[k], gold = t->lab[k * n + i] > 0;
      r->m[k].tp += pred && gold;
      r->m[k].fp += pred && !gold;
      r->m[k].fn += !pred && gold;
      ok &= pred == gold;
    }
    exact += ok;
  }
  r->macro_f1 = 0;
  for (size_t k = 0; k < K; k++) {
    prf_finish(&r->m[k]);
    micro.tp += r->m[k].tp;
    micro.fp += r->m[k].fp;
    micro.fn += r->m[k].fn;
    r->macro_f1 += r->m[k].f1 / (double)K;
  }
  prf_finish(&micro);
  r->micro_f1 = micro.f1;
  r->exact = (double)exact / (double)n;
  r->accuracy = NAN;
  free(tmp);
  free(sc);
  return 0;
}

/* One C for every class, chosen by the accuracy of argmax over the
 * calibrated scores, which is how a multiclass model tags at serving time. */
static int select_multiclass(trainer_t *t, outcome_t *r, td_err_t *err) {
  size_t n = t->n, K = t->K, nc = t->nc;
  double *A = malloc(K * sizeof *A), *B = malloc(K * sizeof *B);
  size_t *pred = malloc(n * sizeof *pred), *bpred = malloc(n * sizeof *bpred);
  if (!A || !B || !pred || !bpred) {
    free(A);
    free(B);
    free(pred);
    free(bpred);
    return td_err_set(err, TD_ENOMEM, "out of memory");
  }
  size_t best = 0;
  double best_acc = -1;
  for (size_t ci = 0; ci < nc; ci++) {
    for (size_t k = 0; k < K; k++)
      td_calib_platt_fit(t->oof + (k * nc + ci) * n, t->lab + k * n, n, &A[k], &B[k]);
    size_t hit = 0;
    for (size_t i = 0; i < n; i++) {
      size_t arg = 0;
      double top = -1;
      for (size_t k = 0; k < K; k++) {
        double s = td_calib_platt_score(A[k], B[k], t->oof[(k * nc + ci) * n + i]);
        if (s > top) {
          top = s;
          arg = k;
        }
      }
      pred[i] = arg;
      hit += t->lab[arg * n + i] > 0;
    }
    double acc = (double)hit / (double)n;
    for (size_t k = 0; k < K; k++) r->grid_score[k * nc + ci] = acc;
    if (acc > best_acc) {
      best_acc = acc;
      best = ci;
      memcpy(r->A, A, K * sizeof *A);
      memcpy(r->B, B, K * sizeof *B);
      memcpy(bpred, pred, n * sizeof *pred);
    }
  }
  memset(r->m, 0, K * sizeof *r->m);
  for (size_t i = 0; i < n; i++)
    for (size_t k = 0; k < K; k++) {
      int p = bpred[i] == k, g = t->lab[k * n + i] > 0;
      r->m[k].tp += p && g;
      r->m[k].fp += p && !g;
      r->m[k].fn += !p && g;
    }
  r->macro_f1 = 0;
  for (size_t k = 0; k < K; k++) {
    prf_finish(&r->m[k]);
    r->macro_f1 += r->m[k].f1 / (double)K;
    r->best_ci[k] = best;
    r->C[k] = t->grid[best];
    r->thr[k] = 0.5; /* unused: multiclass tags the argmax */
  }
  r->accuracy = r->micro_f1 = r->exact = best_acc;
  free(A);
  free(B);
  free(pred);
  free(bpred);
  return 0;
}

/* ---- checking the written bundle against the models in memory ---- */

static int validate_bundle(trainer_t *t, const td_model_t *m, const char *const *names,
                           td_err_t *err) {
  if (m->ntheme != t->K)
    return td_err_set(err, TD_EMODEL, "written bundle has %zu themes, expected %zu", m->ntheme, t->K);
  for (size_t k = 0; k < t->K; k++)
    if (strcmp(m->themes[k].name, names[k]) != 0)
      return td_err_set(err, TD_EMODEL, "written bundle has theme \"%s\" at %zu, expected \"%s\"",
                        m->themes[k].name, k, names[k]);
  double *dec = malloc(t->K * sizeof *dec);
  td_fvec_t v;
  td_fvec_init(&v);
  int rc = dec ? 0 : td_err_set(err, TD_ENOMEM, "out of memory");
  size_t check = t->n < 200 ? t->n : 200;
  for (size_t i = 0; !rc && i < check; i++) {
    size_t len = 0;
    while (t->x[i][len].index != -1) len++;
    if (len > v.cap) {
      td_feat_t *p = realloc(v.items, len * sizeof *p);
      if (!p) {
        rc = td_err_set(err, TD_ENOMEM, "out of memory");
        break;
      }
      v.items = p;
      v.cap = len;
    }
    for (size_t q = 0; q < len; q++) {
      v.items[q].index = (uint32_t)(t->x[i][q].index - 1);
      v.items[q].value = t->x[i][q].value;
    }
    v.count = len;
    td_model_decision(m, &v, dec);
    for (size_t k = 0; k < t->K; k++) {
      /* libsvm writes support vectors with 8 significant digits */
      double want = final_decision(t, k, t->x[i]);
      if (fabs(dec[k] - want) > 1e-5 * (1 + fabs(want))) {
        rc = td_err_set(err, TD_EMODEL,
                        "written bundle scores passage \"%s\" theme \"%s\" %.9g, trained model %.9g",
                        t->c->items[i].id, names[k], dec[k], want);
        break;
      }
    }
  }
  td_fvec_free(&v);
  free(dec);
  return rc;
}

/* ---- the run ---- */

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double secs(uint64_t a, uint64_t b) { return (double)(b - a) / 1e9; }

/* "." or ".." */
static int is_dots(const char *b, size_t n) { return (n == 1 || n == 2) && !strncmp(b, "..", n); }

/* out_dir as the bundle's path: without trailing slashes, and a last
 * component "." or ".." resolved to the directory it names (a rename
 * cannot take "dir/."; the name comes from it too). NULL: out of memory. */
static char *resolve_out(const char *dir) {
  const char *b;
  size_t n = td_path_last(dir, &b), len = strlen(dir);
  char *real = is_dots(b, n) ? realpath(dir, NULL) : NULL;
  if (real) return real;
  while (len > 1 && dir[len - 1] == '/') len--;
  return strndup(dir, len);
}

/*
 * The bundle's default name: the last component of its path, so "out/" is
 * "out", not "out/" (the manifest's name is what the daemon reports), and
 * "." the directory it resolves to; "/" (or a "." that does not resolve)
 * names nothing, and that is refused here, before training, rather than
 * written as a name.
 */
static int default_name(const char *out, const char *given, char **name, td_err_t *err) {
  const char *b;
  size_t n = td_path_last(out, &b);
  if (n == 0 || is_dots(b, n))
    return td_err_set(err, TD_EINVAL, "cannot name the bundle after --out %s: give a name", given);
  if (!(*name = strndup(b, n))) return td_err_set(err, TD_ENOMEM, "out of memory");
  return 0;
}

static int setup(trainer_t *t, const char ***names_out, td_err_t *err) {
  const td_train_opts_t *o = t->o;
  const td_corpus_t *c = t->c;
  if (!o->out_dir || !*o->out_dir) return td_err_set(err, TD_EINVAL, "no output directory");
  if (c->n == 0 || !c->doc_start) return td_err_set(err, TD_EINVAL, "empty corpus: no items");
  int rc;
  /* The loader's range: a bundle outside it would train and then fail to load. */
  if (!td_feat_buckets_ok(o->feat.buckets))
    return td_err_set(err, TD_EINVAL, "buckets must be %s, got %u", TD_FEAT_BUCKETS_RULE,
                      o->feat.buckets);
  if (!(t->out = resolve_out(o->out_dir))) return td_err_set(err, TD_ENOMEM, "out of memory");
  if (o->name) {
    if (!*o->name) return td_err_set(err, TD_EINVAL, "empty bundle name");
    if (!(t->name = strdup(o->name))) return td_err_set(err, TD_ENOMEM, "out of memory");
  } else if ((rc = default_name(t->out, o->out_dir, &t->name, err))) {
    return rc;
  }
  /* A mistyped --out that names a directory which is not a bundle is
   * refused now, not after the training it would throw away. */
  if ((rc = td_model_check_target(t->out, err))) return rc;
  t->nc = o->c_grid ? o->nc : sizeof default_grid / sizeof *default_grid;
  if (t->nc == 0) return td_err_set(err, TD_EINVAL, "empty C grid");
  if (!(t->grid = malloc(t->nc * sizeof *t->grid))) return td_err_set(err, TD_ENOMEM, "out of memory");
  memcpy(t->grid, o->c_grid ? o->c_grid : default_grid, t->nc * sizeof *t->grid);
  qsort(t->grid, t->nc, sizeof *t->grid, cmp_double);
  for (size_t i = 0; i < t->nc; i++) {
    if (!(t->grid[i] > 0) || !isfinite(t->grid[i]))
      return td_err_set(err, TD_EINVAL, "C must be a positive number, got %g", t->grid[i]);
    if (i && t->grid[i] == t->grid[i - 1])
      return td_err_set(err, TD_EINVAL, "C %g appears twice in the grid", t->grid[i]);
  }
  if (o->solver < 0 || o->solver > TD_SOLVER_SMO)
    return td_err_set(err, TD_EINVAL, "unknown solver %d", o->solver);
  if (o->solver != TD_SOLVER_SMO && o->kernel != LINEAR)
    return td_err_set(err, TD_EINVAL, "solver %s is linear only: a non-linear kernel needs solver smo",
                      td_train_solver_name(o->solver));
  if (!(o->dcd_eps >= 0) || !isfinite(o->dcd_eps))
    return td_err_set(err, TD_EINVAL, "dcd eps must be a positive number, got %g", o->dcd_eps);
  if (o->folds < 1) return td_err_set(err, TD_EINVAL, "folds must be at least 1, got %d", o->folds);
  t->F = (size_t)o->folds;
  if (t->F > c->ndocs)
    return td_err_set(err, TD_EINVAL, "%d folds need at least %d docs, the corpus has %zu", o->folds,
                      o->folds, c->ndocs);
  if (t->F == 1 && t->nc != 1)
    return td_err_set(err, TD_EINVAL,
                      "folds 1 means no cross-validation, so nothing can choose C: give one C");
  /* theme order */
  t->K = o->theme_order ? o->ntheme_order : c->ntheme;
  if (t->K == 0) return td_err_set(err, TD_EINVAL, "no themes: every item is \"other\"");
  if (o->multiclass && t->K < 2) return td_err_set(err, TD_EINVAL, "multiclass needs at least 2 classes");
  t->perm = malloc(t->K * sizeof *t->perm);
  const char **names = malloc(t->K * sizeof *names);
  *names_out = names;
  if (!t->perm || !names) return td_err_set(err, TD_ENOMEM, "out of memory");
  for (size_t k = 0; k < t->K; k++) {
    if (!o->theme_order) {
      t->perm[k] = k;
    } else {
      size_t j = 0;
      while (j < c->ntheme && strcmp(c->themes[j], o->theme_order[k]) != 0) j++;
      if (j == c->ntheme)
        return td_err_set(err, TD_EINVAL, "theme \"%s\" has no passages in the corpus", o->theme_order[k]);
      for (size_t q = 0; q < k; q++)
        if (t->perm[q] == j) return td_err_set(err, TD_EINVAL, "theme \"%s\" listed twice", o->theme_order[k]);
      t->perm[k] = j;
    }
    names[k] = c->themes[t->perm[k]];
    /* td_corpus_load checks them as it reads; this is for every other caller */
    if (!td_theme_name_ok(names[k]))
      return td_err_set(err, TD_EINVAL, "theme \"%s\": not a valid theme name (%s)", names[k],
                        TD_THEME_NAME_RULE);
  }
  for (size_t j = 0; j < c->ntheme; j++) {
    size_t k = 0;
    while (k < t->K && t->perm[k] != j) k++;
    if (k == t->K)
      return td_err_set(err, TD_EINVAL, "corpus theme \"%s\" is missing from the theme list", c->themes[j]);
  }
  t->n = c->n;
  if (!(t->lab = malloc(t->K * t->n * sizeof *t->lab))) return td_err_set(err, TD_ENOMEM, "out of memory");
  for (size_t k = 0; k < t->K; k++) {
    size_t pos = 0;
    for (size_t i = 0; i < t->n; i++) {
      int y = (c->items[i].labels >> t->perm[k]) & 1;
      t->lab[k * t->n + i] = y ? 1 : -1;
      pos += (size_t)y;
    }
    if (pos == 0) return td_err_set(err, TD_EINVAL, "theme \"%s\" has no passages in the corpus", names[k]);
    if (pos == t->n)
      return td_err_set(err, TD_EINVAL, "theme \"%s\" is on every passage: nothing to contrast", names[k]);
  }
  return 0;
}

static json_t *make_training(trainer_t *t, const char *const *files, size_t nfiles, td_err_t *err) {
  const td_train_opts_t *o = t->o;
  json_t *grid = json_array();
  for (size_t i = 0; i < t->nc; i++) json_array_append_new(grid, json_real(t->grid[i]));
  json_t *tr = json_pack("{s:I,s:I,s:I,s:i,s:o,s:s,s:b,s:b,s:s}", "items", (json_int_t)t->n, "docs",
                         (json_int_t)t->c->ndocs, "seed", (json_int_t)o->seed, "folds", o->folds,
                         "c_grid", grid, "tokenizer", o->tokenizer, "balanced", o->balanced != 0,
                         "multiclass", o->multiclass != 0, "solver", td_train_solver_name(o->solver));
  if (tr && is_dcd(t)) {
    td_dcd_param_t d;
    td_dcd_param_default(&d);
    json_object_set_new(tr, "solver_eps", json_real(o->dcd_eps > 0 ? o->dcd_eps : d.eps));
    json_object_set_new(tr, "solver_unconverged", json_integer((json_int_t)t->unconverged));
  }
  if (!tr) {
    td_err_set(err, TD_ENOMEM, "out of memory");
    return NULL;
  }
  if (digest_files(files, nfiles, tr, err)) {
    json_decref(tr);
    return NULL;
  }
  return tr;
}

static json_t *num_or_null(double x) { return isnan(x) ? json_null() : json_real(x); }

/* ---- a tokenizer's dictionary travels inside the bundle ---- */

/* Where the file named by the "dictionary" option goes in the bundle: a
 * portable name under tokenizer/ (model.c resolves it against the bundle
 * directory when loading). */
static char *dict_bundle_name(const char *src) {
  const char *base = strrchr(src, '/');
  base = base ? base + 1 : src;
  int ok = base[0] && base[0] != '.' && strlen(base) <= 64;
  for (const char *p = base; ok && *p; p++)
    ok = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
         *p == '.' || *p == '_' || *p == '-';
  const char *name = ok ? base : "dictionary.txt";
  char *rel = malloc(strlen(name) + sizeof "tokenizer/");
  if (rel) sprintf(rel, "tokenizer/%s", name);
  return rel;
}

static int copy_dict(const char *src, const char *dir, const char *rel, td_err_t *err) {
  char *data = NULL;
  size_t len = 0;
  int rc = td_read_file(src, &data, &len, err);
  if (rc) return td_err_prefix(err, "copying the tokenizer dictionary");
  char path[4096];
  snprintf(path, sizeof path, "%s/tokenizer", dir);
  if (mkdir(path, 0755) != 0 && errno != EEXIST) {
    free(data);
    return td_err_set(err, TD_EIO, "%s: %s", path, strerror(errno));
  }
  snprintf(path, sizeof path, "%s/%s", dir, rel);
  FILE *f = fopen(path, "wb");
  int bad = !f || fwrite(data, 1, len, f) != len;
  if (f && fclose(f) != 0) bad = 1;
  free(data);
  if (bad) return td_err_set(err, TD_EIO, "%s: cannot write the tokenizer dictionary", path);
  return 0;
}

int td_train(const td_train_opts_t *o, const td_corpus_t *c, const char *const *files,
             size_t nfiles, json_t **report, td_err_t *err) {
  uint64_t t0 = td_now_ns(), t_feat = 0, t_cv = 0, t_fit = 0, t_write = 0;
  trainer_t t;
  memset(&t, 0, sizeof t);
  t.o = o;
  t.c = c;
  pthread_mutex_init(&t.mu, NULL);
  const char **names = NULL;
  td_tokenizer_t *tok = NULL;
  uint32_t *df = NULL;
  outcome_t r;
  memset(&r, 0, sizeof r);
  json_t **theme_cv = NULL, *training = NULL, *metrics = NULL, *rep = NULL, *opts_empty = NULL;
  json_t *opts_bundle = NULL; /* tokenizer options with the dictionary's in-bundle name */
  const char *dict_src = NULL;
  char *dict_rel = NULL;
  char *tmp = NULL;
  td_model_t *m = NULL;
  int rc;
  *report = NULL;
  svm_set_print_string_function(svm_quiet);

  if ((rc = setup(&t, &names, err))) goto out;
  size_t n = t.n, K = t.K, nc = t.nc;
  if ((rc = td_tokenizer_open(o->plugin_dir, o->tokenizer, o->tokenizer_options, &tok, err))) goto out;
  if ((rc = featurize(&t, tok, &df, err))) goto out;
  t_feat = td_now_ns();

  r.C = calloc(K, sizeof *r.C);
  r.A = calloc(K, sizeof *r.A);
  r.B = calloc(K, sizeof *r.B);
  r.thr = calloc(K, sizeof *r.thr);
  r.best_ci = calloc(K, sizeof *r.best_ci);
  r.grid_score = calloc(K * nc, sizeof *r.grid_score);
  r.m = calloc(K, sizeof *r.m);
  t.fold = calloc(n, sizeof *t.fold);
  t.final = calloc(K, sizeof *t.final);
  if (is_dcd(&t) && (t.final_dcd = calloc(K, sizeof *t.final_dcd)))
    for (size_t k = 0; k < K; k++) td_dcd_model_init(&t.final_dcd[k]);
  theme_cv = calloc(K, sizeof *theme_cv);
  if (!r.C || !r.A || !r.B || !r.thr || !r.best_ci || !r.grid_score || !r.m || !t.fold ||
      !t.final || !theme_cv || (is_dcd(&t) && !t.final_dcd)) {
    rc = td_err_set(err, TD_ENOMEM, "out of memory");
    goto out;
  }
  if (t.F > 1) {
    if ((rc = td_train_folds(c, o->folds, o->seed, t.fold, err))) goto out;
    if (!(t.oof = malloc(K * nc * n * sizeof *t.oof))) {
      rc = td_err_set(err, TD_ENOMEM, "out of memory");
      goto out;
    }
    if (gram_alloc(&t) && (rc = run_pool(&t, n, gram_job, "gram", err))) goto out;
    if ((rc = run_pool(&t, K * nc * t.F, cv_job, "cv", err))) goto out;
    rc = o->multiclass ? select_multiclass(&t, &r, err) : select_multilabel(&t, &r, err);
    if (rc) goto out;
  } else {
    for (size_t k = 0; k < K; k++) {
      r.C[k] = t.grid[0];
      r.thr[k] = 0.5;
    }
    r.micro_f1 = r.macro_f1 = r.exact = r.accuracy = NAN;
  }
  t_cv = td_now_ns();

  t.chosen_c = r.C;
  if ((rc = run_pool(&t, K, fit_job, "fit", err))) goto out;
  TD_FREE(t.gram);
  TD_FREE(t.gx);
  if (t.F == 1) {
    /* No held-out values: calibrate on the training decisions (optimistic,
     * but monotone, so tags at 0.5 still follow the SVM's sign roughly). */
    double *dec = malloc(n * sizeof *dec);
    if (!dec) {
      rc = td_err_set(err, TD_ENOMEM, "out of memory");
      goto out;
    }
    for (size_t k = 0; k < K; k++) {
      for (size_t i = 0; i < n; i++) dec[i] = final_decision(&t, k, t.x[i]);
      td_calib_platt_fit(dec, t.lab + k * n, n, &r.A[k], &r.B[k]);
    }
    free(dec);
  }
  t_fit = td_now_ns();

  /* manifest pieces */
  for (size_t k = 0; k < K && t.F > 1; k++) {
    json_t *g = json_array();
    for (size_t ci = 0; ci < nc; ci++)
      json_array_append_new(g, json_pack("{s:f,s:f}", "C", t.grid[ci], o->multiclass ? "accuracy" : "f1",
                                         r.grid_score[k * nc + ci]));
    theme_cv[k] = prf_json(&r.m[k]);
    json_object_set_new(theme_cv[k], "grid", g);
  }
  if (!(training = make_training(&t, files, nfiles, err))) {
    rc = err ? err->code : TD_ENOMEM;
    goto out;
  }
  if (t.F > 1)
    metrics = json_pack("{s:s,s:i,s:I,s:o,s:o,s:o,s:o,s:I,s:I}", "method", "grouped-kfold-by-doc",
                        "folds", o->folds, "seed", (json_int_t)o->seed, "micro_f1", json_real(r.micro_f1),
                        "macro_f1", json_real(r.macro_f1), "exact_match", json_real(r.exact),
                        "accuracy", num_or_null(r.accuracy), "items", (json_int_t)n, "docs",
                        (json_int_t)c->ndocs);
  else
    metrics = json_pack("{s:s,s:I,s:I}", "method", "none", "items", (json_int_t)n, "docs",
                        (json_int_t)c->ndocs);
  if (!o->tokenizer_options) opts_empty = json_object();
  {
    const json_t *d = o->tokenizer_options ? json_object_get(o->tokenizer_options, "dictionary") : NULL;
    if (json_is_string(d)) {
      dict_src = json_string_value(d);
      dict_rel = dict_bundle_name(dict_src);
      opts_bundle = json_deep_copy(o->tokenizer_options);
      if (!dict_rel || !opts_bundle ||
          json_object_set_new(opts_bundle, "dictionary", json_string(dict_rel))) {
        rc = td_err_set(err, TD_ENOMEM, "out of memory");
        goto out;
      }
    }
  }
  const char *name = t.name;
  td_bundle_spec_t spec = {
      .name = name,
      .version = o->version ? o->version : "1.0.0",
      .multiclass = o->multiclass,
      .tokenizer = o->tokenizer,
      .tokenizer_options = opts_bundle ? opts_bundle : o->tokenizer_options ? o->tokenizer_options : opts_empty,
      .feat = &o->feat,
      .split = &o->split,
      .df = df,
      .n_docs = n,
      .ntheme = K,
      .themes = names,
      .svms = t.final,
      .thresholds = r.thr,
      .platt_a = r.A,
      .platt_b = r.B,
      .C = r.C,
      .theme_cv = t.F > 1 ? (const json_t *const *)theme_cv : NULL,
      .training = training,
      .metrics = metrics,
  };
  /* Write beside the target, validate by loading it back, then swap it in:
   * a daemon reloading out_dir never sees a half-written bundle. */
  const char *out = t.out;
  size_t ol = strlen(out);
  if (!(tmp = malloc(ol + 32))) {
    rc = td_err_set(err, TD_ENOMEM, "out of memory");
    goto out;
  }
  snprintf(tmp, ol + 32, "%s.tmp.%ld", out, (long)getpid());
  td_remove_tree(tmp);
  if (!(rc = td_model_write_files(tmp, &spec, err)) &&
      !(rc = dict_src ? copy_dict(dict_src, tmp, dict_rel, err) : 0)) {
    if (!(rc = td_model_load(tmp, o->plugin_dir, &m, err)))
      rc = validate_bundle(&t, m, names, err);
    if (rc) td_err_prefix(err, "validating the written bundle");
    td_model_unref(&m);
    /* fsyncs it all (the dictionary too) and swaps it in as a whole */
    if (!rc) rc = td_model_install(tmp, out, err);
  }
  if (rc) {
    td_remove_tree(tmp);
    goto out;
  }
  t_write = td_now_ns();

  /* report */
  json_t *themes = json_array();
  for (size_t k = 0; k < K; k++) {
    json_t *th = json_pack("{s:s,s:f,s:f,s:f,s:f}", "theme", names[k], "C", r.C[k], "threshold", r.thr[k],
                           "platt_a", r.A[k], "platt_b", r.B[k]);
    if (theme_cv[k]) json_object_update(th, theme_cv[k]);
    else json_object_set_new(th, "support", json_integer(0));
    json_array_append_new(themes, th);
  }
  rep = json_pack("{s:s,s:s,s:b,s:I,s:I,s:i,s:s,s:s,s:o,s:O,s:{s:f,s:f,s:f,s:f,s:f}}", "out", o->out_dir,
                  "name", name, "multiclass", o->multiclass != 0, "items", (json_int_t)n, "docs",
                  (json_int_t)c->ndocs, "folds", o->folds, "tokenizer", o->tokenizer, "solver",
                  td_train_solver_name(o->solver), "themes", themes,
                  "metrics", metrics, "timings", "features_s", secs(t0, t_feat), "cv_s", secs(t_feat, t_cv),
                  "fit_s", secs(t_cv, t_fit), "write_s", secs(t_fit, t_write), "total_s",
                  secs(t0, td_now_ns()));
  if (!rep) rc = td_err_set(err, TD_ENOMEM, "out of memory");
  *report = rep;
out:
  if (t.final)
    for (size_t k = 0; k < t.K; k++)
      if (t.final[k]) svm_free_and_destroy_model(&t.final[k]);
  if (t.final_dcd)
    for (size_t k = 0; k < t.K; k++) td_dcd_model_free(&t.final_dcd[k]);
  free(t.final_dcd);
  if (theme_cv)
    for (size_t k = 0; k < t.K; k++) json_decref(theme_cv[k]);
  free(theme_cv);
  json_decref(training);
  json_decref(metrics);
  json_decref(opts_empty);
  json_decref(opts_bundle);
  free(dict_rel);
  td_tokenizer_free(&tok);
  free(tmp);
  free(df);
  free(r.C);
  free(r.A);
  free(r.B);
  free(r.thr);
  free(r.best_ci);
  free(r.grid_score);
  free(r.m);
  free(t.grid);
  free(t.perm);
  free(t.lab);
  free(t.pool);
  free(t.gram);
  free(t.gx);
  free(t.x);
  free(t.fold);
  free(t.oof);
  free(t.final);
  free(names);
  free(t.name);
  free(t.out);
  pthread_mutex_destroy(&t.mu);
  return rc;
}
