/*
 * Text preparation shared by the icu and bigram tokenizer plugins, so both
 * see exactly the same normalized text and their features line up:
 *
 *   UTF-8 -> UTF-16 (invalid bytes become U+FFFD, which both plugins treat as
 *   a separator) -> NFKC_Casefold -> optional Traditional -> Simplified.
 *
 * Header-only (static inline) because the Makefile builds each plugin from
 * its one .c file; each .so gets its own private copy.
 *
 * Threading. The daemon calls tokenize() on one instance from many threads.
 * ICU break iterators are not thread-safe, so each caller needs its own clone
 * plus scratch buffers. We keep them in a small per-instance pool (a mutex-
 * protected free list): a call pops a state, or clones a new one when all are
 * busy, and pushes it back when done. The pool grows to the peak number of
 * concurrent callers and never allocates in steady state. We chose this over
 * pthread_key per-thread caches because a key destructor is code inside this
 * .so: a worker thread exiting after the host dlclose()d the plugin would
 * jump into unmapped memory, and a thread exiting while destroy() runs would
 * race on the instance. The pool has neither problem and costs two
 * uncontended lock/unlock pairs per call, noise next to normalization.
 *
 * Traditional -> Simplified. ICU's "Traditional-Simplified" transliterator
 * is rule-based, and ICU serializes every rule-based transliteration in the
 * process on one global mutex (RuleBasedTransliterator::handleTransliterate),
 * clones included; it also costs ~200 ns per character. At create() we read
 * its rules (utrans_toRules): they are plain context-free "lhs > rhs;" rules
 * (~4000, phrases before single characters). We apply them ourselves with
 * ICU's own semantics (at each position the first rule in rule order whose
 * lhs matches wins, and the cursor moves past it; otherwise one code point
 * is copied), which is lock-free and much faster; tests check the output is
 * identical to ICU's. If a future ICU ships rules with any other syntax, we
 * fall back to per-state clones of the ICU transliterator (correct, only
 * slower under concurrency).
 */
#ifndef THEMED_PLUGINS_TEXTPREP_H
#define THEMED_PLUGINS_TEXTPREP_H

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unicode/ubrk.h>
#include <unicode/uchar.h>
#include <unicode/unorm2.h>
#include <unicode/udata.h>
#include <unicode/ures.h>
#include <unicode/uscript.h>
#include <unicode/ustring.h>
#include <unicode/utrans.h>

/* Longest text accepted: keeps every UTF-16 length well inside int32_t. */
#define TP_MAX_TEXT ((size_t)INT32_MAX / 4)

