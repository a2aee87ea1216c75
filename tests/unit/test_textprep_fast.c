/*
 * The tokenizers' fast text preparation (plugins/textprep.h:
 * tp_prepare_fast, per-character NFKC_Casefold from a table) must give
 * exactly what the ICU pipeline (tp_prepare) gives whenever it answers,
 * and the bigram plugin (fused UTF-8 writing, cached character classes)
 * must emit exactly the tokens of the straightforward algorithm it
 * replaced: tp_prepare, tp_to_utf8, then a decoding loop with
 * tp_char_class. Checked on corpus text and on random strings over an
 * alphabet chosen to hit every branch: full-width forms, upper case,
 * combining marks and what they compose with, Hangul jamo, half-width kana
 * and their voicing marks, ligatures and ß (one character, several
 * units), ignorables that normalize to nothing, supplementary characters,
 * compatibility ideographs, Traditional characters and phrases, invalid
 * UTF-8 and encoded surrogates.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../plugins/textprep.h"
#include "plugin.h"

static const char *const alphabet[] = {
    "a", "Z", "5", " ", ",", "\n", "\t", "-",
    "ａ", "Ｚ", "５", "，", "：", "（", "）", "　", "。", "、", "“", "”", "·", "—",
    "中", "村", "國", "國家", "乾隆", "著", "發展", "產業", "幹部", "鄉村", "振興", "组织", "人才",
    "…", "é", "e\xcc\x81", "\xcc\x81", "ß", "ﬁ", "Å",
    "\xef\xa4\x80",                                 /* U+F900 compatibility ideograph */
    "ｶ", "ﾞ", "ｶﾞ", "が", "か\xe3\x82\x99",         /* half-width kana, voicing marks */
    "\xe1\x84\x80", "\xe1\x85\xa1", "\xea\xb0\x80", /* Hangul jamo L, V, syllable */
    "\xc2\xad", "\xe2\x80\x8b", "\xef\xbb\xbf",     /* soft hyphen, ZWSP, BOM */
    "①", "Ⅷ", "㍻", "Ω", "Σ", "ς",
    "\xf0\x9f\x98\x80", "\xf0\xa0\x80\x80",         /* emoji, CJK extension B */
    "\xff", "\xc0\xaf", "\xed\xa0\x80", "\xe4\xb8", /* invalid UTF-8, surrogate, truncated */
    "\xe2\x80\xa8", "\x7f"};

static uint64_t rng = 0x9d2c5680a9e3779bull;
static uint64_t rnd(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return rng;
}

/* ---- tp_prepare_fast vs tp_prepare ---- */

static size_t fast_taken, fast_declined;

static void check_prepare(tp_core_t *c, tp_state_t *s1, tp_state_t *s2, const char *t,
                          size_t len) {
  if (!len) return;
  const UChar *u1, *u2;
  int32_t n1, n2;
  char eb[256];
  assert_int_equal(tp_prepare(c, s1, t, len, &u1, &n1, eb, sizeof eb), 0);
  if (!tp_prepare_fast(c, s2, t, len, &u2, &n2)) {
    fast_declined++;
    return;
  }
  fast_taken++;
  if (n1 != n2 || memcmp(u1, u2, (size_t)n1 * sizeof(UChar)) != 0)
    fail_msg("tp_prepare_fast differs from tp_prepare on \"%.*s\" (%d vs %d units)", (int)len,
             t, n1, n2);
}

/* The alphabet up to here (ASCII, full-width forms, CJK, Traditional) is
 * what ordinary text is made of: half the strings use only it, with now and
 * then one character from the rest, so both paths are exercised. */
#define COMMON 35

static void random_text(char *buf, size_t cap, size_t *len) {
  size_t n = 0, k = 1 + rnd() % 40, all = sizeof alphabet / sizeof *alphabet;
  int mode = (int)(rnd() % 3);
  for (size_t i = 0; i < k; i++) {
    size_t pick = mode == 0 ? rnd() % all
                  : mode == 1 ? rnd() % COMMON
                              : (rnd() % 20 ? rnd() % COMMON : rnd() % all);
    const char *a = alphabet[pick];
    size_t l = strlen(a);
    if (n + l >= cap) break;
    memcpy(buf + n, a, l);
    n += l;
  }
  *len = n;
}

static void each_corpus_text(const char *path, void (*fn)(void *, const char *, size_t),
                             void *ud) {
  FILE *f = fopen(path, "r");
  if (!f) {
    printf("note: %s not readable, skipped\n", path);
    return;
  }
  char *line = NULL;
  size_t cap = 0;
  while (getline(&line, &cap, f) > 0) {
    json_error_t je;
    json_t *j = json_loads(line, 0, &je);
    const char *t = json_string_value(json_object_get(j, "text"));
    if (t) fn(ud, t, strlen(t));
    json_decref(j);
  }
  free(line);
  fclose(f);
}

typedef struct prep_ctx {
  tp_core_t *c;
  tp_state_t *s1, *s2;
} prep_ctx_t;

static void prep_fn(void *ud, const char *t, size_t len) {
  prep_ctx_t *x = ud;
  check_prepare(x->c, x->s1, x->s2, t, len);
}

