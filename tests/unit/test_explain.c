/*
 * Explanations are exact for linear models: for every passage and theme,
 * the contributions td_explain lists (w[index][k] * x[index] for every
 * non-zero feature) plus the bias sum to the decision value td_classify
 * computed; labels are readable token text, with "heading:" / "prev:" /
 * "next:" for the context blocks; the response's explain lists are the
 * largest positive contributions, in order.
 *
 * The bundles are trained here by td_train on tests/fixtures/labelled-train.jsonl
 * (heading context on; one with neighbour blocks on, one with token pairs).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "classify.h"
#include "corpus.h"
#include "model.h"
#include "train.h"

#define FX_TRAIN "tests/fixtures/labelled-train.jsonl"

static char tmpdir[] = "/tmp/td-explain-XXXXXX";

static td_model_t *train_doc(const char *sub, double neighbor_weight, double doc_weight,
                             int ngram_max);

static td_model_t *train(const char *sub, double neighbor_weight, int ngram_max) {
  return train_doc(sub, neighbor_weight, 0, ngram_max);
}

static td_model_t *train_tok(const char *sub, double neighbor_weight, double doc_weight,
                             int ngram_max, const char *tokenizer, json_t *tok_opts);

static td_model_t *train_doc(const char *sub, double neighbor_weight, double doc_weight,
                             int ngram_max) {
  return train_tok(sub, neighbor_weight, doc_weight, ngram_max, NULL, NULL);
}

/* tokenizer NULL: the default (bigram); else a test plugin of
 * THEMED_TEST_PLUGIN_DIR with options tok_opts (borrowed). */
static td_model_t *train_tok(const char *sub, double neighbor_weight, double doc_weight,
                             int ngram_max, const char *tokenizer, json_t *tok_opts) {
  const char *plugins = NULL;
  if (tokenizer && !(plugins = getenv("THEMED_TEST_PLUGIN_DIR"))) plugins = "build/tests/plugins";
  char out[512];
  snprintf(out, sizeof out, "%s/%s", tmpdir, sub);
  td_corpus_t c;
  td_corpus_init(&c);
  td_err_t err = {0};
  if (td_corpus_load(&c, FX_TRAIN, 0, 0, &err) || td_corpus_finish(&c, &err)) fail_msg("%s", err.msg);
  td_train_opts_t o;
  td_train_opts_default(&o);
  o.out_dir = out;
  o.name = "explain";
  o.folds = 1;
  static const double one_c[] = {1.0};
  o.c_grid = one_c;
  o.nc = 1;
  o.threads = 1;
  o.feat.neighbor_weight = neighbor_weight;
  o.feat.doc_weight = doc_weight;
  o.feat.ngram_max = ngram_max;
  o.feat.buckets = 1u << 12; /* small: collisions happen and must be handled */
  if (tokenizer) {
    o.tokenizer = tokenizer;
    o.plugin_dir = plugins;
    o.tokenizer_options = tok_opts;
  }
  const char *files[] = {FX_TRAIN};
  json_t *rep = NULL;
  if (td_train(&o, &c, files, 1, &rep, &err)) fail_msg("train: %s", err.msg);
  json_decref(rep);
  td_corpus_free(&c);
  td_model_t *m = NULL;
  if (td_model_load(out, plugins, &m, &err)) fail_msg("load: %s", err.msg);
  assert_true(m->linear);
  return m;
}

typedef struct sum {
  double total, pos_max;
  size_t n, heading, prev, next, doc, joined;
  int bad_label;
} sum_t;

static int add(void *ud, const td_contrib_t *c) {
  sum_t *s = ud;
  s->total += c->contrib;
  s->n++;
  if (c->len == 0 || c->label[0] == '#') s->bad_label = 1;
  if (c->len > 8 && !memcmp(c->label, "heading:", 8)) s->heading++;
  if (c->len > 5 && !memcmp(c->label, "prev:", 5)) s->prev++;
  if (c->len > 5 && !memcmp(c->label, "next:", 5)) s->next++;
  if (c->len > 4 && !memcmp(c->label, "doc:", 4)) s->doc++;
  if (memmem(c->label, c->len, " / ", 3)) s->joined++;
  if (c->contrib > s->pos_max) s->pos_max = c->contrib;
  return 0;
}

