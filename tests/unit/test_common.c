/* common: td_utf8_prefix, the cut for "%.*s" that never splits a UTF-8
 * character (a message cut inside one is not UTF-8, and the daemon would
 * have to send a placeholder instead of it). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "common.h"
#include "text.h"

/* 中 is E4 B8 AD, é is C3 A9, 😀 is F0 9F 98 80 */
static void test_ascii_and_short(void **st) {
  (void)st;
  assert_int_equal(td_utf8_prefix("", 10), 0);
  assert_int_equal(td_utf8_prefix("abc", 10), 3);
  assert_int_equal(td_utf8_prefix("abc", 3), 3);
  assert_int_equal(td_utf8_prefix("abcdef", 3), 3);
  assert_int_equal(td_utf8_prefix("abcdef", 0), 0);
  assert_int_equal(td_utf8_prefix("中文", 6), 6); /* exactly the whole string */
}

static void test_cut_backs_up_to_a_boundary(void **st) {
  (void)st;
  const char *s = "a中文"; /* 61 E4 B8 AD E6 96 87 */
  assert_int_equal(td_utf8_prefix(s, 1), 1);
  assert_int_equal(td_utf8_prefix(s, 2), 1);
  assert_int_equal(td_utf8_prefix(s, 3), 1);
  assert_int_equal(td_utf8_prefix(s, 4), 4);
  assert_int_equal(td_utf8_prefix(s, 5), 4);
  assert_int_equal(td_utf8_prefix(s, 6), 4);
  assert_int_equal(td_utf8_prefix(s, 7), 7);
  assert_int_equal(td_utf8_prefix("é", 1), 0);
  const char *e = "\xf0\x9f\x98\x80!"; /* a 4-byte character: every cut inside it */
  for (size_t n = 1; n < 4; n++) assert_int_equal(td_utf8_prefix(e, n), 0);
  assert_int_equal(td_utf8_prefix(e, 4), 4);
}

/* Every cut of a mixed string is a prefix that is valid UTF-8, and the
 * longest one: one more character would not fit. */
static void test_every_cut_is_valid_and_longest(void **st) {
  (void)st;
  const char *s = "x中é😀ab文\xf0\x9f\x98\x80";
  size_t len = strlen(s);
  for (size_t max = 0; max <= len + 2; max++) {
    size_t k = td_utf8_prefix(s, max);
    assert_true(k <= max && k <= len);
    assert_int_equal(td_text_check_utf8(s, k, NULL, NULL), 0);
    if (k < len && k < max) assert_true(k + 4 > max); /* the next character is what did not fit */
  }
}

/* Bytes that are not UTF-8 are not judged: a run of continuation bytes
 * longer than a character can hold is cut where asked. */
static void test_invalid_input_cut_as_asked(void **st) {
  (void)st;
  assert_int_equal(td_utf8_prefix("\x80\x80\x80\x80\x80", 4), 4);
  assert_int_equal(td_utf8_prefix("\xff\xfe", 1), 1);
}

/* What it is for: 40 Chinese characters through "%.*s" at 64 bytes. */
static void test_with_printf(void **st) {
  (void)st;
  char op[200] = "";
  for (int i = 0; i < 40; i++) strcat(op, "中");
  char msg[128];
  snprintf(msg, sizeof msg, "unknown op \"%.*s\"", (int)td_utf8_prefix(op, 64), op);
  assert_int_equal(td_text_check_utf8(msg, strlen(msg), NULL, NULL), 0);
  assert_int_equal(strlen(msg), strlen("unknown op \"\"") + 63); /* 21 characters */
}

/* td_path_last: the last component, trailing slashes ignored (a bundle is
 * named after it: "out/" must be "out"). */
static void last_is(const char *path, const char *want) {
  const char *s;
  size_t n = td_path_last(path, &s);
  if (n != strlen(want) || strncmp(s, want, n))
    fail_msg("td_path_last(\"%s\") = \"%.*s\", want \"%s\"", path, (int)n, s, want);
}

static void test_path_last(void **st) {
  (void)st;
  last_is("out", "out");
  last_is("out/", "out");
  last_is("o-slash/", "o-slash");
  last_is("a/b//", "b");
  last_is("/srv/models/x", "x");
  last_is("/", "");
  last_is("///", "");
  last_is("", "");
  last_is(".", ".");
  last_is("a/..", "..");
}

static void vformat(char *buf, size_t cap, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  td_vformat(buf, cap, fmt, ap);
  va_end(ap);
}

/* td_vformat: a message cut by its buffer ends before a character, never
 * inside one (td_err_set, the request's errors). */
static void test_vformat_cuts_before_a_character(void **st) {
  (void)st;
  char buf[8];
  vformat(buf, sizeof buf, "ab%s", "党建引领"); /* "ab" + 3 bytes each: 7 fit, 1 is cut */
  assert_string_equal(buf, "ab党");
  vformat(buf, sizeof buf, "%s", "abcdefghij");
  assert_string_equal(buf, "abcdefg");
  vformat(buf, sizeof buf, "%d", 42);
  assert_string_equal(buf, "42");
  assert_int_equal(td_utf8_whole("a\xe5\x85", 3), 1); /* 党 without its last byte */
  assert_int_equal(td_utf8_whole("a\xe5\x85\x9a", 4), 4);
}

/* td_path_parent: the directory part, as the listener and the bundle
 * writer both need it. */
static void parent_is(const char *path, const char *want) {
  char *p = td_path_parent(path);
  assert_non_null(p);
  if (strcmp(p, want)) fail_msg("td_path_parent(\"%s\") = \"%s\", want \"%s\"", path, p, want);
  free(p);
}

static void test_path_parent(void **st) {
  (void)st;
  parent_is("x.sock", ".");
  parent_is("/x.sock", "/");
  parent_is("/run/themed/x.sock", "/run/themed");
  parent_is("models/rural-themes", "models");
}

/* The theme-name rule: what a bundle can hold (file names, JSON keys). */
static void test_theme_name_ok(void **st) {
  (void)st;
  const char *good[] = {"culture", "A_b-c.d", "x", "other", "t2"};
  const char *bad[] = {"", "bad/name", "文化", ".hidden", "-x", "a b", "a\\b"};
  for (size_t i = 0; i < sizeof good / sizeof *good; i++) assert_true(td_theme_name_ok(good[i]));
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
    if (td_theme_name_ok(bad[i])) fail_msg("\"%s\" accepted", bad[i]);
  char name[66];
  memset(name, 'a', 65);
  name[65] = '\0';
  assert_false(td_theme_name_ok(name)); /* 65 characters */
  name[64] = '\0';
  assert_true(td_theme_name_ok(name));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_ascii_and_short),
      cmocka_unit_test(test_cut_backs_up_to_a_boundary),
      cmocka_unit_test(test_every_cut_is_valid_and_longest),
      cmocka_unit_test(test_invalid_input_cut_as_asked),
      cmocka_unit_test(test_with_printf),
      cmocka_unit_test(test_path_last),
      cmocka_unit_test(test_path_parent),
      cmocka_unit_test(test_vformat_cuts_before_a_character),
      cmocka_unit_test(test_theme_name_ok),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
