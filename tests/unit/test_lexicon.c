/*
 * The lexicon tokenizer plugin, loaded through the real loader from
 * $THEMED_PLUGIN_DIR: dictionary loading and its errors, maximum-probability
 * segmentation with a tiny dictionary, the three fallbacks, char_ngrams,
 * Traditional -> Simplified, and concurrent use of one instance.
 * Dictionaries are written to a temporary directory by the tests.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "classify.h"
#include "common.h"
#include "corpus.h"
#include "model.h"
#include "plugin.h"
#include "train.h"

static char tmpdir[] = "/tmp/td-lexicon-XXXXXX";

static const char *plugin_dir(void) {
  const char *d = getenv("THEMED_PLUGIN_DIR");
  return d && *d ? d : "build/plugins";
}

/* Writes `body` to tmpdir/name and returns the path (static buffer per call site). */
static const char *write_dict(const char *name, const char *body, size_t len) {
  static char path[8][256];
  static int next;
  char *p = path[next++ % 8];
  snprintf(p, 256, "%s/%s", tmpdir, name);
  FILE *f = fopen(p, "wb");
  assert_non_null(f);
  assert_int_equal(fwrite(body, 1, len, f), len);
  fclose(f);
  return p;
}

static const char *dict_s(const char *name, const char *body) {
  return write_dict(name, body, strlen(body));
}

/* The tiny dictionary most tests use. */
static const char TINY[] =
    "# domain words\n"
    "集体经济\n"
    "第一书记\t50\n"
    "两委\n"
    "一肩挑\n"
    "人居环境\n"
    "村\t3\n"
    "书记\n"
    "\n";

static int open_lex(const char *opts_json, td_tokenizer_t **t, td_err_t *err) {
  json_error_t je;
  json_t *o = json_loads(opts_json, 0, &je);
  if (!o) fail_msg("bad test JSON %s: %s", opts_json, je.text);
  int rc = td_tokenizer_open(plugin_dir(), "lexicon", o, t, err);
  json_decref(o);
  return rc;
}

static td_tokenizer_t *open_ok(const char *fmt, const char *path) {
  char opts[1024];
  snprintf(opts, sizeof opts, fmt, path);
  td_tokenizer_t *t = NULL;
  td_err_t err = {0};
  if (open_lex(opts, &t, &err)) fail_msg("open lexicon %s: %s", opts, err.msg);
  return t;
}

/* Opening must fail with a message containing `want`. */
static void open_fails(const char *opts, const char *want) {
  td_tokenizer_t *t = NULL;
  td_err_t err = {0};
  int rc = open_lex(opts, &t, &err);
  if (rc == 0) fail_msg("open lexicon %s succeeded, expected an error with \"%s\"", opts, want);
  assert_int_equal(rc, TD_EPLUGIN);
  assert_null(t);
  if (!strstr(err.msg, want)) fail_msg("open lexicon %s:\n  got:  %s\n  want: ...%s...", opts, err.msg, want);
}

static int collect(void *ud, const char *tok, size_t len) {
  td_buf_t *b = ud;
  if (len == 0) return TD_EINVAL;
  if (b->len && td_buf_append(b, "|", 1)) return TD_ENOMEM;
  return td_buf_append(b, tok, len);
}

static char *toks_raw(const td_tokenizer_t *t, const char *text, size_t len) {
  td_buf_t b;
  td_buf_init(&b);
  if (td_buf_reserve(&b, 0)) return NULL;
  b.data[0] = '\0';
  td_err_t err = {0};
  if (td_tokenizer_run(t, text, len, collect, &b, &err) != 0) {
    td_buf_free(&b);
    return NULL;
  }
  return b.data;
}

static void expect(const td_tokenizer_t *t, const char *text, const char *want) {
  char *got = toks_raw(t, text, strlen(text));
  assert_non_null(got);
  if (strcmp(got, want) != 0) fail_msg("lexicon(\"%s\")\n  got:  %s\n  want: %s", text, got, want);
  free(got);
}

static const char TEXT[] = "村集体经济收入达50万元，第一书记带领村“两委”一肩挑";

/* ---- dictionary loading ---- */

