/*
 * Model bundles: write/load round trip, every validation error, collapsed
 * weights against libsvm's own svm_predict_values (synthetic data always,
 * the real corpus when ../shared is there), RBF fallback, Platt scoring,
 * reference counting across threads.
 *
 * Bundles are built here from SVMs trained with libsvm on small generated
 * data sets, so every expectation is derived from a model the test made.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <libsvm/svm.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "classify.h"
#include "features.h"
#include "model.h"
#include "text.h"

#define DIM 1024u /* buckets of the synthetic bundles */
#define NS 240    /* synthetic samples */
#define NT 3      /* synthetic themes */

static const char *const theme_names[NT] = {"talent", "industry", "ecology"};

/* ------------------------------------------------------------------------ */
/* Helpers                                                                  */

static void quiet(const char *s) { (void)s; }

static uint64_t rng_state;
static uint32_t rnd(void) { /* xorshift64*, deterministic */
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return (uint32_t)((rng_state * 2685821657736338717ull) >> 32);
}
static double rndu(void) { return (rnd() + 0.5) / 4294967296.0; }

static char *mktemp_dir(void) {
  const char *t = getenv("TMPDIR");
  char buf[512];
  snprintf(buf, sizeof buf, "%s/td-model-XXXXXX", t && *t ? t : "/tmp");
  char *d = mkdtemp(buf);
  assert_non_null(d);
  return strdup(d);
}

static char *pjoin(const char *a, const char *b) {
  char *p = malloc(strlen(a) + strlen(b) + 2);
  sprintf(p, "%s/%s", a, b);
  return p;
}

static void write_text(const char *path, const char *text, const char *mode) {
  FILE *f = fopen(path, mode);
  assert_non_null(f);
  fputs(text, f);
  assert_int_equal(fclose(f), 0);
}

static const char *plugin_dir(void) { return getenv("THEMED_PLUGIN_DIR"); }

/* A synthetic data set: sparse rows over DIM features, labels of NT themes
 * from hidden linear rules. Row storage is libsvm's (1-based indexes). */
typedef struct ds {
  int n;
  struct svm_node **x;
  struct svm_node *pool;
  double y[NT][NS];
  uint32_t df[DIM];
} ds_t;

static void ds_make(ds_t *d, uint64_t seed) {
  memset(d, 0, sizeof *d);
  rng_state = seed;
  double hidden[NT][DIM];
  for (int k = 0; k < NT; k++)
    for (unsigned i = 0; i < DIM; i++) hidden[k][i] = rndu() * 2 - 1;
  d->n = NS;
  d->x = calloc(NS, sizeof *d->x);
  d->pool = calloc(NS * 13, sizeof *d->pool);
  for (int r = 0; r < NS; r++) {
    struct svm_node *row = d->pool + r * 13;
    d->x[r] = row;
    /* 12 distinct ascending indexes: one per stride of DIM/12 */
    unsigned stride = DIM / 12;
    double dots[NT] = {0}, norm = 0;
    for (int j = 0; j < 12; j++) {
      unsigned i = j * stride + rnd() % stride;
      row[j].index = (int)i + 1;
      row[j].value = rndu();
      norm += row[j].value * row[j].value;
    }
    for (int j = 0; j < 12; j++) {
      row[j].value /= sqrt(norm); /* L2 like the real features */
      d->df[row[j].index - 1]++;
      for (int k = 0; k < NT; k++) dots[k] += hidden[k][row[j].index - 1] * row[j].value;
    }
    row[12].index = -1;
    for (int k = 0; k < NT; k++) d->y[k][r] = dots[k] > 0.05 * (k - 1) ? +1 : -1;
  }
}

static void ds_free(ds_t *d) {
  free(d->x);
  free(d->pool);
}

static void svm_param_init(struct svm_parameter *p, int kernel, double C) {
  memset(p, 0, sizeof *p);
  p->svm_type = C_SVC;
  p->kernel_type = kernel;
  p->degree = 3;
  p->gamma = 0.5;
  p->coef0 = 0;
  p->cache_size = 20;
  p->eps = 1e-3;
  p->C = C;
  p->shrinking = 1;
}

/* Trains theme k on the data set. */
static struct svm_model *train_theme(const ds_t *d, int k, int kernel, double **ybuf) {
  double *y = malloc(d->n * sizeof *y);
  memcpy(y, d->y[k], d->n * sizeof *y);
  struct svm_problem prob = {d->n, y, d->x};
  struct svm_parameter p;
  svm_param_init(&p, kernel, 1.0);
  assert_null(svm_check_parameter(&prob, &p));
  struct svm_model *m = svm_train(&prob, &p);
  assert_non_null(m);
  /* libsvm >= 3.17 puts +1 first for -1/+1 problems */
  assert_int_equal(m->label[0], +1);
  *ybuf = y;
  return m;
}

/*
 * The same classifier with label[0] = -1, as older libsvm versions (and
 * other writers of the format) produce it: classes swapped, the -1 support
 * vectors first, coefficients and rho negated. Predictions are identical;
 * only the orientation td_model_load must fold in differs. The SV nodes stay
 * owned by `a` (free_sv = 0), every array here is our own malloc.
 */
static struct svm_model *flip_model(const struct svm_model *a) {
  struct svm_model *b = calloc(1, sizeof *b);
  int l = a->l, n0 = a->nSV[0], n1 = a->nSV[1];
  b->param = a->param;
  b->nr_class = 2;
  b->l = l;
  b->SV = malloc(l * sizeof *b->SV);
  b->sv_coef = malloc(sizeof *b->sv_coef);
  b->sv_coef[0] = malloc(l * sizeof **b->sv_coef);
  for (int j = 0; j < n1; j++) {
    b->SV[j] = a->SV[n0 + j];
    b->sv_coef[0][j] = -a->sv_coef[0][n0 + j];
  }
  for (int j = 0; j < n0; j++) {
    b->SV[n1 + j] = a->SV[j];
    b->sv_coef[0][n1 + j] = -a->sv_coef[0][j];
  }
  b->rho = malloc(sizeof *b->rho);
  b->rho[0] = -a->rho[0];
  b->label = malloc(2 * sizeof *b->label);
  b->label[0] = a->label[1];
  b->label[1] = a->label[0];
  b->nSV = malloc(2 * sizeof *b->nSV);
  b->nSV[0] = n1;
  b->nSV[1] = n0;
  b->free_sv = 0;
  return b;
}

/* Everything one synthetic bundle needs, kept alive for the whole group. */
typedef struct fixture {
  ds_t d;
  double *y[NT];
  struct svm_model *trained[NT]; /* as svm_train made them */
  struct svm_model *svm[NT];     /* linear; theme 1 flipped to label[0] = -1 */
  struct svm_model *rbf[NT];
  double thr[NT], pa[NT], pb[NT], C[NT];
  td_feat_config_t feat;
  td_split_opts_t split;
  json_t *tokopts, *training, *metrics, *cv[NT];
  char *dir; /* scratch directory for this group */
} fixture_t;

static void spec_fill(fixture_t *f, td_bundle_spec_t *s, struct svm_model *const *svms) {
  memset(s, 0, sizeof *s);
  s->name = "synthetic";
  s->version = "0.1.2";
  s->multiclass = 0;
  s->tokenizer = "bigram";
  s->tokenizer_options = f->tokopts;
  s->feat = &f->feat;
  s->split = &f->split;
  s->df = f->d.df;
  s->n_docs = (size_t)f->d.n;
  s->ntheme = NT;
  s->themes = theme_names;
  s->svms = svms;
  s->thresholds = f->thr;
  s->platt_a = f->pa;
  s->platt_b = f->pb;
  s->C = f->C;
  s->theme_cv = (const json_t *const *)f->cv;
  s->training = f->training;
  s->metrics = f->metrics;
}

