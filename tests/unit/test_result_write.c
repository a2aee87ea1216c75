/*
 * td_result_write must produce exactly the bytes of
 * json_dumps(td_result_json(...), TD_JSON_DUMP_FLAGS): served and offline
 * output are documented to be identical, and the daemon and themectl now
 * use the direct writer while tests and tools may still use the objects.
 *
 * Checked on synthetic results over the whole score range (every k/10^4
 * and values next to the rounding boundaries), every tagging rule, hostile
 * ids and labels, the three id modes, and on real classifications with the
 * bundled model (fixture corpus; ../shared's dev articles when present).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "classify.h"
#include "model.h"

/* ------------------------------------------------------------------------ */
/* helpers                                                                  */

/* Compares the writer with the objects for one result; mode/id as the
 * daemon applies them. */
static void check_same(const td_model_t *m, const td_doc_t *doc, const td_classify_opts_t *o,
                       const td_result_t *r, td_scratch_t *s, td_result_id_t mode,
                       const json_t *id) {
  json_t *j = td_result_json(m, doc, o, r, s);
  td_buf_t b;
  td_buf_init(&b);
  assert_int_equal(td_buf_append(&b, "prefix", 6), 0); /* appends, keeps what was there */
  int rc = td_result_write(m, doc, o, r, s, mode, id, &b);
  if (!j) {
    assert_int_equal(rc, TD_ENOMEM);
    assert_int_equal(b.len, 6);
    assert_string_equal(b.data, "prefix");
    td_buf_free(&b);
    return;
  }
  if (mode == TD_RESULT_ID_JSON && id) json_object_set(j, "id", (json_t *)id);
  else if (mode == TD_RESULT_ID_OMIT) json_object_del(j, "id");
  char *want = json_dumps(j, TD_JSON_DUMP_FLAGS);
  assert_non_null(want);
  assert_int_equal(rc, 0);
  assert_int_equal(b.len, 6 + strlen(want));
  if (strcmp(b.data + 6, want) != 0)
    fail_msg("writer differs from jansson:\n  jansson %s\n  writer  %s", want, b.data + 6);
  assert_int_equal(b.data[b.len], '\0');
  free(want);
  json_decref(j);
  td_buf_free(&b);
}

/* A model with only what the response needs: names, label, thresholds. */
typedef struct fake {
  td_model_t m;
  td_theme_t th[5];
} fake_t;

