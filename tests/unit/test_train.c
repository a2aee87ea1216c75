/*
 * Training: Platt scaling against libsvm's own sigmoid_train, grouped folds,
 * train -> load -> classify on the hand-written fixture corpus, determinism
 * across thread counts, bundle replacement, and themectl (train, classify,
 * eval) end to end as a separate process: exit codes and one-line errors.
 *
 * Needs build/plugins/bigram.so (THEMED_PLUGIN_DIR) and, for the CLI part,
 * $THEMED_BUILD/themectl; runs from the repository root (tests/fixtures).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <jansson.h>
#include <libsvm/svm.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "calib.h"
#include "classify.h"
#include "corpus.h"
#include "model.h"
#include "sha256.h"
#include "train.h"

#define FX_TRAIN "tests/fixtures/labelled-train.jsonl"
#define FX_HELD "tests/fixtures/labelled-heldout.jsonl"

static char tmpdir[256];

static int setup_dir(void **state) {
  (void)state;
  const char *t = getenv("TMPDIR");
  snprintf(tmpdir, sizeof tmpdir, "%s/td-train-XXXXXX", t && *t ? t : "/tmp");
  if (!mkdtemp(tmpdir)) return -1;
  if (access(FX_TRAIN, R_OK) != 0) {
    fprintf(stderr, "test_train: run from the repository root (%s not found)\n", FX_TRAIN);
    return -1;
  }
  return 0;
}

static int teardown_dir(void **state) {
  (void)state;
  if (getenv("TD_TEST_KEEP")) return 0;
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
  return system(cmd) == 0 ? 0 : -1;
}

/* A path in the temp dir; a ring of buffers, so keep at most 64 alive. */
static char *tpath(const char *name) {
  static char buf[64][512];
  static int slot;
  char *p = buf[slot++ % 64];
  snprintf(p, 512, "%s/%s", tmpdir, name);
  return p;
}

/* The manifest of the bundle in dir (new reference; fails the test if absent). */
static json_t *load_manifest(const char *dir) {
  char p[600];
  snprintf(p, sizeof p, "%s/manifest.json", dir);
  json_error_t je;
  json_t *man = json_load_file(p, 0, &je);
  if (!man) fail_msg("%s: %s", p, je.text);
  return man;
}

static void write_text(const char *path, const char *body) {
  FILE *f = fopen(path, "wb");
  assert_non_null(f);
  fwrite(body, 1, strlen(body), f);
  fclose(f);
}

static char *slurp(const char *path, size_t *len) {
  char *d = NULL;
  td_err_t err;
  if (td_read_file(path, &d, len, &err)) return NULL;
  return d;
}

static void load_corpus(td_corpus_t *c, const char *path, int multiclass) {
  td_err_t err;
  td_err_clear(&err);
  td_corpus_init(c);
  if (td_corpus_load(c, path, multiclass, 0, &err) || td_corpus_finish(c, &err))
    fail_msg("%s", err.msg);
}

/* ------------------------------------------------------------------------ */
/* Platt                                                                    */

/* The same generators as the reference harness that ran libsvm's
 * sigmoid_train (svm.cpp, copied verbatim) to produce the constants below. */
static void set_overlap(int n, double *d, int *y) {
  for (int i = 0; i < n; i++) {
    y[i] = i % 3 == 0 ? 1 : -1;
    d[i] = y[i] * 0.8 + 0.9 * sin(i * 1.7);
  }
}
static void set_separable(int n, double *d, int *y) {
  for (int i = 0; i < n; i++) {
    y[i] = i % 2 == 0 ? 1 : -1;
    d[i] = y[i] * (1.0 + (i % 5) * 0.3);
  }
}
static void set_rare(int n, double *d, int *y) {
  for (int i = 0; i < n; i++) {
    y[i] = i % 10 == 0 ? 1 : -1;
    d[i] = -1.2 + 0.05 * (i % 17) + (y[i] > 0 ? 1.5 : 0) + 0.4 * cos(i * 0.9);
  }
}

static void check_platt(const double *d, const int *y, int n, double wantA, double wantB) {
  double A, B;
  td_calib_platt_fit(d, y, (size_t)n, &A, &B);
  if (fabs(A - wantA) > 1e-6 || fabs(B - wantB) > 1e-6)
    fail_msg("platt A=%.17g B=%.17g, libsvm A=%.17g B=%.17g", A, B, wantA, wantB);
  assert_true(A < 0);
  /* probabilities rise with the decision value */
  double prev = -1;
  for (double f = -4; f <= 4; f += 0.25) {
    double p = 1.0 / (1.0 + exp(A * f + B));
    assert_true(p >= prev);
    prev = p;
  }
  /* and the fit is a stationary point of libsvm's objective */
  int np = 0;
  for (int i = 0; i < n; i++) np += y[i] > 0;
  double hi = (np + 1.0) / (np + 2.0), lo = 1.0 / (n - np + 2.0), g1 = 0, g2 = 0;
  for (int i = 0; i < n; i++) {
    double p = 1.0 / (1.0 + exp(d[i] * A + B)), t = y[i] > 0 ? hi : lo;
    g1 += d[i] * (t - p);
    g2 += t - p;
  }
  assert_true(fabs(g1) < 1e-4 && fabs(g2) < 1e-4);
}

static void test_platt_libsvm(void **state) {
  (void)state;
  double d[200];
  int y[200];
  set_overlap(60, d, y);
  check_platt(d, y, 60, -3.3040976780791467, 0.57892571362802869);
  set_separable(40, d, y);
  check_platt(d, y, 40, -1.9487741073397769, -5.9768286383737952e-16);
  set_rare(200, d, y);
  check_platt(d, y, 200, -6.2368536321662624, 1.430242792966373);
}

/* ------------------------------------------------------------------------ */
/* Folds                                                                    */