static int group_setup(void **state) {
  svm_set_print_string_function(quiet);
  fixture_t *f = calloc(1, sizeof *f);
  ds_make(&f->d, 0x5eed1234abcdull);
  for (int k = 0; k < NT; k++) {
    f->trained[k] = train_theme(&f->d, k, LINEAR, &f->y[k]);
    /* theme 1 has label[0] = -1: the orientation must be folded */
    f->svm[k] = k == 1 ? flip_model(f->trained[k]) : f->trained[k];
    f->thr[k] = 0.3 + 0.1 * k + 1.0 / 3.0 * 1e-3; /* not exactly printable */
    f->pa[k] = -2.0 - 0.123456789012345 * k;
    f->pb[k] = 0.1 / 3.0 * (k - 1);
    f->C[k] = 1.0;
    f->cv[k] = json_pack("{s:f, s:f}", "f1", 0.8 + 0.01 * k, "precision", 0.9);
  }
  td_feat_config_default(&f->feat);
  f->feat.buckets = DIM;
  td_split_opts_default(&f->split);
  f->split.max_chars = 321;
  f->split.heading_chars = 33;
  f->tokopts = json_object();
  f->training =
      json_pack("{s:[s], s:s, s:i}", "files", "train.jsonl", "sha256", "abc123", "passages", NS);
  f->metrics = json_pack("{s:f, s:f}", "micro_f1", 0.75, "macro_f1", 0.7);
  f->dir = mktemp_dir();
  *state = f;
  return 0;
}

static int group_teardown(void **state) {
  fixture_t *f = *state;
  for (int k = 0; k < NT; k++) {
    if (f->svm[k] != f->trained[k]) svm_free_and_destroy_model(&f->svm[k]);
    svm_free_and_destroy_model(&f->trained[k]);
    if (f->rbf[k]) svm_free_and_destroy_model(&f->rbf[k]);
    free(f->y[k]);
    json_decref(f->cv[k]);
  }
  ds_free(&f->d);
  json_decref(f->tokopts);
  json_decref(f->training);
  json_decref(f->metrics);
  td_remove_tree(f->dir);
  free(f->dir);
  free(f);
  return 0;
}

/* A fresh bundle directory under the group's scratch dir. */
static char *fresh_bundle(fixture_t *f, const char *name) {
  char *dir = pjoin(f->dir, name);
  td_remove_tree(dir);
  td_bundle_spec_t s;
  spec_fill(f, &s, f->svm);
  td_err_t err;
  td_err_clear(&err);
  int rc = td_model_write(dir, &s, &err);
  if (rc) fail_msg("td_model_write: %s", err.msg);
  return dir;
}

static void manifest_edit(const char *dir, void (*fn)(json_t *root, void *ud), void *ud) {
  char *p = pjoin(dir, "manifest.json");
  json_error_t je;
  json_t *root = json_load_file(p, 0, &je);
  assert_non_null(root);
  fn(root, ud);
  assert_int_equal(json_dump_file(root, p, JSON_INDENT(2) | JSON_REAL_PRECISION(17)), 0);
  json_decref(root);
  free(p);
}

/* Loads dir expecting failure with `code` and a message containing each of
 * the NULL-terminated substrings. */
static void expect_load_error(const char *dir, int code, ...) {
  td_model_t *m = NULL;
  td_err_t err;
  td_err_clear(&err);
  int rc = td_model_load(dir, plugin_dir(), &m, &err);
  assert_null(m);
  if (rc != code) fail_msg("expected %s, got %s: %s", td_strerror(code), td_strerror(rc), err.msg);
  assert_int_equal(err.code, code);
  va_list ap;
  va_start(ap, code);
  const char *want;
  while ((want = va_arg(ap, const char *)) != NULL)
    if (!strstr(err.msg, want)) fail_msg("message \"%s\" lacks \"%s\"", err.msg, want);
  va_end(ap);
}

static td_model_t *load_ok(const char *dir) {
  td_model_t *m = NULL;
  td_err_t err;
  td_err_clear(&err);
  int rc = td_model_load(dir, plugin_dir(), &m, &err);
  if (rc) fail_msg("td_model_load(%s): %s", dir, err.msg);
  assert_non_null(m);
  return m;
}

static void fvec_from_nodes(td_fvec_t *v, const struct svm_node *n) {
  v->count = 0;
  for (; n->index != -1; n++) {
    if (v->count == v->cap) {
      v->cap = v->cap ? 2 * v->cap : 16;
      v->items = realloc(v->items, v->cap * sizeof *v->items);
    }
    v->items[v->count].index = (uint32_t)(n->index - 1);
    v->items[v->count].value = n->value;
    v->count++;
  }
}

/* ------------------------------------------------------------------------ */
/* Round trip                                                               */

static void test_roundtrip(void **state) {
  fixture_t *f = *state;
  char *dir = fresh_bundle(f, "roundtrip");
  td_model_t *m = load_ok(dir);

  assert_int_equal(m->magic, TD_MODEL_MAGIC);
  assert_int_equal(atomic_load(&m->refs), 1);
  assert_string_equal(m->dir, dir);
  assert_string_equal(m->name, "synthetic");
  assert_string_equal(m->version, "0.1.2");
  assert_string_equal(m->label, "synthetic@0.1.2");
  assert_int_equal(m->multiclass, 0);
  assert_int_equal(m->linear, 1);
  assert_true(m->load_ns > 0);
  assert_memory_equal(&m->feat.buckets, &f->feat.buckets, sizeof f->feat.buckets);
  assert_int_equal(m->feat.ngram_max, f->feat.ngram_max);
  assert_int_equal(m->feat.sublinear_tf, f->feat.sublinear_tf);
  assert_int_equal(m->feat.use_idf, f->feat.use_idf);
  assert_true(m->feat.context_weight == f->feat.context_weight);
  assert_int_equal(m->feat.seed, f->feat.seed);
  assert_int_equal(m->split.max_chars, 321);
  assert_int_equal(m->split.heading_chars, 33);
  assert_non_null(m->tok);
  assert_string_equal(td_tokenizer_name(m->tok), "bigram");

  assert_int_equal(m->ntheme, NT);
  for (int k = 0; k < NT; k++) {
    const td_theme_t *t = &m->themes[k];
    assert_string_equal(t->name, theme_names[k]);
    assert_int_equal(td_model_theme_index(m, theme_names[k]), k);
    /* %.17g in the manifest: doubles come back bit for bit */
    assert_true(t->threshold == f->thr[k]);
    assert_true(t->platt_a == f->pa[k]);
    assert_true(t->platt_b == f->pb[k]);
    assert_true(t->C == f->C[k]);
    assert_int_equal(t->sign, k == 1 ? -1 : +1);
    const struct svm_model *a = f->svm[k], *b = t->svm;
    assert_int_equal(b->param.svm_type, C_SVC);
    assert_int_equal(b->param.kernel_type, LINEAR);
    assert_int_equal(b->nr_class, 2);
    assert_int_equal(b->l, a->l);
    assert_int_equal(b->label[0], a->label[0]);
    assert_int_equal(b->label[1], a->label[1]);
    assert_int_equal(b->nSV[0], a->nSV[0]);
    assert_int_equal(b->nSV[1], a->nSV[1]);
    assert_true(b->rho[0] == a->rho[0]);
    for (int j = 0; j < a->l; j++) {
      assert_true(b->sv_coef[0][j] == a->sv_coef[0][j]);
      const struct svm_node *p = a->SV[j], *q = b->SV[j];
      for (; p->index != -1; p++, q++) {
        assert_int_equal(q->index, p->index);
        /* libsvm saves SV values with %.8g: 8 significant digits */
        assert_true(fabs(q->value - p->value) <= 5e-8 * fabs(p->value));
      }
      assert_int_equal(q->index, -1);
    }
    assert_true(m->bias[k] == -(double)t->sign * b->rho[0]);
  }
  assert_int_equal(td_model_theme_index(m, "other"), -1);
  assert_int_equal(td_model_theme_index(m, "nope"), -1);

  /* idf: exact for every bucket, listed or default */
  for (unsigned i = 0; i < DIM; i++)
    assert_true(m->idf[i] == td_features_idf(f->d.df[i], (size_t)f->d.n));

  /* manifest fields as written */
  const json_t *j = m->manifest;
  assert_int_equal(json_integer_value(json_object_get(j, "format")), TD_MODEL_FORMAT);
  const char *created = json_string_value(json_object_get(j, "created"));
  assert_non_null(created);
  assert_int_equal(strlen(created), 20);
  assert_true(created[4] == '-' && created[10] == 'T' && created[19] == 'Z');
  assert_true(json_equal(json_object_get(j, "training"), f->training));
  assert_true(json_equal(json_object_get(j, "metrics"), f->metrics));
  const json_t *tok = json_object_get(j, "tokenizer");
  assert_string_equal(json_string_value(json_object_get(tok, "name")), "bigram");
  assert_true(json_equal(json_object_get(tok, "options"), f->tokopts));
  const json_t *idf = json_object_get(j, "idf");
  assert_string_equal(json_string_value(json_object_get(idf, "file")), "idf.tsv");
  assert_int_equal(json_integer_value(json_object_get(idf, "n_docs")), NS);
  assert_true(json_real_value(json_object_get(idf, "default")) == td_features_idf(0, NS));
  json_t *feat = td_feat_config_to_json(&f->feat);
  assert_true(json_equal(json_object_get(j, "features"), feat));
  json_decref(feat);
  for (int k = 0; k < NT; k++) {
    const json_t *t = json_array_get(json_object_get(j, "themes"), k);
    char svm[64];
    snprintf(svm, sizeof svm, "svm/%s.model", theme_names[k]);
    assert_string_equal(json_string_value(json_object_get(t, "svm")), svm);
    assert_true(json_equal(json_object_get(t, "cv"), f->cv[k]));
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(t, "calibration"), "method")), "platt");
  }

  /* idf.tsv: header + one line per bucket with df > 0, in index order */
  char *p = pjoin(dir, "idf.tsv"), *text;
  size_t len;
  assert_int_equal(td_read_file(p, &text, &len, NULL), 0);
  size_t lines = 0, nz = 0;
  for (size_t i = 0; i < len; i++) lines += text[i] == '\n';
  for (unsigned i = 0; i < DIM; i++) nz += f->d.df[i] > 0;
  assert_int_equal(lines, nz + 1);
  assert_memory_equal(text, "index\tidf\n", 10);
  free(text);
  free(p);

  /* no temporary files left behind */
  char *svmdir = pjoin(dir, "svm");
  const char *dirs[] = {dir, svmdir};
  for (int d = 0; d < 2; d++) {
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "ls -a '%s' | grep -q '\\.tmp'", dirs[d]);
    assert_int_not_equal(system(cmd), 0);
  }
  free(svmdir);

  /* writing again over the bundle replaces it and still loads */
  td_bundle_spec_t s;
  spec_fill(f, &s, f->svm);
  s.version = "0.1.3";
  assert_int_equal(td_model_write(dir, &s, NULL), 0);
  td_model_t *m2 = load_ok(dir);
  assert_string_equal(m2->label, "synthetic@0.1.3");
  td_model_unref(&m2);

  td_model_unref(&m);
  assert_null(m);
  free(dir);
}

