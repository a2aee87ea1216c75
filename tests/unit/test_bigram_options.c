/*
 * The bigram plugin's n-gram stream options (keep_punct, split_words,
 * trigrams), loaded through the real loader from $THEMED_PLUGIN_DIR.
 * Expected token lists are exact: they are the features a bundle trained
 * with these options is made of.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "plugin.h"

static const char *plugin_dir(void) {
  const char *d = getenv("THEMED_PLUGIN_DIR");
  return d && *d ? d : "build/plugins";
}

static td_tokenizer_t *open_bigram(const char *opts_json) {
  json_error_t je;
  json_t *o = opts_json ? json_loads(opts_json, 0, &je) : NULL;
  if (opts_json) assert_non_null(o);
  td_tokenizer_t *t = NULL;
  td_err_t err = {0};
  if (td_tokenizer_open(plugin_dir(), "bigram", o, &t, &err))
    fail_msg("open bigram %s: %s", opts_json ? opts_json : "", err.msg);
  json_decref(o);
  return t;
}

static int collect(void *ud, const char *tok, size_t len) {
  td_buf_t *b = ud;
  if (len == 0) return TD_EINVAL; /* the plugin must never emit an empty token */
  if (b->len && td_buf_append(b, "|", 1)) return TD_ENOMEM;
  return td_buf_append(b, tok, len);
}

/* Tokens joined by '|' (malloc'd, "" for none). */
static char *toks(const td_tokenizer_t *t, const char *text) {
  td_buf_t b;
  td_buf_init(&b);
  assert_int_equal(td_buf_reserve(&b, 0), 0);
  b.data[0] = '\0';
  td_err_t err = {0};
  if (td_tokenizer_run(t, text, strlen(text), collect, &b, &err) != 0)
    fail_msg("tokenize \"%s\": %s", text, err.msg);
  return b.data;
}

static void expect(const char *opts, const char *text, const char *want) {
  td_tokenizer_t *t = open_bigram(opts);
  char *got = toks(t, text);
  if (strcmp(got, want) != 0)
    fail_msg("bigram %s (\"%s\")\n  got:  %s\n  want: %s", opts ? opts : "", text, got, want);
  free(got);
  td_tokenizer_free(&t);
}

static const char HEADLINE[] = "60年铁树开花(组图)";
static const char SPACED[] = "  5G网络  覆盖 全村 ";

/* The defaults, spelled out or not, are the tokens bundles have always had. */
static void defaults_unchanged(void **state) {
  static const char *const opts[] = {
      NULL, "{}", "{\"keep_punct\": false, \"split_words\": false, \"trigrams\": false}"};
  for (size_t i = 0; i < sizeof opts / sizeof opts[0]; i++) {
    expect(opts[i], HEADLINE, "60|年|年铁|铁|铁树|树|树开|开|开花|花|组|组图|图");
    expect(opts[i], SPACED, "5g|网|网络|络|覆|覆盖|盖|全|全村|村");
  }
}

/* Punctuation joins the stream; "（" NFKC-folds to "(", "，" to ",". */
static void keep_punct(void **state) {
  const char *o = "{\"keep_punct\": true}";
  expect(o, HEADLINE, "60|年|年铁|铁|铁树|树|树开|开|开花|花|花(|(|(组|组|组图|图|图)|)");
  expect(o, "乡村振兴，5G网络", "乡|乡村|村|村振|振|振兴|兴|兴,|,|5g|网|网络|络");
  /* A whitespace run is one space unit; at either end of the text it is dropped. */
  expect(o, SPACED, "5g|网|网络|络|络 | | 覆|覆|覆盖|盖|盖 | | 全|全|全村|村");
  expect(o, "村\u3000\t民", "村|村 | | 民|民");
  expect(o, " \t ", "");
  /* Emoji are symbols: kept. */
  expect(o, "点赞👍！", "点|点赞|赞|赞👍|👍|👍!|!");
}

/* Control characters and U+FFFD (from invalid bytes) still break the stream. */
static void keep_punct_breaks(void **state) {
  const char *o = "{\"keep_punct\": true}";
  expect(o, "a\001村\t\r\n民x", "a|村|村 | | 民|民|x");
  expect(o, "村\xff民", "村|民");
}