static const char ARTICLE[] =
    "抓党建促乡村振兴 某县的做法\n"
    "来源：县委组织部 发布时间：2023-05-12\n"
    "一、抓队伍建设\n"
    "选优配强村党组织书记，实施“头雁”工程，培养后备人才，第一书记驻村帮扶。\n"
    "开展村干部培训，提升带头人能力。\n"
    "二、发展集体经济\n"
    "村集体经济收入达50万元，合作社带动农户增收，发展特色产业和乡村旅游。\n"
    "三、整治人居环境\n"
    "推进厕所革命，治理生活污水，开展村庄绿化美化。\n";

/* The identity on every passage and theme of ARTICLE; returns the totals. */
static void check_identity(td_model_t *m, sum_t *all) {
  td_classify_opts_t o;
  td_classify_opts_default(&o);
  td_scratch_t *s = td_scratch_new();
  td_result_t r;
  td_result_init(&r);
  td_doc_t doc = {.id = "a", .text = ARTICLE, .len = strlen(ARTICLE)};
  td_err_t err = {0};
  assert_int_equal(td_classify(m, &doc, &o, s, &r, &err), 0);
  size_t nt = m->ntheme;
  memset(all, 0, sizeof *all);
  for (size_t i = 0; i < r.passages.count; i++)
    for (size_t k = 0; k < nt; k++) {
      sum_t one = {0};
      assert_int_equal(td_explain(m, &r, i, k, s, add, &one, &err), 0);
      double dec = r.dec[i * nt + k], got = one.total + m->bias[k];
      if (fabs(got - dec) > 1e-9 * (1 + fabs(dec)))
        fail_msg("passage %zu theme %s: contributions + bias = %.12g, decision value %.12g", i,
                 m->themes[k].name, got, dec);
      assert_false(one.bad_label);
      assert_true(one.n > 0);
      all->n += one.n;
      all->heading += one.heading;
      all->prev += one.prev;
      all->next += one.next;
      all->doc += one.doc;
      all->joined += one.joined;
    }
  /* Out of range and non-linear are refused. */
  assert_int_equal(td_explain(m, &r, r.passages.count, 0, s, add, all, &err), TD_EINVAL);
  assert_int_equal(td_explain(m, &r, 0, nt, s, add, all, &err), TD_EINVAL);
  td_result_free(&r);
  td_scratch_free(&s);
}

static void identity_heading(void **state) {
  (void)state;
  td_model_t *m = train("heading", 0, 1);
  sum_t all;
  check_identity(m, &all);
  assert_true(all.heading > 0); /* body passages under 一、抓队伍建设 etc. */
  assert_int_equal(all.prev + all.next, 0);
  td_model_unref(&m);
}

static void identity_neighbors_pairs(void **state) {
  (void)state;
  td_model_t *m = train("neighbors", 0.3, 2);
  sum_t all;
  check_identity(m, &all);
  assert_true(all.heading > 0);
  assert_true(all.prev > 0 && all.next > 0);
  /* 4096 buckets for hundreds of features: some tokens share a bucket, and
   * the shared feature is listed once, with both labels. */
  assert_true(all.joined > 0);
  td_model_unref(&m);
}

static void identity_doc_block(void **state) {
  (void)state;
  td_model_t *m = train_doc("doc", 0.3, 0.3, 1);
  sum_t all;
  check_identity(m, &all);
  assert_true(all.heading > 0 && all.prev > 0 && all.next > 0);
  assert_true(all.doc > 0);
  td_model_unref(&m);
}

/* The response lists the largest positive contributions, in order, with the
 * same labels and values td_explain gives. */
static int find_max(void *ud, const td_contrib_t *c) {
  sum_t *s = ud;
  if (c->contrib > s->pos_max) s->pos_max = c->contrib;
  return 0;
}