/* ------------------------------------------------------------------------ */
/* Collapsed weights == libsvm                                              */

static void check_equivalence(const td_model_t *m, struct svm_model *const *orig,
                              const struct svm_node *const *rows, int nrows) {
  td_fvec_t v;
  td_fvec_init(&v);
  double dec[TD_MAX_THEMES];
  for (int r = 0; r < nrows; r++) {
    fvec_from_nodes(&v, rows[r]);
    td_model_decision(m, &v, dec);
    for (size_t k = 0; k < m->ntheme; k++) {
      double lib = td_model_decision_libsvm(m, k, &v);
      if (fabs(dec[k] - lib) > 1e-9)
        fail_msg("row %d theme %zu: collapsed %.17g, libsvm %.17g", r, k, dec[k], lib);
      /* the orientation: dec > 0 means libsvm predicts +1 */
      double raw, label = svm_predict_values(m->themes[k].svm, rows[r], &raw);
      assert_true(fabs(m->themes[k].sign * raw - lib) == 0);
      if (raw != 0) assert_true((label == 1) == (lib > 0));
      /* and it agrees with the model as trained (before save/load) */
      if (orig) {
        double raw0;
        svm_predict_values(orig[k], rows[r], &raw0);
        assert_true(fabs(m->themes[k].sign * raw0 - dec[k]) < 1e-6);
      }
    }
  }
  td_fvec_free(&v);
}

static void test_collapse_synthetic(void **state) {
  fixture_t *f = *state;
  char *dir = fresh_bundle(f, "collapse");
  td_model_t *m = load_ok(dir);
  assert_non_null(m->w);
  /* training rows, and fresh rows nobody trained on */
  check_equivalence(m, f->svm, (const struct svm_node *const *)f->d.x, f->d.n);
  ds_t other;
  ds_make(&other, 0xfeedfaceull);
  check_equivalence(m, NULL, (const struct svm_node *const *)other.x, other.n);
  ds_free(&other);

  /* the empty vector scores the bias alone */
  td_fvec_t v;
  td_fvec_init(&v);
  double dec[NT];
  td_model_decision(m, &v, dec);
  for (int k = 0; k < NT; k++) {
    assert_true(dec[k] == m->bias[k]);
    assert_true(fabs(td_model_decision_libsvm(m, k, &v) - dec[k]) < 1e-12);
  }
  /* a long vector takes td_model_decision_libsvm's heap path */
  for (unsigned i = 0; i < 600; i++) {
    if (v.count == v.cap) {
      v.cap = v.cap ? 2 * v.cap : 64;
      v.items = realloc(v.items, v.cap * sizeof *v.items);
    }
    v.items[v.count].index = i;
    v.items[v.count++].value = 1.0 / (1 + i);
  }
  td_model_decision(m, &v, dec);
  for (int k = 0; k < NT; k++)
    assert_true(fabs(td_model_decision_libsvm(m, k, &v) - dec[k]) < 1e-9);
  td_fvec_free(&v);
  td_model_unref(&m);
  free(dir);
}

static void test_rbf_bundle(void **state) {
  fixture_t *f = *state;
  double *y[NT];
  for (int k = 0; k < NT; k++) f->rbf[k] = train_theme(&f->d, k, RBF, &y[k]);
  /* the bundle owns copies (save + load): the trained models can go */
  char *dir = pjoin(f->dir, "rbf");
  td_remove_tree(dir);
  td_bundle_spec_t s;
  spec_fill(f, &s, f->rbf);
  assert_int_equal(td_model_write(dir, &s, NULL), 0);
  for (int k = 0; k < NT; k++) {
    svm_free_and_destroy_model(&f->rbf[k]);
    free(y[k]);
  }
  td_model_t *m = load_ok(dir);
  assert_int_equal(m->linear, 0);
  assert_null(m->w);
  for (int k = 0; k < NT; k++) assert_int_equal(m->themes[k].svm->param.kernel_type, RBF);
  check_equivalence(m, NULL, (const struct svm_node *const *)f->d.x, 50);
  /* td_model_decision is libsvm here: exactly equal */
  td_fvec_t v;
  td_fvec_init(&v);
  fvec_from_nodes(&v, f->d.x[7]);
  double dec[NT];
  td_model_decision(m, &v, dec);
  for (int k = 0; k < NT; k++) assert_true(dec[k] == td_model_decision_libsvm(m, k, &v));
  td_fvec_free(&v);
  td_model_unref(&m);
  free(dir);
}

static void test_score(void **state) {
  (void)state;
  td_theme_t t = {.platt_a = -3.0, .platt_b = 0.25};
  for (double d = -5; d <= 5; d += 0.25) {
    double want = 1.0 / (1.0 + exp(t.platt_a * d + t.platt_b));
    assert_true(fabs(td_model_score(&t, d) - want) < 1e-15);
  }
  assert_true(td_model_score(&t, 0) < 0.5); /* b > 0 pulls the midpoint up */
  /* extreme values stay finite and ordered */
  assert_true(td_model_score(&t, 1e6) == 1.0);
  assert_true(td_model_score(&t, -1e6) == 0.0);
  assert_false(isnan(td_model_score(&t, 400)));
  assert_true(td_model_score(&t, 1) > td_model_score(&t, 0.5));
}

/* ------------------------------------------------------------------------ */
/* Reference counting                                                       */

static void *ref_worker(void *arg) {
  td_model_t *m = arg;
  for (int i = 0; i < 20000; i++) {
    td_model_t *r = td_model_ref(m);
    td_model_unref(&r);
    assert_null(r);
  }
  return NULL;
}

