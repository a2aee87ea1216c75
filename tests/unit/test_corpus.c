/*
 * Labelled corpus loader: a good file (blank lines, doc fallback, theme
 * discovery, `other`), and every error with its file name and line number.
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

#include "corpus.h"

static char tmpdir[256];

static int setup_dir(void **state) {
  (void)state;
  const char *t = getenv("TMPDIR");
  snprintf(tmpdir, sizeof tmpdir, "%s/td-corpus-XXXXXX", t && *t ? t : "/tmp");
  return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown_dir(void **state) {
  (void)state;
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
  return system(cmd) == 0 ? 0 : -1;
}

/* Writes `body` to tmpdir/name and returns the path (static buffer per call site). */
static const char *write_file(const char *name, const char *body) {
  static char path[8][512];
  static int slot;
  char *p = path[slot++ % 8];
  snprintf(p, 512, "%s/%s", tmpdir, name);
  FILE *f = fopen(p, "wb");
  assert_non_null(f);
  fwrite(body, 1, strlen(body), f);
  fclose(f);
  return p;
}

/* Loads `body` as one file; returns the code and leaves the message in err. */
static int load_one(const char *body, int multiclass, td_err_t *err, char *path_out) {
  const char *p = write_file("c.jsonl", body);
  if (path_out) strcpy(path_out, p);
  td_corpus_t c;
  td_corpus_init(&c);
  td_err_clear(err);
  int rc = td_corpus_load(&c, p, multiclass, 0, err);
  td_corpus_free(&c);
  return rc;
}

/* The message must be exactly "<path> line <n>: <tail>". */
static void expect_line_error(const char *body, int multiclass, size_t line, const char *tail) {
  td_err_t err;
  char path[512], want[1024];
  int rc = load_one(body, multiclass, &err, path);
  assert_int_not_equal(rc, 0);
  snprintf(want, sizeof want, "%s line %zu: %s", path, line, tail);
  if (strncmp(err.msg, want, strlen(want)) != 0) fail_msg("got \"%s\", want \"%s...\"", err.msg, want);
}

static void test_good_file(void **state) {
  (void)state;
  const char *p = write_file("good.jsonl",
      "{\"id\":\"a-p1\",\"doc\":\"a\",\"text\":\"抓队伍建设\",\"themes\":[\"talent\"],\"url\":\"x\"}\n"
      "\n"
      "   \r\n"
      "{\"id\":\"a-p2\",\"doc\":\"a\",\"text\":\"发展集体经济。\",\"themes\":[\"industry\",\"talent\"]}\n"
      "{\"id\":\"b-p1\",\"doc\":\"b\",\"text\":\"责任编辑：王芳\",\"themes\":[\"other\"]}\n"
      "{\"id\":\"solo\",\"text\":\"没有doc字段的一行\",\"themes\":[\"ecology\"]}");
  td_corpus_t c;
  td_corpus_init(&c);
  td_err_t err;
  td_err_clear(&err);
  assert_int_equal(td_corpus_load(&c, p, 0, 0, &err), 0);
  assert_int_equal(td_corpus_finish(&c, &err), 0);
  assert_int_equal(c.n, 4);
  assert_int_equal(c.ntheme, 3);
  assert_string_equal(c.themes[0], "talent");
  assert_string_equal(c.themes[1], "industry");
  assert_string_equal(c.themes[2], "ecology");
  assert_int_equal(c.items[0].labels, 1);
  assert_int_equal(c.items[1].labels, 3);
  assert_int_equal(c.items[2].labels, 0); /* other = no theme */
  assert_int_equal(c.items[3].labels, 4);
  assert_string_equal(c.items[3].doc, "solo"); /* falls back to id */
  assert_int_equal(c.items[1].len, strlen("发展集体经济。"));
  assert_int_equal(c.ndocs, 3);
  assert_int_equal(c.doc_start[0], 0);
  assert_int_equal(c.doc_start[1], 2);
  assert_int_equal(c.doc_start[2], 3);
  assert_int_equal(c.doc_start[3], 4);
  td_corpus_free(&c);
}

static void test_bad_json(void **state) {
  (void)state;
  expect_line_error("{\"id\":\"a\",\"text\":\"x\",\"themes\":[\"talent\"]}\n\n{\"id\": oops}\n", 0, 3,
                    "not valid JSON: ");
}

