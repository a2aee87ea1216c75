/* features: config JSON, the hash, tf / idf / L2 by hand, the heading
 * context block, sorted vectors, df counting, token explanations. Uses the
 * space-splitting test tokenizer (tests/plugins/testtok_space.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "features.h"
#include "plugin.h"

static td_tokenizer_t *open_tok(const char *opts_json) {
  const char *dir = getenv("THEMED_TEST_PLUGIN_DIR");
  char path[1024];
  snprintf(path, sizeof path, "%s/testtok_space.so", dir ? dir : "build/tests/plugins");
  json_t *opts = opts_json ? json_loads(opts_json, 0, NULL) : NULL;
  td_tokenizer_t *t = NULL;
  td_err_t err;
  td_err_clear(&err);
  int rc = td_tokenizer_open_path(path, opts, &t, &err);
  json_decref(opts);
  if (rc) fail_msg("cannot open %s: %s", path, err.msg);
  return t;
}

static int setup(void **st) {
  *st = open_tok(NULL);
  return 0;
}

static int teardown(void **st) {
  td_tokenizer_t *t = *st;
  td_tokenizer_free(&t);
  return 0;
}

static td_feat_config_t small_config(void) {
  td_feat_config_t c;
  td_feat_config_default(&c);
  c.buckets = 1u << 16;
  c.seed = 42;
  return c;
}

static uint32_t idx(const td_feat_config_t *c, const char *tok) {
  return td_features_hash(tok, strlen(tok), c->seed) & (c->buckets - 1);
}

static double value_at(const td_fvec_t *v, uint32_t index) {
  for (size_t i = 0; i < v->count; i++)
    if (v->items[i].index == index) return v->items[i].value;
  return 0;
}

static void assert_sorted_unique_unit(const td_fvec_t *v) {
  double ss = 0;
  for (size_t i = 0; i < v->count; i++) {
    if (i) assert_true(v->items[i - 1].index < v->items[i].index);
    assert_true(v->items[i].value != 0);
    ss += v->items[i].value * v->items[i].value;
  }
  if (v->count) assert_true(fabs(ss - 1) < 1e-9);
}

/* ---- config ---- */

static void test_config_default(void **st) {
  (void)st;
  td_feat_config_t c;
  td_feat_config_default(&c);
  assert_int_equal(c.buckets, 1u << 18);
  assert_int_equal(c.ngram_max, 1);
  assert_int_equal(c.sublinear_tf, 1);
  assert_int_equal(c.use_idf, 1);
  assert_true(c.context_weight == 0.5);
  assert_int_equal(c.seed, 0x7d5eed);
}

static void test_config_roundtrip(void **st) {
  (void)st;
  td_feat_config_t a, b;
  td_feat_config_default(&a);
  json_t *j = td_feat_config_to_json(&a);
  assert_non_null(j);
  assert_string_equal(json_string_value(json_object_get(j, "kind")), "hash");
  assert_string_equal(json_string_value(json_object_get(j, "hash")), "murmur3_32");
  /* new models count tokens, not buckets (td_norm_t) */
  assert_string_equal(json_string_value(json_object_get(j, "norm")), "l2-tokens");
  assert_int_equal(json_integer_value(json_object_get(j, "buckets")), 1 << 18);
  assert_true(json_is_true(json_object_get(j, "sublinear_tf")));
  assert_int_equal(json_object_size(j), 9);
  memset(&b, 0xab, sizeof b);
  td_err_t err;
  assert_int_equal(td_feat_config_from_json(j, &b, &err), 0);
  assert_int_equal(b.buckets, a.buckets);
  assert_int_equal(b.ngram_max, a.ngram_max);
  assert_int_equal(b.sublinear_tf, a.sublinear_tf);
  assert_int_equal(b.use_idf, a.use_idf);
  assert_true(b.context_weight == a.context_weight);
  assert_int_equal(b.seed, a.seed);
  assert_int_equal(b.norm, TD_NORM_L2_TOKENS);
  json_decref(j);

  /* Non-default values, through text as a manifest would carry them. */
  a = (td_feat_config_t){.buckets = 1u << 10, .ngram_max = 2, .sublinear_tf = 0, .use_idf = 0,
                         .context_weight = 0.125, .seed = 0xffffffffu, .norm = TD_NORM_L2};
  j = td_feat_config_to_json(&a);
  char *s = json_dumps(j, JSON_COMPACT);
  json_decref(j);
  j = json_loads(s, 0, NULL);
  free(s);
  assert_int_equal(td_feat_config_from_json(j, &b, &err), 0);
  assert_int_equal(b.buckets, 1u << 10);
  assert_int_equal(b.ngram_max, 2);
  assert_int_equal(b.sublinear_tf, 0);
  assert_int_equal(b.use_idf, 0);
  assert_true(b.context_weight == 0.125);
  assert_int_equal(b.seed, 0xffffffffu);
  assert_int_equal(b.norm, TD_NORM_L2); /* the bundles made before l2-tokens */
  json_decref(j);
}

/* Each bad manifest fragment fails with a message naming the field. */
static void expect_config_error(const char *json, const char *msg) {
  json_error_t je;
  json_t *j = json_loads(json, JSON_DECODE_ANY, &je);
  if (!j) fail_msg("bad test JSON %s: %s", json, je.text);
  td_feat_config_t c;
  td_feat_config_default(&c);
  td_feat_config_t before = c;
  td_err_t err;
  td_err_clear(&err);
  int rc = td_feat_config_from_json(j, &c, &err);
  json_decref(j);
  assert_int_equal(rc, TD_EFORMAT);
  assert_int_equal(err.code, TD_EFORMAT);
  assert_string_equal(err.msg, msg);
  assert_memory_equal(&c, &before, sizeof c); /* untouched on failure */
}

#define BASE_CFG_NO(k)                                                                  \
  "{" k "\"kind\":\"hash\",\"hash\":\"murmur3_32\",\"buckets\":1024,\"ngram_max\":1," \
  "\"sublinear_tf\":true,\"use_idf\":true,\"context_weight\":0.5,\"seed\":7,\"norm\":\"l2\"}"