static void dict_errors(void **state) {
  open_fails("{}", "option \"dictionary\" is required");
  open_fails("{\"dictionary\": 3}", "must be a non-empty string");
  open_fails("{\"dictionary\": \"\"}", "must be a non-empty string");
  char opts[512];
  snprintf(opts, sizeof opts, "{\"dictionary\": \"%s/nope.txt\"}", tmpdir);
  open_fails(opts, "nope.txt: No such file or directory");

  const char *p = dict_s("empty.txt", "# only a comment\n\n");
  snprintf(opts, sizeof opts, "{\"dictionary\": \"%s\"}", p);
  open_fails(opts, "empty.txt: no words");

  p = dict_s("freq.txt", "集体经济\n第一书记\tmany\n");
  snprintf(opts, sizeof opts, "{\"dictionary\": \"%s\"}", p);
  open_fails(opts, "freq.txt line 2: frequency \"many\" is not a positive number");

  p = dict_s("zero.txt", "两委\t0\n");
  snprintf(opts, sizeof opts, "{\"dictionary\": \"%s\"}", p);
  open_fails(opts, "zero.txt line 1: frequency \"0\"");

  p = write_dict("utf8.txt", "两委\n\xe4\xb8\n", 9);
  snprintf(opts, sizeof opts, "{\"dictionary\": \"%s\"}", p);
  open_fails(opts, "utf8.txt line 2: invalid UTF-8");

  p = dict_s("space.txt", "两委\n村 两委\n");
  snprintf(opts, sizeof opts, "{\"dictionary\": \"%s\"}", p);
  open_fails(opts, "space.txt line 2: a word cannot contain spaces");

  p = dict_s("tabonly.txt", "\t5\n");
  snprintf(opts, sizeof opts, "{\"dictionary\": \"%s\"}", p);
  open_fails(opts, "tabonly.txt line 1: empty word");

  p = dict_s("long.txt", "一二三四五六七八九十一二三四五六七\n");
  snprintf(opts, sizeof opts, "{\"dictionary\": \"%s\"}", p);
  open_fails(opts, "long.txt line 1: word longer than 16 characters");

  /* A directory is not a word list. */
  snprintf(opts, sizeof opts, "{\"dictionary\": \"%s\"}", tmpdir);
  open_fails(opts, tmpdir);

  p = dict_s("ok.txt", TINY);
  snprintf(opts, sizeof opts, "{\"dictionary\": \"%s\", \"fallback\": \"words\"}", p);
  open_fails(opts, "option \"fallback\" must be \"bigram\", \"chars\" or \"icu\"");
  snprintf(opts, sizeof opts, "{\"dictionary\": \"%s\", \"char_ngrams\": 1}", p);
  open_fails(opts, "option \"char_ngrams\" must be true or false");
  snprintf(opts, sizeof opts, "{\"dictionary\": \"%s\", \"dictonary\": \"x\"}", p);
  open_fails(opts, "unknown option \"dictonary\"");
}

static void dict_formats(void **state) {
  /* BOM, CRLF line ends, duplicates (frequencies add up), full-width and
   * upper-case entries (normalized like the text). */
  const char body[] = "\xEF\xBB\xBF两委\r\n两委\t2\r\nＡＢＣ\r\n";
  td_tokenizer_t *t = open_ok("{\"dictionary\": \"%s\"}", dict_s("fmt.txt", body));
  expect(t, "村两委", "村|两委");
  expect(t, "ABC 两委", "abc|两委");
  td_tokenizer_free(&t);
}

/* ---- segmentation ---- */

static void segmentation(void **state) {
  td_tokenizer_t *t = open_ok("{\"dictionary\": \"%s\"}", dict_s("tiny.txt", TINY));
  /* Known words whole; unknown stretches as unigrams + bigrams (fallback
   * "bigram", the default); 50 stays a word; punctuation separates. */
  expect(t, TEXT,
         "村|集体经济|收|收入|入|入达|达|50|万|万元|元|第一书记|带|带领|领|村|两委|一肩挑");
  /* Maximum probability: 第一书记 (50) beats 第一 + 书记; a lone unknown
   * character is its own token. */
  expect(t, "第一书记", "第一书记");
  expect(t, "书记好", "书记|好");
  expect(t, "", "");
  expect(t, "，。！", "");
  td_tokenizer_free(&t);

  /* Frequencies decide between overlapping words: 人居 + 环境 (both
   * frequent) against 居环 alone. */
  t = open_ok("{\"dictionary\": \"%s\"}", dict_s("freqs.txt", "人居\t100\n环境\t100\n居环\t1\n"));
  expect(t, "人居环境", "人居|环境");
  td_tokenizer_free(&t);
  t = open_ok("{\"dictionary\": \"%s\"}", dict_s("freqs2.txt", "人居\t1\n环境\t1\n人居环\t1000\n"));
  expect(t, "人居环境", "人居环|境");
  td_tokenizer_free(&t);
}