static void test_folds(void **state) {
  (void)state;
  td_corpus_t c;
  load_corpus(&c, FX_TRAIN, 0);
  int *a = calloc(c.n, sizeof *a), *b = calloc(c.n, sizeof *b), *s2 = calloc(c.n, sizeof *s2);
  td_err_t err;
  assert_int_equal(td_train_folds(&c, 5, 1, a, &err), 0);
  assert_int_equal(td_train_folds(&c, 5, 1, b, &err), 0);
  assert_memory_equal(a, b, c.n * sizeof *a); /* deterministic */
  assert_int_equal(td_train_folds(&c, 5, 2, s2, &err), 0);
  assert_memory_not_equal(a, s2, c.n * sizeof *a); /* the seed matters */
  size_t size[5] = {0}, maxdoc = 0;
  for (size_t d = 0; d < c.ndocs; d++) {
    size_t nd = c.doc_start[d + 1] - c.doc_start[d];
    if (nd > maxdoc) maxdoc = nd;
    for (size_t i = c.doc_start[d]; i < c.doc_start[d + 1]; i++) {
      assert_int_equal(a[i], a[c.doc_start[d]]); /* a doc is never split */
      assert_true(a[i] >= 0 && a[i] < 5);
    }
    size[a[c.doc_start[d]]] += nd;
  }
  size_t lo = SIZE_MAX, hi = 0;
  for (int f = 0; f < 5; f++) {
    assert_true(size[f] > 0);
    if (size[f] < lo) lo = size[f];
    if (size[f] > hi) hi = size[f];
  }
  assert_true(hi - lo <= maxdoc); /* greedy balance by passages */
  assert_int_equal(td_train_folds(&c, (int)c.ndocs + 1, 1, a, &err), TD_EINVAL);
  assert_int_equal(td_train_folds(&c, 0, 1, a, &err), TD_EINVAL);
  free(a);
  free(b);
  free(s2);
  td_corpus_free(&c);
}

/* ------------------------------------------------------------------------ */
/* Train -> load -> classify                                                */

typedef struct prog {
  size_t calls, cv_done, cv_total;
} prog_t;

static void on_progress(void *ud, const char *stage, size_t done, size_t total) {
  prog_t *p = ud;
  p->calls++;
  if (strcmp(stage, "cv") == 0) {
    assert_true(done <= total);
    p->cv_done = done;
    p->cv_total = total;
  }
}

static int train_fixture_opts(const char *out, int threads, int no_gram, int solver,
                              json_t **report, td_err_t *err) {
  td_corpus_t c;
  load_corpus(&c, FX_TRAIN, 0);
  td_train_opts_t o;
  td_train_opts_default(&o);
  o.out_dir = out;
  o.name = "fixture";
  o.threads = threads;
  o.no_gram = no_gram;
  o.solver = solver;
  const char *files[] = {FX_TRAIN};
  int rc = td_train(&o, &c, files, 1, report, err);
  td_corpus_free(&c);
  return rc;
}

static int train_fixture(const char *out, int threads, json_t **report, td_err_t *err) {
  return train_fixture_opts(out, threads, 0, TD_SOLVER_DCD, report, err);
}

static void test_train_classify(void **state) {
  (void)state;
  const char *out = tpath("bundle");
  td_corpus_t c;
  load_corpus(&c, FX_TRAIN, 0);
  td_train_opts_t o;
  td_train_opts_default(&o);
  o.out_dir = out;
  o.name = "fixture";
  o.version = "0.0.1";
  o.threads = 2;
  prog_t pr = {0};
  o.progress = on_progress;
  o.progress_ud = &pr;
  const char *files[] = {FX_TRAIN};
  json_t *rep = NULL;
  td_err_t err;
  td_err_clear(&err);
  if (td_train(&o, &c, files, 1, &rep, &err)) fail_msg("%s", err.msg);
  assert_true(pr.calls > 0);
  assert_int_equal(pr.cv_total, 6 * 6 * 5); /* themes x C grid x folds */
  assert_int_equal(pr.cv_done, pr.cv_total);
  const json_t *met = json_object_get(rep, "metrics");
  double micro = json_real_value(json_object_get(met, "micro_f1"));
  assert_true(micro > 0.3 && micro <= 1.0);
  json_decref(rep);

  /* the manifest carries the CV figures and the training digest */
  json_t *man = load_manifest(out);
  met = json_object_get(man, "metrics");
  assert_true(json_is_real(json_object_get(met, "micro_f1")));
  assert_true(json_is_real(json_object_get(met, "macro_f1")));
  assert_true(json_is_real(json_object_get(met, "exact_match")));
  const json_t *tr = json_object_get(man, "training");
  assert_int_equal(json_integer_value(json_object_get(tr, "items")), 103);
  assert_int_equal(json_integer_value(json_object_get(tr, "docs")), 19);
  const json_t *f0 = json_array_get(json_object_get(tr, "files"), 0);
  assert_string_equal(json_string_value(json_object_get(f0, "path")), "labelled-train.jsonl");
  assert_int_equal(json_integer_value(json_object_get(f0, "items")), 103);
  size_t len;
  char *data = slurp(FX_TRAIN, &len), hex[TD_SHA256_HEX_LEN + 1];
  td_sha256_t h;
  td_sha256_init(&h);
  td_sha256_update(&h, data, len);
  td_sha256_final_hex(&h, hex);
  free(data);
  assert_string_equal(json_string_value(json_object_get(f0, "sha256")), hex);
  size_t i;
  json_t *th;
  json_array_foreach(json_object_get(man, "themes"), i, th) {
    const json_t *cv = json_object_get(th, "cv");
    assert_true(json_is_number(json_object_get(cv, "f1")));
    assert_true(json_integer_value(json_object_get(cv, "support")) > 0);
    double thr = json_number_value(json_object_get(th, "threshold"));
    assert_true(thr >= 0.01 && thr <= 0.99);
  }
  json_decref(man);
  td_corpus_free(&c);

  /* nothing left beside the bundle */
  char side[600];
  snprintf(side, sizeof side, "%s.tmp.%ld", out, (long)getpid());
  assert_int_not_equal(access(side, F_OK), 0);

  /* load it and classify held-out articles */
  td_model_t *m = NULL;
  if (td_model_load(out, NULL, &m, &err)) fail_msg("%s", err.msg);
  assert_string_equal(m->label, "fixture@0.0.1");
  assert_int_equal(m->ntheme, 6);
  td_corpus_t ho;
  td_corpus_init(&ho);
  ho.themes = calloc(m->ntheme, sizeof *ho.themes);
  for (size_t k = 0; k < m->ntheme; k++) ho.themes[k] = strdup(m->themes[k].name);
  ho.ntheme = m->ntheme;
  if (td_corpus_load(&ho, FX_HELD, 0, 1, &err) || td_corpus_finish(&ho, &err)) fail_msg("%s", err.msg);
  td_scratch_t *s = td_scratch_new();
  td_result_t r;
  td_result_init(&r);
  td_classify_opts_t co;
  td_classify_opts_default(&co);
  td_span_t sp[8];
  for (size_t d = 0; d < ho.ndocs; d++) {
    size_t b = ho.doc_start[d], nd = ho.doc_start[d + 1] - b;
    for (size_t j = 0; j < nd; j++) {
      sp[j].s = ho.items[b + j].text;
      sp[j].len = ho.items[b + j].len;
    }
    td_doc_t doc = {.id = ho.items[b].doc, .passages = sp, .npassages = nd};
    if (td_classify(m, &doc, &co, s, &r, &err)) fail_msg("%s", err.msg);
    for (size_t j = 0; j < nd; j++) {
      uint64_t pred = 0;
      for (size_t k = 0; k < m->ntheme; k++)
        if (td_result_tagged(m, &co, &r, j, k)) pred |= 1ull << k;
      if (pred != ho.items[b + j].labels)
        fail_msg("%s: tagged %#llx, expected %#llx", ho.items[b + j].id, (unsigned long long)pred,
                 (unsigned long long)ho.items[b + j].labels);
    }
  }
  td_result_free(&r);
  td_scratch_free(&s);
  td_corpus_free(&ho);
  td_model_unref(&m);
}