static void test_config_errors(void **st) {
  (void)st;
  /* the base document is valid */
  json_t *j = json_loads(BASE_CFG_NO(""), 0, NULL);
  td_feat_config_t c;
  assert_int_equal(td_feat_config_from_json(j, &c, NULL), 0);
  assert_int_equal(c.seed, 7);
  json_decref(j);

  expect_config_error("[1]", "features: expected an object, got [1]");
  expect_config_error(BASE_CFG_NO("\"bucket\":1024,"), "features.bucket: unknown key");
  expect_config_error("{\"kind\":\"hash\"}", "features.hash: missing");
  expect_config_error("{\"kind\":\"hash\",\"hash\":\"murmur3_32\",\"buckets\":1024,\"ngram_max\":1,"
                      "\"sublinear_tf\":true,\"use_idf\":true,\"context_weight\":0.5,\"norm\":\"l2\"}",
                      "features.seed: missing");
#define WITH(field, val) "{\"kind\":\"hash\",\"hash\":\"murmur3_32\",\"buckets\":1024,\"ngram_max\":1," \
  "\"sublinear_tf\":true,\"use_idf\":true,\"context_weight\":0.5,\"seed\":7,\"norm\":\"l2\"," \
  "\"" field "\":" val "}"
  /* a repeated key: jansson keeps the last value */
  expect_config_error(WITH("kind", "\"vocab\""), "features.kind: expected \"hash\", got \"vocab\"");
  expect_config_error(WITH("hash", "\"fnv1a_64\""),
                      "features.hash: expected \"murmur3_32\", got \"fnv1a_64\"");
  expect_config_error(WITH("norm", "null"), "features.norm: expected \"l2\" or \"l2-tokens\", got null");
  expect_config_error(WITH("norm", "\"l1\""), "features.norm: expected \"l2\" or \"l2-tokens\", got \"l1\"");
  expect_config_error(WITH("buckets", "1000"),
                      "features.buckets: expected a power of two between 2^10 and 2^24, got 1000");
  expect_config_error(WITH("buckets", "512"),
                      "features.buckets: expected a power of two between 2^10 and 2^24, got 512");
  expect_config_error(WITH("buckets", "33554432"),
                      "features.buckets: expected a power of two between 2^10 and 2^24, got 33554432");
  expect_config_error(WITH("buckets", "\"1024\""),
                      "features.buckets: expected a power of two between 2^10 and 2^24, got \"1024\"");
  expect_config_error(WITH("ngram_max", "3"), "features.ngram_max: expected 1 or 2, got 3");
  expect_config_error(WITH("ngram_max", "1.0"), "features.ngram_max: expected 1 or 2, got 1.0");
  expect_config_error(WITH("sublinear_tf", "\"yes\""),
                      "features.sublinear_tf: expected true or false, got \"yes\"");
  expect_config_error(WITH("use_idf", "2"), "features.use_idf: expected true or false, got 2");
  expect_config_error(WITH("context_weight", "-0.5"),
                      "features.context_weight: expected a number between 0 and 100, got -0.5");
  expect_config_error(WITH("context_weight", "\"0.5\""),
                      "features.context_weight: expected a number between 0 and 100, got \"0.5\"");
  expect_config_error(WITH("seed", "-1"),
                      "features.seed: expected an integer between 0 and 4294967295, got -1");
  expect_config_error(WITH("seed", "4294967296"),
                      "features.seed: expected an integer between 0 and 4294967295, got 4294967296");
  /* flags also accept 0/1, and weights integers */
  j = json_loads(WITH("use_idf", "0"), 0, NULL);
  assert_int_equal(td_feat_config_from_json(j, &c, NULL), 0);
  assert_int_equal(c.use_idf, 0);
  json_decref(j);
  j = json_loads(WITH("context_weight", "1"), 0, NULL);
  assert_int_equal(td_feat_config_from_json(j, &c, NULL), 0);
  assert_true(c.context_weight == 1.0);
  json_decref(j);
#undef WITH
}

/* ---- hash ---- */

/* MurmurHash3 x86_32 reference vectors (SMHasher). */
static void test_hash_vectors(void **st) {
  (void)st;
  assert_int_equal(td_features_hash("", 0, 0), 0);
  assert_int_equal(td_features_hash("", 0, 1), 0x514E28B7u);
  assert_int_equal(td_features_hash("", 0, 0xffffffffu), 0x81F16F39u);
  assert_int_equal(td_features_hash("\0\0\0\0", 4, 0), 0x2362F9DEu);
  assert_int_equal(td_features_hash("aaaa", 4, 0x9747b28cu), 0x5A97808Au);
  assert_int_equal(td_features_hash("aaa", 3, 0x9747b28cu), 0x283E0130u);
  assert_int_equal(td_features_hash("aa", 2, 0x9747b28cu), 0x5D211726u);
  assert_int_equal(td_features_hash("a", 1, 0x9747b28cu), 0x7FA09EA6u);
  assert_int_equal(td_features_hash("abcd", 4, 0x9747b28cu), 0xF0478627u);
  assert_int_equal(td_features_hash("Hello, world!", 13, 0x9747b28cu), 0x24884CBAu);
  const char *fox = "The quick brown fox jumps over the lazy dog";
  assert_int_equal(td_features_hash(fox, strlen(fox), 0x9747b28cu), 0x2FA826CDu);
}

/* Same input, same vector, across calls and scratch objects. */
static void test_hash_determinism(void **st) {
  td_tokenizer_t *tok = *st;
  td_feat_config_t c = small_config();
  td_span_t sp[1] = {{"乡村 振兴 产业 振兴", strlen("乡村 振兴 产业 振兴")}};
  td_fvec_t a, b;
  td_fvec_init(&a);
  td_fvec_init(&b);
  td_fscratch_t *s1 = td_fscratch_new(), *s2 = td_fscratch_new();
  assert_int_equal(td_features_doc(&c, tok, NULL, sp, NULL, 1, s1, &a, NULL), 0);
  assert_int_equal(td_features_doc(&c, tok, NULL, sp, NULL, 1, s2, &b, NULL), 0);
  assert_int_equal(a.count, 3);
  assert_int_equal(a.count, b.count);
  assert_memory_equal(a.items, b.items, a.count * sizeof *a.items);
  /* the indexes are the tokens' hashes */
  assert_true(value_at(&a, idx(&c, "乡村")) > 0);
  assert_true(value_at(&a, idx(&c, "振兴")) > value_at(&a, idx(&c, "产业")));
  /* another seed, other indexes */
  td_feat_config_t c2 = c;
  c2.seed = 43;
  assert_int_equal(td_features_doc(&c2, tok, NULL, sp, NULL, 1, s1, &b, NULL), 0);
  assert_true(a.items[0].index != b.items[0].index || a.items[1].index != b.items[1].index);
  td_fscratch_free(&s1);
  td_fscratch_free(&s2);
  assert_null(s1);
  td_fvec_free(&a);
  td_fvec_free(&b);
}

