/*
 * lexicon: Chinese word segmentation with a user dictionary, over the same
 * NFKC_Casefold (+ optional Traditional->Simplified) text as the icu and
 * bigram plugins (plugins/textprep.h).
 *
 * The dictionary is a plain UTF-8 word list, one word per line, optionally
 * followed by a TAB and a positive frequency; empty lines and lines starting
 * with '#' are skipped. It is read once, at create(), so a daemon reload
 * (which re-creates the tokenizer) picks up a changed file. Words are
 * normalized like the text (NFKC_Casefold, T->S if enabled) before they go
 * into the table, so a Traditional or full-width entry still matches.
 *
 * Segmentation. Each code point is CJK, word or separator exactly as in the
 * bigram plugin (tp_char_class). A run of word characters is one token. A
 * run of CJK characters is segmented by maximum probability (a unigram
 * language model, as in jieba): among all ways to cut the run into
 * dictionary words and single characters, take the one with the highest sum
 * of log P(piece), where P(word) = freq / total and a character that is not
 * itself a dictionary word gets P = 1 / (10 * total), below every word. With
 * no frequencies (all 1) this prefers the fewest pieces, i.e. long matches.
 * Ties go to the cut whose last piece is longer (deterministic).
 *
 * Unknown stretches (maximal runs of single characters that are not
 * dictionary words) go to the fallback:
 *   "bigram"  c1, c1c2, c2, ..., cn (the bigram plugin's tokens); default
 *   "chars"   c1, c2, ..., cn
 *   "icu"     ICU's dictionary word segmentation of the stretch
 * With "char_ngrams": true, a CJK run emits its dictionary words, then all
 * its character unigrams and bigrams (which cover the unknown stretches, so
 * the fallback is not used): one feature space holds both the domain words
 * and the character n-grams. A word of two characters is then the same token
 * as the bigram; that double count is intended (a known word is stronger
 * evidence).
 *
 * Options:
 *   "dictionary": path (required). Relative paths are opened relative to the
 *       process's working directory; a model bundle stores the file inside
 *       the bundle and the model loader rewrites the option to an absolute
 *       path before create() (docs/plugins.md, docs/model-format.md).
 *   "fallback": "bigram" | "chars" | "icu"          (default "bigram")
 *   "char_ngrams": false
 *   "traditional_to_simplified": false
 *
 * Threading: the dictionary is read-only after create(); per-call buffers
 * come from the textprep state pool plus one allocation per call for the
 * segmentation lattice.
 */
#include <themed/plugin.h>

#include <errno.h>
#include <math.h>

#include <unicode/uchar.h>
#include <unicode/uscript.h>
#include <unicode/utf16.h>
#include <unicode/utf8.h>

#include "textprep.h"

/* Longest dictionary word, in code points; longer lines are an error, so a
 * file that is not a word list (a corpus, a binary) fails loudly. */
#define LEX_MAX_WORD 16
/* Largest dictionary accepted, in bytes. */
#define LEX_MAX_FILE ((size_t)256 << 20)

enum { FB_BIGRAM, FB_CHARS, FB_ICU };

typedef struct lex_entry {
  uint32_t off;  /* into pool, UTF-16 units */
  uint16_t len;  /* UTF-16 units */
  uint16_t used; /* slot in use */
  uint32_t hash;
  double logp;
} lex_entry_t;

typedef struct lexicon_tok {
  tp_core_t core;
  int fallback, char_ngrams;
  UChar *pool;
  size_t pool_len, pool_cap;
  lex_entry_t *slots; /* open addressing, power-of-two size */
  size_t nslot, nword;
  int32_t max_len;    /* longest word, UTF-16 units */
  double unk_logp;    /* log P of a character that is not a word */
} lexicon_tok_t;

/* ---- the table ---- */

static uint32_t hash16(const UChar *s, int32_t n) {
  uint32_t h = 2166136261u; /* FNV-1a over the units */
  for (int32_t i = 0; i < n; i++) {
    h ^= s[i];
    h *= 16777619u;
  }
  return h;
}