static void test_not_object(void **state) {
  (void)state;
  expect_line_error("[1,2]\n", 0, 1, "not a JSON object");
}

static void test_themes_shape(void **state) {
  (void)state;
  const char *want = "\"themes\" must be a non-empty array of strings";
  expect_line_error("{\"id\":\"a\",\"text\":\"x\",\"themes\":[]}\n", 0, 1, want);
  expect_line_error("{\"id\":\"a\",\"text\":\"x\"}\n", 0, 1, want);
  expect_line_error("{\"id\":\"a\",\"text\":\"x\",\"themes\":\"talent\"}\n", 0, 1, want);
  expect_line_error("{\"id\":\"a\",\"text\":\"x\",\"themes\":[\"talent\"]}\n"
                    "{\"id\":\"b\",\"text\":\"y\",\"themes\":[\"talent\",3]}\n",
                    0, 2, want);
}

static void test_fields(void **state) {
  (void)state;
  expect_line_error("{\"text\":\"x\",\"themes\":[\"talent\"]}\n", 0, 1, "\"id\" must be a non-empty string");
  expect_line_error("{\"id\":\"a\",\"doc\":7,\"text\":\"x\",\"themes\":[\"talent\"]}\n", 0, 1,
                    "\"doc\" must be a non-empty string");
  expect_line_error("{\"id\":\"a\",\"text\":5,\"themes\":[\"talent\"]}\n", 0, 1, "\"text\" must be a string");
  expect_line_error("{\"id\":\"a\",\"text\":\"  \\n \",\"themes\":[\"talent\"]}\n", 0, 1, "\"text\" is empty");
}

static void test_invalid_utf8(void **state) {
  (void)state;
  /* jansson refuses the raw byte while parsing: still a line-numbered error */
  expect_line_error("{\"id\":\"a\",\"text\":\"ok\",\"themes\":[\"talent\"]}\n"
                    "{\"id\":\"b\",\"text\":\"bad \xff byte\",\"themes\":[\"talent\"]}\n",
                    0, 2, "not valid JSON: ");
}

static void test_other_combined(void **state) {
  (void)state;
  expect_line_error("{\"id\":\"a\",\"text\":\"x\",\"themes\":[\"talent\",\"other\"]}\n", 0, 1,
                    "\"other\" cannot be combined with another theme");
}

static void test_unknown_theme_fixed(void **state) {
  (void)state;
  const char *p = write_file("fixed.jsonl",
                             "{\"id\":\"a\",\"text\":\"x\",\"themes\":[\"talent\"]}\n"
                             "{\"id\":\"b\",\"text\":\"y\",\"themes\":[\"other\"]}\n"
                             "{\"id\":\"c\",\"text\":\"z\",\"themes\":[\"tallent\"]}\n");
  td_corpus_t c;
  td_corpus_init(&c);
  c.themes = calloc(2, sizeof *c.themes);
  c.themes[0] = strdup("talent");
  c.themes[1] = strdup("industry");
  c.ntheme = 2;
  td_err_t err;
  td_err_clear(&err);
  assert_int_not_equal(td_corpus_load(&c, p, 0, 1, &err), 0);
  char want[600];
  snprintf(want, sizeof want, "%s line 3: unknown theme \"tallent\" (the themes are: talent, industry)", p);
  assert_string_equal(err.msg, want);
  assert_int_equal(c.ntheme, 2); /* the fixed list did not grow */
  td_corpus_free(&c);
}

static void test_empty(void **state) {
  (void)state;
  td_err_t err;
  char path[512], want[600];
  assert_int_equal(load_one("\n  \n", 0, &err, path), TD_EINVAL);
  snprintf(want, sizeof want, "empty corpus: no items in %s", path);
  assert_string_equal(err.msg, want);
  td_corpus_t c;
  td_corpus_init(&c);
  assert_int_equal(td_corpus_finish(&c, &err), TD_EINVAL);
  assert_non_null(strstr(err.msg, "empty corpus"));
  td_corpus_free(&c);
}