/* ---- values ---- */

/* "a b a c" with a known idf: tf = (1 + ln 2, 1, 1) x idf, then L2. */
static void test_tf_idf_l2_by_hand(void **st) {
  td_tokenizer_t *tok = *st;
  td_feat_config_t c = small_config();
  uint32_t ia = idx(&c, "a"), ib = idx(&c, "b"), ic = idx(&c, "c");
  assert_true(ia != ib && ib != ic && ia != ic);
  double *idf = malloc(c.buckets * sizeof *idf);
  for (uint32_t i = 0; i < c.buckets; i++) idf[i] = 1.0 + (i % 7) * 0.25;
  td_span_t sp[1] = {{"a b a c", 7}};
  td_fvec_t v;
  td_fvec_init(&v);
  td_fscratch_t *s = td_fscratch_new();

  double wa = (1 + log(2.0)) * idf[ia], wb = idf[ib], wc = idf[ic];
  double norm = sqrt(wa * wa + wb * wb + wc * wc);
  assert_int_equal(td_features_doc(&c, tok, idf, sp, NULL, 1, s, &v, NULL), 0);
  assert_int_equal(v.count, 3);
  assert_sorted_unique_unit(&v);
  assert_true(fabs(value_at(&v, ia) - wa / norm) < 1e-12);
  assert_true(fabs(value_at(&v, ib) - wb / norm) < 1e-12);
  assert_true(fabs(value_at(&v, ic) - wc / norm) < 1e-12);

  /* raw tf, idf NULL: (2, 1, 1) / sqrt 6 */
  c.sublinear_tf = 0;
  assert_int_equal(td_features_doc(&c, tok, NULL, sp, NULL, 1, s, &v, NULL), 0);
  assert_true(fabs(value_at(&v, ia) - 2 / sqrt(6.0)) < 1e-12);
  assert_true(fabs(value_at(&v, ib) - 1 / sqrt(6.0)) < 1e-12);
  /* use_idf off: the table is ignored */
  c.use_idf = 0;
  assert_int_equal(td_features_doc(&c, tok, idf, sp, NULL, 1, s, &v, NULL), 0);
  assert_true(fabs(value_at(&v, ic) - 1 / sqrt(6.0)) < 1e-12);

  /* ngram_max 2: pairs (a b) (b a) (a c) join the body block */
  c = small_config();
  c.ngram_max = 2;
  c.sublinear_tf = 0;
  assert_int_equal(td_features_doc(&c, tok, NULL, sp, NULL, 1, s, &v, NULL), 0);
  assert_int_equal(v.count, 6);
  assert_sorted_unique_unit(&v);
  assert_true(fabs(value_at(&v, ia) - 2 / 3.0) < 1e-12); /* (2,1,1,1,1,1) / 3 */
  assert_true(fabs(value_at(&v, ib) - 1 / 3.0) < 1e-12);

  /* empty and blank passages: empty vectors, not errors */
  td_span_t e[2] = {{"", 0}, {"   ", 3}};
  td_fvec_t ev[2];
  td_fvec_init(&ev[0]);
  td_fvec_init(&ev[1]);
  ev[0].count = 99; /* overwritten */
  assert_int_equal(td_features_doc(&c, tok, idf, e, NULL, 2, s, ev, NULL), 0);
  assert_int_equal(ev[0].count, 0);
  assert_int_equal(ev[1].count, 0);
  assert_int_equal(td_features_doc(&c, tok, idf, NULL, NULL, 0, s, NULL, NULL), 0);
  td_fvec_free(&ev[0]);
  td_fvec_free(&ev[1]);
  td_fscratch_free(&s);
  td_fvec_free(&v);
  free(idf);
}

/* ---- context ---- */

static void test_context_block(void **st) {
  td_tokenizer_t *tok = *st;
  td_feat_config_t c = small_config();
  c.sublinear_tf = 0;
  double *idf = malloc(c.buckets * sizeof *idf);
  for (uint32_t i = 0; i < c.buckets; i++) idf[i] = 1.0 + (i % 5) * 0.5;
  td_span_t sp[2] = {{"x y", 3}, {"a b", 3}};
  td_passage_t ps[2] = {{.is_heading = 1, .context = -1}, {.is_heading = 0, .context = 0}};
  td_fvec_t v[2];
  td_fvec_init(&v[0]);
  td_fvec_init(&v[1]);
  td_fscratch_t *s = td_fscratch_new();
  assert_int_equal(td_features_doc(&c, tok, idf, sp, ps, 2, s, v, NULL), 0);
  /* the heading itself: body block only */
  assert_int_equal(v[0].count, 2);
  assert_true(value_at(&v[0], idx(&c, "x")) > 0);
  /* the body passage: its 2 tokens + the heading's 2 in another index space */
  assert_int_equal(v[1].count, 4);
  assert_sorted_unique_unit(&v[1]);
  uint32_t ia = idx(&c, "a"), ib = idx(&c, "b"), ix = idx(&c, "x"), iy = idx(&c, "y");
  double wa = idf[ia], wb = idf[ib], ctx2 = 0;
  uint32_t cidx[2];
  size_t nc = 0;
  for (size_t i = 0; i < v[1].count; i++) {
    uint32_t k = v[1].items[i].index;
    if (k == ia || k == ib) continue;
    assert_true(k != ix && k != iy); /* not the body indexes of x and y */
    assert_true(nc < 2);
    cidx[nc++] = k;
    ctx2 += pow(0.5 * idf[k], 2);
  }
  assert_int_equal(nc, 2);
  double norm = sqrt(wa * wa + wb * wb + ctx2);
  assert_true(fabs(value_at(&v[1], ia) - wa / norm) < 1e-12);
  for (size_t q = 0; q < 2; q++)
    assert_true(fabs(value_at(&v[1], cidx[q]) - 0.5 * idf[cidx[q]] / norm) < 1e-12);

  /* weight 0, no ps, or context -1: no context block */
  td_feat_config_t c0 = c;
  c0.context_weight = 0;
  assert_int_equal(td_features_doc(&c0, tok, idf, sp, ps, 2, s, v, NULL), 0);
  assert_int_equal(v[1].count, 2);
  assert_int_equal(td_features_doc(&c, tok, idf, sp, NULL, 2, s, v, NULL), 0);
  assert_int_equal(v[1].count, 2);
  ps[1].context = -1;
  assert_int_equal(td_features_doc(&c, tok, idf, sp, ps, 2, s, v, NULL), 0);
  assert_int_equal(v[1].count, 2);

  /* a token in both the heading and the body: two features, not one */
  td_span_t sp2[2] = {{"a", 1}, {"a", 1}};
  ps[1].context = 0;
  assert_int_equal(td_features_doc(&c, tok, NULL, sp2, ps, 2, s, v, NULL), 0);
  assert_int_equal(v[1].count, 2);
  assert_true(fabs(value_at(&v[1], ia) - 1 / sqrt(1.25)) < 1e-12);

  /* out-of-range context is the caller's bug */
  td_err_t err;
  ps[1].context = 5;
  assert_int_equal(td_features_doc(&c, tok, idf, sp, ps, 2, s, v, &err), TD_EINVAL);
  assert_non_null(strstr(err.msg, "passage 1: context 5 out of range"));
  td_fscratch_free(&s);
  td_fvec_free(&v[0]);
  td_fvec_free(&v[1]);
  free(idf);
}