static void expect_same_file(const char *a, const char *b) {
  size_t la, lb;
  char *x = slurp(a, &la), *y = slurp(b, &lb);
  assert_non_null(x);
  assert_non_null(y);
  if (la != lb || memcmp(x, y, la)) fail_msg("%s and %s differ", a, b);
  free(x);
  free(y);
}

static void expect_same_bundle(const char *a, const char *b) {
  char pa[600], pb[600];
  json_t *ma = load_manifest(a), *mb = load_manifest(b);
  json_object_del(ma, "created");
  json_object_del(mb, "created");
  assert_true(json_equal(ma, mb));
  json_t *th;
  size_t i;
  json_array_foreach(json_object_get(ma, "themes"), i, th) {
    const char *svm = json_string_value(json_object_get(th, "svm"));
    snprintf(pa, sizeof pa, "%s/%s", a, svm);
    snprintf(pb, sizeof pb, "%s/%s", b, svm);
    expect_same_file(pa, pb);
  }
  snprintf(pa, sizeof pa, "%s/idf.tsv", a);
  snprintf(pb, sizeof pb, "%s/idf.tsv", b);
  expect_same_file(pa, pb);
  json_decref(ma);
  json_decref(mb);
}

/* Every solver: one thread or three, the same bundle byte for byte. */
static void test_determinism(void **state) {
  (void)state;
  const int solvers[] = {TD_SOLVER_DCD, TD_SOLVER_DCD_L2, TD_SOLVER_SMO};
  for (size_t i = 0; i < sizeof solvers / sizeof *solvers; i++) {
    char na[32], nb[32];
    snprintf(na, sizeof na, "det1-%zu", i);
    snprintf(nb, sizeof nb, "det3-%zu", i);
    const char *a = tpath(na), *b = tpath(nb);
    json_t *ra = NULL, *rb = NULL;
    td_err_t err;
    if (train_fixture_opts(a, 1, 0, solvers[i], &ra, &err)) fail_msg("%s", err.msg);
    if (train_fixture_opts(b, 3, 0, solvers[i], &rb, &err)) fail_msg("%s", err.msg);
    json_decref(ra);
    json_decref(rb);
    expect_same_bundle(a, b);
  }
}

/* The precomputed Gram matrix is only a speed-up of SMO: libsvm computing
 * every kernel value itself must give the very same bundle. */
static void test_gram_equivalence(void **state) {
  (void)state;
  const char *a = tpath("gram"), *b = tpath("nogram");
  json_t *ra = NULL, *rb = NULL;
  td_err_t err;
  if (train_fixture_opts(a, 2, 0, TD_SOLVER_SMO, &ra, &err)) fail_msg("%s", err.msg);
  if (train_fixture_opts(b, 2, 1, TD_SOLVER_SMO, &rb, &err)) fail_msg("%s", err.msg);
  json_decref(ra);
  json_decref(rb);
  expect_same_bundle(a, b);
}

/* Theme k's libsvm file read by libsvm itself (svm_load_model), and the
 * bundle as model.c loaded it, score every support vector of the file (real
 * passage vectors) alike; svm-predict, when installed, labels them by the
 * same sign. */