static void *unref_worker(void *arg) {
  td_model_unref(arg);
  return NULL;
}

static void test_refcount(void **state) {
  fixture_t *f = *state;
  char *dir = fresh_bundle(f, "refs");
  td_model_t *m = load_ok(dir);
  td_model_t *r = td_model_ref(m);
  assert_ptr_equal(r, m);
  assert_int_equal(atomic_load(&m->refs), 2);
  pthread_t th[8];
  for (int i = 0; i < 8; i++) assert_int_equal(pthread_create(&th[i], NULL, ref_worker, m), 0);
  for (int i = 0; i < 8; i++) pthread_join(th[i], NULL);
  assert_int_equal(atomic_load(&m->refs), 2);
  td_model_unref(&r);
  assert_null(r);
  assert_int_equal(atomic_load(&m->refs), 1);
  /* the last reference dropped on another thread frees it (ASan checks) */
  pthread_t t;
  td_model_t *last = m;
  assert_int_equal(pthread_create(&t, NULL, unref_worker, &last), 0);
  pthread_join(t, NULL);
  assert_null(last);
  td_model_unref(&last); /* NULL is fine */
  free(dir);
}

/* ------------------------------------------------------------------------ */
/* Validation: one test per failure                                         */

static void set_path(json_t *root, const char *path, json_t *val) {
  /* "themes[1].threshold" style; val NULL deletes */
  char buf[128];
  snprintf(buf, sizeof buf, "%s", path);
  json_t *cur = root;
  char *save, *tok = strtok_r(buf, ".", &save), *next;
  while (tok) {
    next = strtok_r(NULL, ".", &save);
    char *br = strchr(tok, '[');
    if (br) {
      *br = '\0';
      cur = json_array_get(json_object_get(cur, tok), strtoul(br + 1, NULL, 10));
      assert_non_null(cur);
      if (!next) fail_msg("set_path: cannot replace an array element");
    } else if (!next) {
      if (val)
        json_object_set_new(cur, tok, val);
      else
        json_object_del(cur, tok);
    } else {
      cur = json_object_get(cur, tok);
      assert_non_null(cur);
    }
    tok = next;
  }
}

typedef struct edit {
  const char *path;
  json_t *val;
} edit_t;
static void apply_edit(json_t *root, void *ud) {
  edit_t *e = ud;
  set_path(root, e->path, e->val);
}

/* Writes a fresh bundle, sets one manifest field, expects an error. */
static void bad_field(fixture_t *f, const char *path, json_t *val, int code, const char *want) {
  char *dir = fresh_bundle(f, "bad");
  edit_t e = {path, val};
  manifest_edit(dir, apply_edit, &e);
  expect_load_error(dir, code, "bad/manifest.json", want, NULL);
  free(dir);
}

static void test_err_missing_manifest(void **state) {
  fixture_t *f = *state;
  char *dir = fresh_bundle(f, "nomanifest");
  char *p = pjoin(dir, "manifest.json");
  assert_int_equal(unlink(p), 0);
  expect_load_error(dir, TD_EIO, "nomanifest/manifest.json", "No such file", NULL);
  expect_load_error("/nonexistent/bundle", TD_EIO, "/nonexistent/bundle/manifest.json", NULL);
  free(p);
  free(dir);
}

static void test_err_bad_json(void **state) {
  fixture_t *f = *state;
  char *dir = fresh_bundle(f, "badjson");
  char *p = pjoin(dir, "manifest.json");
  write_text(p, "{\n  \"format\": 1,\n  \"name\": \"x\",,\n}\n", "w");
  expect_load_error(dir, TD_EMODEL, "badjson/manifest.json: line 3 column", NULL);
  write_text(p, "[1, 2]\n", "w");
  expect_load_error(dir, TD_EMODEL, "manifest.json: (top level): expected an object, got an array",
                    NULL);
  write_text(p, "{\"format\": 1, \"format\": 1}\n", "w");
  expect_load_error(dir, TD_EMODEL, "manifest.json: line 1", "duplicate", NULL);
  write_text(p, "", "w");
  expect_load_error(dir, TD_EMODEL, "manifest.json: line", NULL);
  free(p);
  free(dir);
}

static void test_err_format(void **state) {
  fixture_t *f = *state;
  bad_field(f, "format", json_integer(2), TD_EMODEL,
            "format 2 is newer than this themed supports (1)");
  bad_field(f, "format", json_integer(0), TD_EMODEL, "format: expected 1, got 0");
  bad_field(f, "format", json_string("1"), TD_EMODEL, "format: expected an integer, got \"1\"");
  bad_field(f, "format", NULL, TD_EMODEL, "format: expected an integer, got nothing (missing)");
}

static void test_err_fields(void **state) {
  fixture_t *f = *state;
  bad_field(f, "name", NULL, TD_EMODEL, "name: expected a non-empty string, got nothing");
  bad_field(f, "name", json_string(""), TD_EMODEL, "name: expected a non-empty string, got \"\"");
  bad_field(f, "version", json_integer(3), TD_EMODEL,
            "version: expected a non-empty string, got 3");
  bad_field(f, "created", json_null(), TD_EMODEL, "created: expected a non-empty string, got null");
  bad_field(f, "multiclass", json_string("no"), TD_EMODEL,
            "multiclass: expected true or false, got \"no\"");
  bad_field(f, "tokenizer", json_string("bigram"), TD_EMODEL,
            "tokenizer: expected an object, got \"bigram\"");
  bad_field(f, "tokenizer.name", json_integer(1), TD_EMODEL,
            "tokenizer.name: expected a non-empty string, got 1");
  bad_field(f, "tokenizer.options", json_array(), TD_EMODEL,
            "tokenizer.options: expected an object, got an array");
  bad_field(f, "features", NULL, TD_EMODEL, "features: expected an object, got nothing");
  bad_field(f, "features.buckets", json_string("many"), TD_EMODEL,
            "bad/manifest.json: features.buckets");
  bad_field(f, "split", json_true(), TD_EMODEL, "split: expected an object, got true");
  bad_field(f, "split.max_chars", json_integer(-1), TD_EMODEL,
            "split.max_chars: expected an integer in [0, 1000000000], got -1");
  bad_field(f, "split.heading_chars", json_real(2.5), TD_EMODEL,
            "split.heading_chars: expected an integer in [0, 1000000000], got 2.5");
  bad_field(f, "idf", NULL, TD_EMODEL, "idf: expected an object, got nothing");
  bad_field(f, "idf.file", json_string("../idf.tsv"), TD_EMODEL,
            "idf.file: expected a relative path inside the bundle");
  bad_field(f, "idf.default", json_integer(-1), TD_EMODEL, "idf.default: expected a number > 0");
  bad_field(f, "idf.n_docs", json_string("5"), TD_EMODEL, "idf.n_docs: expected an integer");
  bad_field(f, "training", json_array(), TD_EMODEL, "training: expected an object, got an array");
  bad_field(f, "metrics", json_integer(1), TD_EMODEL, "metrics: expected an object, got 1");
  bad_field(f, "themes", json_object(), TD_EMODEL, "themes: expected an array of theme objects");
  bad_field(f, "themes", json_array(), TD_EMODEL, "themes: no themes");
}