/* The per-call heading cache gives what featurizing each passage alone gives,
 * with contexts that switch back and forth. */
static void test_context_cache_consistent(void **st) {
  td_tokenizer_t *tok = *st;
  td_feat_config_t c = small_config();
  c.ngram_max = 2;
  td_span_t sp[7] = {{"h1 t", 4}, {"a b", 3}, {"b c", 3}, {"h2 u", 4},
                     {"c d", 3},  {"d e", 3}, {"e f", 3}};
  td_passage_t ps[7] = {{.is_heading = 1, .context = -1}, {.context = 0}, {.context = 0},
                        {.is_heading = 1, .context = -1}, {.context = 3}, {.context = 0},
                        {.context = 3}};
  td_fvec_t all[7], one[2];
  for (int i = 0; i < 7; i++) td_fvec_init(&all[i]);
  td_fvec_init(&one[0]);
  td_fvec_init(&one[1]);
  td_fscratch_t *s = td_fscratch_new();
  assert_int_equal(td_features_doc(&c, tok, NULL, sp, ps, 7, s, all, NULL), 0);
  for (int i = 1; i < 7; i++) {
    if (ps[i].is_heading) continue;
    td_span_t pair[2] = {sp[ps[i].context], sp[i]};
    td_passage_t pp[2] = {{.is_heading = 1, .context = -1}, {.context = 0}};
    assert_int_equal(td_features_doc(&c, tok, NULL, pair, pp, 2, s, one, NULL), 0);
    assert_int_equal(one[1].count, all[i].count);
    for (size_t q = 0; q < all[i].count; q++) {
      assert_int_equal(one[1].items[q].index, all[i].items[q].index);
      assert_true(one[1].items[q].value == all[i].items[q].value);
    }
  }
  for (int i = 0; i < 7; i++) td_fvec_free(&all[i]);
  td_fvec_free(&one[0]);
  td_fvec_free(&one[1]);
  td_fscratch_free(&s);
}

/* Random documents over a vocabulary far larger than a small hash space:
 * vectors stay sorted, duplicate-free (colliding features summed) and unit. */
/* Norm l2: sorted, unique, non-zero, unit vectors, collisions or not
 * (l2-tokens vectors are checked by test_l2_tokens_by_hand and
 * test_block_dot). */
/* One passage of ntok random words "w<n>" (n < vocab), a heading one time in
 * heading_one_in, from the LCG state *seed (the same draws in the same order
 * as each random test had written out). */
static void random_passage(td_buf_t *text, td_span_t *sp, td_passage_t *ps, int ntok,
                           unsigned vocab, unsigned heading_one_in, unsigned *seed) {
  td_buf_reset(text);
  for (int k = 0; k < ntok; k++) {
    *seed = *seed * 1103515245u + 12345u;
    assert_int_equal(td_buf_printf(text, "w%u ", (*seed >> 16) % vocab), 0);
  }
  sp->s = text->data ? text->data : "";
  sp->len = text->len;
  *seed = *seed * 1103515245u + 12345u;
  ps->is_heading = (*seed >> 16) % heading_one_in == 0;
}

static void test_random_sorted_unique(void **st) {
  td_tokenizer_t *tok = *st;
  td_feat_config_t c = small_config();
  c.ngram_max = 2;
  c.norm = TD_NORM_L2; /* l2 vectors are unit vectors even with collisions */
  unsigned seed = 99;
  td_buf_t texts[12];
  td_span_t sp[12];
  td_passage_t ps[12];
  td_fvec_t v[12];
  double *idf = malloc(1024 * sizeof *idf);
  for (uint32_t i = 0; i < 1024; i++) idf[i] = 1.0 + (i % 13) * 0.1;
  for (int i = 0; i < 12; i++) {
    td_buf_init(&texts[i]);
    td_fvec_init(&v[i]);
  }
  td_fscratch_t *s = td_fscratch_new();
  for (int round = 0; round < 60; round++) {
    /* a small space (many collisions) and the 1-, 2- and 3-pass radix sorts */
    static const uint32_t sizes[] = {1024, 1u << 12, 1u << 18, 1u << 24};
    c.buckets = sizes[round % 4];
    for (int i = 0; i < 12; i++)
      random_passage(&texts[i], &sp[i], &ps[i], (round * 7 + i * 13) % 400, 5000, 4, &seed);
    td_text_link_headings(ps, 12);
    const double *w = c.buckets == 1024 && round % 8 == 4 ? idf : NULL;
    assert_int_equal(td_features_doc(&c, tok, w, sp, ps, 12, s, v, NULL), 0);
    for (int i = 0; i < 12; i++) {
      assert_sorted_unique_unit(&v[i]);
      assert_true(v[i].count <= c.buckets);
      for (size_t q = 0; q < v[i].count; q++) assert_true(v[i].items[q].index < c.buckets);
      if (sp[i].len) assert_true(v[i].count > 0);
    }
  }
  for (int i = 0; i < 12; i++) {
    td_buf_free(&texts[i]);
    td_fvec_free(&v[i]);
  }
  td_fscratch_free(&s);
  free(idf);
}

/* l2-tokens: two tokens that share a bucket stay two features until the
 * vector is merged, so each has its own tf and the norm counts both. */