static lex_entry_t *lex_find(const lexicon_tok_t *t, const UChar *s, int32_t n, uint32_t h) {
  size_t mask = t->nslot - 1;
  for (size_t i = h & mask;; i = (i + 1) & mask) {
    lex_entry_t *e = &t->slots[i];
    if (!e->used) return e;
    if (e->hash == h && e->len == n && memcmp(t->pool + e->off, s, (size_t)n * sizeof *s) == 0)
      return e;
  }
}

static int lex_grow(lexicon_tok_t *t) {
  size_t n = t->nslot ? t->nslot * 2 : 1024;
  lex_entry_t *old = t->slots, *sl = calloc(n, sizeof *sl);
  if (!sl) return -1;
  size_t on = t->nslot;
  t->slots = sl;
  t->nslot = n;
  for (size_t i = 0; i < on; i++)
    if (old[i].used) *lex_find(t, t->pool + old[i].off, old[i].len, old[i].hash) = old[i];
  free(old);
  return 0;
}

/* Adds (or adds frequency to) a normalized word; freq is summed over
 * duplicates so that "村" twice counts like "村<TAB>2". */
static int lex_add(lexicon_tok_t *t, const UChar *s, int32_t n, double freq) {
  if ((t->nword + 1) * 2 > t->nslot && lex_grow(t)) return -1;
  uint32_t h = hash16(s, n);
  lex_entry_t *e = lex_find(t, s, n, h);
  if (e->used) {
    e->logp += freq; /* holds the frequency until lex_finish */
    return 0;
  }
  if (t->pool_len + (size_t)n > t->pool_cap) {
    size_t cap = t->pool_cap ? t->pool_cap * 2 : 4096;
    while (cap < t->pool_len + (size_t)n) cap *= 2;
    UChar *p = realloc(t->pool, cap * sizeof *p);
    if (!p) return -1;
    t->pool = p;
    t->pool_cap = cap;
  }
  memcpy(t->pool + t->pool_len, s, (size_t)n * sizeof *s);
  *e = (lex_entry_t){(uint32_t)t->pool_len, (uint16_t)n, 1, h, freq};
  t->pool_len += (size_t)n;
  t->nword++;
  if (n > t->max_len) t->max_len = n;
  return 0;
}

static void lex_finish(lexicon_tok_t *t) {
  double total = 0;
  for (size_t i = 0; i < t->nslot; i++)
    if (t->slots[i].used) total += t->slots[i].logp;
  double lt = log(total);
  for (size_t i = 0; i < t->nslot; i++)
    if (t->slots[i].used) t->slots[i].logp = log(t->slots[i].logp) - lt;
  t->unk_logp = -log(10.0 * total);
}

static double lex_logp(const lexicon_tok_t *t, const UChar *s, int32_t n) {
  if (!t->nslot) return 1; /* > 0: not a word */
  const lex_entry_t *e = lex_find(t, s, n, hash16(s, n));
  return e->used ? e->logp : 1;
}

/* ---- loading ---- */

static int parse_freq(const char *s, size_t n, double *out) {
  char buf[64];
  if (n == 0 || n >= sizeof buf) return -1;
  memcpy(buf, s, n);
  buf[n] = '\0';
  char *end;
  errno = 0;
  double v = strtod(buf, &end);
  if (errno || *end || !(v > 0) || !isfinite(v)) return -1;
  *out = v;
  return 0;
}

/* Reads and normalizes the word list. A state from the pool does the
 * normalization, exactly as tokenize() prepares text. */
