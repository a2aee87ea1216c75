/*
 * Traditional-script input classifies like Simplified: the shipped model
 * (models/rural-themes) is scored on ../shared/corpus/dev.jsonl as it is and
 * converted to Traditional characters with ICU's "Simplified-Traditional"
 * transliterator (the same as `uconv -x Hans-Hant`), article by article as
 * `themectl eval` does; micro-F1 may drop by at most 0.02.
 *
 * Skips, with a message, when ../shared (THEMED_SHARED) or the bundle is
 * absent. THEMED_MODEL overrides the bundle directory.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <unicode/ustring.h>
#include <unicode/utrans.h>

#include "classify.h"
#include "corpus.h"
#include "model.h"

#define MAX_LOSS 0.02

typedef struct counts {
  size_t tp, fp, fn;
} counts_t;

/* Converts UTF-8 s[0..n) to Traditional; returns a malloc'd NUL-terminated string. */
static char *to_traditional(UTransliterator *tr, const char *s, size_t n, size_t *out_len) {
  UErrorCode st = U_ZERO_ERROR;
  int32_t cap = (int32_t)n * 2 + 16, len = 0;
  UChar *u = malloc((size_t)cap * sizeof *u);
  assert_non_null(u);
  u_strFromUTF8(u, cap, &len, s, (int32_t)n, &st);
  assert_true(U_SUCCESS(st));
  int32_t limit = len;
  utrans_transUChars(tr, u, &len, cap, 0, &limit, &st);
  assert_true(U_SUCCESS(st));
  int32_t blen = 0;
  st = U_ZERO_ERROR;
  u_strToUTF8(NULL, 0, &blen, u, len, &st);
  st = U_ZERO_ERROR;
  char *b = malloc((size_t)blen + 1);
  assert_non_null(b);
  u_strToUTF8(b, blen + 1, &blen, u, len, &st);
  assert_true(U_SUCCESS(st));
  free(u);
  *out_len = (size_t)blen;
  return b;
}

/* micro-F1 of model m on corpus c, articles classified as wholes. */
static double micro_f1(const td_model_t *m, const td_corpus_t *c, char **texts, size_t *lens) {
  td_classify_opts_t o;
  td_classify_opts_default(&o);
  td_scratch_t *s = td_scratch_new();
  td_result_t r;
  td_result_init(&r);
  td_span_t *spans = malloc(c->n * sizeof *spans);
  assert_non_null(spans);
  counts_t t = {0};
  for (size_t d = 0; d < c->ndocs; d++) {
    size_t b = c->doc_start[d], nd = c->doc_start[d + 1] - b;
    for (size_t j = 0; j < nd; j++) spans[j] = (td_span_t){texts[b + j], lens[b + j]};
    td_doc_t doc = {.id = c->items[b].doc, .passages = spans, .npassages = nd};
    td_err_t err = {0};
    if (td_classify(m, &doc, &o, s, &r, &err)) fail_msg("doc %s: %s", doc.id, err.msg);
    for (size_t j = 0; j < nd; j++)
      for (size_t k = 0; k < m->ntheme; k++) {
        int p = td_result_tagged(m, &o, &r, j, k), g = (int)(c->items[b + j].labels >> k) & 1;
        t.tp += p && g;
        t.fp += p && !g;
        t.fn += !p && g;
      }
  }
  free(spans);
  td_result_free(&r);
  td_scratch_free(&s);
  return t.tp ? 2.0 * (double)t.tp / (double)(2 * t.tp + t.fp + t.fn) : 0;
}

static void traditional_dev(void **state) {
  (void)state;
  const char *shared = getenv("THEMED_SHARED"), *mdir = getenv("THEMED_MODEL");
  char dev[1024], manifest[1024];
  snprintf(dev, sizeof dev, "%s/corpus/dev.jsonl", shared && *shared ? shared : "../shared");
  if (!mdir || !*mdir) mdir = "models/rural-themes";
  snprintf(manifest, sizeof manifest, "%s/manifest.json", mdir);
  if (access(dev, R_OK) != 0) {
    printf("SKIP: %s not readable; the Traditional-script test needs ../shared\n", dev);
    skip();
  }
  if (access(manifest, R_OK) != 0) {
    printf("SKIP: %s not readable; run from the source tree or set THEMED_MODEL\n", manifest);
    skip();
  }
  td_err_t err = {0};
  td_model_t *m = NULL;
  if (td_model_load(mdir, NULL, &m, &err)) fail_msg("%s", err.msg);
  td_corpus_t c;
  td_corpus_init(&c);
  c.themes = calloc(m->ntheme, sizeof *c.themes);
  assert_non_null(c.themes);
  for (c.ntheme = 0; c.ntheme < m->ntheme; c.ntheme++)
    c.themes[c.ntheme] = strdup(m->themes[c.ntheme].name);
  if (td_corpus_load(&c, dev, m->multiclass, 1, &err) || td_corpus_finish(&c, &err))
    fail_msg("%s", err.msg);

  UErrorCode st = U_ZERO_ERROR;
  UChar id[32];
  u_uastrcpy(id, "Simplified-Traditional");
  UTransliterator *tr = utrans_openU(id, -1, UTRANS_FORWARD, NULL, 0, NULL, &st);
  if (U_FAILURE(st)) fail_msg("ICU Simplified-Traditional: %s", u_errorName(st));

  char **simp = malloc(c.n * sizeof *simp), **trad = malloc(c.n * sizeof *trad);
  size_t *slen = malloc(c.n * sizeof *slen), *tlen = malloc(c.n * sizeof *tlen);
  assert_true(simp && trad && slen && tlen);
  size_t changed = 0;
  for (size_t i = 0; i < c.n; i++) {
    simp[i] = c.items[i].text;
    slen[i] = c.items[i].len;
    trad[i] = to_traditional(tr, simp[i], slen[i], &tlen[i]);
    changed += tlen[i] != slen[i] || memcmp(trad[i], simp[i], slen[i]) != 0;
  }
  utrans_close(tr);
  /* The conversion must really have happened for the comparison to mean anything. */
  assert_true(changed * 10 > c.n * 8);

  double fs = micro_f1(m, &c, simp, slen), ft = micro_f1(m, &c, trad, tlen);
  printf("dev micro-F1: Simplified %.4f, Traditional %.4f (%zu of %zu passages changed)\n", fs, ft,
         changed, c.n);
  assert_true(fs > 0.5);
  if (fs - ft > MAX_LOSS)
    fail_msg("Traditional input loses %.4f micro-F1 (%.4f -> %.4f), more than %.2f", fs - ft, fs,
             ft, MAX_LOSS);

  for (size_t i = 0; i < c.n; i++) free(trad[i]);
  free(simp);
  free(trad);
  free(slen);
  free(tlen);
  td_corpus_free(&c);
  td_model_unref(&m);
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(traditional_dev)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