static void fallbacks(void **state) {
  const char *p = dict_s("tiny2.txt", TINY);
  td_tokenizer_t *t = open_ok("{\"dictionary\": \"%s\", \"fallback\": \"chars\"}", p);
  expect(t, TEXT, "村|集体经济|收|入|达|50|万|元|第一书记|带|领|村|两委|一肩挑");
  td_tokenizer_free(&t);
  t = open_ok("{\"dictionary\": \"%s\", \"fallback\": \"icu\"}", p);
  expect(t, TEXT, "村|集体经济|收入|达|50|万|元|第一书记|带领|村|两委|一肩挑");
  td_tokenizer_free(&t);
  t = open_ok("{\"dictionary\": \"%s\", \"fallback\": \"bigram\"}", p);
  expect(t, "带领村民", "带|带领|领|村|民");
  td_tokenizer_free(&t);
  /* char_ngrams: the words of a run, then all its unigrams and bigrams. */
  t = open_ok("{\"dictionary\": \"%s\", \"char_ngrams\": true}", p);
  expect(t, "村两委，好", "村|两委|村|村两|两|两委|委|好");
  td_tokenizer_free(&t);
}

static void traditional(void **state) {
  const char *p = dict_s("tiny3.txt", TINY);
  td_tokenizer_t *on = open_ok("{\"dictionary\": \"%s\", \"traditional_to_simplified\": true}", p);
  td_tokenizer_t *off = open_ok("{\"dictionary\": \"%s\"}", p);
  /* 集體經濟 / 第一書記 / 兩委 match the Simplified entries only after T->S. */
  expect(on, "村集體經濟，第一書記與兩委", "村|集体经济|第一书记|与|两委");
  expect(off, "村集體經濟，第一書記與兩委", "村|集|集體|體|體經|經|經濟|濟|第|第一|一|一書|書|書記|記|記與|與|與兩|兩|兩委|委");
  td_tokenizer_free(&on);
  td_tokenizer_free(&off);
  /* A Traditional dictionary entry is converted too. */
  on = open_ok("{\"dictionary\": \"%s\", \"traditional_to_simplified\": true}",
               dict_s("trad.txt", "鄉村振興\n"));
  expect(on, "乡村振兴", "乡村振兴");
  expect(on, "鄉村振興", "乡村振兴");
  td_tokenizer_free(&on);
}

static int stop_after_two(void *ud, const char *tok, size_t len) {
  (void)tok;
  (void)len;
  return ++*(int *)ud == 2 ? 42 : 0;
}

static void early_stop_and_bad_bytes(void **state) {
  td_tokenizer_t *t = open_ok("{\"dictionary\": \"%s\"}", dict_s("tiny4.txt", TINY));
  int n = 0;
  td_err_t err = {0};
  assert_int_equal(td_tokenizer_run(t, TEXT, strlen(TEXT), stop_after_two, &n, &err), 42);
  assert_int_equal(n, 2);
  /* Invalid bytes separate like punctuation and never crash. */
  const char bad[] = "两委\xff\xfe一肩挑\xe4\xb8";
  char *got = toks_raw(t, bad, sizeof bad - 1);
  assert_non_null(got);
  assert_string_equal(got, "两委|一肩挑");
  free(got);
  td_tokenizer_free(&t);
}

/* ---- concurrency ---- */

#define NTHREADS 4
#define NROUNDS 200

typedef struct conc {
  td_tokenizer_t *t;
  const char *const *texts;
  char **want;
  size_t n;
  int failures;
} conc_t;

static void *conc_worker(void *arg) {
  conc_t *c = arg;
  for (int r = 0; r < NROUNDS; r++)
    for (size_t i = 0; i < c->n; i++) {
      size_t k = (i + (size_t)r) % c->n;
      char *got = toks_raw(c->t, c->texts[k], strlen(c->texts[k]));
      if (!got || strcmp(got, c->want[k]) != 0) __atomic_add_fetch(&c->failures, 1, __ATOMIC_RELAXED);
      free(got);
    }
  return NULL;
}

static void concurrent(void **state) {
  static const char *const texts[] = {
      TEXT, "鄉村振興，第一書記與村兩委一肩挑", "人居环境整治三年行动",
      "covid19 5G网络覆盖 ＡＢＣ", "组织振兴是乡村振兴的“第一工程”，要选好配强村党组织书记。"};
  const size_t n = sizeof texts / sizeof *texts;
  const char *p = dict_s("tiny5.txt", TINY);
  static const char *const fmts[] = {
      "{\"dictionary\": \"%s\", \"traditional_to_simplified\": true}",
      "{\"dictionary\": \"%s\", \"fallback\": \"icu\"}",
      "{\"dictionary\": \"%s\", \"char_ngrams\": true}"};
  for (size_t f = 0; f < sizeof fmts / sizeof *fmts; f++) {
    char *want[8];
    conc_t c = {.t = open_ok(fmts[f], p), .texts = texts, .want = want, .n = n};
    for (size_t i = 0; i < n; i++) assert_non_null(want[i] = toks_raw(c.t, texts[i], strlen(texts[i])));
    pthread_t th[NTHREADS];
    for (int i = 0; i < NTHREADS; i++) assert_int_equal(pthread_create(&th[i], NULL, conc_worker, &c), 0);
    for (int i = 0; i < NTHREADS; i++) pthread_join(th[i], NULL);
    if (c.failures) fail_msg("%s: %d concurrent results differ", fmts[f], c.failures);
    for (size_t i = 0; i < n; i++) free(want[i]);
    td_tokenizer_free(&c.t);
  }
}