static void check_svm_files(const char *dir, const td_model_t *m) {
  td_fvec_t v;
  td_fvec_init(&v);
  double *dec = calloc(m->ntheme, sizeof *dec);
  assert_non_null(dec);
  int have_predict = access("/usr/bin/svm-predict", X_OK) == 0;
  for (size_t k = 0; k < m->ntheme; k++) {
    char path[700], data[720], out[720];
    snprintf(path, sizeof path, "%s/svm/%s.model", dir, m->themes[k].name);
    struct svm_model *s = svm_load_model(path);
    assert_non_null(s);
    assert_int_equal(s->param.kernel_type, LINEAR);
    snprintf(data, sizeof data, "%s.rows", path);
    snprintf(out, sizeof out, "%s.pred", path);
    FILE *f = fopen(data, "w");
    assert_non_null(f);
    double *mdec = malloc((size_t)s->l * sizeof *mdec);
    assert_non_null(mdec);
    for (int j = 0; j < s->l; j++) {
      size_t len = 0;
      while (s->SV[j][len].index != -1) len++;
      if (len > v.cap) {
        v.items = realloc(v.items, len * sizeof *v.items);
        assert_non_null(v.items);
        v.cap = len;
      }
      fputs("0", f);
      for (size_t q = 0; q < len; q++) {
        v.items[q].index = (uint32_t)(s->SV[j][q].index - 1);
        v.items[q].value = s->SV[j][q].value;
        fprintf(f, " %d:%.17g", s->SV[j][q].index, s->SV[j][q].value);
      }
      fputc('\n', f);
      v.count = len;
      double dv = 0;
      svm_predict_values(s, s->SV[j], &dv);
      if (s->label[0] != 1) dv = -dv;
      td_model_decision(m, &v, dec);
      mdec[j] = dec[k];
      if (fabs(dec[k] - dv) > 1e-9 * (1 + fabs(dv)))
        fail_msg("%s SV %d: model.c %.17g, libsvm %.17g", path, j, dec[k], dv);
    }
    fclose(f);
    if (have_predict) {
      char cmd[2200];
      snprintf(cmd, sizeof cmd, "svm-predict -q '%s' '%s' '%s'", data, path, out);
      assert_int_equal(system(cmd), 0);
      f = fopen(out, "r");
      assert_non_null(f);
      for (int j = 0; j < s->l; j++) {
        int lab = 0;
        assert_int_equal(fscanf(f, "%d", &lab), 1);
        /* (a decision within rounding of 0 may fall either way) */
        if (fabs(mdec[j]) > 1e-9 && lab != (mdec[j] > 0 ? 1 : -1))
          fail_msg("%s SV %d: svm-predict says %d, model.c %.17g", path, j, lab, mdec[j]);
      }
      fclose(f);
    }
    free(mdec);
    svm_free_and_destroy_model(&s);
  }
  free(dec);
  td_fvec_free(&v);
}

/* Each solver trains, records itself in the manifest and the report, and
 * writes libsvm LINEAR files that libsvm, svm-predict and model.c read
 * alike; the DCD solvers give the SMO one's CV figures within noise on the
 * fixture (103 passages: a few passages either way). */
static void test_solvers(void **state) {
  (void)state;
  const int solvers[] = {TD_SOLVER_DCD, TD_SOLVER_DCD_L2, TD_SOLVER_SMO};
  const char *names[] = {"dcd", "dcd-l2", "smo"};
  double micro[3];
  for (size_t i = 0; i < 3; i++) {
    int parsed = -1;
    assert_int_equal(td_train_solver_parse(names[i], &parsed), 0);
    assert_int_equal(parsed, solvers[i]);
    assert_string_equal(td_train_solver_name(solvers[i]), names[i]);
    char nm[32];
    snprintf(nm, sizeof nm, "solver-%s", names[i]);
    const char *dir = tpath(nm);
    json_t *rep = NULL;
    td_err_t err;
    if (train_fixture_opts(dir, 2, 0, solvers[i], &rep, &err)) fail_msg("%s: %s", names[i], err.msg);
    assert_string_equal(json_string_value(json_object_get(rep, "solver")), names[i]);
    micro[i] = json_real_value(json_object_get(json_object_get(rep, "metrics"), "micro_f1"));
    json_decref(rep);
    json_t *man = load_manifest(dir);
    const json_t *tr = json_object_get(man, "training");
    assert_string_equal(json_string_value(json_object_get(tr, "solver")), names[i]);
    assert_true(solvers[i] == TD_SOLVER_SMO ? json_object_get(tr, "solver_eps") == NULL
                                            : json_real_value(json_object_get(tr, "solver_eps")) == 0.1);
    if (solvers[i] != TD_SOLVER_SMO) /* every fit met eps before 1000 epochs */
      assert_int_equal(json_integer_value(json_object_get(tr, "solver_unconverged")), 0);
    /* calibration still a decreasing sigmoid, thresholds inside the clamp */
    size_t t;
    json_t *th;
    json_array_foreach(json_object_get(man, "themes"), t, th) {
      const json_t *cal = json_object_get(th, "calibration");
      assert_true(json_real_value(json_object_get(cal, "a")) < 0);
      double thr = json_number_value(json_object_get(th, "threshold"));
      assert_true(thr >= 0.01 && thr <= 0.99);
    }
    json_decref(man);
    td_model_t *m = NULL;
    if (td_model_load(dir, NULL, &m, &err)) fail_msg("%s", err.msg);
    check_svm_files(dir, m);
    td_model_unref(&m);
  }
  for (size_t i = 0; i < 2; i++)
    if (fabs(micro[i] - micro[2]) > 0.05)
      fail_msg("CV micro-F1: %s %.4f, smo %.4f", names[i], micro[i], micro[2]);
}

static void test_replace_and_refuse(void **state) {
  (void)state;
  json_t *rep = NULL;
  td_err_t err;
  const char *out = tpath("again");
  if (train_fixture(out, 2, &rep, &err)) fail_msg("%s", err.msg);
  json_decref(rep);
  if (train_fixture(out, 2, &rep, &err)) fail_msg("replacing: %s", err.msg); /* a bundle: replaced */
  json_decref(rep);
  /* a directory that is not a bundle is never replaced */
  const char *precious = tpath("precious");
  mkdir(precious, 0755);
  char keep[600];
  snprintf(keep, sizeof keep, "%s/notes.txt", precious);
  write_text(keep, "mine\n");
  rep = NULL;
  assert_int_equal(train_fixture(precious, 2, &rep, &err), TD_EINVAL);
  assert_null(rep);
  assert_non_null(strstr(err.msg, "not a model bundle"));
  assert_int_equal(access(keep, F_OK), 0);
}