/* Letters and digits become units: n-grams across scripts, no whole words. */
static void split_words(void **state) {
  expect("{\"split_words\": true}", "乡村振兴，5G网络", "乡|乡村|村|村振|振|振兴|兴|5|5g|g|g网|网|网络|络");
  expect("{\"keep_punct\": true, \"split_words\": true}", "乡村振兴，5G网络",
         "乡|乡村|村|村振|振|振兴|兴|兴,|,|,5|5|5g|g|g网|网|网络|络");
  expect("{\"keep_punct\": true, \"split_words\": true}", HEADLINE,
         "6|60|0|0年|年|年铁|铁|铁树|树|树开|开|开花|花|花(|(|(组|组|组图|图|图)|)");
}

/* Trigrams come first among the n-grams ending at a unit. */
static void trigrams(void **state) {
  expect("{\"trigrams\": true}", "乡村振兴 5G",
         "乡|乡村|村|乡村振|村振|振|村振兴|振兴|兴|5g");
  expect("{\"trigrams\": true, \"unigrams\": false, \"bigrams\": false}", "乡村振兴 乡 5G",
         "乡村振|村振兴|5g");
  expect("{\"trigrams\": true, \"unigrams\": false, \"bigrams\": false, \"keep_punct\": true}",
         HEADLINE, "60|年铁树|铁树开|树开花|开花(|花(组|(组图|组图)");
}

/* Every default token is still emitted with keep_punct or trigrams on
 * (they only add n-grams), in the same relative order. */
static void options_only_add(void **state) {
  static const char *const texts[] = {HEADLINE, SPACED, "“乡村振兴”：（一）抓党建、促发展。",
                                      "covid19 COVID-19 5G", "コーヒー 한국어", "点赞👍🏻！！😀好"};
  td_tokenizer_t *base = open_bigram(NULL);
  td_tokenizer_t *more[] = {open_bigram("{\"keep_punct\": true}"),
                            open_bigram("{\"trigrams\": true}")};
  for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
    char *want = toks(base, texts[i]);
    for (size_t k = 0; k < 2; k++) {
      char *got = toks(more[k], texts[i]);
      /* Walk want's tokens through got's, in order. */
      const char *g = got;
      for (char *w = want, *end; *w; w = *end ? end + 1 : end) {
        end = strchr(w, '|');
        if (!end) end = w + strlen(w);
        size_t n = (size_t)(end - w);
        const char *hit = NULL;
        for (const char *q = g; *q;) {
          const char *qe = strchr(q, '|');
          if (!qe) qe = q + strlen(q);
          if ((size_t)(qe - q) == n && memcmp(q, w, n) == 0) {
            hit = qe;
            break;
          }
          q = *qe ? qe + 1 : qe;
        }
        if (!hit) fail_msg("\"%s\": option set %zu lost token \"%.*s\"\n  got: %s", texts[i], k, (int)n, w, got);
        g = hit;
      }
      free(got);
    }
    free(want);
  }
  td_tokenizer_free(&base);
  for (size_t k = 0; k < 2; k++) td_tokenizer_free(&more[k]);
}

static void bad_options(void **state) {
  static const struct {
    const char *opts, *needle;
  } cases[] = {
      {"{\"keep_punct\": \"yes\"}", "\"keep_punct\" must be true or false"},
      {"{\"split_words\": 1}", "\"split_words\" must be true or false"},
      {"{\"trigram\": true}", "unknown option \"trigram\""},
      {"{\"unigrams\": false, \"bigrams\": false, \"trigrams\": false}", "both false"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    json_error_t je;
    json_t *o = json_loads(cases[i].opts, 0, &je);
    assert_non_null(o);
    td_tokenizer_t *t = NULL;
    td_err_t err = {0};
    assert_int_equal(td_tokenizer_open(plugin_dir(), "bigram", o, &t, &err), TD_EPLUGIN);
    assert_null(t);
    if (!strstr(err.msg, cases[i].needle))
      fail_msg("%s: message \"%s\" lacks \"%s\"", cases[i].opts, err.msg, cases[i].needle);
    json_decref(o);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(defaults_unchanged), cmocka_unit_test(keep_punct),
      cmocka_unit_test(keep_punct_breaks),  cmocka_unit_test(split_words),
      cmocka_unit_test(trigrams),           cmocka_unit_test(options_only_add),
      cmocka_unit_test(bad_options),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
