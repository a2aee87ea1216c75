/*
 * icu: ICU word segmentation (UAX #29, dictionary-based for Chinese and other
 * scripts without spaces) over NFKC_Casefold text, optionally converted from
 * Traditional to Simplified first. Keeps words whose break rule status says
 * number, letter, kana or ideograph; drops the rest (punctuation, symbols,
 * emoji, spaces). Pipeline and threading: plugins/textprep.h.
 *
 * Options: {"traditional_to_simplified": false, "char_ngrams": false}
 *
 * char_ngrams: after the words, every CJK run (classified as in the bigram
 * plugin, tp_char_class) also emits its character unigrams and bigrams, so
 * one feature space holds dictionary words and character n-grams.
 */
#include <themed/plugin.h>

#include "textprep.h"

typedef struct icu_tok {
  tp_core_t core;
  int char_ngrams;
} icu_tok_t;

static int icu_create(const json_t *options, void **out, char *errbuf, size_t errlen) {
  int t2s = 0, ngrams = 0;
  const tp_bool_opt_t opts[] = {{"traditional_to_simplified", &t2s}, {"char_ngrams", &ngrams}};
  if (tp_parse_bool_opts(options, opts, 2, errbuf, errlen) != 0) return -1;
  icu_tok_t *t = malloc(sizeof *t);
  if (!t) {
    tp_errf(errbuf, errlen, "out of memory");
    return -1;
  }
  t->char_ngrams = ngrams;
  if (tp_core_init(&t->core, 1, t2s, errbuf, errlen) != 0) {
    free(t);
    return -1;
  }
  *out = t;
  return 0;
}

static void icu_destroy(void *inst) {
  icu_tok_t *t = inst;
  tp_core_free(&t->core);
  free(t);
}

/* Rule status ranges ICU assigns to words; UBRK_WORD_NONE (0-99) is dropped. */
static int keep_status(int32_t st) {
  return st >= UBRK_WORD_NUMBER && st < UBRK_WORD_IDEO_LIMIT;
}

static int icu_tokenize(void *inst, const char *text, size_t len, themed_emit_cb emit,
                        void *ud, char *errbuf, size_t errlen) {
  icu_tok_t *t = inst;
  if (len == 0) return 0;
  tp_state_t *s = tp_acquire(&t->core, errbuf, errlen);
  if (!s) return -1;
  const UChar *u;
  int32_t n;
  int rc = tp_prepare(&t->core, s, text, len, &u, &n, errbuf, errlen);
  if (rc != 0) goto out;
  UErrorCode st = U_ZERO_ERROR;
  ubrk_setText(s->bi, u, n, &st);
  if (U_FAILURE(st)) {
    tp_errf(errbuf, errlen, "ICU ubrk_setText: %s", u_errorName(st));
    rc = -1;
    goto out;
  }
  int32_t start = ubrk_first(s->bi), end;
  while (rc == 0 && (end = ubrk_next(s->bi)) != UBRK_DONE) {
    if (keep_status(ubrk_getRuleStatus(s->bi))) {
      /* The buffer only grows for a token longer than any seen before. */
      int32_t m = tp_to_utf8(s, u + start, end - start, errbuf, errlen);
      rc = m < 0 ? -1 : emit(ud, s->u8, (size_t)m);
    }
    start = end;
  }
  /* Character unigrams and bigrams of each CJK run, after the words. */
  for (int32_t i = 0, prev = -1; rc == 0 && t->char_ngrams && i < n;) {
    int32_t at = i;
    UChar32 c;
    U16_NEXT(u, i, n, c);
    if (tp_char_class(c, 0) != TP_CLS_CJK) {
      prev = -1;
      continue;
    }
    int32_t m;
    if (prev >= 0) {
      m = tp_to_utf8(s, u + prev, i - prev, errbuf, errlen);
      rc = m < 0 ? -1 : emit(ud, s->u8, (size_t)m);
    }
    if (rc == 0) {
      m = tp_to_utf8(s, u + at, i - at, errbuf, errlen);
      rc = m < 0 ? -1 : emit(ud, s->u8, (size_t)m);
    }
    prev = at;
  }
out:
  tp_release(&t->core, s);
  return rc;
}

static const themed_tokenizer_api_t icu_api = THEMED_TOKENIZER_INIT(
    .name = "icu", .version = "1.0.0",
    .description = "ICU word segmentation (dictionary for Chinese), NFKC_Casefold, "
                   "optional Traditional->Simplified",
    .create = icu_create, .destroy = icu_destroy, .tokenize = icu_tokenize);

THEMED_EXPORT const themed_tokenizer_api_t *themed_tokenizer_get_api(void);
const themed_tokenizer_api_t *themed_tokenizer_get_api(void) { return &icu_api; }