static void response_matches(void **state) {
  (void)state;
  td_model_t *m = train("response", 0.3, 1);
  td_classify_opts_t o;
  td_classify_opts_default(&o);
  o.explain = 1;
  o.explain_k = 50; /* deep enough to reach the context blocks */
  td_scratch_t *s = td_scratch_new();
  td_result_t r;
  td_result_init(&r);
  td_doc_t doc = {.id = "a", .text = ARTICLE, .len = strlen(ARTICLE)};
  td_err_t err = {0};
  assert_int_equal(td_classify(m, &doc, &o, s, &r, &err), 0);
  json_t *j = td_result_json(m, &doc, &o, &r, s);
  assert_non_null(j);
  size_t checked = 0, context_labels = 0;
  const json_t *pl = json_object_get(j, "passages");
  for (size_t i = 0; i < json_array_size(pl); i++) {
    const json_t *ex = json_object_get(json_array_get(pl, i), "explain");
    const char *theme;
    const json_t *list;
    json_object_foreach((json_t *)ex, theme, list) {
      long k = td_model_theme_index(m, theme);
      assert_true(k >= 0);
      sum_t mx = {0};
      assert_int_equal(td_explain(m, &r, i, (size_t)k, s, find_max, &mx, &err), 0);
      double prev = INFINITY;
      for (size_t e = 0; e < json_array_size(list); e++) {
        const json_t *it = json_array_get(list, e);
        const char *tok = json_string_value(json_object_get(it, "token"));
        double w = json_real_value(json_object_get(it, "weight"));
        assert_non_null(tok);
        assert_true(tok[0] != '#');
        assert_true(w > 0 && w <= prev);
        if (e == 0) assert_true(fabs(w - round(mx.pos_max * 1e4) / 1e4) < 1e-9);
        if (strchr(tok, ':')) context_labels++;
        prev = w;
        checked++;
      }
    }
  }
  assert_true(checked > 20);
  assert_true(context_labels > 0);
  json_decref(j);
  td_result_free(&r);
  td_scratch_free(&s);
  td_model_unref(&m);
}

/* A plugin whose tokens are not UTF-8 (the ABI says they must be) still
 * gets its explanations, with U+FFFD for the bad bytes: jansson refuses
 * such strings, and that used to fail the whole answer as "out of memory". */
static void tokens_not_utf8(void **state) {
  (void)state;
  json_t *opts = json_pack("{s:b}", "bad_utf8", 1);
  td_model_t *m = train_tok("badutf8", 0, 0, 1, "testtok_space", opts);
  json_decref(opts);
  td_err_t err = {0};

  td_classify_opts_t co;
  td_classify_opts_default(&co);
  co.explain = 1;
  co.threshold = 0; /* every theme tagged, so every passage is explained */
  td_scratch_t *s = td_scratch_new();
  td_result_t r;
  td_result_init(&r);
  static const char text[] = "一、对标对表 推进支部标准化规范化\n来源：县委组织部 发布时间：2023-05-12\n";
  td_doc_t doc = {.id = "a", .text = text, .len = sizeof text - 1};
  assert_int_equal(td_classify(m, &doc, &co, s, &r, &err), 0);
  json_t *j = td_result_json(m, &doc, &co, &r, s);
  assert_non_null(j);
  char *dump = json_dumps(j, 0);
  assert_non_null(dump);
  /* a training token, its bad byte replaced */
  assert_true(strstr(dump, "推进支部标准化规范化\xef\xbf\xbd") || strstr(dump, "对标对表\xef\xbf\xbd") ||
              strstr(dump, "来源：县委组织部\xef\xbf\xbd"));
  free(dump);
  json_decref(j);
  td_result_free(&r);
  td_scratch_free(&s);
  td_model_unref(&m);
}

static int setup(void **state) {
  (void)state;
  return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state) {
  (void)state;
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
  return system(cmd) == 0 ? 0 : -1;
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(identity_heading),
      cmocka_unit_test(identity_neighbors_pairs),
      cmocka_unit_test(identity_doc_block),
      cmocka_unit_test(response_matches),
      cmocka_unit_test(tokens_not_utf8),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