static void test_err_theme_fields(void **state) {
  fixture_t *f = *state;
  bad_field(f, "themes[2].threshold", json_real(1.7), TD_EMODEL,
            "themes[2].threshold: expected a number in (0,1), got 1.7");
  bad_field(f, "themes[0].threshold", json_integer(0), TD_EMODEL,
            "themes[0].threshold: expected a number in (0,1), got 0");
  bad_field(f, "themes[1].threshold", json_string("0.5"), TD_EMODEL,
            "themes[1].threshold: expected a number in (0,1), got \"0.5\"");
  bad_field(f, "themes[1].threshold", NULL, TD_EMODEL,
            "themes[1].threshold: expected a number in (0,1), got nothing");
  bad_field(f, "themes[0].name", json_string("bad name"), TD_EMODEL,
            "themes[0].name: expected a name of 1-64 characters");
  bad_field(f, "themes[0].name", NULL, TD_EMODEL, "themes[0].name: expected a non-empty string");
  bad_field(f, "themes[1].calibration", NULL, TD_EMODEL,
            "themes[1].calibration: expected an object");
  bad_field(f, "themes[1].calibration.method", json_string("isotonic"), TD_EMODEL,
            "themes[1].calibration.method: expected \"platt\", got \"isotonic\"");
  bad_field(f, "themes[1].calibration.a", json_string("x"), TD_EMODEL,
            "themes[1].calibration.a: expected a number");
  bad_field(f, "themes[2].calibration.b", NULL, TD_EMODEL,
            "themes[2].calibration.b: expected a number, got nothing");
  bad_field(f, "themes[0].C", json_real(-1), TD_EMODEL,
            "themes[0].C: expected a number > 0, got -1");
  bad_field(f, "themes[0].svm", json_string("/etc/passwd"), TD_EMODEL,
            "themes[0].svm: expected a relative path inside the bundle");
  bad_field(f, "themes[0].svm", json_string("svm/../../x.model"), TD_EMODEL,
            "themes[0].svm: expected a relative path inside the bundle");
  bad_field(f, "themes[0].cv", json_string("good"), TD_EMODEL,
            "themes[0].cv: expected an object, got \"good\"");
}

static void dup_theme(json_t *root, void *ud) {
  json_t *themes = json_object_get(root, "themes");
  json_t *t = json_array_get(themes, 2);
  json_object_set_new(t, "name", json_string(ud));
}

static void test_err_duplicate_and_other(void **state) {
  fixture_t *f = *state;
  char *dir = fresh_bundle(f, "dup");
  manifest_edit(dir, dup_theme, (void *)"talent");
  expect_load_error(dir, TD_EMODEL, "themes[2].name: duplicate theme \"talent\" (also themes[0])",
                    NULL);
  free(dir);
  dir = fresh_bundle(f, "other");
  manifest_edit(dir, dup_theme, (void *)"other");
  expect_load_error(dir, TD_EMODEL, "themes[2].name: \"other\" means no theme", NULL);
  free(dir);
}

static void many_themes(json_t *root, void *ud) {
  (void)ud;
  json_t *themes = json_object_get(root, "themes");
  json_t *t0 = json_array_get(themes, 0);
  for (int i = 0; json_array_size(themes) <= TD_MAX_THEMES; i++) {
    json_t *t = json_deep_copy(t0);
    char name[32];
    snprintf(name, sizeof name, "extra%d", i);
    json_object_set_new(t, "name", json_string(name));
    json_array_append_new(themes, t);
  }
}

static void test_err_too_many_themes(void **state) {
  fixture_t *f = *state;
  char *dir = fresh_bundle(f, "many");
  manifest_edit(dir, many_themes, NULL);
  expect_load_error(dir, TD_EMODEL, "themes: 65 themes; at most 64 are supported", NULL);
  free(dir);
}

static void add_unknown(json_t *root, void *ud) {
  (void)ud;
  json_object_set_new(root, "future_field", json_pack("{s:i}", "x", 1));
  json_object_set_new(json_array_get(json_object_get(root, "themes"), 0), "future", json_true());
}

static void test_unknown_keys_ignored(void **state) {
  fixture_t *f = *state;
  char *dir = fresh_bundle(f, "future");
  manifest_edit(dir, add_unknown, NULL);
  td_model_t *m = load_ok(dir);
  assert_int_equal(m->ntheme, NT);
  td_model_unref(&m);
  free(dir);
}

static void test_err_unknown_tokenizer(void **state) {
  fixture_t *f = *state;
  char *dir = fresh_bundle(f, "tok");
  edit_t e = {"tokenizer.name", json_string("nosuchplugin")};
  manifest_edit(dir, apply_edit, &e);
  td_model_t *m = NULL;
  td_err_t err;
  td_err_clear(&err);
  int rc = td_model_load(dir, plugin_dir(), &m, &err);
  assert_int_not_equal(rc, 0);
  assert_null(m);
  assert_int_equal(err.code, rc);
  if (!strstr(err.msg, "tok/manifest.json: tokenizer \"nosuchplugin\"") ||
      !strstr(err.msg, "nosuchplugin.so"))
    fail_msg("message: %s", err.msg);
  free(dir);
}

static void test_err_svm_files(void **state) {
  fixture_t *f = *state;
  char *dir = fresh_bundle(f, "svmfiles");
  char *p = pjoin(dir, "svm/industry.model");
  char *keep;
  size_t klen;
  assert_int_equal(td_read_file(p, &keep, &klen, NULL), 0);

  assert_int_equal(unlink(p), 0);
  expect_load_error(dir, TD_EIO, "svmfiles/svm/industry.model", "No such file", NULL);

  write_text(p, "this is not a libsvm model\n", "w");
  expect_load_error(dir, TD_EMODEL, "svm/industry.model line 1: unknown header key \"this\"", NULL);

  write_text(p, "", "w");
  expect_load_error(dir, TD_EMODEL, "svm/industry.model: no \"SV\" line", NULL);

  /* truncated: the header and half the support vectors */
  char *half = strndup(keep, klen / 2);
  char *cut = strrchr(half, '\n');
  cut[1] = '\0';
  write_text(p, half, "w");
  expect_load_error(dir, TD_EMODEL, "svm/industry.model: truncated", NULL);
  free(half);

  /* garbage in an SV line */
  char *bad = strdup(keep), *sv = strstr(bad, "SV\n");
  assert_non_null(sv);
  char *colon = strchr(sv + 3, ':');
  colon[1] = 'x';
  write_text(p, bad, "w");
  expect_load_error(dir, TD_EMODEL, "svm/industry.model line", "expected index:value", NULL);
  free(bad);

  /* nr_sv that does not add up (libsvm would read out of bounds) */
  char *fixed;
  bad = strdup(keep);
  char *nr = strstr(bad, "nr_sv ");
  assert_non_null(nr);
  nr[6] = nr[6] == '9' ? '1' : '9';
  write_text(p, bad, "w");
  expect_load_error(dir, TD_EMODEL, "svm/industry.model line", "nr_sv: the counts must be", NULL);
  free(bad);

  /* nr_sv twice: the two lines' counts add up to total_sv, the last line's
   * (the ones libsvm uses) do not. Summed over the lines, this loaded, and
   * libsvm read 50 million entries past its arrays at the first RBF score. */
  nr = strstr(keep, "nr_sv ");
  int n0, n1, used;
  assert_int_equal(sscanf(nr, "nr_sv %d %d\n%n", &n0, &n1, &used), 2);
  fixed = malloc(klen + 128);
  sprintf(fixed, "%.*snr_sv -50000000 0\nnr_sv %d %d\n%s", (int)(nr - keep), keep, n0,
          n1 + 50000000, nr + used);
  write_text(p, fixed, "w");
  expect_load_error(dir, TD_EMODEL, "svm/industry.model line", "nr_sv: the counts must be", NULL);
  free(fixed);

  /* finite numbers whose product is not: 1e300 x 1e300 */
  sv = strstr(keep, "\nSV\n") + 4;
  colon = strchr(sv, ':');
  char *val_end = colon + strcspn(colon, " \n");
  fixed = malloc(klen + 64);
  sprintf(fixed, "%.*s1e300 %.*s1e300%s", (int)(sv - keep), keep, (int)(colon + 1 - strchr(sv, ' ') - 1),
          strchr(sv, ' ') + 1, val_end);
  write_text(p, fixed, "w");
  expect_load_error(dir, TD_EMODEL, "the support vectors of theme \"industry\"", "not finite", NULL);
  free(fixed);

  /* one-class SVM */
  bad = strdup(keep);
  nr = strstr(bad, "c_svc");
  assert_non_null(nr);
  fixed = malloc(klen + 16);
  sprintf(fixed, "%.*sone_class%s", (int)(nr - bad), bad, nr + 5);
  write_text(p, fixed, "w");
  expect_load_error(dir, TD_EMODEL, "svm/industry.model line 1: expected a 2-class C-SVC",
                    "one_class", NULL);
  free(fixed);
  free(bad);

  /* the untouched file loads again */
  write_text(p, keep, "w");
  td_model_t *m = load_ok(dir);
  td_model_unref(&m);
  free(keep);
  free(p);
  free(dir);
}