static void test_l2_tokens_by_hand(void **st) {
  td_tokenizer_t *tok = *st;
  td_feat_config_t c = small_config();
  c.buckets = 1024;
  c.sublinear_tf = 0;
  char a[16] = "", b[16] = "";
  for (unsigned i = 0; i < 5000 && !b[0]; i++) /* two tokens with one index */
    for (unsigned j = 0; j < i && !b[0]; j++) {
      char x[16], y[16];
      snprintf(x, sizeof x, "w%u", i);
      snprintf(y, sizeof y, "w%u", j);
      if (idx(&c, x) == idx(&c, y)) {
        strcpy(a, x);
        strcpy(b, y);
      }
    }
  assert_true(b[0] != 0);
  char text[40];
  snprintf(text, sizeof text, "%s %s", a, b);
  td_span_t sp = {text, strlen(text)};
  td_fvec_t v;
  td_fvec_init(&v);
  td_fscratch_t *s = td_fscratch_new();
  /* l2: counted by bucket, tf 2: (2) / 2 */
  c.norm = TD_NORM_L2;
  assert_int_equal(td_features_doc(&c, tok, NULL, &sp, NULL, 1, s, &v, NULL), 0);
  assert_int_equal(v.count, 1);
  assert_true(fabs(v.items[0].value - 1.0) < 1e-12);
  /* l2-tokens: tf 1 and 1, norm sqrt 2, merged into (1 + 1) / sqrt 2 */
  c.norm = TD_NORM_L2_TOKENS;
  assert_int_equal(td_features_doc(&c, tok, NULL, &sp, NULL, 1, s, &v, NULL), 0);
  assert_int_equal(v.count, 1);
  assert_int_equal(v.items[0].index, idx(&c, a));
  assert_true(fabs(v.items[0].value - 2 / sqrt(2.0)) < 1e-12);
  /* without a collision the two agree: "a a" is one token, tf 2 */
  snprintf(text, sizeof text, "%s %s", a, a);
  sp.len = strlen(text);
  assert_int_equal(td_features_doc(&c, tok, NULL, &sp, NULL, 1, s, &v, NULL), 0);
  assert_true(v.count == 1 && fabs(v.items[0].value - 1.0) < 1e-12);
  td_fvec_free(&v);
  td_fscratch_free(&s);
}

/*
 * td_features_doc_dot against the dot products of td_features_doc's
 * vectors, on random documents with headings, neighbours, the doc block,
 * pairs, collisions (1024 buckets) and theme counts on both sides of the
 * register path (DOT_REG_MAX): bit for bit with l2, to rounding with
 * l2-tokens.
 */
static void test_block_dot(void **st) {
  td_tokenizer_t *tok = *st;
  enum { ND = 9, MAXNT = 14 };
  unsigned seed = 7;
  td_buf_t texts[ND];
  td_span_t sp[ND];
  td_passage_t ps[ND];
  td_fvec_t v[ND];
  for (int i = 0; i < ND; i++) {
    td_buf_init(&texts[i]);
    td_fvec_init(&v[i]);
  }
  td_fscratch_t *s = td_fscratch_new();
  double *idf = malloc((1u << 16) * sizeof *idf);
  for (uint32_t i = 0; i < 1u << 16; i++) idf[i] = 1.0 + (i % 13) * 0.1;
  double *w = malloc((size_t)(1u << 16) * MAXNT * sizeof *w);
  double out[ND * MAXNT];
  size_t checked = 0;
  for (int round = 0; round < 48; round++) {
    td_feat_config_t c = small_config();
    c.buckets = round % 3 == 0 ? 1024 : 1u << 16;
    c.ngram_max = 1 + round % 2;
    c.norm = round % 4 < 2 ? TD_NORM_L2_TOKENS : TD_NORM_L2;
    c.neighbor_weight = round % 5 == 0 ? 0 : 0.3;
    c.doc_weight = round % 6 == 1 ? 0.2 : 0;
    c.context_weight = round % 7 == 3 ? 0 : 0.5;
    c.sublinear_tf = round % 8 != 5;
    static const size_t nts[] = {1, 2, 6, 7, 12, 13};
    size_t nt = nts[round % 6];
    for (size_t i = 0; i < (size_t)c.buckets * nt; i++) {
      seed = seed * 1103515245u + 12345u;
      w[i] = ((double)(seed >> 8) / (1 << 24)) - 0.5;
    }
    size_t n = 1 + (size_t)round % ND;
    for (size_t i = 0; i < n; i++)
      random_passage(&texts[i], &sp[i], &ps[i], (round * 11 + (int)i * 17) % 120, 900, 3, &seed);
    td_text_link_headings(ps, n);
    const double *id = round % 2 ? idf : NULL;
    assert_int_equal(td_features_doc(&c, tok, id, sp, ps, n, s, v, NULL), 0);
    assert_int_equal(td_features_doc_dot(&c, tok, id, sp, ps, n, w, nt, s, out, NULL), 0);
    for (size_t i = 0; i < n; i++)
      for (size_t k = 0; k < nt; k++) {
        double want = 0;
        for (size_t q = 0; q < v[i].count; q++)
          want += w[(size_t)v[i].items[q].index * nt + k] * v[i].items[q].value;
        double got = out[i * nt + k];
        if (c.norm == TD_NORM_L2 ? got != want : fabs(got - want) > 1e-12 * (1 + fabs(want)))
          fail_msg("round %d passage %zu theme %zu (norm %d): block dot %.17g, vector dot %.17g",
                   round, i, k, (int)c.norm, got, want);
        checked++;
      }
  }
  assert_true(checked > 1000);
  /* errors: no weights */
  td_feat_config_t c = small_config();
  td_err_t err;
  assert_int_equal(td_features_doc_dot(&c, tok, NULL, sp, NULL, 1, NULL, 6, s, out, &err), TD_EINVAL);
  for (int i = 0; i < ND; i++) {
    td_buf_free(&texts[i]);
    td_fvec_free(&v[i]);
  }
  td_fscratch_free(&s);
  free(idf);
  free(w);
}

/* ---- df / idf ---- */