static void test_option_errors(void **state) {
  (void)state;
  td_corpus_t c;
  load_corpus(&c, FX_TRAIN, 0);
  td_train_opts_t o;
  td_train_opts_default(&o);
  o.out_dir = tpath("never");
  json_t *rep = NULL;
  td_err_t err;
  const char *files[] = {FX_TRAIN};
  const char *order[] = {"organization", "talent", "industry", "governance", "culture", "ecolgy"};
  o.theme_order = order;
  o.ntheme_order = 6;
  assert_int_equal(td_train(&o, &c, files, 1, &rep, &err), TD_EINVAL);
  assert_non_null(strstr(err.msg, "\"ecolgy\""));
  o.theme_order = NULL;
  o.folds = 1; /* no CV and six C values: nothing could choose */
  assert_int_equal(td_train(&o, &c, files, 1, &rep, &err), TD_EINVAL);
  o.folds = 20; /* more folds than the 19 docs */
  assert_int_equal(td_train(&o, &c, files, 1, &rep, &err), TD_EINVAL);
  o.folds = 5;
  o.solver = 7;
  assert_int_equal(td_train(&o, &c, files, 1, &rep, &err), TD_EINVAL);
  assert_non_null(strstr(err.msg, "unknown solver"));
  o.solver = TD_SOLVER_DCD;
  o.kernel = RBF; /* DCD is linear only */
  assert_int_equal(td_train(&o, &c, files, 1, &rep, &err), TD_EINVAL);
  assert_non_null(strstr(err.msg, "needs solver smo"));
  o.kernel = LINEAR;
  int parsed = -1;
  assert_int_equal(td_train_solver_parse("DCD", &parsed), TD_EINVAL);
  assert_int_equal(td_train_solver_parse("", &parsed), TD_EINVAL);
  assert_int_equal(parsed, -1);
  o.tokenizer = "no-such-tokenizer";
  assert_int_equal(td_train(&o, &c, files, 1, &rep, &err), TD_EPLUGIN);
  assert_null(rep);
  assert_int_not_equal(access(o.out_dir, F_OK), 0);
  td_corpus_free(&c);
}

static void test_multiclass_and_single_c(void **state) {
  (void)state;
  /* the fixture without its one two-label article is a single-label corpus */
  size_t len;
  char *data = slurp(FX_TRAIN, &len);
  assert_non_null(data);
  td_buf_t b;
  td_buf_init(&b);
  for (char *line = strtok(data, "\n"); line; line = strtok(NULL, "\n"))
    if (!strstr(line, "fx-mix-")) {
      td_buf_append(&b, line, strlen(line));
      td_buf_append(&b, "\n", 1);
    }
  free(data);
  const char *mc = tpath("mc.jsonl");
  write_text(mc, b.data);
  td_buf_free(&b);
  td_corpus_t c;
  load_corpus(&c, mc, 1);
  assert_int_equal(c.ntheme, 7); /* six themes and `other` */
  td_train_opts_t o;
  td_train_opts_default(&o);
  o.out_dir = tpath("mc-bundle");
  o.multiclass = 1;
  o.folds = 3;
  const char *files[] = {mc};
  json_t *rep = NULL;
  td_err_t err;
  if (td_train(&o, &c, files, 1, &rep, &err)) fail_msg("%s", err.msg);
  double acc = json_number_value(json_object_get(json_object_get(rep, "metrics"), "accuracy"));
  assert_true(acc > 0.3 && acc <= 1.0);
  json_decref(rep);
  td_model_t *m = NULL;
  if (td_model_load(o.out_dir, NULL, &m, &err)) fail_msg("%s", err.msg);
  assert_true(m->multiclass);
  td_model_unref(&m);

  /* folds 1 with one C: no cross-validation, thresholds 0.5 */
  td_train_opts_default(&o);
  o.out_dir = tpath("nocv");
  o.folds = 1;
  double one_c = 1.0;
  o.c_grid = &one_c;
  o.nc = 1;
  td_corpus_free(&c);
  load_corpus(&c, FX_TRAIN, 0);
  files[0] = FX_TRAIN;
  if (td_train(&o, &c, files, 1, &rep, &err)) fail_msg("%s", err.msg);
  assert_null(json_object_get(json_object_get(rep, "metrics"), "micro_f1"));
  json_decref(rep);
  if (td_model_load(o.out_dir, NULL, &m, &err)) fail_msg("%s", err.msg);
  for (size_t k = 0; k < m->ntheme; k++) assert_true(m->themes[k].threshold == 0.5);
  td_model_unref(&m);
  td_corpus_free(&c);
}

/* ------------------------------------------------------------------------ */
/* themectl end to end                                                      */

static char themectl[512];

typedef struct run {
  int code;
  char *out, *err;
  size_t out_len, err_len;
} run_t;

static void run_free(run_t *r) {
  free(r->out);
  free(r->err);
}

/* Runs "themectl <args>" with stdin from `in` (or /dev/null). */
static run_t run(const char *args, const char *in) {
  char cmd[4096], po[600], pe[600];
  snprintf(po, sizeof po, "%s/cli.out", tmpdir);
  snprintf(pe, sizeof pe, "%s/cli.err", tmpdir);
  snprintf(cmd, sizeof cmd, "%s %s <%s >%s 2>%s", themectl, args, in ? in : "/dev/null", po, pe);
  int st = system(cmd);
  run_t r = {WIFEXITED(st) ? WEXITSTATUS(st) : -1, NULL, NULL, 0, 0};
  r.out = slurp(po, &r.out_len);
  r.err = slurp(pe, &r.err_len);
  assert_non_null(r.out);
  assert_non_null(r.err);
  return r;
}

/* exit code, and stderr is exactly one line "themectl: ..." containing want */
static void expect_error(const char *args, int code, const char *want) {
  run_t r = run(args, NULL);
  size_t lines = 0;
  for (size_t i = 0; i < r.err_len; i++) lines += r.err[i] == '\n';
  if (r.code != code || lines != 1 || strncmp(r.err, "themectl: ", 10) || !strstr(r.err, want))
    fail_msg("themectl %s: exit %d, stderr \"%s\"; want exit %d and one line with \"%s\"", args,
             r.code, r.err, code, want);
  run_free(&r);
}

static int cli_setup(void **state) {
  (void)state;
  const char *b = getenv("THEMED_BUILD");
  snprintf(themectl, sizeof themectl, "%s/themectl", b && *b ? b : "build");
  return 0;
}

static void need_themectl(void) {
  if (access(themectl, X_OK) != 0) {
    fprintf(stderr, "skipping: %s not built\n", themectl);
    skip();
  }
}

