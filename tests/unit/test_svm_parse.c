/*
 * model.c parses the libsvm model files itself, once (validation and the
 * struct svm_model in one pass, numbers through a fast path), instead of
 * validating and then calling svm_load_model. The model it builds must be
 * the one svm_load_model builds from the same file, bit for bit: every
 * header field, every coefficient, every node. Checked on the bundled
 * model and on copies of its files with the numbers rewritten in every
 * shape strtod accepts (exponents, signs, leading zeros, long fractions,
 * 17 and more significant digits, subnormals), and idf.tsv against strtod.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ftw.h>
#include <libsvm/svm.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "features.h"
#include "model.h"

#define BUNDLE "models/rural-themes"

static int same_double(double a, double b) { return memcmp(&a, &b, sizeof a) == 0; }

static void same_model(const struct svm_model *a, const struct svm_model *b, const char *what) {
  assert_non_null(a);
  assert_non_null(b);
  assert_int_equal(a->param.svm_type, b->param.svm_type);
  assert_int_equal(a->param.kernel_type, b->param.kernel_type);
  if (a->param.kernel_type == POLY) assert_int_equal(a->param.degree, b->param.degree);
  if (a->param.kernel_type != LINEAR) {
    assert_true(same_double(a->param.gamma, b->param.gamma));
    if (a->param.kernel_type != RBF) assert_true(same_double(a->param.coef0, b->param.coef0));
  }
  assert_int_equal(a->nr_class, b->nr_class);
  assert_int_equal(a->l, b->l);
  assert_int_equal(a->free_sv, 1);
  int nc = a->nr_class, np = nc * (nc - 1) / 2;
  for (int i = 0; i < np; i++) assert_true(same_double(a->rho[i], b->rho[i]));
  for (int i = 0; i < nc; i++) {
    assert_int_equal(a->label[i], b->label[i]);
    assert_int_equal(a->nSV[i], b->nSV[i]);
  }
  assert_true((a->probA == NULL) == (b->probA == NULL));
  for (int i = 0; a->probA && i < np; i++) assert_true(same_double(a->probA[i], b->probA[i]));
  for (int j = 0; j < a->l; j++) {
    for (int c = 0; c < nc - 1; c++)
      if (!same_double(a->sv_coef[c][j], b->sv_coef[c][j]))
        fail_msg("%s: SV %d coef %d: %.17g vs %.17g", what, j, c, a->sv_coef[c][j],
                 b->sv_coef[c][j]);
    const struct svm_node *p = a->SV[j], *q = b->SV[j];
    for (; p->index != -1; p++, q++) {
      assert_int_equal(p->index, q->index);
      if (!same_double(p->value, q->value))
        fail_msg("%s: SV %d index %d: %.17g vs %.17g (libsvm)", what, j, p->index, p->value,
                 q->value);
    }
    assert_int_equal(q->index, -1);
  }
}

static td_model_t *load(const char *dir) {
  td_model_t *m = NULL;
  td_err_t err;
  td_err_clear(&err);
  if (td_model_load(dir, getenv("THEMED_PLUGIN_DIR"), &m, &err)) fail_msg("%s: %s", dir, err.msg);
  return m;
}

static void compare_bundle(const td_model_t *m, const char *dir) {
  for (size_t k = 0; k < m->ntheme; k++) {
    char path[4096];
    snprintf(path, sizeof path, "%s/svm/%s.model", dir, m->themes[k].name);
    struct svm_model *ref = svm_load_model(path);
    same_model(m->themes[k].svm, ref, path);
    svm_free_and_destroy_model(&ref);
  }
}

static void test_bundled_model(void **state) {
  (void)state;
  td_model_t *m = load(BUNDLE);
  compare_bundle(m, BUNDLE);
  /* idf.tsv: every listed value is strtod's */
  FILE *f = fopen(BUNDLE "/idf.tsv", "r");
  assert_non_null(f);
  char line[256];
  size_t n = 0;
  assert_non_null(fgets(line, sizeof line, f)); /* header */
  while (fgets(line, sizeof line, f)) {
    char *tab = strchr(line, '\t');
    assert_non_null(tab);
    unsigned long idx = strtoul(line, NULL, 10);
    assert_true(same_double(m->idf[idx], strtod(tab + 1, NULL)));
    n++;
  }
  fclose(f);
  assert_true(n > 1000);
  td_model_unref(&m);
}

