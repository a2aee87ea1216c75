/*
 * td_docscan (the daemon's and themectl's fast request reader) against
 * jansson, the reference: whenever docscan takes a line, jansson
 * (json_loadb with JSON_DECODE_ANY, as request.c parses) must accept it
 * and give the same values for every member docscan reports. Lines are
 * corpus rows, hand-written edge cases, and many thousands of random
 * mutations of them (bytes flipped, inserted, deleted; escapes, control
 * characters, invalid UTF-8, surrogates, numbers, nesting, duplicates).
 * The test also checks that docscan does take the ordinary lines.
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

#include "docscan.h"

static const char *const knames[] = {"id",    "op",      "text",         "passages", "threshold",
                                     "top_k", "explain", "include_text", "documents"};

static const td_scan_val_t *val(const td_docscan_t *d, size_t k) {
  const td_scan_val_t *v[] = {&d->id,    &d->op,      &d->text,         &d->passages, &d->threshold,
                              &d->top_k, &d->explain, &d->include_text, &d->documents};
  return v[k];
}

static size_t handled, declined;

/* Checks one line; returns whether docscan took it. */
static int check_line(td_docscan_t *d, const char *line, size_t len) {
  int rc = td_docscan(d, line, len);
  assert_true(rc == 0 || rc == 1);
  if (rc == 0) {
    declined++;
    return 0;
  }
  handled++;
  json_error_t je;
  json_t *j = json_loadb(line, len, JSON_DECODE_ANY, &je);
  if (!j) fail_msg("docscan took a line jansson refuses (%s): %.*s", je.text, (int)len, line);
  assert_true(json_is_object(j));
  for (size_t k = 0; k < sizeof knames / sizeof *knames; k++) {
    const json_t *v = json_object_get(j, knames[k]);
    const td_scan_val_t *s = val(d, k);
    if (!v) {
      assert_int_equal(s->kind, TD_SCAN_ABSENT);
      continue;
    }
    switch (json_typeof(v)) {
    case JSON_NULL: assert_int_equal(s->kind, TD_SCAN_NULL); break;
    case JSON_TRUE: assert_int_equal(s->kind, TD_SCAN_TRUE); break;
    case JSON_FALSE: assert_int_equal(s->kind, TD_SCAN_FALSE); break;
    case JSON_INTEGER:
      assert_int_equal(s->kind, TD_SCAN_INT);
      assert_true(s->i == json_integer_value(v));
      break;
    case JSON_REAL:
      assert_int_equal(s->kind, TD_SCAN_REAL);
      assert_true(memcmp(&s->d, &(double){json_real_value(v)}, sizeof(double)) == 0);
      break;
    case JSON_STRING:
      assert_int_equal(s->kind, TD_SCAN_STRING);
      assert_int_equal(s->len, json_string_length(v));
      assert_memory_equal(s->s, json_string_value(v), s->len);
      if (k == 0 || k == 1) assert_int_equal(s->s[s->len], '\0'); /* id, op: C strings */
      break;
    case JSON_ARRAY: {
      size_t n = json_array_size(v), i;
      int strings = 1;
      for (i = 0; i < n; i++) strings &= json_is_string(json_array_get(v, i));
      if (k == 3 && strings) {
        assert_int_equal(s->kind, TD_SCAN_ARRAY);
        assert_int_equal(d->npassages, n);
        for (i = 0; i < n; i++) {
          const json_t *e = json_array_get(v, i);
          assert_int_equal(d->items[i].len, json_string_length(e));
          assert_memory_equal(d->items[i].s, json_string_value(e), d->items[i].len);
        }
      } else {
        assert_int_equal(s->kind, TD_SCAN_OTHER);
      }
      break;
    }
    case JSON_OBJECT: assert_int_equal(s->kind, TD_SCAN_OTHER); break;
    }
  }
  json_decref(j);
  return 1;
}