static void test_cli_usage(void **state) {
  (void)state;
  need_themectl();
  run_t r = run("--version", NULL);
  assert_int_equal(r.code, 0);
  assert_string_equal(r.out, "themectl " TD_VERSION "\n");
  run_free(&r);
  r = run("--help", NULL);
  assert_int_equal(r.code, 0);
  assert_non_null(strstr(r.out, "train"));
  run_free(&r);
  r = run("train --help", NULL);
  assert_int_equal(r.code, 0);
  assert_non_null(strstr(r.out, "--context-weight"));
  run_free(&r);
  expect_error("frobnicate", 2, "unknown command \"frobnicate\"");
  expect_error("train --bogus", 2, "unknown option --bogus");
  expect_error("eval --model x --data y --bogus=1", 2, "unknown option --bogus=1");
  expect_error("classify --model", 2, "option --model needs a value");
  expect_error("train --data x", 2, "--out is required");
  expect_error("train --data x --out y --folds zero", 2, "--folds: expected an integer");
  expect_error("train --data x --out y --c 1,-2", 2, "--c: expected positive numbers");
  expect_error("train --data x --out y --solver sgd", 2, "--solver: expected dcd, dcd-l2 or smo, got \"sgd\"");
  expect_error("train --data x --out y --solver", 2, "option --solver needs a value");
}

static void test_cli_data_errors(void **state) {
  (void)state;
  need_themectl();
  char args[2048];
  const char *out = tpath("cli-never");
  snprintf(args, sizeof args, "train --data %s --out %s", tpath("missing.jsonl"), out);
  expect_error(args, 1, "No such file");
  const char *bad = tpath("bad.jsonl");
  write_text(bad, "{\"id\":\"a\",\"text\":\"抓队伍建设\",\"themes\":[\"talent\"]}\n"
                  "{\"id\":\"b\",\"text\":\"x\",\"themes\":[\"talent\"]\n");
  snprintf(args, sizeof args, "train --data %s --out %s", bad, out);
  char want[600];
  snprintf(want, sizeof want, "%s line 2: not valid JSON", bad);
  expect_error(args, 1, want);
  const char *empty = tpath("empty.jsonl");
  write_text(empty, "\n\n");
  snprintf(args, sizeof args, "train --data %s --out %s", empty, out);
  expect_error(args, 1, "empty corpus: no items in");
  snprintf(args, sizeof args, "train --data %s --out %s --themes organization,talent", FX_TRAIN, out);
  expect_error(args, 1, "unknown theme \"industry\"");
  assert_int_not_equal(access(out, F_OK), 0);
}

/* Mistakes themectl train must catch before it trains, with the rule that
 * was broken: each used to train in full and then fail writing the bundle
 * (or, for --out DIR/, write a name with a slash). */
static void test_cli_train_checks_up_front(void **state) {
  (void)state;
  need_themectl();
  char args[2048];
  const char *never = tpath("cli-checks-never");
  /* the default name is the last component of --out, trailing slashes or not */
  const char *slash = tpath("o-slash");
  snprintf(args, sizeof args, "train --data %s --out %s/ --folds 1 --c 1 --quiet", FX_TRAIN, slash);
  run_t r = run(args, NULL);
  if (r.code != 0) fail_msg("train: %s", r.err);
  run_free(&r);
  json_t *man = load_manifest(slash);
  assert_string_equal(json_string_value(json_object_get(man, "name")), "o-slash");
  json_decref(man);
  /* "dir/." names dir (and replaces it) */
  snprintf(args, sizeof args, "train --data %s --out %s/. --folds 1 --c 1 --quiet --version 2.0.0", FX_TRAIN, slash);
  r = run(args, NULL);
  if (r.code != 0) fail_msg("train: %s", r.err);
  run_free(&r);
  man = load_manifest(slash);
  assert_string_equal(json_string_value(json_object_get(man, "name")), "o-slash");
  assert_string_equal(json_string_value(json_object_get(man, "version")), "2.0.0");
  json_decref(man);
  snprintf(args, sizeof args, "train --data %s --out / --folds 1 --c 1", FX_TRAIN);
  expect_error(args, 1, "cannot name the bundle after --out /");

  /* --buckets: the loader's range (features.h), refused as a usage error */
  const char *range = "--buckets: expected a power of two between 2^10 and 2^24, got";
  snprintf(args, sizeof args, "train --data %s --out %s --buckets 512", FX_TRAIN, never);
  expect_error(args, 2, range);
  snprintf(args, sizeof args, "train --data %s --out %s --buckets 33554432", FX_TRAIN, never);
  expect_error(args, 2, range);
  snprintf(args, sizeof args, "train --data %s --out %s --buckets 3000", FX_TRAIN, never);
  expect_error(args, 2, range);

  /* theme names: in --themes, and in the data */
  snprintf(args, sizeof args, "train --data %s --out %s --themes 'a/b'", FX_TRAIN, never);
  expect_error(args, 2, "--themes: \"a/b\" is not a valid theme name (" TD_THEME_NAME_RULE ")");
  snprintf(args, sizeof args, "train --data %s --out %s --themes talent,culture,talent", FX_TRAIN, never);
  expect_error(args, 2, "--themes: \"talent\" is listed twice");
  snprintf(args, sizeof args, "train --data %s --out %s --themes organization,talent", FX_TRAIN, never);
  expect_error(args, 1, "unknown theme \"industry\" (the themes are: organization, talent)");
  const char *bad = tpath("badname.jsonl");
  write_text(bad, "{\"id\":\"a\",\"text\":\"抓队伍建设\",\"themes\":[\"talent\"]}\n"
                  "{\"id\":\"b\",\"text\":\"文化\",\"themes\":[\"文化\"]}\n");
  snprintf(args, sizeof args, "train --data %s --out %s", bad, never);
  char want[700];
  snprintf(want, sizeof want, "%s line 2: \"文化\" is not a valid theme name (%s)", bad, TD_THEME_NAME_RULE);
  expect_error(args, 1, want);
  assert_int_not_equal(access(never, F_OK), 0);
}

/* Doubtful training data: warned about on stderr, one line each naming
 * file, line and id (or the theme), and the bundle is still written. */