/* A directory where a file should be: the reason is the system's
 * ("Is a directory"), not a bare "read error". */
static void test_err_read_directory(void **state) {
  fixture_t *f = *state;
  char *dir = fresh_bundle(f, "dirfile");
  td_err_t err;
  td_err_clear(&err);
  char *data = NULL;
  assert_int_equal(td_read_file(dir, &data, NULL, &err), TD_EIO);
  assert_null(data);
  assert_non_null(strstr(err.msg, "Is a directory"));
  assert_null(strstr(err.msg, "read error"));

  char *p = pjoin(dir, "svm/industry.model");
  assert_int_equal(unlink(p), 0);
  assert_int_equal(mkdir(p, 0700), 0);
  expect_load_error(dir, TD_EIO, "dirfile/svm/industry.model: Is a directory", NULL);
  assert_int_equal(rmdir(p), 0);

  char *mp = pjoin(dir, "manifest.json");
  assert_int_equal(unlink(mp), 0);
  assert_int_equal(mkdir(mp, 0700), 0);
  expect_load_error(dir, TD_EIO, "dirfile/manifest.json: Is a directory", NULL);
  free(mp);
  free(p);
  free(dir);
}

static void test_err_class_count(void **state) {
  fixture_t *f = *state;
  char *dir = fresh_bundle(f, "classes");
  /* a 3-class model in place of ecology's */
  double *y = malloc(f->d.n * sizeof *y);
  for (int r = 0; r < f->d.n; r++) y[r] = r % 3;
  struct svm_problem prob = {f->d.n, y, f->d.x};
  struct svm_parameter prm;
  svm_param_init(&prm, LINEAR, 1);
  struct svm_model *m3 = svm_train(&prob, &prm);
  char *p = pjoin(dir, "svm/ecology.model");
  assert_int_equal(svm_save_model(p, m3), 0);
  expect_load_error(dir, TD_EMODEL, "classes/svm/ecology.model",
                    "expected a 2-class C-SVC with labels +1/-1, got 3 classes", NULL);
  svm_free_and_destroy_model(&m3);

  /* two classes, but labels 0/1 */
  for (int r = 0; r < f->d.n; r++) y[r] = f->d.y[2][r] > 0;
  struct svm_model *m01 = svm_train(&prob, &prm);
  assert_int_equal(svm_save_model(p, m01), 0);
  expect_load_error(dir, TD_EMODEL, "svm/ecology.model",
                    "expected a 2-class C-SVC with labels +1/-1, got labels", NULL);
  svm_free_and_destroy_model(&m01);

  /* td_model_write refuses to write such a model at all */
  struct svm_model *bad = svm_train(&prob, &prm);
  struct svm_model *svms[NT] = {f->svm[0], f->svm[1], bad};
  td_bundle_spec_t s;
  spec_fill(f, &s, svms);
  td_err_t err;
  assert_int_equal(td_model_write(dir, &s, &err), TD_EINVAL);
  assert_non_null(strstr(err.msg, "ecology: expected a 2-class C-SVC"));
  svm_free_and_destroy_model(&bad);
  free(y);
  free(p);
  free(dir);
}

/* An SVM trained on more features than the bundle's buckets. */
static void test_err_feature_dims(void **state) {
  fixture_t *f = *state;
  char *dir = fresh_bundle(f, "dims");
  struct svm_node *pool = malloc(f->d.n * 13 * sizeof *pool);
  struct svm_node **x = malloc(f->d.n * sizeof *x);
  memcpy(pool, f->d.pool, f->d.n * 13 * sizeof *pool);
  for (int r = 0; r < f->d.n; r++) {
    x[r] = pool + r * 13;
    x[r][11].index = (int)DIM + 5; /* the last index of each row out of range */
  }
  struct svm_problem prob = {f->d.n, f->d.y[0], x};
  struct svm_parameter prm;
  svm_param_init(&prm, LINEAR, 1);
  struct svm_model *wide = svm_train(&prob, &prm);
  char *p = pjoin(dir, "svm/talent.model");
  assert_int_equal(svm_save_model(p, wide), 0);
  expect_load_error(dir, TD_EMODEL, "dims/svm/talent.model line",
                    "index 1029 out of range: the bundle has 1024 feature buckets", NULL);
  svm_free_and_destroy_model(&wide);
  free(pool);
  free(x);
  free(p);
  free(dir);
}

static void test_err_idf(void **state) {
  fixture_t *f = *state;
  char *dir = fresh_bundle(f, "idf");
  char *p = pjoin(dir, "idf.tsv");
  char *keep;
  size_t klen, nlines = 0;
  assert_int_equal(td_read_file(p, &keep, &klen, NULL), 0);
  for (size_t i = 0; i < klen; i++) nlines += keep[i] == '\n';
  char want[128];

  write_text(p, "999999\t1.5\n", "a");
  snprintf(want, sizeof want, "idf/idf.tsv line %zu: index 999999 out of range (buckets 1024)",
           nlines + 1);
  expect_load_error(dir, TD_EMODEL, want, NULL);

  const char *bad_lines[] = {"12\tabc\n", "12 1.5\n",   "x\t1.5\n", "12\t1.5 \n", "12\t\n",
                             "\t1.5\n",   "12\t 1.5\n", "\n",       "-1\t2\n"};
  for (size_t i = 0; i < sizeof bad_lines / sizeof *bad_lines; i++) {
    write_text(p, keep, "w");
    write_text(p, bad_lines[i], "a");
    snprintf(want, sizeof want, "idf/idf.tsv line %zu: expected \"<index><TAB><idf>\"", nlines + 1);
    expect_load_error(dir, TD_EMODEL, want, NULL);
  }
  write_text(p, keep, "w");
  write_text(p, "5\t1e999\n", "a");
  expect_load_error(dir, TD_EMODEL, "idf.tsv line", "expected a finite number > 0", NULL);
  write_text(p, keep, "w");
  write_text(p, "5\t-2\n", "a");
  expect_load_error(dir, TD_EMODEL, "idf.tsv line", "expected a finite number > 0", NULL);

  /* a bucket listed twice */
  write_text(p, keep, "w");
  const char *second = strchr(keep, '\n') + 1; /* first data line */
  char dupline[64];
  snprintf(dupline, sizeof dupline, "%.*s", (int)(strchr(second, '\n') - second + 1), second);
  write_text(p, dupline, "a");
  expect_load_error(dir, TD_EMODEL, "idf.tsv line", "listed twice", NULL);

  write_text(p, "idx\tidf\n", "w");
  expect_load_error(dir, TD_EMODEL, "idf/idf.tsv line 1: expected the header", NULL);
  write_text(p, "", "w");
  expect_load_error(dir, TD_EMODEL, "idf/idf.tsv: empty file", NULL);
  assert_int_equal(unlink(p), 0);
  expect_load_error(dir, TD_EIO, "idf/idf.tsv", NULL);

  /* a header-only table is fine: every bucket takes the default */
  write_text(p, "index\tidf\n", "w");
  td_model_t *m = load_ok(dir);
  for (unsigned i = 0; i < DIM; i++) assert_true(m->idf[i] == td_features_idf(0, NS));
  td_model_unref(&m);
  free(keep);
  free(p);
  free(dir);
}