static void test_df_counting(void **st) {
  td_tokenizer_t *tok = *st;
  td_feat_config_t c = small_config();
  td_span_t sp[3] = {{"h", 1}, {"a b a", 5}, {"b c", 3}};
  td_passage_t ps[3] = {{.is_heading = 1, .context = -1}, {.context = 0}, {.context = 0}};
  uint32_t *df = calloc(c.buckets, sizeof *df);
  td_fscratch_t *s = td_fscratch_new();
  assert_int_equal(td_features_doc_df(&c, tok, sp, ps, 3, s, df, NULL), 0);
  uint32_t ia = idx(&c, "a"), ib = idx(&c, "b"), ic = idx(&c, "c"), ih = idx(&c, "h");
  assert_int_equal(df[ia], 1); /* twice in one passage counts once */
  assert_int_equal(df[ib], 2);
  assert_int_equal(df[ic], 1);
  assert_int_equal(df[ih], 1); /* the heading's own body */
  /* the heading's context index, once per passage under it */
  td_fvec_t vs[3];
  for (int i = 0; i < 3; i++) td_fvec_init(&vs[i]);
  assert_int_equal(td_features_doc(&c, tok, NULL, sp, ps, 3, s, vs, NULL), 0);
  const td_fvec_t *v1 = &vs[2]; /* "b c" under the heading */
  uint32_t total = 0;
  for (uint32_t i = 0; i < c.buckets; i++) total += df[i];
  assert_int_equal(total, 1 + 3 + 3);
  size_t hits = 0;
  for (size_t q = 0; q < v1->count; q++) {
    uint32_t k = v1->items[q].index;
    if (k == ib || k == ic) continue;
    assert_int_equal(df[k], 2);
    hits++;
  }
  assert_int_equal(hits, 1);
  /* a second document adds */
  assert_int_equal(td_features_doc_df(&c, tok, sp + 2, NULL, 1, s, df, NULL), 0);
  assert_int_equal(df[ib], 3);
  for (int i = 0; i < 3; i++) td_fvec_free(&vs[i]);
  td_fscratch_free(&s);
  free(df);

  assert_true(fabs(td_features_idf(0, 10) - (log(11.0) + 1)) < 1e-12);
  assert_true(fabs(td_features_idf(10, 10) - 1) < 1e-12);
  assert_true(fabs(td_features_idf(3, 7) - (log(2.0) + 1)) < 1e-12);
}

/* ---- errors ---- */

static void test_tokenizer_errors(void **st) {
  (void)st;
  td_tokenizer_t *tok = open_tok("{\"fail_on\":\"BOOM\"}");
  td_feat_config_t c = small_config();
  td_span_t sp[3] = {{"BOOM title", 10}, {"fine", 4}, {"x BOOM", 6}};
  td_fvec_t v[3];
  for (int i = 0; i < 3; i++) td_fvec_init(&v[i]);
  td_fscratch_t *s = td_fscratch_new();
  td_err_t err;
  td_err_clear(&err);
  /* body failure names the passage */
  assert_int_equal(td_features_doc(&c, tok, NULL, sp + 1, NULL, 2, s, v, &err), TD_EPLUGIN);
  assert_non_null(strstr(err.msg, "passage 1: "));
  assert_non_null(strstr(err.msg, "refusing token \"BOOM\""));
  /* a heading that fails as context names both */
  td_span_t sp2[2] = {{"fine", 4}, {"BOOM", 4}};
  td_passage_t ps2[2] = {{.context = 1}, {.is_heading = 1, .context = -1}};
  assert_int_equal(td_features_doc(&c, tok, NULL, sp2, ps2, 2, s, v, &err), TD_EPLUGIN);
  assert_non_null(strstr(err.msg, "passage 0: heading 1: "));
  assert_non_null(strstr(err.msg, "refusing token \"BOOM\""));
  /* df counting fails the same way */
  uint32_t *df = calloc(c.buckets, sizeof *df);
  assert_int_equal(td_features_doc_df(&c, tok, sp + 2, NULL, 1, s, df, &err), TD_EPLUGIN);
  assert_non_null(strstr(err.msg, "passage 0: "));
  free(df);
  /* the failing heading alone, with the context block off: fine */
  c.context_weight = 0;
  assert_int_equal(td_features_doc(&c, tok, NULL, sp2, ps2, 1, s, v, &err), 0);
  /* bad arguments */
  assert_int_equal(td_features_doc(&c, NULL, NULL, sp, NULL, 1, s, v, &err), TD_EINVAL);
  td_feat_config_t bad = c;
  bad.buckets = 1000;
  assert_int_equal(td_features_doc(&bad, tok, NULL, sp, NULL, 1, s, v, &err), TD_EINVAL);
  for (int i = 0; i < 3; i++) td_fvec_free(&v[i]);
  td_fscratch_free(&s);
  td_fscratch_free(&s); /* NULL is fine */
  td_tokenizer_free(&tok);
}

/* ---- explanations ---- */

typedef struct seen {
  char toks[16][32];
  uint32_t index[16];
  int n, stop_at;
} seen_t;

static int record(void *ud, const char *tok, size_t len, uint32_t index) {
  seen_t *s = ud;
  if (s->n == s->stop_at) return 7;
  assert_true(s->n < 16 && len < 32);
  memcpy(s->toks[s->n], tok, len);
  s->toks[s->n][len] = '\0';
  s->index[s->n++] = index;
  return 0;
}

static void test_tokens_explain(void **st) {
  (void)st;
  td_tokenizer_t *tok = open_tok("{\"lower\":true}");
  td_feat_config_t c = small_config();
  seen_t s = {.stop_at = -1};
  assert_int_equal(td_features_tokens(&c, tok, "B a b A c", 9, record, &s, NULL), 0);
  assert_int_equal(s.n, 3);
  assert_string_equal(s.toks[0], "b"); /* normalized, first-occurrence order */
  assert_string_equal(s.toks[1], "a");
  assert_string_equal(s.toks[2], "c");
  assert_int_equal(s.index[1], idx(&c, "a"));

  /* the indexes are exactly those of td_features_doc, pairs included */
  c.ngram_max = 2;
  memset(&s, 0, sizeof s);
  s.stop_at = -1;
  const char *text = "a b a b c";
  assert_int_equal(td_features_tokens(&c, tok, text, strlen(text), record, &s, NULL), 0);
  const char *want[] = {"a", "b", "a b", "b a", "c", "b c"};
  assert_int_equal(s.n, 6);
  for (int i = 0; i < 6; i++) assert_string_equal(s.toks[i], want[i]);
  td_fvec_t v;
  td_fvec_init(&v);
  td_span_t sp = {text, strlen(text)};
  td_fscratch_t *fs = td_fscratch_new();
  assert_int_equal(td_features_doc(&c, tok, NULL, &sp, NULL, 1, fs, &v, NULL), 0);
  assert_int_equal(v.count, 6);
  for (int i = 0; i < 6; i++) assert_true(value_at(&v, s.index[i]) > 0);

  /* the callback can stop the walk */
  memset(&s, 0, sizeof s);
  s.stop_at = 2;
  assert_int_equal(td_features_tokens(&c, tok, text, strlen(text), record, &s, NULL), 7);
  assert_int_equal(s.n, 2);
  /* nothing to explain */
  memset(&s, 0, sizeof s);
  s.stop_at = -1;
  assert_int_equal(td_features_tokens(&c, tok, "", 0, record, &s, NULL), 0);
  assert_int_equal(s.n, 0);
  td_fvec_free(&v);
  td_fscratch_free(&fs);
  td_tokenizer_free(&tok);
}