static void test_cli_train_data_warnings(void **state) {
  (void)state;
  need_themectl();
  size_t len;
  char *fx = slurp(FX_TRAIN, &len);
  assert_non_null(fx);
  td_buf_t b;
  td_buf_init(&b);
  assert_int_equal(td_buf_append(&b, fx, len), 0);
  free(fx);
  size_t lines = 0;
  for (size_t i = 0; i < b.len; i++) lines += b.data[i] == '\n';
  /* a theme with 2 positives, a repeated label, an id seen before */
  assert_int_equal(td_buf_printf(&b,
      "{\"id\":\"w-1\",\"doc\":\"w\",\"text\":\"非遗传承人开展剪纸培训\",\"themes\":[\"rare\",\"culture\"]}\n"
      "{\"id\":\"w-2\",\"doc\":\"w\",\"text\":\"剪纸作品走进乡村课堂\",\"themes\":[\"rare\",\"rare\"]}\n"
      "{\"id\":\"w-1\",\"doc\":\"w\",\"text\":\"村民文化活动丰富多彩\",\"themes\":[\"culture\"]}\n"), 0);
  const char *data = tpath("warn.jsonl");
  write_text(data, b.data);
  td_buf_free(&b);
  const char *out = tpath("warn-bundle");
  char args[2048], want[700];
  snprintf(args, sizeof args, "train --data %s --out %s --folds 2 --c 1 --quiet", data, out);
  run_t r = run(args, NULL);
  if (r.code != 0) fail_msg("train: exit %d: %s", r.code, r.err);
  snprintf(want, sizeof want,
           "themectl: warning: %s line %zu: id \"w-2\": label \"rare\" is listed twice in \"themes\"\n"
           "themectl: warning: %s line %zu: duplicate passage id \"w-1\"\n"
           "themectl: warning: theme \"rare\" has only 2 positive passages (fewer than %d): its "
           "cross-validated F1 and tuned threshold are unreliable\n",
           data, lines + 2, data, lines + 3, TD_CORPUS_MIN_POSITIVES);
  assert_string_equal(r.err, want);
  run_free(&r);
  json_t *man = load_manifest(out);
  assert_int_equal(json_array_size(json_object_get(man, "themes")), 7);
  json_decref(man);
}

static void test_cli_train_eval_classify(void **state) {
  (void)state;
  need_themectl();
  const char *model = tpath("cli-model");
  char args[2048];
  snprintf(args, sizeof args, "train --data %s --out %s --threads 2 --seed 7 --version 2.0.0", FX_TRAIN, model);
  run_t r = run(args, NULL);
  if (r.code != 0) fail_msg("train: %s", r.err);
  assert_non_null(strstr(r.out, "cv micro-F1"));
  assert_non_null(strstr(r.out, "organization"));
  run_free(&r);

  /* eval --json on the held-out fixture */
  snprintf(args, sizeof args, "eval --model %s --data %s --json", model, FX_HELD);
  r = run(args, NULL);
  if (r.code != 0) fail_msg("eval: %s", r.err);
  json_error_t je;
  json_t *ev = json_loads(r.out, 0, &je);
  assert_non_null(ev);
  assert_int_equal(json_integer_value(json_object_get(ev, "items")), 8);
  assert_int_equal(json_integer_value(json_object_get(ev, "docs")), 6);
  assert_true(json_is_null(json_object_get(ev, "accuracy")));
  assert_true(json_number_value(json_object_get(ev, "micro_f1")) > 0.99);
  assert_true(json_is_number(json_object_get(ev, "macro_f1")));
  assert_true(json_is_number(json_object_get(ev, "exact_match")));
  const json_t *org = json_object_get(json_object_get(ev, "per_theme"), "organization");
  assert_int_equal(json_integer_value(json_object_get(org, "support")), 2);
  assert_int_equal(json_object_size(json_object_get(ev, "per_theme")), 6);
  json_decref(ev);
  run_free(&r);

  /* a label the model does not know */
  const char *typo = tpath("typo.jsonl");
  write_text(typo, "{\"id\":\"a\",\"doc\":\"d\",\"text\":\"选派第一书记\",\"themes\":[\"talent\"]}\n"
                   "{\"id\":\"b\",\"doc\":\"d\",\"text\":\"培训村干部\",\"themes\":[\"tallent\"]}\n");
  snprintf(args, sizeof args, "eval --model %s --data %s", model, typo);
  char want[600];
  snprintf(want, sizeof want, "%s line 2: unknown theme \"tallent\"", typo);
  expect_error(args, 1, want);

  /* classify: a plain-text file, stdin, JSON Lines */
  const char *art = tpath("article.txt");
  write_text(art, "二、推进厕所革命和污水治理\n全县完成农村户厕改造，建设污水集中处理设施，生活污水乱排乱放现象基本消除。\n");
  snprintf(args, sizeof args, "classify --model %s %s", model, art);
  r = run(args, NULL);
  if (r.code != 0) fail_msg("classify: %s", r.err);
  json_t *res = json_loads(r.out, JSON_DISABLE_EOF_CHECK, &je);
  assert_non_null(res);
  assert_string_equal(json_string_value(json_object_get(res, "id")), "article.txt");
  assert_string_equal(json_string_value(json_object_get(res, "model")), "cli-model@2.0.0");
  const json_t *ps = json_object_get(res, "passages");
  assert_int_equal(json_array_size(ps), 2);
  const json_t *t0 = json_array_get(json_object_get(json_array_get(ps, 1), "themes"), 0);
  assert_string_equal(json_string_value(json_object_get(t0, "theme")), "ecology");
  json_decref(res);
  run_free(&r);

  snprintf(args, sizeof args, "classify --model %s", model);
  r = run(args, art);
  assert_int_equal(r.code, 0);
  assert_non_null(strstr(r.out, "\"id\":\"stdin\""));
  run_free(&r);

  const char *jl = tpath("in.jsonl");
  write_text(jl, "{\"id\":\"x1\",\"text\":\"村集体经济收入突破五十万元\"}\n\n"
                 "{\"id\":\"x2\",\"passages\":[\"一、织密治理网格\",\"网格员负责矛盾纠纷化解\"]}\n");
  snprintf(args, sizeof args, "classify --model %s --jsonl --text %s", model, jl);
  r = run(args, NULL);
  assert_int_equal(r.code, 0);
  size_t lines = 0;
  for (size_t i = 0; i < r.out_len; i++) lines += r.out[i] == '\n';
  assert_int_equal(lines, 2);
  assert_non_null(strstr(r.out, "\"id\":\"x2\""));
  assert_non_null(strstr(r.out, "\"text\":\"网格员负责矛盾纠纷化解\""));
  run_free(&r);

  write_text(jl, "{\"id\":\"x1\",\"text\":\"好\"}\n{\"id\":\"x2\" \"text\":\"坏\"}\n");
  snprintf(args, sizeof args, "classify --model %s --jsonl %s", model, jl);
  /* the line is named as classify --socket names it, and the others are
   * still classified */
  snprintf(want, sizeof want, "classify: %s:2: ", jl);
  expect_error(args, 1, want);
  expect_error(args, 1, "(invalid_json)");
  r = run(args, NULL);
  assert_non_null(strstr(r.out, "\"id\":\"x1\""));
  run_free(&r);

  /* model/plugin mismatch: the bundle's tokenizer is not in --plugins */
  const char *noplug = tpath("no-plugins");
  mkdir(noplug, 0755);
  snprintf(args, sizeof args, "classify --model %s --plugins %s %s", model, noplug, art);
  expect_error(args, 1, "bigram");
  snprintf(args, sizeof args, "eval --model %s --plugins %s --data %s", model, noplug, FX_HELD);
  expect_error(args, 1, "bigram");
  snprintf(args, sizeof args, "classify --model %s/nonexistent %s", tmpdir, art);
  expect_error(args, 1, "nonexistent");
}

