/*
 * bigram: character n-grams for CJK, whole words for everything else, over
 * the same NFKC_Casefold (+ optional Traditional->Simplified) text as the
 * icu plugin (plugins/textprep.h).
 *
 * After preparation each code point is one of:
 *   CJK   alphabetic and of Han, Hiragana, Katakana or Hangul script
 *         (Script_Extensions, so the prolonged sound mark ー counts);
 *   word  any other alphabetic character or decimal digit, and combining
 *         marks that continue a word;
 *   separator  everything else: spaces, punctuation, symbols, emoji, and
 *         U+FFFD (what invalid UTF-8 became).
 * A run of CJK characters c1 c2 ... cn emits, in text order,
 *   c1, c1c2, c2, c2c3, c3, ..., cn
 * (unigrams and/or bigrams as configured; with unigrams off, a run of one
 * character emits nothing). A run of word characters emits one token, so
 * letters and digits stay together ("5g", "covid19").
 *
 * Options: {"unigrams": true, "bigrams": true, "traditional_to_simplified": false}
 */
#include <themed/plugin.h>

#include <stdatomic.h>
#include <unicode/utf16.h>
#include <unicode/utf8.h>

#include "textprep.h"

typedef struct bigram_tok {
  tp_core_t core;
  int unigrams, bigrams;
} bigram_tok_t;

enum { CLS_SEP = TP_CLS_SEP, CLS_CJK = TP_CLS_CJK, CLS_WORD = TP_CLS_WORD };

/*
 * tp_char_class, remembered per BMP code point (both answers: in a word or
 * not): outside ASCII and the main Han block it asks ICU for properties,
 * which for common punctuation (、。“”) cost more per character than the
 * rest of tokenizing. Filled lazily with ICU's own answers; same value
 * whichever thread writes it, hence relaxed atomics.
 */
static _Atomic uint8_t cls_memo[65536]; /* 0: unknown; 0x80 | out-of-word | in-word << 2 */

static inline int classify(UChar32 c, int in_word) {
  if (c < 0x80 || c > 0xFFFF) return tp_char_class(c, in_word);
  unsigned e = atomic_load_explicit(&cls_memo[c], memory_order_relaxed);
  if (!e) {
    e = 0x80u | (unsigned)tp_char_class(c, 0) | (unsigned)tp_char_class(c, 1) << 2;
    atomic_store_explicit(&cls_memo[c], (uint8_t)e, memory_order_relaxed);
  }
  return (int)(in_word ? e >> 2 & 3 : e & 3);
}

static int bigram_create(const json_t *options, void **out, char *errbuf, size_t errlen) {
  int uni = 1, bi = 1, t2s = 0;
  const tp_bool_opt_t opts[] = {
      {"unigrams", &uni}, {"bigrams", &bi}, {"traditional_to_simplified", &t2s}};
  if (tp_parse_bool_opts(options, opts, 3, errbuf, errlen) != 0) return -1;
  if (!uni && !bi) {
    tp_errf(errbuf, errlen, "options \"unigrams\" and \"bigrams\" are both false: "
                            "nothing would be emitted for CJK text");
    return -1;
  }
  bigram_tok_t *t = malloc(sizeof *t);
  if (!t) {
    tp_errf(errbuf, errlen, "out of memory");
    return -1;
  }
  t->unigrams = uni;
  t->bigrams = bi;
  if (tp_core_init(&t->core, 0, t2s, errbuf, errlen) != 0) {
    free(t);
    return -1;
  }
  *out = t;
  return 0;
}

static void bigram_destroy(void *inst) {
  bigram_tok_t *t = inst;
  tp_core_free(&t->core);
  free(t);
}

static int bigram_tokenize(void *inst, const char *text, size_t len, themed_emit_cb emit,
                           void *ud, char *errbuf, size_t errlen) {
  bigram_tok_t *t = inst;
  if (len == 0) return 0;
  tp_state_t *s = tp_acquire(&t->core, errbuf, errlen);
  if (!s) return -1;
  const UChar *u = NULL;
  int32_t n16 = 0, i = 0;
  int rc = tp_prepare_fast(&t->core, s, text, len, &u, &n16)
               ? 0
               : tp_prepare(&t->core, s, text, len, &u, &n16, errbuf, errlen);
  /* Tokens are slices of the prepared text in UTF-8, written here as the
   * units are read: what tp_to_utf8 (u_strToUTF8WithSub with U+FFFD for an
   * unpaired surrogate) and a decoding loop did in two passes. A unit never
   * takes more than 3 bytes. */
  if (rc == 0 && tp_grow8(s, (size_t)n16 * 3 + 1)) {
    tp_errf(errbuf, errlen, "out of memory");
    rc = -1;
  }
  char *p = s->u8;
  int32_t prev = -1;  /* start of the previous CJK character of this run */
  int32_t word = -1;  /* start of the current word run */
  for (int32_t j = 0; rc == 0 && j < n16;) {
    int32_t at = i;
    UChar32 c = u[j++];
    if (U16_IS_SURROGATE(c)) {
      if (U16_IS_SURROGATE_LEAD(c) && j < n16 && U16_IS_TRAIL(u[j]))
        c = U16_GET_SUPPLEMENTARY(c, u[j++]);
      else
        c = 0xFFFD;
    }
    if (c < 0x80) {
      p[i++] = (char)c;
    } else if (c < 0x800) {
      p[i++] = (char)(0xC0 | c >> 6);
      p[i++] = (char)(0x80 | (c & 0x3F));
    } else if (c < 0x10000) {
      p[i++] = (char)(0xE0 | c >> 12);
      p[i++] = (char)(0x80 | (c >> 6 & 0x3F));
      p[i++] = (char)(0x80 | (c & 0x3F));
    } else {
      p[i++] = (char)(0xF0 | c >> 18);
      p[i++] = (char)(0x80 | (c >> 12 & 0x3F));
      p[i++] = (char)(0x80 | (c >> 6 & 0x3F));
      p[i++] = (char)(0x80 | (c & 0x3F));
    }
    int cls = classify(c, word >= 0);
    if (cls != CLS_WORD && word >= 0) {
      rc = emit(ud, p + word, (size_t)(at - word));
      word = -1;
      if (rc) break;
    }
    if (cls == CLS_CJK) {
      if (prev >= 0 && t->bigrams) rc = emit(ud, p + prev, (size_t)(i - prev));
      if (rc == 0 && t->unigrams) rc = emit(ud, p + at, (size_t)(i - at));
      prev = at;
    } else {
      prev = -1;
      if (cls == CLS_WORD && word < 0) word = at;
    }
  }
  if (rc == 0 && word >= 0) rc = emit(ud, p + word, (size_t)(i - word));
  tp_release(&t->core, s);
  return rc;
}

static const themed_tokenizer_api_t bigram_api = THEMED_TOKENIZER_INIT(
    .name = "bigram", .version = "1.0.0",
    .description = "CJK unigrams+bigrams, whole Latin/digit words, NFKC_Casefold, "
                   "optional Traditional->Simplified",
    .create = bigram_create, .destroy = bigram_destroy, .tokenize = bigram_tokenize);

THEMED_EXPORT const themed_tokenizer_api_t *themed_tokenizer_get_api(void);
const themed_tokenizer_api_t *themed_tokenizer_get_api(void) { return &bigram_api; }