static void test_prepare(void **state) {
  (void)state;
  for (int t2s = 0; t2s <= 1; t2s++) {
    tp_core_t c;
    char eb[256];
    assert_int_equal(tp_core_init(&c, 0, t2s, eb, sizeof eb), 0);
    tp_state_t *s1 = tp_acquire(&c, eb, sizeof eb), *s2 = tp_acquire(&c, eb, sizeof eb);
    assert_non_null(s1);
    assert_non_null(s2);
    char buf[512];
    size_t len;
    for (int i = 0; i < 20000; i++) {
      random_text(buf, sizeof buf, &len);
      check_prepare(&c, s1, s2, buf, len);
    }
    prep_ctx_t x = {&c, s1, s2};
    each_corpus_text("tests/fixtures/classify-corpus.jsonl", prep_fn, &x);
    const char *shared = getenv("THEMED_SHARED");
    char path[1024];
    snprintf(path, sizeof path, "%s/corpus/dev.jsonl", shared ? shared : "../shared");
    each_corpus_text(path, prep_fn, &x);
    tp_release(&c, s1);
    tp_release(&c, s2);
    tp_core_free(&c);
  }
  printf("tp_prepare_fast answered %zu texts, left %zu to ICU\n", fast_taken, fast_declined);
  assert_true(fast_taken > 1000);
}

/* ---- the bigram plugin vs the reference tokenizer ---- */

typedef struct toks {
  char *b;
  size_t len, cap, n;
} toks_t;

static int collect(void *ud, const char *tok, size_t len) {
  toks_t *t = ud;
  if (t->len + len + 1 > t->cap) {
    t->cap = (t->len + len + 1) * 2;
    t->b = realloc(t->b, t->cap);
  }
  memcpy(t->b + t->len, tok, len);
  t->len += len;
  t->b[t->len++] = '\x01'; /* a separator no token contains */
  t->n++;
  return 0;
}

/* bigram_tokenize as it was before the fast path. */
static void reference_bigram(tp_core_t *c, tp_state_t *s, const char *text, size_t len,
                             toks_t *out) {
  if (!len) return;
  const UChar *u;
  int32_t n16;
  char eb[256];
  assert_int_equal(tp_prepare(c, s, text, len, &u, &n16, eb, sizeof eb), 0);
  int32_t n = tp_to_utf8(s, u, n16, eb, sizeof eb);
  assert_true(n >= 0);
  const char *p = s->u8;
  int32_t prev = -1, word = -1;
  for (int32_t i = 0; i < n;) {
    int32_t at = i;
    UChar32 ch;
    U8_NEXT(p, i, n, ch);
    int cls = tp_char_class(ch, word >= 0);
    if (cls != TP_CLS_WORD && word >= 0) {
      collect(out, p + word, (size_t)(at - word));
      word = -1;
    }
    if (cls == TP_CLS_CJK) {
      if (prev >= 0) collect(out, p + prev, (size_t)(i - prev));
      collect(out, p + at, (size_t)(i - at));
      prev = at;
    } else {
      prev = -1;
      if (cls == TP_CLS_WORD && word < 0) word = at;
    }
  }
  if (word >= 0) collect(out, p + word, (size_t)(n - word));
}

typedef struct tok_ctx {
  td_tokenizer_t *tok;
  tp_core_t *c;
  tp_state_t *s;
  toks_t a, b;
} tok_ctx_t;

static void tok_fn(void *ud, const char *t, size_t len) {
  tok_ctx_t *x = ud;
  x->a.len = x->a.n = x->b.len = x->b.n = 0;
  td_err_t err;
  td_err_clear(&err);
  assert_int_equal(td_tokenizer_run(x->tok, t, len, collect, &x->a, &err), 0);
  reference_bigram(x->c, x->s, t, len, &x->b);
  if (x->a.len != x->b.len || (x->a.len && memcmp(x->a.b, x->b.b, x->a.len)))
    fail_msg("bigram tokens differ from the reference on \"%.*s\" (%zu vs %zu tokens)", (int)len,
             t, x->a.n, x->b.n);
}

static void test_bigram_tokens(void **state) {
  (void)state;
  for (int t2s = 0; t2s <= 1; t2s++) {
    json_t *opts = json_pack("{s:b}", "traditional_to_simplified", t2s);
    tok_ctx_t x = {0};
    td_err_t err;
    td_err_clear(&err);
    if (td_tokenizer_open(getenv("THEMED_PLUGIN_DIR"), "bigram", opts, &x.tok, &err))
      fail_msg("%s", err.msg);
    tp_core_t c;
    char eb[256];
    assert_int_equal(tp_core_init(&c, 0, t2s, eb, sizeof eb), 0);
    x.c = &c;
    x.s = tp_acquire(&c, eb, sizeof eb);
    char buf[512];
    size_t len;
    for (int i = 0; i < 20000; i++) {
      random_text(buf, sizeof buf, &len);
      tok_fn(&x, buf, len);
    }
    each_corpus_text("tests/fixtures/classify-corpus.jsonl", tok_fn, &x);
    const char *shared = getenv("THEMED_SHARED");
    char path[1024];
    snprintf(path, sizeof path, "%s/corpus/dev.jsonl", shared ? shared : "../shared");
    each_corpus_text(path, tok_fn, &x);
    tp_release(&c, x.s);
    tp_core_free(&c);
    td_tokenizer_free(&x.tok);
    free(x.a.b);
    free(x.b.b);
    json_decref(opts);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_prepare),
      cmocka_unit_test(test_bigram_tokens),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