/* ------------------------------------------------------------------------ */
/* The bundled model                                                        */

/* models/rural-themes must be the model `make model` trains from the
 * current ../shared/corpus/train.jsonl, and must still do its job on the
 * held-out dev split (evaluation only: nothing is tuned on dev). */
static void test_bundled_model(void **state) {
  (void)state;
  const char *shared = getenv("THEMED_SHARED");
  char train[600], dev[600];
  snprintf(train, sizeof train, "%s/corpus/train.jsonl", shared && *shared ? shared : "../shared");
  snprintf(dev, sizeof dev, "%s/corpus/dev.jsonl", shared && *shared ? shared : "../shared");
  if (access("models/rural-themes/manifest.json", R_OK) != 0 || access(train, R_OK) != 0 ||
      access(dev, R_OK) != 0) {
    fprintf(stderr, "skipping: needs models/rural-themes and %s, %s\n", train, dev);
    skip();
  }
  td_model_t *m = NULL;
  td_err_t err;
  if (td_model_load("models/rural-themes", NULL, &m, &err)) fail_msg("%s", err.msg);
  static const char *const order[] = {"organization", "talent", "industry",
                                      "governance", "culture", "ecology"};
  assert_int_equal(m->ntheme, 6);
  for (size_t k = 0; k < 6; k++) assert_string_equal(m->themes[k].name, order[k]);
  const json_t *f0 = json_array_get(json_object_get(json_object_get(m->manifest, "training"), "files"), 0);
  size_t len;
  char *data = slurp(train, &len), hex[TD_SHA256_HEX_LEN + 1];
  assert_non_null(data);
  td_sha256_t h;
  td_sha256_init(&h);
  td_sha256_update(&h, data, len);
  td_sha256_final_hex(&h, hex);
  free(data);
  if (strcmp(json_string_value(json_object_get(f0, "sha256")), hex) != 0)
    fail_msg("models/rural-themes was not trained on the current %s: run make model", train);

  td_corpus_t c;
  td_corpus_init(&c);
  c.themes = calloc(6, sizeof *c.themes);
  for (size_t k = 0; k < 6; k++) c.themes[k] = strdup(order[k]);
  c.ntheme = 6;
  if (td_corpus_load(&c, dev, 0, 1, &err) || td_corpus_finish(&c, &err)) fail_msg("%s", err.msg);
  td_scratch_t *s = td_scratch_new();
  td_result_t r;
  td_result_init(&r);
  td_classify_opts_t co;
  td_classify_opts_default(&co);
  td_span_t *sp = calloc(c.n, sizeof *sp);
  size_t tp = 0, fp = 0, fn = 0;
  for (size_t d = 0; d < c.ndocs; d++) {
    size_t b = c.doc_start[d], nd = c.doc_start[d + 1] - b;
    for (size_t j = 0; j < nd; j++) {
      sp[j].s = c.items[b + j].text;
      sp[j].len = c.items[b + j].len;
    }
    td_doc_t doc = {.id = c.items[b].doc, .passages = sp, .npassages = nd};
    if (td_classify(m, &doc, &co, s, &r, &err)) fail_msg("%s", err.msg);
    for (size_t j = 0; j < nd; j++)
      for (size_t k = 0; k < 6; k++) {
        int p = td_result_tagged(m, &co, &r, j, k), g = (int)((c.items[b + j].labels >> k) & 1);
        tp += p && g;
        fp += p && !g;
        fn += !p && g;
      }
  }
  double micro = 2.0 * (double)tp / (double)(2 * tp + fp + fn);
  fprintf(stderr, "bundled model: dev micro-F1 %.4f\n", micro);
  assert_true(micro > 0.80);
  free(sp);
  td_result_free(&r);
  td_scratch_free(&s);
  td_corpus_free(&c);
  td_model_unref(&m);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_platt_libsvm),
      cmocka_unit_test(test_folds),
      cmocka_unit_test(test_train_classify),
      cmocka_unit_test(test_determinism),
      cmocka_unit_test(test_gram_equivalence),
      cmocka_unit_test(test_solvers),
      cmocka_unit_test(test_replace_and_refuse),
      cmocka_unit_test(test_option_errors),
      cmocka_unit_test(test_multiclass_and_single_c),
      cmocka_unit_test_setup(test_cli_usage, cli_setup),
      cmocka_unit_test_setup(test_cli_data_errors, cli_setup),
      cmocka_unit_test_setup(test_cli_train_eval_classify, cli_setup),
      cmocka_unit_test_setup(test_cli_train_checks_up_front, cli_setup),
      cmocka_unit_test_setup(test_cli_train_data_warnings, cli_setup),
      cmocka_unit_test(test_bundled_model),
  };
  return cmocka_run_group_tests(tests, setup_dir, teardown_dir);
}