static void test_write_rejects_bad_spec(void **state) {
  fixture_t *f = *state;
  char *dir = pjoin(f->dir, "spec");
  td_bundle_spec_t s;
  td_err_t err;
  const char *names[NT] = {"talent", "other", "ecology"};
  spec_fill(f, &s, f->svm);
  s.themes = names;
  assert_int_equal(td_model_write(dir, &s, &err), TD_EINVAL);
  assert_non_null(strstr(err.msg, "\"other\" cannot be a theme"));
  /* a multiclass bundle may name `other` as a class; it loads */
  s.multiclass = 1;
  assert_int_equal(td_model_write(dir, &s, &err), 0);
  td_model_t *m = load_ok(dir);
  assert_int_equal(m->multiclass, 1);
  assert_int_equal(td_model_theme_index(m, "other"), 1);
  td_model_unref(&m);

  spec_fill(f, &s, f->svm);
  double thr[NT] = {0.5, 1.0, 0.5};
  s.thresholds = thr;
  assert_int_equal(td_model_write(dir, &s, &err), TD_EINVAL);
  assert_non_null(strstr(err.msg, "threshold"));
  spec_fill(f, &s, f->svm);
  const char *dups[NT] = {"talent", "ecology", "ecology"};
  s.themes = dups;
  assert_int_equal(td_model_write(dir, &s, &err), TD_EINVAL);
  assert_non_null(strstr(err.msg, "duplicate theme \"ecology\""));
  spec_fill(f, &s, f->svm);
  const char *slash[NT] = {"talent", "../evil", "ecology"};
  s.themes = slash;
  assert_int_equal(td_model_write(dir, &s, &err), TD_EINVAL);
  spec_fill(f, &s, f->svm);
  s.ntheme = 0;
  assert_int_equal(td_model_write(dir, &s, &err), TD_EINVAL);
  /* an unwritable place */
  spec_fill(f, &s, f->svm);
  assert_int_equal(td_model_write("/proc/nonexistent/bundle", &s, &err), TD_EIO);
  free(dir);
}

/* ------------------------------------------------------------------------ */
/* Real data: ../shared/corpus                                              */

#define REAL_NT 6
static const char *const real_themes[REAL_NT] = {"organization", "talent",  "industry",
                                                 "governance",   "culture", "ecology"};

typedef struct rdoc {
  size_t first, n; /* rows [first, first+n) of the corpus */
} rdoc_t;

typedef struct rcorpus {
  char **text;
  size_t *len;
  unsigned *labels;
  size_t n, cap;
  rdoc_t *docs;
  size_t ndocs;
} rcorpus_t;

static int rcorpus_load(rcorpus_t *c, const char *path) {
  memset(c, 0, sizeof *c);
  FILE *fp = fopen(path, "r");
  if (!fp) return -1;
  char *line = NULL, *prevdoc = NULL;
  size_t lcap = 0;
  ssize_t got;
  while ((got = getline(&line, &lcap, fp)) > 0) {
    json_error_t je;
    json_t *j = json_loads(line, 0, &je);
    assert_non_null(j);
    const char *doc = json_string_value(json_object_get(j, "doc"));
    const json_t *text = json_object_get(j, "text");
    if (c->n == c->cap) {
      c->cap = c->cap ? 2 * c->cap : 1024;
      c->text = realloc(c->text, c->cap * sizeof *c->text);
      c->len = realloc(c->len, c->cap * sizeof *c->len);
      c->labels = realloc(c->labels, c->cap * sizeof *c->labels);
      c->docs = realloc(c->docs, c->cap * sizeof *c->docs);
    }
    c->text[c->n] = strndup(json_string_value(text), json_string_length(text));
    c->len[c->n] = json_string_length(text);
    unsigned lab = 0;
    size_t i;
    json_t *t;
    json_array_foreach(json_object_get(j, "themes"), i, t) {
      for (int k = 0; k < REAL_NT; k++)
        if (!strcmp(json_string_value(t), real_themes[k])) lab |= 1u << k;
    }
    c->labels[c->n] = lab;
    if (!prevdoc || strcmp(prevdoc, doc)) {
      c->docs[c->ndocs].first = c->n;
      c->docs[c->ndocs].n = 0;
      c->ndocs++;
      free(prevdoc);
      prevdoc = strdup(doc);
    }
    c->docs[c->ndocs - 1].n++;
    c->n++;
    json_decref(j);
  }
  free(prevdoc);
  free(line);
  fclose(fp);
  return 0;
}

/* Keeps the first articles up to about max_rows passages. libsvm's
 * training time grows with the square of the rows; half of train.jsonl
 * keeps this test to seconds while staying real data with thousands of
 * support vectors. */
static void rcorpus_truncate(rcorpus_t *c, size_t max_rows) {
  size_t d = 0, n = 0;
  while (d < c->ndocs && n + c->docs[d].n <= max_rows) n += c->docs[d++].n;
  for (size_t i = n; i < c->n; i++) free(c->text[i]);
  c->n = n;
  c->ndocs = d;
}

static void rcorpus_free(rcorpus_t *c) {
  for (size_t i = 0; i < c->n; i++) free(c->text[i]);
  free(c->text);
  free(c->len);
  free(c->labels);
  free(c->docs);
}

/* Passages of one doc as training builds them: one row per passage,
 * headings detected per row and linked (the pre-split path of classify). */
static void doc_passages(const rcorpus_t *c, const rdoc_t *d, size_t heading_chars,
                         td_span_t *spans, td_passage_t *ps) {
  for (size_t i = 0; i < d->n; i++) {
    spans[i].s = c->text[d->first + i];
    spans[i].len = c->len[d->first + i];
    memset(&ps[i], 0, sizeof ps[i]);
    ps[i].is_heading = td_text_is_heading(spans[i].s, spans[i].len, heading_chars);
    ps[i].context = -1;
  }
  td_text_link_headings(ps, d->n);
}

/* Featurizes a whole corpus; *vecs gets c->n vectors. */
static void featurize_corpus(const rcorpus_t *c, const td_feat_config_t *fc,
                             const td_tokenizer_t *tok, const double *idf, size_t heading_chars,
                             td_fvec_t **vecs) {
  td_fscratch_t *fs = td_fscratch_new();
  td_fvec_t *v = calloc(c->n, sizeof *v);
  td_span_t *spans = malloc(c->n * sizeof *spans);
  td_passage_t *ps = malloc(c->n * sizeof *ps);
  for (size_t i = 0; i < c->n; i++) td_fvec_init(&v[i]);
  td_err_t err;
  for (size_t d = 0; d < c->ndocs; d++) {
    const rdoc_t *doc = &c->docs[d];
    doc_passages(c, doc, heading_chars, spans, ps);
    if (td_features_doc(fc, tok, idf, spans, ps, doc->n, fs, v + doc->first, &err))
      fail_msg("td_features_doc: %s", err.msg);
  }
  free(spans);
  free(ps);
  td_fscratch_free(&fs);
  *vecs = v;
}

static struct svm_node *to_nodes(const td_fvec_t *v) {
  struct svm_node *n = malloc((v->count + 1) * sizeof *n);
  for (size_t i = 0; i < v->count; i++) {
    n[i].index = (int)v->items[i].index + 1;
    n[i].value = v->items[i].value;
  }
  n[v->count].index = -1;
  return n;
}

typedef struct train_job {
  struct svm_problem prob;
  double *y;
  struct svm_model *model;
} train_job_t;

static void *train_job(void *arg) {
  train_job_t *j = arg;
  struct svm_parameter prm;
  svm_param_init(&prm, LINEAR, 0.5);
  prm.cache_size = 100;
  j->model = svm_train(&j->prob, &prm);
  return NULL;
}