static int lex_load(lexicon_tok_t *t, const char *path, char *errbuf, size_t errlen) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    tp_errf(errbuf, errlen, "dictionary %s: %s", path, strerror(errno));
    return -1;
  }
  tp_state_t *s = tp_acquire(&t->core, errbuf, errlen);
  if (!s) {
    fclose(f);
    return -1;
  }
  char *line = NULL;
  size_t cap = 0, lineno = 0, bytes = 0;
  ssize_t got;
  int rc = 0;
  while (rc == 0 && (got = getline(&line, &cap, f)) >= 0) {
    lineno++;
    bytes += (size_t)got;
    if (bytes > LEX_MAX_FILE) {
      tp_errf(errbuf, errlen, "dictionary %s: larger than %zu bytes", path, LEX_MAX_FILE);
      rc = -1;
      break;
    }
    size_t n = (size_t)got;
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r')) n--;
    size_t skip = lineno == 1 && n >= 3 && memcmp(line, "\xEF\xBB\xBF", 3) == 0 ? 3 : 0;
    const char *w = line + skip;
    n -= skip;
    if (n == 0 || w[0] == '#') continue;
    const char *tab = memchr(w, '\t', n);
    size_t wn = tab ? (size_t)(tab - w) : n;
    double freq = 1;
    if (tab && parse_freq(tab + 1, n - wn - 1, &freq)) {
      tp_errf(errbuf, errlen, "dictionary %s line %zu: frequency \"%.*s\" is not a positive number",
              path, lineno, (int)(n - wn - 1 > 32 ? 32 : n - wn - 1), tab + 1);
      rc = -1;
      break;
    }
    if (wn == 0) {
      tp_errf(errbuf, errlen, "dictionary %s line %zu: empty word", path, lineno);
      rc = -1;
      break;
    }
    /* Strict UTF-8, no spaces or control characters inside a word. */
    int32_t cps = 0;
    for (int32_t i = 0; i < (int32_t)wn;) {
      UChar32 c;
      U8_NEXT(w, i, (int32_t)wn, c);
      if (c < 0 || c < 0x20 || c == ' ' || c == 0x3000 || c == 0x7F) {
        tp_errf(errbuf, errlen, "dictionary %s line %zu: %s", path, lineno,
                c < 0 ? "invalid UTF-8" : "a word cannot contain spaces or control characters");
        rc = -1;
        break;
      }
      cps++;
    }
    if (rc) break;
    if (cps > LEX_MAX_WORD) {
      tp_errf(errbuf, errlen, "dictionary %s line %zu: word longer than %d characters", path,
              lineno, LEX_MAX_WORD);
      rc = -1;
      break;
    }
    const UChar *u;
    int32_t un;
    if (tp_prepare(&t->core, s, w, wn, &u, &un, errbuf, errlen)) {
      rc = -1;
      break;
    }
    if (un > 0 && lex_add(t, u, un, freq)) {
      tp_errf(errbuf, errlen, "dictionary %s: out of memory", path);
      rc = -1;
    }
  }
  if (rc == 0 && ferror(f)) {
    tp_errf(errbuf, errlen, "dictionary %s: read error", path);
    rc = -1;
  }
  if (rc == 0 && t->nword == 0) {
    tp_errf(errbuf, errlen, "dictionary %s: no words", path);
    rc = -1;
  }
  free(line);
  fclose(f);
  tp_release(&t->core, s);
  if (rc == 0) lex_finish(t);
  return rc;
}

/* ---- create / destroy ---- */

static void lexicon_destroy(void *inst) {
  lexicon_tok_t *t = inst;
  tp_core_free(&t->core);
  free(t->pool);
  free(t->slots);
  free(t);
}

static int lexicon_create(const json_t *options, void **out, char *errbuf, size_t errlen) {
  static const char known[] = "dictionary, fallback, char_ngrams, traditional_to_simplified";
  const char *dict = NULL;
  int fallback = FB_BIGRAM, t2s = 0, ngrams = 0;
  if (!json_is_object(options)) {
    tp_errf(errbuf, errlen, "options must be a JSON object");
    return -1;
  }
  const char *key;
  json_t *val;
  json_object_foreach((json_t *)options, key, val) {
    if (!strcmp(key, "dictionary")) {
      if (!json_is_string(val) || !json_string_length(val)) {
        tp_errf(errbuf, errlen, "option \"dictionary\" must be a non-empty string (a file path)");
        return -1;
      }
      dict = json_string_value(val);
    } else if (!strcmp(key, "fallback")) {
      const char *v = json_string_value(val);
      if (v && !strcmp(v, "bigram")) fallback = FB_BIGRAM;
      else if (v && !strcmp(v, "chars")) fallback = FB_CHARS;
      else if (v && !strcmp(v, "icu")) fallback = FB_ICU;
      else {
        tp_errf(errbuf, errlen, "option \"fallback\" must be \"bigram\", \"chars\" or \"icu\"");
        return -1;
      }
    } else if (!strcmp(key, "char_ngrams") || !strcmp(key, "traditional_to_simplified")) {
      if (!json_is_boolean(val)) {
        tp_errf(errbuf, errlen, "option \"%s\" must be true or false", key);
        return -1;
      }
      *(key[0] == 'c' ? &ngrams : &t2s) = json_is_true(val);
    } else {
      tp_errf(errbuf, errlen, "unknown option \"%.64s\" (known: %s)", key, known);
      return -1;
    }
  }
  if (!dict) {
    tp_errf(errbuf, errlen, "option \"dictionary\" is required (a word list, one word per line)");
    return -1;
  }
  lexicon_tok_t *t = calloc(1, sizeof *t);
  if (!t) {
    tp_errf(errbuf, errlen, "out of memory");
    return -1;
  }
  t->fallback = fallback;
  t->char_ngrams = ngrams;
  if (tp_core_init(&t->core, fallback == FB_ICU, t2s, errbuf, errlen) != 0) {
    free(t);
    return -1;
  }
  if (lex_load(t, dict, errbuf, errlen) != 0) {
    lexicon_destroy(t);
    return -1;
  }
  *out = t;
  return 0;
}