static const char *const cases[] = {
    "{}",
    " \t\r\n{\"text\":\"a\"} \n",
    "{\"id\":\"a1\",\"text\":\"发展集体经济，壮大村级产业。\"}",
    "{\"id\":1,\"text\":\"x\"}",
    "{\"id\":-0,\"text\":\"x\"}",
    "{\"id\":9223372036854775807,\"text\":\"x\"}",
    "{\"id\":9223372036854775808,\"text\":\"x\"}",
    "{\"id\":-9223372036854775809,\"text\":\"x\"}",
    "{\"id\":1.5e3,\"text\":\"x\"}",
    "{\"id\":1e400,\"text\":\"x\"}",
    "{\"id\":1e-400,\"text\":\"x\"}",
    "{\"id\":01,\"text\":\"x\"}",
    "{\"id\":1.,\"text\":\"x\"}",
    "{\"id\":.5,\"text\":\"x\"}",
    "{\"id\":-,\"text\":\"x\"}",
    "{\"id\":true,\"op\":\"classify\",\"text\":\"x\"}",
    "{\"id\":null,\"op\":\"health\"}",
    "{\"op\":7}",
    "{\"text\":\"line\\nbreak \\\"q\\\" \\\\ \\/ \\b\\f\\r\\t \\u4e2d \\u00e9 \\ud83d\\ude00\"}",
    "{\"text\":\"\\u0000\"}",
    "{\"text\":\"\\ud800\"}",
    "{\"text\":\"\\udc00\\ud800\"}",
    "{\"text\":\"\\ud800\\u0041\"}",
    "{\"text\":\"\\uZZZZ\"}",
    "{\"text\":\"\\x\"}",
    "{\"text\":\"tab\there\"}",
    "{\"text\":\"\xff\"}",
    "{\"text\":\"\xc0\xaf\"}",
    "{\"text\":\"\xed\xa0\x80\"}",
    "{\"text\":\"\xf4\x90\x80\x80\"}",
    "{\"text\":\"\xe4\xb8\"}",
    "{\"te\\u0078t\":\"escaped key\"}",
    "{\"text\":\"a\",\"text\":\"b\"}",
    "{\"passages\":[\"a\",\"b\\n\",\"\"]}",
    "{\"passages\":[]}",
    "{\"passages\":[\"a\",1]}",
    "{\"passages\":[\"a\",[\"b\"]]}",
    "{\"passages\":\"a\"}",
    "{\"text\":\"a\",\"passages\":[\"b\"]}",
    "{\"text\":\"a\",\"threshold\":0.5,\"top_k\":2,\"explain\":true,\"include_text\":false}",
    "{\"text\":\"a\",\"threshold\":1,\"top_k\":null,\"explain\":null}",
    "{\"text\":\"a\",\"threshold\":\"0.5\",\"top_k\":1.0}",
    "{\"text\":\"a\",\"doc\":\"d1\",\"themes\":[\"talent\",\"other\"],\"url\":\"https://x/y\"}",
    "{\"text\":\"a\",\"meta\":{\"a\":[1,2,{\"b\":null}],\"c\":\"\\u00e9\"}}",
    "{\"text\":\"a\",\"deep\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}",
    "{\"documents\":[{\"text\":\"a\"}],\"top_k\":1}",
    "{\"text\":\"a\"} x",
    "{\"text\":\"a\"}{}",
    "{\"text\":\"a\",}",
    "{,\"text\":\"a\"}",
    "{\"text\" \"a\"}",
    "{\"text\":\"a\"",
    "[\"text\"]",
    "\"text\"",
    "42",
    "",
    "\xef\xbb\xbf{\"text\":\"bom\"}",
    "{\"text\":\"a\",\"n\":tru}",
    "{\"text\":\"a\",\"n\":nulll}",
    "{\"text\":\"a\",\"x\":-0.0e-0}",
    "{\"text\":\"a\",\"x\":1E+2}",
};

static uint64_t rng = 0x853c49e6748fea9bull;
static uint64_t rnd(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return rng;
}

static const char *const inserts[] = {"\\", "\"", "\\u", "\\ud83d", "\\udc00", "\\u0000", "\x01",
                                      "\xff", "\xe4\xb8", "\xc3", "{", "}", "[", "]", ",", ":",
                                      "1e999", "-", "0", "true", "null", " ", "\n", "\\n",
                                      "\"id\":", "\"text\":", "\"passages\":[", "\xe2\x80\xa8"};

static void mutate_and_check(td_docscan_t *d, const char *line, size_t len, int rounds) {
  char buf[8192];
  if (len + 64 > sizeof buf) len = sizeof buf - 64;
  for (int r = 0; r < rounds; r++) {
    memcpy(buf, line, len);
    size_t n = len;
    int edits = 1 + (int)(rnd() % 3);
    for (int e = 0; e < edits && n; e++) {
      size_t at = rnd() % n;
      switch (rnd() % 4) {
      case 0: buf[at] = (char)rnd(); break;
      case 1: memmove(buf + at, buf + at + 1, n - at - 1), n--; break;
      case 2: n = at; break;
      default: {
        const char *ins = inserts[rnd() % (sizeof inserts / sizeof *inserts)];
        size_t il = strlen(ins);
        if (n + il >= sizeof buf) break;
        memmove(buf + at + il, buf + at, n - at);
        memcpy(buf + at, ins, il);
        n += il;
      }
      }
    }
    check_line(d, buf, n);
  }
}

static void test_cases(void **state) {
  (void)state;
  td_docscan_t d;
  td_docscan_init(&d);
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) check_line(&d, cases[i], strlen(cases[i]));
  /* the ordinary shapes are taken */
  assert_true(check_line(&d, cases[2], strlen(cases[2])));
  assert_true(check_line(&d, cases[18], strlen(cases[18])));
  assert_true(check_line(&d, cases[33], strlen(cases[33])));
  assert_true(check_line(&d, cases[42], strlen(cases[42])));
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
    mutate_and_check(&d, cases[i], strlen(cases[i]), 400);
  td_docscan_free(&d);
}

static void check_file(td_docscan_t *d, const char *path, int rounds) {
  FILE *f = fopen(path, "r");
  if (!f) {
    printf("note: %s not readable, skipped\n", path);
    return;
  }
  char *line = NULL;
  size_t cap = 0, lines = 0;
  ssize_t n;
  while ((n = getline(&line, &cap, f)) > 0) {
    if (line[n - 1] == '\n') n--;
    assert_true(check_line(d, line, (size_t)n)); /* corpus rows are ordinary */
    if (lines++ % 7 == 0) mutate_and_check(d, line, (size_t)n, rounds);
  }
  free(line);
  fclose(f);
}

static void test_corpora(void **state) {
  (void)state;
  td_docscan_t d;
  td_docscan_init(&d);
  check_file(&d, "tests/fixtures/classify-corpus.jsonl", 200);
  check_file(&d, "tests/fixtures/labelled-train.jsonl", 50);
  const char *shared = getenv("THEMED_SHARED");
  char path[1024];
  snprintf(path, sizeof path, "%s/corpus/dev.jsonl", shared ? shared : "../shared");
  check_file(&d, path, 20);
  printf("docscan: %zu lines taken, %zu left to jansson\n", handled, declined);
  td_docscan_free(&d);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_cases),
      cmocka_unit_test(test_corpora),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