static void test_collapse_real_corpus(void **state) {
  fixture_t *f = *state;
  const char *shared = getenv("THEMED_SHARED");
  char train_path[1024], dev_path[1024];
  snprintf(train_path, sizeof train_path, "%s/corpus/train.jsonl", shared ? shared : "../shared");
  snprintf(dev_path, sizeof dev_path, "%s/corpus/dev.jsonl", shared ? shared : "../shared");
  rcorpus_t train, dev;
  if (access(train_path, R_OK) || access(dev_path, R_OK)) {
    printf("SKIP: %s or %s not readable; the real-corpus equivalence test needs ../shared\n",
           train_path, dev_path);
    skip();
  }
  assert_int_equal(rcorpus_load(&train, train_path), 0);
  assert_int_equal(rcorpus_load(&dev, dev_path), 0);
  assert_true(train.n > 1000 && dev.n > 100);
  rcorpus_truncate(&train, 2000);

  td_feat_config_t fc;
  td_feat_config_default(&fc);
  td_split_opts_t split;
  td_split_opts_default(&split);
  td_tokenizer_t *tok = NULL;
  td_err_t err;
  json_t *opts = json_object();
  if (td_tokenizer_open(plugin_dir(), "bigram", opts, &tok, &err)) fail_msg("%s", err.msg);

  /* document frequencies over training passages -> idf */
  uint32_t *df = calloc(fc.buckets, sizeof *df);
  td_fscratch_t *fs = td_fscratch_new();
  td_span_t *spans = malloc(train.n * sizeof *spans);
  td_passage_t *ps = malloc(train.n * sizeof *ps);
  for (size_t d = 0; d < train.ndocs; d++) {
    doc_passages(&train, &train.docs[d], split.heading_chars, spans, ps);
    if (td_features_doc_df(&fc, tok, spans, ps, train.docs[d].n, fs, df, &err))
      fail_msg("td_features_doc_df: %s", err.msg);
  }
  free(spans);
  free(ps);
  td_fscratch_free(&fs);
  double *idf = malloc(fc.buckets * sizeof *idf);
  for (uint32_t i = 0; i < fc.buckets; i++) idf[i] = td_features_idf(df[i], train.n);

  uint64_t t_feat = td_now_ns();
  td_fvec_t *tv;
  featurize_corpus(&train, &fc, tok, idf, split.heading_chars, &tv);
  struct svm_node **x = malloc(train.n * sizeof *x);
  for (size_t i = 0; i < train.n; i++) x[i] = to_nodes(&tv[i]);
  t_feat = td_now_ns() - t_feat;
  uint64_t t_train = td_now_ns();
  struct svm_model *svms[REAL_NT];
  double thr[REAL_NT], pa[REAL_NT], pb[REAL_NT], C[REAL_NT];
  train_job_t jobs[REAL_NT];
  pthread_t th[REAL_NT];
  for (int k = 0; k < REAL_NT; k++) { /* one thread per theme: libsvm is reentrant */
    jobs[k].y = malloc(train.n * sizeof(double));
    for (size_t i = 0; i < train.n; i++) jobs[k].y[i] = (train.labels[i] >> k) & 1 ? 1 : -1;
    jobs[k].prob = (struct svm_problem){(int)train.n, jobs[k].y, x};
    assert_int_equal(pthread_create(&th[k], NULL, train_job, &jobs[k]), 0);
  }
  for (int k = 0; k < REAL_NT; k++) {
    pthread_join(th[k], NULL);
    svms[k] = jobs[k].model;
    assert_non_null(svms[k]);
    thr[k] = 0.5;
    pa[k] = -3;
    pb[k] = 0;
    C[k] = 0.5;
  }
  t_train = td_now_ns() - t_train;
  td_bundle_spec_t s = {.name = "real",
                        .version = "test",
                        .tokenizer = "bigram",
                        .tokenizer_options = opts,
                        .feat = &fc,
                        .split = &split,
                        .df = df,
                        .n_docs = train.n,
                        .ntheme = REAL_NT,
                        .themes = real_themes,
                        .svms = svms,
                        .thresholds = thr,
                        .platt_a = pa,
                        .platt_b = pb,
                        .C = C};
  char *dir = pjoin(f->dir, "real");
  if (td_model_write(dir, &s, &err)) fail_msg("td_model_write: %s", err.msg);
  td_model_t *m = load_ok(dir);
  for (int k = 0; k < REAL_NT; k++) assert_int_equal(m->themes[k].sign, svms[k]->label[0]);
  for (uint32_t i = 0; i < fc.buckets; i++) assert_true(m->idf[i] == idf[i]);

  /* every dev passage: collapsed == libsvm (as loaded) to 1e-9, and the
   * model as trained agrees to the precision libsvm saves SVs with */
  td_fvec_t *dv;
  featurize_corpus(&dev, &m->feat, m->tok, m->idf, m->split.heading_chars, &dv);
  double dec[REAL_NT], maxdiff = 0;
  size_t pos = 0, tp = 0;
  for (size_t i = 0; i < dev.n; i++) {
    td_model_decision(m, &dv[i], dec);
    struct svm_node *nodes = to_nodes(&dv[i]);
    for (int k = 0; k < REAL_NT; k++) {
      double lib = td_model_decision_libsvm(m, k, &dv[i]), raw;
      if (fabs(dec[k] - lib) > 1e-9)
        fail_msg("dev passage %zu theme %s: collapsed %.17g libsvm %.17g", i, real_themes[k],
                 dec[k], lib);
      if (fabs(dec[k] - lib) > maxdiff) maxdiff = fabs(dec[k] - lib);
      svm_predict_values(svms[k], nodes, &raw);
      assert_true(fabs(raw * svms[k]->label[0] - dec[k]) < 1e-6);
      if (dec[k] > 0) {
        pos++;
        tp += (dev.labels[i] >> k) & 1;
      }
    }
    free(nodes);
  }
  /* the wiring is meaningful, not just consistent: most positives are right */
  assert_true(pos > dev.n / 4);
  assert_true(tp * 10 > pos * 6);
  printf("real corpus: trained on %zu passages; %zu dev passages x %d themes, max |collapsed - "
         "libsvm| = %.3g, "
         "precision of dec > 0 = %.3f (featurize train %.1fs, libsvm training %.1fs)\n",
         train.n, dev.n, REAL_NT, maxdiff, (double)tp / (double)pos, t_feat / 1e9, t_train / 1e9);

  /* td_classify over pre-split dev docs gives the same decision values */
  td_scratch_t *sc = td_scratch_new();
  td_result_t r;
  td_result_init(&r);
  td_classify_opts_t o;
  td_classify_opts_default(&o);
  td_span_t *dspans = malloc(dev.n * sizeof *dspans);
  for (size_t d = 0; d < dev.ndocs; d++) {
    const rdoc_t *doc = &dev.docs[d];
    for (size_t i = 0; i < doc->n; i++) {
      dspans[i].s = dev.text[doc->first + i];
      dspans[i].len = dev.len[doc->first + i];
    }
    td_doc_t in = {.passages = dspans, .npassages = doc->n};
    if (td_classify(m, &in, &o, sc, &r, &err)) fail_msg("td_classify: %s", err.msg);
    assert_int_equal(r.passages.count, doc->n);
    for (size_t i = 0; i < doc->n; i++) {
      td_model_decision(m, &dv[doc->first + i], dec);
      /* td_classify scores block by block (td_features_doc_dot): the same
       * sums in another order with l2-tokens, the same bits with l2 */
      for (int k = 0; k < REAL_NT; k++)
        assert_true(m->feat.norm == TD_NORM_L2 ? r.dec[i * REAL_NT + k] == dec[k]
                                               : fabs(r.dec[i * REAL_NT + k] - dec[k]) <
                                                     1e-12 * (1 + fabs(dec[k])));
    }
  }
  free(dspans);
  td_result_free(&r);
  td_scratch_free(&sc);

  td_model_unref(&m);
  for (size_t i = 0; i < dev.n; i++) td_fvec_free(&dv[i]);
  free(dv);
  for (int k = 0; k < REAL_NT; k++) svm_free_and_destroy_model(&svms[k]);
  for (size_t i = 0; i < train.n; i++) {
    free(x[i]);
    td_fvec_free(&tv[i]);
  }
  free(tv);
  free(x);
  for (int k = 0; k < REAL_NT; k++) free(jobs[k].y);
  free(idf);
  free(df);
  free(dir);
  json_decref(opts);
  td_tokenizer_free(&tok);
  rcorpus_free(&train);
  rcorpus_free(&dev);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_roundtrip),
      cmocka_unit_test(test_collapse_synthetic),
      cmocka_unit_test(test_rbf_bundle),
      cmocka_unit_test(test_score),
      cmocka_unit_test(test_refcount),
      cmocka_unit_test(test_err_missing_manifest),
      cmocka_unit_test(test_err_bad_json),
      cmocka_unit_test(test_err_format),
      cmocka_unit_test(test_err_fields),
      cmocka_unit_test(test_err_theme_fields),
      cmocka_unit_test(test_err_duplicate_and_other),
      cmocka_unit_test(test_err_too_many_themes),
      cmocka_unit_test(test_unknown_keys_ignored),
      cmocka_unit_test(test_err_unknown_tokenizer),
      cmocka_unit_test(test_err_svm_files),
      cmocka_unit_test(test_err_read_directory),
      cmocka_unit_test(test_err_class_count),
      cmocka_unit_test(test_err_feature_dims),
      cmocka_unit_test(test_err_idf),
      cmocka_unit_test(test_write_rejects_bad_spec),
      cmocka_unit_test(test_collapse_real_corpus),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