/* Steady state: once the scratch and vectors have grown, featurizing the
 * same document again calls no allocator at all. The test binary counts
 * malloc/calloc/realloc calls by interposing glibc's; ASan has its own
 * allocator, so there the test is skipped. */
#ifndef __SANITIZE_ADDRESS__
extern void *__libc_malloc(size_t n);
extern void *__libc_calloc(size_t n, size_t m);
extern void *__libc_realloc(void *p, size_t n);
static volatile int counting; /* volatile: GCC assumes malloc touches no globals */
static volatile size_t nalloc;
void *malloc(size_t n) {
  nalloc += counting;
  return __libc_malloc(n);
}
void *calloc(size_t n, size_t m) {
  nalloc += counting;
  return __libc_calloc(n, m);
}
void *realloc(void *p, size_t n) {
  nalloc += counting;
  return __libc_realloc(p, n);
}
#endif

static void test_no_steady_state_allocation(void **st) {
#ifdef __SANITIZE_ADDRESS__
  (void)st;
  skip();
#else
  td_tokenizer_t *tok = *st;
  td_feat_config_t c = small_config();
  c.ngram_max = 2;
  td_buf_t b;
  td_buf_init(&b);
  for (int k = 0; k < 3000; k++) assert_int_equal(td_buf_printf(&b, "t%d ", k % 700), 0);
  td_span_t sp[4] = {{"head line", 9}, {b.data, b.len}, {b.data, b.len / 2}, {"x y", 3}};
  td_passage_t ps[4] = {{.is_heading = 1, .context = -1}, {.context = 0}, {.context = 0}, {.context = 0}};
  td_fvec_t v[4];
  for (int i = 0; i < 4; i++) td_fvec_init(&v[i]);
  td_fscratch_t *s = td_fscratch_new();
  uint32_t *df = calloc(c.buckets, sizeof *df);
  /* the serving path too: block-by-block dot products, neighbours on */
  td_feat_config_t nb = c;
  nb.ngram_max = 1;
  nb.neighbor_weight = 0.3;
  double *w = calloc((size_t)c.buckets * 6, sizeof *w), out[4 * 6];
  assert_int_equal(td_features_doc(&c, tok, NULL, sp, ps, 4, s, v, NULL), 0);
  assert_int_equal(td_features_doc_df(&c, tok, sp, ps, 4, s, df, NULL), 0);
  assert_int_equal(td_features_doc_dot(&nb, tok, NULL, sp, ps, 4, w, 6, s, out, NULL), 0);
  /* the allocator is really watched */
  counting = 1;
  void *volatile probe = malloc(16); /* volatile: the pair cannot be elided */
  free(probe);
  counting = 0;
  assert_int_equal(nalloc, 1);
  nalloc = 0;
  counting = 1;
  for (int r = 0; r < 5; r++) {
    assert_int_equal(td_features_doc(&c, tok, NULL, sp, ps, 4, s, v, NULL), 0);
    assert_int_equal(td_features_doc_df(&c, tok, sp, ps, 4, s, df, NULL), 0);
    assert_int_equal(td_features_doc_dot(&nb, tok, NULL, sp, ps, 4, w, 6, s, out, NULL), 0);
  }
  counting = 0;
  assert_int_equal(nalloc, 0);
  assert_true(v[1].count > 700);
  for (int i = 0; i < 4; i++) td_fvec_free(&v[i]);
  td_fscratch_free(&s);
  td_buf_free(&b);
  free(df);
  free(w);
#endif
}

/* Neighbour blocks: optional config key, exact body path, block values. */
typedef struct idx_list {
  uint32_t idx[8];
  size_t n;
} idx_list_t;

static int take_index(void *ud, const char *tok, size_t len, uint32_t index) {
  (void)tok;
  (void)len;
  idx_list_t *l = ud;
  if (l->n < 8) l->idx[l->n++] = index;
  return 0;
}