static void test_missing_file(void **state) {
  (void)state;
  td_corpus_t c;
  td_corpus_init(&c);
  td_err_t err;
  td_err_clear(&err);
  char p[600];
  snprintf(p, sizeof p, "%s/nope.jsonl", tmpdir);
  assert_int_equal(td_corpus_load(&c, p, 0, 0, &err), TD_EIO);
  assert_non_null(strstr(err.msg, p));
  assert_non_null(strstr(err.msg, "No such file"));
  td_corpus_free(&c);
}

static void test_doc_reappears(void **state) {
  (void)state;
  expect_line_error("{\"id\":\"a1\",\"doc\":\"a\",\"text\":\"x\",\"themes\":[\"talent\"]}\n"
                    "{\"id\":\"b1\",\"doc\":\"b\",\"text\":\"y\",\"themes\":[\"talent\"]}\n"
                    "{\"id\":\"a2\",\"doc\":\"a\",\"text\":\"z\",\"themes\":[\"talent\"]}\n",
                    0, 3, "doc \"a\" reappears");
  /* ... and across files: an article must not straddle two files */
  const char *p1 = write_file("one.jsonl", "{\"id\":\"a1\",\"doc\":\"a\",\"text\":\"x\",\"themes\":[\"talent\"]}\n");
  const char *p2 = write_file("two.jsonl", "{\"id\":\"a2\",\"doc\":\"a\",\"text\":\"y\",\"themes\":[\"talent\"]}\n");
  td_corpus_t c;
  td_corpus_init(&c);
  td_err_t err;
  td_err_clear(&err);
  assert_int_equal(td_corpus_load(&c, p1, 0, 0, &err), 0);
  assert_int_not_equal(td_corpus_load(&c, p2, 0, 0, &err), 0);
  assert_non_null(strstr(err.msg, "line 1: doc \"a\" reappears"));
  td_corpus_free(&c);
}

static void test_two_files(void **state) {
  (void)state;
  const char *p1 = write_file("f1.jsonl", "{\"id\":\"a1\",\"doc\":\"a\",\"text\":\"x\",\"themes\":[\"talent\"]}\n");
  const char *p2 = write_file("f2.jsonl", "{\"id\":\"b1\",\"doc\":\"b\",\"text\":\"y\",\"themes\":[\"ecology\"]}\n"
                                          "{\"id\":\"b2\",\"doc\":\"b\",\"text\":\"z\",\"themes\":[\"talent\"]}\n");
  td_corpus_t c;
  td_corpus_init(&c);
  td_err_t err;
  assert_int_equal(td_corpus_load(&c, p1, 0, 0, &err), 0);
  assert_int_equal(td_corpus_load(&c, p2, 0, 0, &err), 0);
  assert_int_equal(td_corpus_finish(&c, &err), 0);
  assert_int_equal(c.n, 3);
  assert_int_equal(c.ndocs, 2);
  assert_int_equal(c.items[2].labels, 1);
  td_corpus_free(&c);
}

static void test_multiclass(void **state) {
  (void)state;
  expect_line_error("{\"id\":\"a\",\"text\":\"x\",\"themes\":[\"talent\",\"industry\"]}\n", 1, 1,
                    "multiclass: \"themes\" must hold exactly one label");
  const char *p = write_file("mc.jsonl", "{\"id\":\"a\",\"text\":\"x\",\"themes\":[\"talent\"]}\n"
                                         "{\"id\":\"b\",\"text\":\"y\",\"themes\":[\"other\"]}\n");
  td_corpus_t c;
  td_corpus_init(&c);
  td_err_t err;
  assert_int_equal(td_corpus_load(&c, p, 1, 0, &err), 0);
  assert_int_equal(c.ntheme, 2); /* `other` is an ordinary class */
  assert_string_equal(c.themes[1], "other");
  assert_int_equal(c.items[1].labels, 2);
  td_corpus_free(&c);
}

/* A theme name the bundle could not hold is refused as the data is read,
 * naming the rule, not after training when the bundle is written. */
static void test_bad_theme_name(void **state) {
  (void)state;
  const char *rule = "is not a valid theme name (" TD_THEME_NAME_RULE ")";
  char tail[300];
  snprintf(tail, sizeof tail, "\"bad/name\" %s", rule);
  expect_line_error("{\"id\":\"a\",\"text\":\"x\",\"themes\":[\"talent\"]}\n"
                    "{\"id\":\"b\",\"text\":\"y\",\"themes\":[\"bad/name\"]}\n",
                    0, 2, tail);
  snprintf(tail, sizeof tail, "\"文化\" %s", rule);
  expect_line_error("{\"id\":\"a\",\"text\":\"x\",\"themes\":[\"文化\"]}\n", 0, 1, tail);
  snprintf(tail, sizeof tail, "\".hidden\" %s", rule);
  expect_line_error("{\"id\":\"a\",\"text\":\"x\",\"themes\":[\".hidden\"]}\n", 1, 1, tail);
}