/* ------------------------------------------------------------------------ */
/* Rewritten numbers                                                        */

static uint64_t rng = 0x2545f4914f6cdd1dull;
static uint64_t rnd(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return rng;
}

/* v written in one of many shapes strtod reads as (nearly) v. */
static void write_number(FILE *o, double v) {
  switch (rnd() % 14) {
  case 0: fprintf(o, "%.17g", v); break;
  case 1: fprintf(o, "%.8g", v); break;
  case 2: fprintf(o, "%.3e", v); break;
  case 3: fprintf(o, "%.12E", v); break;
  case 4: fprintf(o, "%+.9g", v); break;
  case 5: fprintf(o, "%.25f", v); break;     /* more than 19 digits */
  case 6: fprintf(o, "%.19f", v); break;
  case 7: fprintf(o, "%s0%.15f", v < 0 ? "-" : "", fabs(v)); break; /* leading zero */
  case 8: fprintf(o, "%.1f", v); break;
  case 9: fprintf(o, "%.9g", v * 1e-300); break; /* tiny */
  case 10: fprintf(o, "%.6g", v * 4.9e-308); break; /* subnormal */
  case 11: fprintf(o, "%.0f.", v * 1e6); break; /* "123." */
  case 12: fprintf(o, "%.10g", v * 1e22); break;
  default: fprintf(o, ".%08u", (unsigned)(rnd() % 100000000)); break;
  }
}

static void copy_file(const char *from, const char *to) {
  FILE *a = fopen(from, "rb"), *b = fopen(to, "wb");
  assert_non_null(a);
  assert_non_null(b);
  char buf[65536];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, a)) > 0) assert_int_equal(fwrite(buf, 1, n, b), n);
  fclose(a);
  assert_int_equal(fclose(b), 0);
}

static int rm_cb(const char *p, const struct stat *st, int f, struct FTW *ftw) {
  (void)st;
  (void)f;
  (void)ftw;
  return remove(p);
}