/* ---- the dictionary inside a model bundle ---- */

static void bundle_dictionary(void **state) {
  /* Train a small bundle with the lexicon tokenizer: the word list is copied
   * into the bundle, the manifest names it relative to the bundle, and the
   * bundle loads (and classifies) from anywhere once the source is gone. */
  char src[512], out[512], moved[512];
  snprintf(src, sizeof src, "%s", dict_s("domain-words.txt", TINY));
  snprintf(out, sizeof out, "%s/bundle", tmpdir);
  snprintf(moved, sizeof moved, "%s/moved", tmpdir);
  td_corpus_t c;
  td_corpus_init(&c);
  td_err_t err = {0};
  if (td_corpus_load(&c, "tests/fixtures/labelled-train.jsonl", 0, 0, &err) ||
      td_corpus_finish(&c, &err))
    fail_msg("%s", err.msg);
  td_train_opts_t o;
  td_train_opts_default(&o);
  o.out_dir = out;
  o.folds = 1;
  static const double one_c[] = {1.0};
  o.c_grid = one_c;
  o.nc = 1;
  o.threads = 1;
  o.tokenizer = "lexicon";
  json_t *opts = json_pack("{s:s, s:b}", "dictionary", src, "traditional_to_simplified", 1);
  o.tokenizer_options = opts;
  const char *files[] = {"tests/fixtures/labelled-train.jsonl"};
  json_t *rep = NULL;
  if (td_train(&o, &c, files, 1, &rep, &err)) fail_msg("train: %s", err.msg);
  json_decref(rep);
  json_decref(opts);
  td_corpus_free(&c);
  assert_int_equal(remove(src), 0);
  assert_int_equal(rename(out, moved), 0);

  char path[600];
  snprintf(path, sizeof path, "%s/manifest.json", moved);
  json_error_t je;
  json_t *man = json_load_file(path, 0, &je);
  assert_non_null(man);
  const json_t *topt = json_object_get(json_object_get(man, "tokenizer"), "options");
  assert_string_equal(json_string_value(json_object_get(topt, "dictionary")),
                      "tokenizer/domain-words.txt");
  snprintf(path, sizeof path, "%s/tokenizer/domain-words.txt", moved);
  assert_int_equal(access(path, R_OK), 0);

  td_model_t *m = NULL;
  if (td_model_load(moved, NULL, &m, &err)) fail_msg("load: %s", err.msg);
  /* the instance got the absolute path */
  const char *d = json_string_value(json_object_get(td_tokenizer_options(m->tok), "dictionary"));
  assert_non_null(d);
  assert_non_null(strstr(d, "/moved/tokenizer/domain-words.txt"));
  td_scratch_t *s = td_scratch_new();
  td_result_t r;
  td_result_init(&r);
  const char text[] = "第一书记带领村两委发展集体经济";
  td_doc_t doc = {.text = text, .len = sizeof text - 1};
  assert_int_equal(td_classify(m, &doc, NULL, s, &r, &err), 0);
  assert_int_equal(r.passages.count, 1);
  td_result_free(&r);
  td_scratch_free(&s);
  td_model_unref(&m);

  /* A manifest may not point outside the bundle. */
  static const char *const bad[] = {"/etc/passwd", "../domain-words.txt", "tokenizer/../../x", ""};
  snprintf(path, sizeof path, "%s/manifest.json", moved);
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    json_object_set_new((json_t *)topt, "dictionary", json_string(bad[i]));
    assert_int_equal(json_dump_file(man, path, JSON_INDENT(2)), 0);
    td_err_t e2 = {0};
    assert_int_equal(td_model_load(moved, NULL, &m, &e2), TD_EMODEL);
    if (!strstr(e2.msg, "tokenizer.options.dictionary: expected a file inside the bundle"))
      fail_msg("dictionary \"%s\": %s", bad[i], e2.msg);
  }
  json_decref(man);
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
      cmocka_unit_test(dict_errors),        cmocka_unit_test(dict_formats),
      cmocka_unit_test(segmentation),       cmocka_unit_test(fallbacks),
      cmocka_unit_test(traditional),        cmocka_unit_test(early_stop_and_bad_bytes),
      cmocka_unit_test(concurrent),         cmocka_unit_test(bundle_dictionary),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