static void fake_init(fake_t *f, const char *label, int multiclass) {
  static const char *const nm[5] = {"organization", "talent", "a.b-c_D9", "x", "other"};
  memset(f, 0, sizeof *f);
  f->m.magic = TD_MODEL_MAGIC;
  f->m.label = (char *)label;
  f->m.linear = 1;
  f->m.multiclass = multiclass;
  f->m.ntheme = multiclass ? 5 : 4;
  f->m.themes = f->th;
  for (size_t k = 0; k < 5; k++) {
    f->th[k].name = (char *)nm[k];
    f->th[k].threshold = 0.2 + 0.15 * (double)k;
  }
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void) {
  uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/* Scores that stress the number writer: exact k/10^4, the rounding
 * boundaries (k + 0.5)/10^4 and their neighbours, 0, 1, tiny values. */
static double hard_score(void) {
  uint64_t k = rnd() % 10001;
  switch (rnd() % 8) {
  case 0: return (double)k / 1e4;
  case 1: return ((double)k + 0.5) / 1e4 > 1 ? 1 : ((double)k + 0.5) / 1e4;
  case 2: return nextafter((double)k / 1e4, 0);
  case 3: return nextafter((double)k / 1e4, 1);
  case 4: return 0;
  case 5: return 1;
  case 6: return ldexp(1, -(int)(rnd() % 1000));
  default: return (double)(rnd() >> 11) / 9007199254740992.0;
  }
}

static void fill_result(td_result_t *r, size_t n, size_t nt) {
  r->passages.count = 0;
  r->passages.items = realloc(r->passages.items, (n ? n : 1) * sizeof *r->passages.items);
  r->passages.cap = n ? n : 1;
  r->scores = realloc(r->scores, (n ? n : 1) * nt * sizeof *r->scores);
  r->dec = realloc(r->dec, (n ? n : 1) * nt * sizeof *r->dec);
  r->spans = realloc(r->spans, (n ? n : 1) * sizeof *r->spans);
  r->cap = n ? n : 1;
  r->ntheme = nt;
  size_t b = rnd() % 3, c = b;
  for (size_t i = 0; i < n; i++) {
    td_passage_t *p = &r->passages.items[i];
    size_t chars = 1 + rnd() % 700;
    p->start = b;
    p->end = b + chars * (1 + rnd() % 3);
    p->cstart = c;
    p->cend = c + chars;
    p->is_heading = (int)(rnd() % 4 == 0);
    p->context = -1;
    r->spans[i].s = "";
    r->spans[i].len = 0;
    b = p->end + 1 + rnd() % 3;
    c = p->cend + 1 + rnd() % 3;
    for (size_t k = 0; k < nt; k++) r->scores[i * nt + k] = hard_score();
  }
  /* a huge offset once in a while: every digit count */
  if (n && rnd() % 5 == 0) r->passages.items[n - 1].end = (size_t)(rnd() >> (rnd() % 63));
  r->passages.count = n;
}

/* ------------------------------------------------------------------------ */
/* synthetic results                                                        */

static void test_synthetic_rules(void **state) {
  (void)state;
  td_result_t r;
  td_result_init(&r);
  for (int mc = 0; mc <= 1; mc++) {
    fake_t f;
    fake_init(&f, "rural-themes@1.0.0", mc);
    for (int iter = 0; iter < 3000; iter++) {
      size_t n = iter % 50 == 0 ? 0 : 1 + rnd() % 12;
      fill_result(&r, n, f.m.ntheme);
      td_classify_opts_t o;
      td_classify_opts_default(&o);
      if (rnd() % 3 == 0) o.threshold = (double)(rnd() % 11) / 10;
      if (rnd() % 3 == 0) o.top_k = (int)(rnd() % 4);
      td_doc_t d = {.id = rnd() % 4 ? "doc-1" : NULL};
      check_same(&f.m, &d, &o, &r, NULL, TD_RESULT_ID_DOC, NULL);
      check_same(&f.m, &d, iter % 7 ? &o : NULL, &r, NULL, TD_RESULT_ID_OMIT, NULL);
    }
  }
  td_result_free(&r);
}

/* Every k/10^4 as a score and as a share/max, once each. */
static void test_every_score(void **state) {
  (void)state;
  fake_t f;
  fake_init(&f, "m@1", 0);
  f.m.ntheme = 1;
  td_result_t r;
  td_result_init(&r);
  fill_result(&r, 1, 1);
  td_classify_opts_t o;
  td_classify_opts_default(&o);
  o.threshold = 0; /* every score is tagged, so printed */
  td_doc_t d = {.id = "x"};
  for (int k = 0; k <= 10000; k++) {
    r.scores[0] = (double)k / 1e4;
    check_same(&f.m, &d, &o, &r, NULL, TD_RESULT_ID_DOC, NULL);
    r.scores[0] = ((double)k + 0.5) / 1e4;
    if (r.scores[0] <= 1) check_same(&f.m, &d, &o, &r, NULL, TD_RESULT_ID_DOC, NULL);
  }
  /* shares: c of n passages for every n up to 60 */
  for (size_t n = 1; n <= 60; n++) {
    fill_result(&r, n, 1);
    for (size_t c = 0; c <= n; c++) {
      for (size_t i = 0; i < n; i++) r.scores[i] = i < c ? 0.75 : 0;
      o.threshold = 0.5;
      check_same(&f.m, &d, &o, &r, NULL, TD_RESULT_ID_DOC, NULL);
    }
  }
  /* not representable in JSON: both refuse */
  fill_result(&r, 2, 1);
  r.scores[1] = NAN;
  check_same(&f.m, &d, &o, &r, NULL, TD_RESULT_ID_DOC, NULL);
  r.scores[1] = INFINITY;
  check_same(&f.m, &d, &o, &r, NULL, TD_RESULT_ID_DOC, NULL);
  td_result_free(&r);
}

static void test_ids_and_labels(void **state) {
  (void)state;
  static const char *const strs[] = {
      "", "plain", "q\"uote", "back\\slash", "sl/ash", "tab\there", "nl\ncr\r",
      "\x01\x02\x08\x0b\x0c\x1b\x1f", "del\x7f", "中文标识", "\xe2\x80\xa8 sep \xe2\x80\xa9",
      "emoji \xf0\x9f\x98\x80", "<script>", "\xc3\xa9t\xc3\xa9",
      /* invalid UTF-8: jansson refuses the string, so both fail */
      "bad \xff", "\xc0\xaf", "\xed\xa0\x80", "trunc \xe4\xb8"};
  td_result_t r;
  td_result_init(&r);
  fill_result(&r, 3, 4);
  for (size_t i = 0; i < sizeof strs / sizeof *strs; i++) {
    fake_t f;
    fake_init(&f, strs[i][0] ? strs[i] : "m@1", 0);
    td_doc_t d = {.id = strs[i]};
    check_same(&f.m, &d, NULL, &r, NULL, TD_RESULT_ID_DOC, NULL);
    /* the label goes through the same writer */
    td_doc_t d2 = {.id = "id"};
    check_same(&f.m, &d2, NULL, &r, NULL, TD_RESULT_ID_DOC, NULL);
  }
  /* request ids of every scalar type, replacing the engine's slot */
  json_t *ids[] = {json_integer(0),       json_integer(-42),      json_integer(INT64_MAX),
                   json_real(1.23456789), json_real(-0.0),        json_real(1e300),
                   json_real(2.5e-8),     json_true(),            json_false(),
                   json_null(),           json_string("s\"\\/\x01"), json_string("中")};
  fake_t f;
  fake_init(&f, "m@1", 0);
  for (size_t i = 0; i < sizeof ids / sizeof *ids; i++) {
    td_doc_t d = {.id = json_is_string(ids[i]) ? json_string_value(ids[i]) : ""};
    check_same(&f.m, &d, NULL, &r, NULL, TD_RESULT_ID_JSON, ids[i]);
    json_decref(ids[i]);
  }
  td_result_free(&r);
}

/* ------------------------------------------------------------------------ */
/* real classifications                                                     */

static void classify_file(td_model_t *m, const char *path, int per_passage_rows) {
  char *data;
  size_t len;
  td_err_t err;
  td_err_clear(&err);
  if (td_read_file(path, &data, &len, &err)) fail_msg("%s", err.msg);
  td_scratch_t *s = td_scratch_new();
  td_result_t r;
  td_result_init(&r);
  size_t docs = 0;
  for (char *line = strtok(data, "\n"); line; line = strtok(NULL, "\n")) {
    json_error_t je;
    json_t *j = json_loads(line, 0, &je);
    assert_non_null(j);
    const char *text = json_string_value(json_object_get(j, "text"));
    const char *id = json_string_value(json_object_get(j, per_passage_rows ? "doc" : "id"));
    td_doc_t d = {.id = id, .text = text, .len = strlen(text)};
    if (td_classify(m, &d, NULL, s, &r, &err)) fail_msg("%s: %s", path, err.msg);
    td_classify_opts_t o;
    td_classify_opts_default(&o);
    check_same(m, &d, &o, &r, s, TD_RESULT_ID_DOC, NULL);
    json_t *jid = json_object_get(j, "id");
    check_same(m, &d, &o, &r, s, TD_RESULT_ID_JSON, jid);
    o.top_k = 1;
    check_same(m, &d, &o, &r, s, TD_RESULT_ID_OMIT, NULL);
    if (docs % 5 == 0) { /* the jansson paths, through the writer */
      o.explain = 1;
      check_same(m, &d, &o, &r, s, TD_RESULT_ID_OMIT, NULL);
      o.explain = 0;
      o.include_text = 1;
      check_same(m, &d, &o, &r, s, TD_RESULT_ID_JSON, jid);
    }
    docs++;
    json_decref(j);
  }
  assert_true(docs > 0);
  td_result_free(&r);
  td_scratch_free(&s);
  free(data);
}

static void test_bundled_model(void **state) {
  (void)state;
  td_model_t *m = NULL;
  td_err_t err;
  td_err_clear(&err);
  if (td_model_load("models/rural-themes", getenv("THEMED_PLUGIN_DIR"), &m, &err))
    fail_msg("%s", err.msg);
  classify_file(m, "tests/fixtures/classify-corpus.jsonl", 1);
  const char *shared = getenv("THEMED_SHARED");
  char dev[1024];
  snprintf(dev, sizeof dev, "%s/corpus/dev.jsonl", shared ? shared : "../shared");
  FILE *fp = fopen(dev, "r");
  if (fp) {
    fclose(fp);
    classify_file(m, dev, 1);
  } else {
    printf("note: %s not readable; only the fixture corpus was compared\n", dev);
  }
  td_model_unref(&m);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_synthetic_rules),
      cmocka_unit_test(test_every_score),
      cmocka_unit_test(test_ids_and_labels),
      cmocka_unit_test(test_bundled_model),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