/* ---- tokenize ---- */

typedef struct emitter {
  tp_state_t *s;
  themed_emit_cb emit;
  void *ud;
  char *errbuf;
  size_t errlen;
} emitter_t;

/* Emits u[0..n) as UTF-8 (well-formed after tp_prepare; a lone surrogate
 * becomes U+FFFD through ICU's conversion). */
static int emit16(emitter_t *e, const UChar *u, int32_t n) {
  int32_t m = tp_to_utf8(e->s, u, n, e->errbuf, e->errlen);
  if (m < 0) return -1;
  return e->emit(e->ud, e->s->u8, (size_t)m);
}

/* Code point boundaries of a CJK run: pos[0..nc] in UTF-16 units. */
static int fallback_stretch(lexicon_tok_t *t, emitter_t *e, const UChar *u, const int32_t *pos,
                            int32_t a, int32_t b) {
  int rc = 0;
  if (t->fallback == FB_ICU) {
    UErrorCode st = U_ZERO_ERROR;
    int32_t base = pos[a];
    ubrk_setText(e->s->bi, u + base, pos[b] - base, &st);
    if (U_FAILURE(st)) {
      tp_errf(e->errbuf, e->errlen, "ICU ubrk_setText: %s", u_errorName(st));
      return -1;
    }
    int32_t start = ubrk_first(e->s->bi), end;
    while (rc == 0 && (end = ubrk_next(e->s->bi)) != UBRK_DONE) {
      int32_t rs = ubrk_getRuleStatus(e->s->bi);
      if (rs >= UBRK_WORD_NUMBER && rs < UBRK_WORD_IDEO_LIMIT)
        rc = emit16(e, u + base + start, end - start);
      start = end;
    }
    return rc;
  }
  for (int32_t i = a; rc == 0 && i < b; i++) {
    if (t->fallback == FB_BIGRAM && i > a) rc = emit16(e, u + pos[i - 1], pos[i + 1] - pos[i - 1]);
    if (rc == 0) rc = emit16(e, u + pos[i], pos[i + 1] - pos[i]);
  }
  return rc;
}

/*
 * One CJK run of nc code points at u + pos[0]; pos[nc] is its end. Scratch
 * of nc + 1 slots each: best score and back pointer (the last piece's length
 * in code points) per position, and the cut points of the best path.
 */