static void test_neighbor_blocks(void **st) {
  td_tokenizer_t *tok = *st;
  /* config: absent = 0 and not written at 0; written, read back, checked otherwise */
  td_feat_config_t c = small_config(), b;
  td_err_t err;
  json_t *j = td_feat_config_to_json(&c);
  assert_int_equal(json_object_size(j), 9);
  assert_int_equal(td_feat_config_from_json(j, &b, &err), 0);
  assert_true(b.neighbor_weight == 0);
  c.neighbor_weight = 0.25;
  json_decref(j);
  j = td_feat_config_to_json(&c);
  assert_int_equal(json_object_size(j), 10);
  assert_int_equal(td_feat_config_from_json(j, &b, &err), 0);
  assert_true(b.neighbor_weight == 0.25);
  static const char *const bad[] = {"-1", "\"x\"", "101", "true"};
  for (size_t i = 0; i < 4; i++) {
    json_t *v = json_loads(bad[i], JSON_DECODE_ANY, NULL);
    json_object_set_new(j, "neighbor_weight", v);
    assert_int_equal(td_feat_config_from_json(j, &b, &err), TD_EFORMAT);
    assert_non_null(strstr(err.msg, "features.neighbor_weight: expected a number between 0 and 100"));
  }
  json_decref(j);

  /* One passage: no neighbours, and the body computed from the kept hashes
   * is exactly the body computed from the text (tokens and pairs). */
  double *idf = malloc(c.buckets * sizeof *idf);
  for (uint32_t i = 0; i < c.buckets; i++) idf[i] = 1.0 + (i % 7) * 0.25;
  td_span_t one = {"p q p r q p", 11};
  td_fvec_t v0, v1, v[3];
  td_fvec_init(&v0);
  td_fvec_init(&v1);
  for (int i = 0; i < 3; i++) td_fvec_init(&v[i]);
  td_fscratch_t *s = td_fscratch_new();
  for (int ng = 1; ng <= 2; ng++) {
    td_feat_config_t off = small_config(), on = small_config();
    off.ngram_max = on.ngram_max = ng;
    on.neighbor_weight = 0.5;
    assert_int_equal(td_features_doc(&off, tok, idf, &one, NULL, 1, s, &v0, NULL), 0);
    assert_int_equal(td_features_doc(&on, tok, idf, &one, NULL, 1, s, &v1, NULL), 0);
    assert_int_equal(v0.count, v1.count);
    for (size_t i = 0; i < v0.count; i++) {
      assert_int_equal(v0.items[i].index, v1.items[i].index);
      assert_true(v0.items[i].value == v1.items[i].value);
    }
  }

  /* Three passages, raw tf, no idf, no heading: passage 1 = its own token
   * (1), the previous passage's two and the next passage's two (0.5 each,
   * in their own index spaces), L2-normalized. */
  td_feat_config_t n = small_config();
  n.sublinear_tf = 0;
  n.neighbor_weight = 0.5;
  td_span_t sp[3] = {{"a b", 3}, {"c", 1}, {"d e", 3}};
  assert_int_equal(td_features_doc(&n, tok, NULL, sp, NULL, 3, s, v, NULL), 0);
  assert_int_equal(v[0].count, 3); /* a b + next c */
  assert_int_equal(v[1].count, 5);
  assert_int_equal(v[2].count, 3); /* d e + prev c */
  assert_sorted_unique_unit(&v[1]);
  double norm = sqrt(1 + 4 * 0.25);
  assert_true(fabs(value_at(&v[1], idx(&n, "c")) - 1 / norm) < 1e-12);
  idx_list_t prev = {0}, next = {0};
  assert_int_equal(td_features_block_tokens(&n, tok, TD_BLOCK_PREV, "a b", 3, take_index, &prev, NULL), 0);
  assert_int_equal(td_features_block_tokens(&n, tok, TD_BLOCK_NEXT, "d e", 3, take_index, &next, NULL), 0);
  assert_int_equal(prev.n, 2);
  assert_int_equal(next.n, 2);
  for (size_t i = 0; i < 2; i++) {
    assert_true(fabs(value_at(&v[1], prev.idx[i]) - 0.5 / norm) < 1e-12);
    assert_true(fabs(value_at(&v[1], next.idx[i]) - 0.5 / norm) < 1e-12);
    assert_true(prev.idx[i] != idx(&n, "a") && prev.idx[i] != idx(&n, "b")); /* own space */
  }
  /* the block sources explanations use */
  assert_int_equal(td_features_block_source(&n, NULL, 3, 1, TD_BLOCK_PREV), 0);
  assert_int_equal(td_features_block_source(&n, NULL, 3, 1, TD_BLOCK_NEXT), 2);
  assert_int_equal(td_features_block_source(&n, NULL, 3, 0, TD_BLOCK_PREV), -1);
  assert_int_equal(td_features_block_source(&n, NULL, 3, 2, TD_BLOCK_NEXT), -1);
  assert_int_equal(td_features_block_source(&c, NULL, 3, 1, TD_BLOCK_HEADING), -1);
  assert_string_equal(td_features_block_name(TD_BLOCK_HEADING), "heading");

  /* The doc block: every passage gets the whole document's tokens (tf over
   * all passages: a twice, b c d once) in one more space, scaled by 0.25;
   * raw tf, no idf. */
  td_feat_config_t dc = small_config();
  dc.sublinear_tf = 0;
  dc.doc_weight = 0.25;
  td_span_t dsp[3] = {{"a b", 3}, {"c a", 3}, {"d", 1}};
  assert_int_equal(td_features_doc(&dc, tok, NULL, dsp, NULL, 3, s, v, NULL), 0);
  idx_list_t docl = {0};
  assert_int_equal(td_features_block_tokens(&dc, tok, TD_BLOCK_DOC, "a b c d", 7, take_index, &docl, NULL), 0);
  assert_int_equal(docl.n, 4);
  assert_int_equal(v[2].count, 1 + 4);
  double dn = sqrt(1 + 0.25 * 0.25 * (4 + 3)); /* a counted twice: tf 2 */
  assert_true(fabs(value_at(&v[2], idx(&dc, "d")) - 1 / dn) < 1e-12);
  assert_true(fabs(value_at(&v[2], docl.idx[0]) - 0.5 / dn) < 1e-12); /* a: 0.25 * 2 */
  assert_true(fabs(value_at(&v[2], docl.idx[3]) - 0.25 / dn) < 1e-12); /* d */
  /* passages 0 and 1 have bodies of the same norm: the same doc values */
  assert_true(value_at(&v[0], docl.idx[2]) > 0);
  assert_true(value_at(&v[0], docl.idx[2]) == value_at(&v[1], docl.idx[2]));
  assert_int_equal(td_features_block_source(&dc, NULL, 3, 2, TD_BLOCK_DOC), 0);
  dc.doc_weight = 0.5;
  j = td_feat_config_to_json(&dc);
  assert_int_equal(td_feat_config_from_json(j, &b, &err), 0);
  assert_true(b.doc_weight == 0.5 && b.neighbor_weight == 0);
  json_decref(j);

  /* df counts the neighbour features too */
  uint32_t *df = calloc(n.buckets, sizeof *df);
  assert_int_equal(td_features_doc_df(&n, tok, sp, NULL, 3, s, df, NULL), 0);
  assert_int_equal(df[prev.idx[0]], 1);
  assert_int_equal(df[idx(&n, "c")], 1);
  free(df);
  td_fscratch_free(&s);
  td_fvec_free(&v0);
  td_fvec_free(&v1);
  for (int i = 0; i < 3; i++) td_fvec_free(&v[i]);
  free(idf);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_config_default),
      cmocka_unit_test(test_config_roundtrip),
      cmocka_unit_test(test_config_errors),
      cmocka_unit_test(test_hash_vectors),
      cmocka_unit_test_setup_teardown(test_hash_determinism, setup, teardown),
      cmocka_unit_test_setup_teardown(test_tf_idf_l2_by_hand, setup, teardown),
      cmocka_unit_test_setup_teardown(test_context_block, setup, teardown),
      cmocka_unit_test_setup_teardown(test_neighbor_blocks, setup, teardown),
      cmocka_unit_test_setup_teardown(test_context_cache_consistent, setup, teardown),
      cmocka_unit_test_setup_teardown(test_random_sorted_unique, setup, teardown),
      cmocka_unit_test_setup_teardown(test_l2_tokens_by_hand, setup, teardown),
      cmocka_unit_test_setup_teardown(test_block_dot, setup, teardown),
      cmocka_unit_test_setup_teardown(test_df_counting, setup, teardown),
      cmocka_unit_test(test_tokenizer_errors),
      cmocka_unit_test(test_tokens_explain),
      cmocka_unit_test_setup_teardown(test_no_steady_state_allocation, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
