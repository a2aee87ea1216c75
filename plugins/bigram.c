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
 * Options: {"unigrams": true, "bigrams": true, "traditional_to_simplified": false,
 *           "trigrams": false, "keep_punct": false, "split_words": false}
 * The last three widen the run ("the stream of units") the n-grams are taken
 * over; all false is the behaviour bundles have always had.
 *   trigrams     also c1c2c3, c2c3c4, ... (emitted before the bigram and the
 *                unigram ending at the same character).
 *   keep_punct   separators are units too: "(组图)" gives 花(, (, (组, ...
 *                A whitespace run is one unit " " (none at either end of
 *                the text); control characters and U+FFFD still break the
 *                stream. Why: in short texts punctuation carries class
 *                information (headlines' "(组图)", "：", "%"); scikit-learn's
 *                char analyzer keeps it (docs/model.md, THUCNews).
 *   split_words  letters and digits are units of the stream, one code point
 *                each, instead of whole-word tokens: "5g网" gives 5, 5g, g,
 *                g网, 网 (scikit-learn's char analyzer again).
 */
#include <themed/plugin.h>

#include <stdatomic.h>
#include <unicode/utf16.h>
#include <unicode/utf8.h>

#include "textprep.h"

typedef struct bigram_tok {
  tp_core_t core;
  int unigrams, bigrams, trigrams;
  int keep_punct;  /* separators are units too (whitespace runs: one space) */
  int split_words; /* letters and digits are units, not whole-word tokens */
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
  int uni = 1, bi = 1, tri = 0, t2s = 0, punct = 0, split = 0;
  const tp_bool_opt_t opts[] = {{"unigrams", &uni},
                                {"bigrams", &bi},
                                {"trigrams", &tri},
                                {"traditional_to_simplified", &t2s},
                                {"keep_punct", &punct},
                                {"split_words", &split}};
  if (tp_parse_bool_opts(options, opts, sizeof opts / sizeof opts[0], errbuf, errlen) != 0)
    return -1;
  if (!uni && !bi && !tri) {
    tp_errf(errbuf, errlen, "options \"unigrams\" and \"bigrams\" are both false "
                            "(and \"trigrams\" is not true): nothing would be "
                            "emitted for CJK text");
    return -1;
  }
  bigram_tok_t *t = malloc(sizeof *t);
  if (!t) {
    tp_errf(errbuf, errlen, "out of memory");
    return -1;
  }
  t->unigrams = uni;
  t->bigrams = bi;
  t->trigrams = tri;
  t->keep_punct = punct;
  t->split_words = split;
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

/* Appends code point c as UTF-8 at p + *i (at most 4 bytes). */
static inline void put_utf8(char *p, int32_t *i, UChar32 c) {
  if (c < 0x80) {
    p[(*i)++] = (char)c;
  } else if (c < 0x800) {
    p[(*i)++] = (char)(0xC0 | c >> 6);
    p[(*i)++] = (char)(0x80 | (c & 0x3F));
  } else if (c < 0x10000) {
    p[(*i)++] = (char)(0xE0 | c >> 12);
    p[(*i)++] = (char)(0x80 | (c >> 6 & 0x3F));
    p[(*i)++] = (char)(0x80 | (c & 0x3F));
  } else {
    p[(*i)++] = (char)(0xF0 | c >> 18);
    p[(*i)++] = (char)(0x80 | (c >> 12 & 0x3F));
    p[(*i)++] = (char)(0x80 | (c >> 6 & 0x3F));
    p[(*i)++] = (char)(0x80 | (c & 0x3F));
  }
}

/*
 * The n-grams ending with the unit p[at..i): the trigram from p2, the bigram
 * from p1 (a negative start: none), then the unit itself -- in that order,
 * which is the text order the ngram_max pairs are built on.
 */
static inline int emit_unit(const bigram_tok_t *t, const char *p, int32_t p2, int32_t p1,
                            int32_t at, int32_t i, themed_emit_cb emit, void *ud) {
  int rc = 0;
  if (p2 >= 0 && t->trigrams) rc = emit(ud, p + p2, (size_t)(i - p2));
  if (rc == 0 && p1 >= 0 && t->bigrams) rc = emit(ud, p + p1, (size_t)(i - p1));
  if (rc == 0 && t->unigrams) rc = emit(ud, p + at, (size_t)(i - at));
  return rc;
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
   * takes more than 3 bytes, and a whitespace run that keep_punct writes as
   * one space is never longer than the run. */
  if (rc == 0 && tp_grow8(s, (size_t)n16 * 3 + 1)) {
    tp_errf(errbuf, errlen, "out of memory");
    rc = -1;
  }
  char *p = s->u8;
  /* The n-gram stream: starts of the previous unit and of the one before
   * it (-1: the stream broke there). A unit is a CJK character, and with
   * keep_punct a separator, with split_words a letter or digit. */
  int32_t prev = -1, prev2 = -1;
  int32_t word = -1;  /* start of the current whole-word run */
  int in_word = 0;    /* the previous code point was of class word */
  int space = 0;      /* keep_punct: a whitespace run is pending ... */
  int seen = 0;       /* ... after something else: it becomes one space unit
                         when something else follows too (so whitespace at
                         either end of the text is dropped) */
  for (int32_t j = 0; rc == 0 && j < n16;) {
    UChar32 c = u[j++];
    if (U16_IS_SURROGATE(c)) {
      if (U16_IS_SURROGATE_LEAD(c) && j < n16 && U16_IS_TRAIL(u[j]))
        c = U16_GET_SUPPLEMENTARY(c, u[j++]);
      else
        c = 0xFFFD;
    }
    int cls = classify(c, in_word);
    in_word = cls == CLS_WORD;
    if (cls != CLS_WORD && word >= 0) {
      rc = emit(ud, p + word, (size_t)(i - word));
      word = -1;
      if (rc) break;
    }
    int unit = cls == CLS_CJK || (cls == CLS_WORD && t->split_words);
    if (cls == CLS_SEP && t->keep_punct) {
      if (u_isUWhiteSpace(c)) {
        space = seen;
        continue;
      }
      /* Controls and U+FFFD (invalid input) break the stream, as without
       * the option: they are not text. */
      unit = c != 0xFFFD && !u_iscntrl(c);
    }
    if (space) {
      int32_t at = i;
      p[i++] = ' ';
      rc = emit_unit(t, p, prev2, prev, at, i, emit, ud);
      prev2 = prev;
      prev = at;
      space = 0;
      if (rc) break;
    }
    seen = 1;
    int32_t at = i;
    put_utf8(p, &i, c);
    if (unit) {
      rc = emit_unit(t, p, prev2, prev, at, i, emit, ud);
      prev2 = prev;
      prev = at;
    } else {
      prev = prev2 = -1;
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