static int segment_run(lexicon_tok_t *t, emitter_t *e, const UChar *u, const int32_t *pos,
                       int32_t nc, double *best, int32_t *back, int32_t *cut) {
  best[0] = 0;
  for (int32_t i = 1; i <= nc; i++) {
    best[i] = -INFINITY;
    back[i] = 1;
    for (int32_t l = 1; l <= i; l++) {
      int32_t j = i - l, n16 = pos[i] - pos[j];
      if (n16 > t->max_len && l > 1) break;
      double lp = lex_logp(t, u + pos[j], n16);
      if (lp > 0) {
        if (l > 1) continue;
        lp = t->unk_logp;
      }
      double sc = best[j] + lp;
      if (sc > best[i] || (sc == best[i] && l > back[i])) {
        best[i] = sc;
        back[i] = l;
      }
    }
  }
  /* Walk back from the end; cut[ncut-1] is the first piece's end, cut[0] == nc. */
  int32_t ncut = 0;
  for (int32_t i = nc; i > 0; i -= back[i]) cut[ncut++] = i;
  int rc = 0;
  int32_t start = 0, unk = -1; /* start of the pending unknown stretch */
  for (int32_t k = ncut - 1; rc == 0 && k >= 0; k--) {
    int32_t end = cut[k];
    int known = end - start > 1 || lex_logp(t, u + pos[start], pos[end] - pos[start]) <= 0;
    if (known) {
      if (unk >= 0 && !t->char_ngrams) rc = fallback_stretch(t, e, u, pos, unk, start);
      unk = -1;
      if (rc == 0) rc = emit16(e, u + pos[start], pos[end] - pos[start]);
    } else if (unk < 0) {
      unk = start;
    }
    start = end;
  }
  if (rc == 0 && unk >= 0 && !t->char_ngrams) rc = fallback_stretch(t, e, u, pos, unk, nc);
  if (rc == 0 && t->char_ngrams) {
    for (int32_t i = 0; rc == 0 && i < nc; i++) {
      if (i > 0) rc = emit16(e, u + pos[i - 1], pos[i + 1] - pos[i - 1]);
      if (rc == 0) rc = emit16(e, u + pos[i], pos[i + 1] - pos[i]);
    }
  }
  return rc;
}

static int lexicon_tokenize(void *inst, const char *text, size_t len, themed_emit_cb emit,
                            void *ud, char *errbuf, size_t errlen) {
  lexicon_tok_t *t = inst;
  if (len == 0) return 0;
  tp_state_t *s = tp_acquire(&t->core, errbuf, errlen);
  if (!s) return -1;
  const UChar *u;
  int32_t n = 0;
  int rc = tp_prepare(&t->core, s, text, len, &u, &n, errbuf, errlen);
  /* The lattice for the longest possible run: one allocation per call. */
  int32_t *pos = NULL, *back = NULL, *cut = NULL;
  double *best = NULL;
  void *mem = NULL;
  if (rc == 0) {
    size_t m = (size_t)n + 2;
    mem = malloc(m * (3 * sizeof(int32_t) + sizeof(double)));
    if (!mem) {
      tp_errf(errbuf, errlen, "out of memory");
      rc = -1;
    } else {
      best = mem;
      pos = (int32_t *)(best + m);
      back = pos + m;
      cut = back + m;
    }
  }
  emitter_t e = {s, emit, ud, errbuf, errlen};
  int32_t word = -1, nc = 0; /* current word run start; code points in the CJK run */
  for (int32_t i = 0; rc == 0 && i <= n;) {
    int32_t at = i;
    int cls = TP_CLS_SEP;
    if (i < n) {
      UChar32 c;
      U16_NEXT(u, i, n, c);
      cls = tp_char_class(c, word >= 0);
    } else {
      i++; /* the end acts as one last separator */
    }
    if (cls != TP_CLS_WORD && word >= 0) {
      rc = emit16(&e, u + word, at - word);
      word = -1;
      if (rc) break;
    }
    if (cls == TP_CLS_CJK) {
      pos[nc++] = at;
      continue;
    }
    if (nc) {
      pos[nc] = at;
      rc = segment_run(t, &e, u, pos, nc, best, back, cut);
      nc = 0;
      if (rc) break;
    }
    if (cls == TP_CLS_WORD && word < 0) word = at;
  }
  free(mem);
  tp_release(&t->core, s);
  return rc;
}

static const themed_tokenizer_api_t lexicon_api = THEMED_TOKENIZER_INIT(
    .name = "lexicon", .version = "1.0.0",
    .description = "Chinese words from a user dictionary (maximum probability), fallback "
                   "bigram/chars/icu for unknown stretches, NFKC_Casefold, optional "
                   "Traditional->Simplified",
    .create = lexicon_create, .destroy = lexicon_destroy, .tokenize = lexicon_tokenize);

THEMED_EXPORT const themed_tokenizer_api_t *themed_tokenizer_get_api(void);
const themed_tokenizer_api_t *themed_tokenizer_get_api(void) { return &lexicon_api; }