static inline void tp_errf(char *errbuf, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static inline void tp_errf(char *errbuf, size_t errlen, const char *fmt, ...) {
  if (!errbuf || !errlen) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(errbuf, errlen, fmt, ap);
  va_end(ap);
}

/* ---- character classes (bigram, lexicon) ---------------------------------- */

/*
 * After preparation each code point is one of:
 *   CJK   alphabetic and of Han, Hiragana, Katakana or Hangul script
 *         (Script_Extensions, so the prolonged sound mark ー counts);
 *   word  any other alphabetic character or decimal digit, and combining
 *         marks that continue a word (in_word: the previous one was word);
 *   separator  everything else: spaces, punctuation, symbols, emoji, U+FFFD.
 */
enum { TP_CLS_SEP, TP_CLS_CJK, TP_CLS_WORD };

static inline int tp_char_class(UChar32 c, int in_word) {
  if (c < 0x80)
    return ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') || (c >= '0' && c <= '9') ? TP_CLS_WORD
                                                                              : TP_CLS_SEP;
  if (c >= 0x4E00 && c <= 0x9FFF) return TP_CLS_CJK; /* the common case, no lookups */
  if (u_hasBinaryProperty(c, UCHAR_ALPHABETIC)) {
    UErrorCode st = U_ZERO_ERROR;
    UScriptCode sc = uscript_getScript(c, &st);
    if (sc == USCRIPT_HAN || sc == USCRIPT_HIRAGANA || sc == USCRIPT_KATAKANA ||
        sc == USCRIPT_HANGUL)
      return TP_CLS_CJK;
    /* Shared characters (ー, 々-like marks) carry their scripts in scx. */
    if ((sc == USCRIPT_COMMON || sc == USCRIPT_INHERITED) &&
        (uscript_hasScript(c, USCRIPT_HAN) || uscript_hasScript(c, USCRIPT_HIRAGANA) ||
         uscript_hasScript(c, USCRIPT_KATAKANA) || uscript_hasScript(c, USCRIPT_HANGUL)))
      return TP_CLS_CJK;
    return TP_CLS_WORD;
  }
  if (u_isdigit(c)) return TP_CLS_WORD;
  if (in_word && (U_GET_GC_MASK(c) & U_GC_M_MASK)) return TP_CLS_WORD;
  return TP_CLS_SEP;
}

/* ---- options ------------------------------------------------------------ */

typedef struct tp_bool_opt {
  const char *key;
  int *value; /* holds the default on entry */
} tp_bool_opt_t;

/* Every option of both plugins is a boolean; any unknown key is an error. */
static inline int tp_parse_bool_opts(const json_t *options, const tp_bool_opt_t *opts,
                                     size_t n, char *errbuf, size_t errlen) {
  if (!options) return 0;
  if (!json_is_object(options)) {
    tp_errf(errbuf, errlen, "options must be a JSON object");
    return -1;
  }
  const char *key;
  json_t *val;
  /* jansson's iteration macro takes a non-const object; we only read it. */
  json_object_foreach((json_t *)options, key, val) {
    size_t i = 0;
    while (i < n && strcmp(opts[i].key, key) != 0) i++;
    if (i == n) {
      char known[256] = "";
      for (size_t k = 0; k < n; k++) {
        size_t used = strlen(known);
        snprintf(known + used, sizeof known - used, "%s%s", k ? ", " : "", opts[k].key);
      }
      tp_errf(errbuf, errlen, "unknown option \"%.64s\" (known: %s)", key, known);
      return -1;
    }
    if (!json_is_boolean(val)) {
      tp_errf(errbuf, errlen, "option \"%s\" must be true or false", key);
      return -1;
    }
    *opts[i].value = json_is_true(val);
  }
  return 0;
}

/* ---- Traditional -> Simplified rule table -------------------------------- */

typedef struct tp_t2s_rule {
  uint32_t lhs, rhs;         /* offsets into tp_t2s_t.pool */
  uint16_t lhs_len, rhs_len; /* in UTF-16 units */
  uint32_t order;            /* position in ICU's rule list */
} tp_t2s_rule_t;

typedef struct tp_t2s {
  UChar *pool;
  tp_t2s_rule_t *rules; /* sorted by (first unit of lhs, order) */
  uint32_t nrules;
  uint32_t grow;        /* output never exceeds grow * input units */
  uint64_t first[65536 / 64]; /* bit u set: some lhs starts with unit u */
  uint16_t *lo;         /* lo[u]: the first rule starting with u (where the bit is
                           set); a binary search found it, once per character of
                           text that starts a rule -- most Han text (bench/NOTES.md).
                           NULL if the rules do not fit 16 bits. */
} tp_t2s_t;

static inline void tp_t2s_free(tp_t2s_t *t) {
  if (!t) return;
  free(t->pool);
  free(t->rules);
  free(t->lo);
  free(t);
}

static inline int tp_t2s_cmp(const void *a, const void *b, void *pool) {
  const tp_t2s_rule_t *x = a, *y = b;
  const UChar *p = pool;
  if (p[x->lhs] != p[y->lhs]) return p[x->lhs] < p[y->lhs] ? -1 : 1;
  return x->order < y->order ? -1 : x->order > y->order;
}

static inline int tp_is_space(UChar c) { return c == ' ' || c == '\n' || c == '\t' || c == '\r'; }

/*
 * Parses utrans_toRules() output. Returns the table, or NULL if any rule
 * uses syntax beyond "lhs > rhs;" with non-ASCII text on both sides (quotes,
 * sets, variables, contexts, cursors, filters, ...), or on no memory.
 */
static inline tp_t2s_t *tp_t2s_parse(const UChar *r, int32_t n) {
  tp_t2s_t *t = calloc(1, sizeof *t);
  if (!t) return NULL;
  t->pool = malloc(((size_t)n + 1) * sizeof(UChar));
  size_t cap = 64;
  t->rules = malloc(cap * sizeof *t->rules);
  if (!t->pool || !t->rules) goto fail;
  uint32_t used = 0;
  t->grow = 1;
  int32_t i = 0;
  for (;;) {
    while (i < n && tp_is_space(r[i])) i++;
    if (i == n) break;
    int32_t l0 = i;
    while (i < n && r[i] >= 0x80) i++;
    int32_t l1 = i;
    while (i < n && r[i] == ' ') i++;
    if (l1 == l0 || i == n || r[i] != '>') goto fail;
    i++;
    while (i < n && r[i] == ' ') i++;
    int32_t r0 = i;
    while (i < n && r[i] >= 0x80) i++;
    int32_t r1 = i;
    if (i == n || r[i] != ';' || l1 - l0 > UINT16_MAX || r1 - r0 > UINT16_MAX) goto fail;
    i++;
    if (t->nrules == cap) {
      void *p = realloc(t->rules, 2 * cap * sizeof *t->rules);
      if (!p) goto fail;
      t->rules = p;
      cap *= 2;
    }
    tp_t2s_rule_t *rule = &t->rules[t->nrules];
    rule->lhs = used;
    rule->lhs_len = (uint16_t)(l1 - l0);
    memcpy(t->pool + used, r + l0, (size_t)(l1 - l0) * sizeof(UChar));
    used += (uint32_t)(l1 - l0);
    rule->rhs = used;
    rule->rhs_len = (uint16_t)(r1 - r0);
    memcpy(t->pool + used, r + r0, (size_t)(r1 - r0) * sizeof(UChar));
    used += (uint32_t)(r1 - r0);
    rule->order = t->nrules++;
    uint32_t g = (rule->rhs_len + rule->lhs_len - 1u) / rule->lhs_len;
    if (g > t->grow) t->grow = g;
    UChar u = t->pool[rule->lhs];
    t->first[u >> 6] |= 1ull << (u & 63);
  }
  if (t->nrules == 0) goto fail;
  qsort_r(t->rules, t->nrules, sizeof *t->rules, tp_t2s_cmp, t->pool);
  if (t->nrules <= UINT16_MAX && (t->lo = malloc(65536 * sizeof *t->lo)))
    for (uint32_t k = t->nrules; k-- > 0;) t->lo[t->pool[t->rules[k].lhs]] = (uint16_t)k;
  return t;
fail:
  tp_t2s_free(t);
  return NULL;
}

/* Converts s[0..n) into out (capacity >= grow * n); returns the output length. */
static inline int32_t tp_t2s_apply(const tp_t2s_t *t, const UChar *s, int32_t n,
                                   UChar *out) {
  int32_t i = 0, o = 0;
  while (i < n) {
    UChar u = s[i];
    if (t->first[u >> 6] >> (u & 63) & 1) {
      /* lower bound of rules starting with u */
      uint32_t lo = 0, hi = t->nrules;
      if (t->lo) {
        lo = t->lo[u];
      } else {
        while (lo < hi) {
          uint32_t mid = lo + (hi - lo) / 2;
          if (t->pool[t->rules[mid].lhs] < u) lo = mid + 1;
          else hi = mid;
        }
      }
      const tp_t2s_rule_t *hit = NULL;
      for (uint32_t k = lo; k < t->nrules && t->pool[t->rules[k].lhs] == u; k++) {
        const tp_t2s_rule_t *rl = &t->rules[k];
        const UChar *lhs = t->pool + rl->lhs;
        /* the second unit first: most phrase rules fail there */
        if (rl->lhs_len <= n - i &&
            (rl->lhs_len == 1 ||
             (lhs[1] == s[i + 1] &&
              memcmp(lhs + 2, s + i + 2, (rl->lhs_len - 2u) * sizeof(UChar)) == 0))) {
          hit = rl;
          break;
        }
      }
      if (hit) {
        memcpy(out + o, t->pool + hit->rhs, hit->rhs_len * sizeof(UChar));
        o += hit->rhs_len;
        i += hit->lhs_len;
        continue;
      }
    }
    out[o++] = s[i++];
    if (U16_IS_LEAD(u) && i < n && U16_IS_TRAIL(s[i])) out[o++] = s[i++];
  }
  return o;
}

/* ---- per-caller state pool ----------------------------------------------- */

typedef struct tp_state {
  struct tp_state *next;
  UBreakIterator *bi;  /* clone of tp_core_t.bi, if the plugin wants one */
  UTransliterator *tr; /* clone of tp_core_t.tr (fallback T->S only) */
  UChar *a, *b;        /* UTF-16 work buffers */
  int32_t acap, bcap;
  char *u8;            /* UTF-8 output buffer */
  size_t u8cap;
} tp_state_t;

typedef struct tp_core {
  const UNormalizer2 *norm; /* ICU's shared NFKC_Casefold instance (thread-safe) */
  tp_t2s_t *t2s;            /* fast T->S table, or NULL */
  UTransliterator *tr;      /* fallback T->S prototype, only ever cloned */
  UBreakIterator *bi;       /* word break prototype, only ever cloned */
  int t2s_from_data;        /* the T->S rules were compiled from ICU's data
                               directly (tp_t2s_from_data), not via the registry */
  pthread_mutex_t mu;
  tp_state_t *idle;         /* free list, guarded by mu */
} tp_core_t;

static inline void tp_state_free(tp_state_t *s) {
  if (!s) return;
  if (s->bi) ubrk_close(s->bi);
  if (s->tr) utrans_close(s->tr);
  free(s->a);
  free(s->b);
  free(s->u8);
  free(s);
}

static inline void tp_core_free(tp_core_t *c) {
  while (c->idle) {
    tp_state_t *s = c->idle;
    c->idle = s->next;
    tp_state_free(s);
  }
  if (c->bi) ubrk_close(c->bi);
  if (c->tr) utrans_close(c->tr);
  tp_t2s_free(c->t2s);
  pthread_mutex_destroy(&c->mu);
}

/*
 * ICU's Traditional-Simplified, compiled by ICU from the rules in its own
 * transliteration data, without the transliterator registry. Opening it by
 * ID first builds the registry (every ID ICU knows, in a case-insensitive
 * table): a third of a model load's CPU (bench/NOTES.md). The registry's
 * Traditional-Simplified (alias Hant-Hans) is exactly this entry of the
 * data: its rules, in the direction the entry names; utrans_toRules gives
 * the same rules either way, and tests/unit/test_tokenizers.c checks the
 * result against the registry's transliterator. NULL when the data does not
 * have this shape (another ICU): the caller then opens it by ID.
 */
static inline UTransliterator *tp_t2s_from_data(void) {
  UErrorCode st = U_ZERO_ERROR;
  UResourceBundle *root = ures_openDirect(U_ICUDATA_NAME U_TREE_SEPARATOR_STRING "translit",
                                          "root", &st);
  UResourceBundle *ids = ures_getByKey(root, "RuleBasedTransliteratorIDs", NULL, &st);
  UResourceBundle *entry = ures_getByKey(ids, "Hant-Hans", NULL, &st);
  UResourceBundle *file = ures_getByKey(entry, "file", NULL, &st);
  int32_t rlen = 0, dlen = 0;
  const UChar *rules = ures_getStringByKey(file, "resource", &rlen, &st);
  const UChar *dir = ures_getStringByKey(file, "direction", &dlen, &st);
  UTransliterator *tr = NULL;
  if (U_SUCCESS(st) && rules && dir && rlen > 0) {
    UChar fwd[8], rev[8], id[16];
    u_uastrcpy(fwd, "FORWARD");
    u_uastrcpy(rev, "REVERSE");
    u_uastrcpy(id, "Hant-Hans");
    int is_fwd = dlen == 7 && u_strncmp(dir, fwd, 7) == 0;
    int is_rev = dlen == 7 && u_strncmp(dir, rev, 7) == 0;
    if (is_fwd || is_rev) {
      UParseError pe;
      tr = utrans_openU(id, -1, is_fwd ? UTRANS_FORWARD : UTRANS_REVERSE, rules, rlen, &pe, &st);
      if (U_FAILURE(st)) tr = NULL;
    }
  }
  ures_close(file);
  ures_close(entry);
  ures_close(ids);
  ures_close(root);
  return tr;
}

static inline int tp_t2s_init(tp_core_t *c, char *errbuf, size_t errlen) {
  static const char *const ids[] = {"Traditional-Simplified", "Hant-Hans"};
  UErrorCode st = U_ZERO_ERROR;
  UTransliterator *tr = tp_t2s_from_data();
  c->t2s_from_data = tr != NULL;
  for (size_t i = 0; i < sizeof ids / sizeof ids[0] && !tr; i++) {
    UChar id[32];
    u_uastrcpy(id, ids[i]);
    st = U_ZERO_ERROR;
    tr = utrans_openU(id, -1, UTRANS_FORWARD, NULL, 0, NULL, &st);
    if (U_FAILURE(st)) tr = NULL;
  }
  if (!tr) {
    tp_errf(errbuf, errlen,
            "traditional_to_simplified: ICU transliterator Traditional-Simplified "
            "unavailable (%s)", u_errorName(st));
    return -1;
  }
  st = U_ZERO_ERROR;
  int32_t n = utrans_toRules(tr, 0, NULL, 0, &st);
  UChar *rules = (st == U_BUFFER_OVERFLOW_ERROR || U_SUCCESS(st))
                     ? malloc(((size_t)n + 1) * sizeof(UChar)) : NULL;
  if (rules) {
    st = U_ZERO_ERROR;
    n = utrans_toRules(tr, 0, rules, n + 1, &st);
    if (U_SUCCESS(st)) c->t2s = tp_t2s_parse(rules, n);
    free(rules);
  }
  if (c->t2s) utrans_close(tr);
  else c->tr = tr; /* unexpected rule syntax: use ICU itself */
  return 0;
}

/*
 * Sets up the core. want_break: the plugin needs a word break iterator.
 * Returns 0, or -1 with a message in errbuf.
 */
static inline int tp_core_init(tp_core_t *c, int want_break, int t2s, char *errbuf,
                               size_t errlen) {
  memset(c, 0, sizeof *c);
  if (pthread_mutex_init(&c->mu, NULL) != 0) {
    tp_errf(errbuf, errlen, "pthread_mutex_init failed");
    return -1;
  }
  UErrorCode st = U_ZERO_ERROR;
  c->norm = unorm2_getNFKCCasefoldInstance(&st);
  if (U_FAILURE(st)) {
    tp_errf(errbuf, errlen, "ICU NFKC_Casefold normalizer unavailable (%s)", u_errorName(st));
    goto fail;
  }
  if (want_break) {
    /* "zh": the CJK dictionary segments Han runs into words whatever the
     * locale; naming it just states intent and silences root fallback. */
    st = U_ZERO_ERROR;
    c->bi = ubrk_open(UBRK_WORD, "zh", NULL, 0, &st);
    if (U_FAILURE(st)) {
      c->bi = NULL;
      tp_errf(errbuf, errlen, "ICU word break iterator unavailable (%s)", u_errorName(st));
      goto fail;
    }
  }
  if (t2s && tp_t2s_init(c, errbuf, errlen) != 0) goto fail;
  return 0;
fail:
  tp_core_free(c);
  return -1;
}

/* Takes an idle state or makes one; NULL with a message on failure. */
static inline tp_state_t *tp_acquire(tp_core_t *c, char *errbuf, size_t errlen) {
  pthread_mutex_lock(&c->mu);
  tp_state_t *s = c->idle;
  if (s) {
    c->idle = s->next;
    pthread_mutex_unlock(&c->mu);
    return s;
  }
  /* Cloning reads the prototypes, so it stays under the lock; it only
   * happens until the pool reaches the peak number of concurrent callers. */
  UErrorCode st = U_ZERO_ERROR;
  s = calloc(1, sizeof *s);
  if (s && c->bi) s->bi = ubrk_clone(c->bi, &st);
  if (s && c->tr && U_SUCCESS(st)) s->tr = utrans_clone(c->tr, &st);
  pthread_mutex_unlock(&c->mu);
  if (!s || U_FAILURE(st)) {
    tp_errf(errbuf, errlen, "cannot make tokenizer state (%s)",
            s ? u_errorName(st) : "out of memory");
    tp_state_free(s);
    return NULL;
  }
  return s;
}

static inline void tp_release(tp_core_t *c, tp_state_t *s) {
  pthread_mutex_lock(&c->mu);
  s->next = c->idle;
  c->idle = s;
  pthread_mutex_unlock(&c->mu);
}

static inline int tp_grow16(UChar **p, int32_t *cap, int64_t need) {
  if (need <= *cap) return 0;
  if (need > INT32_MAX) return -1;
  int64_t n = *cap ? *cap : 256;
  while (n < need) n *= 2;
  if (n > INT32_MAX) n = INT32_MAX;
  UChar *q = realloc(*p, (size_t)n * sizeof(UChar));
  if (!q) return -1;
  *p = q;
  *cap = (int32_t)n;
  return 0;
}

static inline int tp_grow8(tp_state_t *s, size_t need) {
  if (need <= s->u8cap) return 0;
  size_t n = s->u8cap ? s->u8cap : 1024;
  while (n < need) n *= 2;
  char *q = realloc(s->u8, n);
  if (!q) return -1;
  s->u8 = q;
  s->u8cap = n;
  return 0;
}

/*
 * Runs the pipeline on text[0..len) (len > 0) into the state's buffers and
 * points *out / *outlen at the prepared UTF-16. Returns 0, or -1 with a
 * message.
 */
static inline int tp_prepare(const tp_core_t *c, tp_state_t *s, const char *text,
                             size_t len, const UChar **out, int32_t *outlen,
                             char *errbuf, size_t errlen) {
  if (len > TP_MAX_TEXT) {
    tp_errf(errbuf, errlen, "text of %zu bytes exceeds the %zu-byte limit", len, TP_MAX_TEXT);
    return -1;
  }
  UErrorCode st = U_ZERO_ERROR;
  int32_t n = 0;
  /* A UTF-8 byte never yields more than one UTF-16 unit. */
  if (tp_grow16(&s->a, &s->acap, (int64_t)len + 1)) goto nomem;
  u_strFromUTF8WithSub(s->a, s->acap, &n, text, (int32_t)len, 0xFFFD, NULL, &st);
  if (U_FAILURE(st)) goto icu;

  /* NFKC_Casefold; the first try usually fits, else retry at the exact size. */
  if (tp_grow16(&s->b, &s->bcap, (int64_t)n + n / 4 + 16)) goto nomem;
  int32_t m = unorm2_normalize(c->norm, s->a, n, s->b, s->bcap, &st);
  if (st == U_BUFFER_OVERFLOW_ERROR) {
    st = U_ZERO_ERROR;
    if (tp_grow16(&s->b, &s->bcap, (int64_t)m + 1)) goto nomem;
    m = unorm2_normalize(c->norm, s->a, n, s->b, s->bcap, &st);
  }
  if (U_FAILURE(st)) goto icu;

  if (c->t2s) {
    if (tp_grow16(&s->a, &s->acap, (int64_t)m * c->t2s->grow + 1)) goto nomem;
    *out = s->a;
    *outlen = tp_t2s_apply(c->t2s, s->b, m, s->a);
  } else if (s->tr) {
    /* In place; Traditional-Simplified never lengthens text, 2x is slack. */
    int32_t limit = m, tlen = m;
    if (tp_grow16(&s->b, &s->bcap, (int64_t)m * 2 + 16)) goto nomem;
    utrans_transUChars(s->tr, s->b, &tlen, s->bcap, 0, &limit, &st);
    if (U_FAILURE(st)) goto icu;
    *out = s->b;
    *outlen = tlen;
  } else {
    *out = s->b;
    *outlen = m;
  }
  return 0;
nomem:
  tp_errf(errbuf, errlen, "out of memory preparing %zu bytes of text", len);
  return -1;
icu:
  tp_errf(errbuf, errlen, "ICU error preparing text: %s", u_errorName(st));
  return -1;
}

/* UTF-16 -> UTF-8 into s->u8 (NUL-terminated); returns the length or -1. */
static inline int32_t tp_to_utf8(tp_state_t *s, const UChar *u, int32_t n, char *errbuf,
                                 size_t errlen) {
  /* A UTF-16 unit never yields more than 3 UTF-8 bytes. */
  if (tp_grow8(s, (size_t)n * 3 + 1)) {
    tp_errf(errbuf, errlen, "out of memory");
    return -1;
  }
  UErrorCode st = U_ZERO_ERROR;
  int32_t o = 0;
  u_strToUTF8WithSub(s->u8, (int32_t)(s->u8cap > INT32_MAX ? INT32_MAX : s->u8cap), &o, u, n,
                     0xFFFD, NULL, &st);
  if (U_FAILURE(st)) {
    tp_errf(errbuf, errlen, "ICU error converting to UTF-8: %s", u_errorName(st));
    return -1;
  }
  return o;
}

/* ---- the fast path of tp_prepare ------------------------------------------ */

/*
 * Why: converting to UTF-16, normalizing and converting back through ICU's C
 * API cost more than everything else a passage goes through in the engine
 * (bench/NOTES.md). But nearly every character of our text normalizes on
 * its own: it always has a normalization boundary before it (ICU's
 * hasBoundaryBefore: it never combines with what precedes it), so a string
 * made only of such characters splits into one-character segments and its
 * NFKC_Casefold is the concatenation of each one's. When that is one BMP
 * unit (Han stays itself, "，" becomes ",", "A" becomes "a"), a table
 * lookup replaces ICU. (A letter has no boundary *after* it -- a combining
 * mark may follow -- but such a mark has no boundary before it, so a text
 * containing one takes the slow path.) The table is filled lazily, per process, from
 * ICU itself (so it is ICU's answer, whatever the ICU version), one code
 * point the first time it is seen; entries are written once with the same
 * value by whichever thread gets there, hence relaxed atomics.
 *
 * A text with any other character -- a supplementary one, one that may
 * combine with the one before it, one that normalizes to nothing or to
 * several units, an invalid byte -- takes tp_prepare, unchanged. T2S runs
 * on the normalized units exactly as in tp_prepare.
 */
#define TP_NF_SIMPLE 0x80000000u  /* low 16 bits: the normalized unit */
#define TP_NF_COMPLEX 0x40000000u
static _Atomic uint32_t tp_nf_memo[65536];

static inline uint32_t tp_nf_entry(const UNormalizer2 *norm, uint32_t c) {
  uint32_t e = atomic_load_explicit(&tp_nf_memo[c], memory_order_relaxed);
  if (e) return e;
  UChar in = (UChar)c, out[8];
  UErrorCode st = U_ZERO_ERROR;
  e = TP_NF_COMPLEX;
  if (!U16_IS_SURROGATE(c) && unorm2_hasBoundaryBefore(norm, (UChar32)c)) {
    int32_t m = unorm2_normalize(norm, &in, 1, out, 8, &st);
    if (U_SUCCESS(st) && m == 1 && !U16_IS_SURROGATE(out[0])) e = TP_NF_SIMPLE | out[0];
  }
  atomic_store_explicit(&tp_nf_memo[c], e, memory_order_relaxed);
  return e;
}

/*
 * tp_prepare for texts made only of such characters: returns 1 with *out /
 * *outlen set exactly as tp_prepare would set them, or 0 (nothing decided:
 * call tp_prepare) -- also when memory runs out, so tp_prepare reports it.
 */
static inline int tp_prepare_fast(const tp_core_t *c, tp_state_t *s, const char *text,
                                  size_t len, const UChar **out, int32_t *outlen) {
  if (len > TP_MAX_TEXT || (!c->t2s && s->tr)) return 0; /* ICU's own T2S: the slow path */
  if (tp_grow16(&s->b, &s->bcap, (int64_t)len + 1)) return 0;
  const uint8_t *p = (const uint8_t *)text, *end = p + len;
  UChar *b = s->b;
  int32_t n = 0;
  while (p < end) {
    uint32_t cp = *p;
    if (cp < 0x80) {
      p++;
    } else if (cp >= 0xC2 && cp <= 0xDF && end - p >= 2 && (p[1] & 0xC0) == 0x80) {
      cp = (cp & 0x1F) << 6 | (p[1] & 0x3F);
      p += 2;
    } else if (cp >= 0xE0 && cp <= 0xEF && end - p >= 3 && (p[1] & 0xC0) == 0x80 &&
               (p[2] & 0xC0) == 0x80) {
      cp = (cp & 0x0F) << 12 | (uint32_t)(p[1] & 0x3F) << 6 | (p[2] & 0x3F);
      if (cp < 0x800 || U16_IS_SURROGATE(cp)) return 0; /* overlong, surrogate: U+FFFD there */
      p += 3;
    } else {
      return 0; /* supplementary or invalid */
    }
    uint32_t e = tp_nf_entry(c->norm, cp);
    if (!(e & TP_NF_SIMPLE)) return 0;
    b[n++] = (UChar)e;
  }
  if (c->t2s) {
    if (tp_grow16(&s->a, &s->acap, (int64_t)n * c->t2s->grow + 1)) return 0;
    *out = s->a;
    *outlen = tp_t2s_apply(c->t2s, s->b, n, s->a);
  } else {
    *out = s->b;
    *outlen = n;
  }
  return 1;
}

#endif