typedef struct warnings {
  char msg[8][600];
  int n;
} warnings_t;

static void collect(void *ud, const char *msg) {
  warnings_t *w = ud;
  if (w->n < 8) snprintf(w->msg[w->n], sizeof w->msg[0], "%s", msg);
  w->n++;
}

/* Doubts that do not stop training: a label repeated in a row and a passage
 * id seen before (in this file or an earlier one), each with file, line and
 * id; the data still loads as it would without them. */
static void test_hygiene_warnings(void **state) {
  (void)state;
  const char *p1 = write_file("w1.jsonl",
      "{\"id\":\"a\",\"doc\":\"d1\",\"text\":\"x\",\"themes\":[\"culture\",\"culture\"]}\n"
      "{\"id\":\"b\",\"doc\":\"d1\",\"text\":\"y\",\"themes\":[\"other\",\"other\"]}\n"
      "{\"id\":\"a\",\"doc\":\"d2\",\"text\":\"z\",\"themes\":[\"talent\"]}\n");
  const char *p2 = write_file("w2.jsonl",
      "{\"id\":\"b\",\"doc\":\"d3\",\"text\":\"w\",\"themes\":[\"talent\",\"culture\"]}\n");
  td_corpus_t c;
  td_corpus_init(&c);
  warnings_t w = {.n = 0};
  c.warn = collect;
  c.warn_ud = &w;
  td_err_t err;
  td_err_clear(&err);
  assert_int_equal(td_corpus_load(&c, p1, 0, 0, &err), 0);
  assert_int_equal(td_corpus_load(&c, p2, 0, 0, &err), 0);
  assert_int_equal(td_corpus_finish(&c, &err), 0);
  assert_int_equal(w.n, 4);
  char want[700];
  snprintf(want, sizeof want, "%s line 1: id \"a\": label \"culture\" is listed twice in \"themes\"", p1);
  assert_string_equal(w.msg[0], want);
  snprintf(want, sizeof want, "%s line 2: id \"b\": label \"other\" is listed twice in \"themes\"", p1);
  assert_string_equal(w.msg[1], want);
  snprintf(want, sizeof want, "%s line 3: duplicate passage id \"a\"", p1);
  assert_string_equal(w.msg[2], want);
  snprintf(want, sizeof want, "%s line 1: duplicate passage id \"b\"", p2);
  assert_string_equal(w.msg[3], want);
  /* loaded as without the warnings: the repeated label counts once */
  assert_int_equal(c.n, 4);
  assert_int_equal(c.ntheme, 2);
  assert_int_equal(c.items[0].labels, 1);
  assert_int_equal(td_corpus_positives(&c, 0), 2); /* culture */
  assert_int_equal(td_corpus_positives(&c, 1), 2); /* talent */
  td_corpus_free(&c);

  /* nobody listening: nothing to report, the same corpus */
  td_corpus_init(&c);
  assert_int_equal(td_corpus_load(&c, p1, 0, 0, &err), 0);
  assert_int_equal(c.n, 3);
  td_corpus_free(&c);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_good_file),        cmocka_unit_test(test_bad_json),
      cmocka_unit_test(test_not_object),       cmocka_unit_test(test_themes_shape),
      cmocka_unit_test(test_fields),           cmocka_unit_test(test_invalid_utf8),
      cmocka_unit_test(test_other_combined),   cmocka_unit_test(test_unknown_theme_fixed),
      cmocka_unit_test(test_empty),            cmocka_unit_test(test_missing_file),
      cmocka_unit_test(test_doc_reappears),    cmocka_unit_test(test_two_files),
      cmocka_unit_test(test_multiclass),       cmocka_unit_test(test_bad_theme_name),
      cmocka_unit_test(test_hygiene_warnings),
  };
  return cmocka_run_group_tests(tests, setup_dir, teardown_dir);
}