static void test_rewritten_numbers(void **state) {
  (void)state;
  char dir[] = "/tmp/themed-svmparse.XXXXXX";
  assert_non_null(mkdtemp(dir));
  char path[4200], svmdir[64];
  snprintf(svmdir, sizeof svmdir, "%s/svm", dir);
  assert_int_equal(mkdir(svmdir, 0755), 0);
  snprintf(path, sizeof path, "%s/manifest.json", dir);
  copy_file(BUNDLE "/manifest.json", path);
  snprintf(path, sizeof path, "%s/idf.tsv", dir);
  copy_file(BUNDLE "/idf.tsv", path);
  td_model_t *orig = load(BUNDLE);
  for (size_t k = 0; k < orig->ntheme; k++) {
    const struct svm_model *s = orig->themes[k].svm;
    snprintf(path, sizeof path, "%s/%s.model", svmdir, orig->themes[k].name);
    FILE *o = fopen(path, "w");
    assert_non_null(o);
    fprintf(o, "svm_type c_svc\nkernel_type linear\nnr_class 2\ntotal_sv %d\nrho ", s->l);
    write_number(o, s->rho[0]);
    fprintf(o, "\nlabel %d %d\nnr_sv %d %d\nSV\n", s->label[0], s->label[1], s->nSV[0],
            s->nSV[1]);
    for (int j = 0; j < s->l; j++) {
      write_number(o, s->sv_coef[0][j]);
      for (const struct svm_node *n = s->SV[j]; n->index != -1; n++) {
        fprintf(o, rnd() % 5 ? " %d:" : "\t%05d:", n->index); /* tabs, leading zeros */
        write_number(o, rnd() % 3 ? n->value : -n->value);
      }
      fputs(rnd() % 7 ? "\n" : " \r\n", o); /* trailing blanks, CRLF */
    }
    assert_int_equal(fclose(o), 0);
  }
  td_model_unref(&orig);
  td_model_t *m = load(dir);
  compare_bundle(m, dir);
  td_model_unref(&m);
  nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

/* td_model_release_svs: the SVs go, the scores stay. */
static void test_release_svs(void **state) {
  (void)state;
  td_model_t *m = load(BUNDLE);
  const char *texts[] = {"抓队伍建设 选优配强乡村骨干力量", "发展集体经济，壮大村级产业。",
                         "推进农村人居环境整治，建设生态宜居美丽乡村。", "", "Hello 2024"};
  size_t n = sizeof texts / sizeof *texts;
  td_span_t spans[8];
  td_fvec_t v[8];
  for (size_t i = 0; i < n; i++) {
    spans[i].s = texts[i];
    spans[i].len = strlen(texts[i]);
    td_fvec_init(&v[i]);
  }
  td_fscratch_t *fs = td_fscratch_new();
  td_err_t err;
  td_err_clear(&err);
  assert_int_equal(td_features_doc(&m->feat, m->tok, m->idf, spans, NULL, n, fs, v, &err), 0);
  double before[8][TD_MAX_THEMES], lib[8][TD_MAX_THEMES], after[TD_MAX_THEMES];
  for (size_t i = 0; i < n; i++) {
    td_model_decision(m, &v[i], before[i]);
    for (size_t k = 0; k < m->ntheme; k++) lib[i][k] = td_model_decision_libsvm(m, k, &v[i]);
  }
  assert_int_equal(m->linear, 1);
  td_model_release_svs(m);
  td_model_release_svs(m); /* twice: nothing left to free */
  for (size_t k = 0; k < m->ntheme; k++) {
    assert_null(m->themes[k].svm->SV);
    assert_int_equal(m->themes[k].svm->l, 0);
  }
  for (size_t i = 0; i < n; i++) {
    td_model_decision(m, &v[i], after);
    for (size_t k = 0; k < m->ntheme; k++) {
      assert_true(same_double(after[k], before[i][k]));
      assert_true(fabs(td_model_decision_libsvm(m, k, &v[i]) - lib[i][k]) < 1e-9);
    }
    td_fvec_free(&v[i]);
  }
  td_fscratch_free(&fs);
  td_model_unref(&m); /* frees the headers that are left */
}

/* TD_MODEL_LOAD_SERVE: the support vectors are collapsed and freed while
 * the files are parsed; the weights are those of a full load, bit for bit. */
static void test_serve_load(void **state) {
  (void)state;
  td_model_t *full = load(BUNDLE), *m = NULL;
  td_err_t err;
  td_err_clear(&err);
  if (td_model_load_flags(BUNDLE, getenv("THEMED_PLUGIN_DIR"), TD_MODEL_LOAD_SERVE, &m, &err))
    fail_msg("%s", err.msg);
  assert_int_equal(m->linear, 1);
  assert_int_equal(m->svs_released, 1);
  assert_int_equal(full->svs_released, 0);
  size_t nw = (size_t)m->feat.buckets * m->ntheme;
  assert_int_equal(memcmp(m->w, full->w, nw * sizeof *m->w), 0);
  assert_int_equal(memcmp(m->bias, full->bias, m->ntheme * sizeof *m->bias), 0);
  for (size_t k = 0; k < m->ntheme; k++) {
    assert_null(m->themes[k].svm->SV);
    assert_int_equal(m->themes[k].svm->l, 0);
    assert_true(full->themes[k].svm->l > 0);
    assert_int_equal(m->themes[k].sign, full->themes[k].sign);
  }
  td_model_unref(&m);
  td_model_unref(&full);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_bundled_model),
      cmocka_unit_test(test_rewritten_numbers),
      cmocka_unit_test(test_release_svs),
      cmocka_unit_test(test_serve_load),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
