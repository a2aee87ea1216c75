/*
 * docscan: see docscan.h. Every "return 0" below means "ask jansson": the
 * reader is only a shortcut for lines jansson would accept, and the rules
 * it follows are jansson 2.14's (load.c: lex_scan_string, lex_scan_number,
 * utf8.c), so that a line it accepts has exactly the values jansson gives.
 */
#include "docscan.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 32 /* deeper values: jansson's business */
#define NOT_HANDLED 0

void td_docscan_init(td_docscan_t *d) {
  memset(d, 0, sizeof *d);
  td_buf_init(&d->dec);
}

void td_docscan_free(td_docscan_t *d) {
  td_buf_free(&d->dec);
  free(d->items);
  free(d->offs);
  free(d->inline_);
  memset(d, 0, sizeof *d);
}

typedef struct scanner {
  const unsigned char *p, *end, *base;
  td_docscan_t *d;
  int oom;
} scanner_t;

/* A string value before resolution: in the line, or at an offset of dec. */
typedef struct sstr {
  int in_line;
  size_t off, len;
} sstr_t;

static inline void skip_ws(scanner_t *s) {
  while (s->p < s->end && (*s->p == ' ' || *s->p == '\n' || *s->p == '\t' || *s->p == '\r'))
    s->p++;
}

/* Length of the valid UTF-8 sequence at p (lead byte >= 0x80), or 0:
 * jansson's utf8_check_first + utf8_check_full (no overlongs, surrogates
 * or code points past U+10FFFF). */
static inline size_t utf8_seq(const unsigned char *p, const unsigned char *end) {
  unsigned u = p[0];
  size_t n;
  uint32_t v;
  if (u >= 0xC2 && u <= 0xDF) n = 2, v = u & 0x1F;
  else if (u >= 0xE0 && u <= 0xEF) n = 3, v = u & 0x0F;
  else if (u >= 0xF0 && u <= 0xF4) n = 4, v = u & 0x07;
  else return 0;
  if ((size_t)(end - p) < n) return 0;
  for (size_t i = 1; i < n; i++) {
    if ((p[i] & 0xC0) != 0x80) return 0;
    v = (v << 6) | (p[i] & 0x3F);
  }
  if (v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF) || (n == 3 && v < 0x800) ||
      (n == 4 && v < 0x10000))
    return 0;
  return n;
}

static inline int hex4(const unsigned char *p, uint32_t *out) {
  uint32_t v = 0;
  for (int i = 0; i < 4; i++) {
    unsigned c = p[i];
    v <<= 4;
    if (c >= '0' && c <= '9') v |= c - '0';
    else if (c >= 'a' && c <= 'f') v |= c - 'a' + 10;
    else if (c >= 'A' && c <= 'F') v |= c - 'A' + 10;
    else return 0;
  }
  *out = v;
  return 1;
}

static int put_cp(td_buf_t *b, uint32_t c) {
  char u[4];
  size_t n;
  if (c < 0x80) u[0] = (char)c, n = 1;
  else if (c < 0x800) u[0] = (char)(0xC0 | c >> 6), u[1] = (char)(0x80 | (c & 0x3F)), n = 2;
  else if (c < 0x10000)
    u[0] = (char)(0xE0 | c >> 12), u[1] = (char)(0x80 | (c >> 6 & 0x3F)),
    u[2] = (char)(0x80 | (c & 0x3F)), n = 3;
  else
    u[0] = (char)(0xF0 | c >> 18), u[1] = (char)(0x80 | (c >> 12 & 0x3F)),
    u[2] = (char)(0x80 | (c >> 6 & 0x3F)), u[3] = (char)(0x80 | (c & 0x3F)), n = 4;
  return td_buf_append(b, u, n);
}

/*
 * A string at s->p (the opening quote). keep: the value is wanted (its
 * escapes are decoded into dec, and copy forces a NUL-terminated copy in
 * dec even without escapes); otherwise it is only validated.
 */
static int scan_string(scanner_t *s, int keep, int copy, sstr_t *out) {
  const unsigned char *p = s->p + 1, *end = s->end, *start = p;
  /* the common case: no escapes, so the value is a slice of the line */
  for (;;) {
    if (p >= end) return NOT_HANDLED;
    unsigned c = *p;
    if (c == '"') break;
    if (c == '\\') goto escapes;
    if (c < 0x20) return NOT_HANDLED; /* jansson: control character */
    if (c < 0x80) {
      p++;
      continue;
    }
    /* Han and most of the BMP: lead E1..EC or EE..EF, two continuation
     * bytes, no overlong or surrogate possible -- checked inline, the
     * common case of our text */
    if (((c >= 0xE1 && c <= 0xEC) || c >= 0xEE) && c <= 0xEF && end - p >= 3 &&
        (p[1] & 0xC0) == 0x80 && (p[2] & 0xC0) == 0x80) {
      p += 3;
      continue;
    }
    size_t n = utf8_seq(p, end);
    if (!n) return NOT_HANDLED;
    p += n;
  }
  s->p = p + 1;
  if (keep) {
    if (copy) {
      out->in_line = 0;
      out->off = s->d->dec.len;
      out->len = (size_t)(p - start);
      if (td_buf_append(&s->d->dec, start, out->len) || td_buf_append(&s->d->dec, "", 1)) {
        s->oom = 1;
        return NOT_HANDLED;
      }
    } else {
      out->in_line = 1;
      out->off = (size_t)(start - s->base);
      out->len = (size_t)(p - start);
    }
  }
  return 1;

escapes:;
  /* decode into dec: the plain prefix, then character by character */
  td_buf_t *b = &s->d->dec;
  size_t off = b->len;
  if (keep && td_buf_append(b, start, (size_t)(p - start))) goto oom;
  for (;;) {
    if (p >= end) return NOT_HANDLED;
    unsigned c = *p;
    if (c == '"') break;
    if (c < 0x20) return NOT_HANDLED;
    if (c == '\\') {
      if (end - p < 2) return NOT_HANDLED;
      unsigned e = p[1];
      char o;
      switch (e) {
      case '"': o = '"'; break;
      case '\\': o = '\\'; break;
      case '/': o = '/'; break;
      case 'b': o = '\b'; break;
      case 'f': o = '\f'; break;
      case 'n': o = '\n'; break;
      case 'r': o = '\r'; break;
      case 't': o = '\t'; break;
      case 'u': {
        uint32_t v, lo;
        if (end - p < 6 || !hex4(p + 2, &v)) return NOT_HANDLED;
        p += 6;
        if (v >= 0xDC00 && v <= 0xDFFF) return NOT_HANDLED; /* lone low surrogate */
        if (v >= 0xD800 && v <= 0xDBFF) {
          if (end - p < 6 || p[0] != '\\' || p[1] != 'u' || !hex4(p + 2, &lo) || lo < 0xDC00 ||
              lo > 0xDFFF)
            return NOT_HANDLED; /* lone high surrogate */
          p += 6;
          v = 0x10000 + ((v - 0xD800) << 10) + (lo - 0xDC00);
        }
        if (v == 0) return NOT_HANDLED; /* \u0000: needs JSON_ALLOW_NUL */
        if (keep && put_cp(b, v)) goto oom;
        continue;
      }
      default: return NOT_HANDLED;
      }
      if (keep && td_buf_append(b, &o, 1)) goto oom;
      p += 2;
      continue;
    }
    /* a run up to the next escape or quote, appended in one piece */
    const unsigned char *q = p;
    for (;;) {
      if (c < 0x80) {
        p++;
      } else {
        size_t n = utf8_seq(p, end);
        if (!n) return NOT_HANDLED;
        p += n;
      }
      if (p >= end) break;
      c = *p;
      if (c == '"' || c == '\\' || c < 0x20) break;
    }
    if (keep && td_buf_append(b, q, (size_t)(p - q))) goto oom;
  }
  s->p = p + 1;
  if (keep) {
    out->in_line = 0;
    out->off = off;
    out->len = b->len - off;
    if (td_buf_append(b, "", 1)) goto oom;
    /* a decoded NUL cannot happen (\u0000 refused), so len is the C length */
  }
  return 1;
oom:
  s->oom = 1;
  return NOT_HANDLED;
}

/* A number at s->p: jansson's grammar and conversions (integers through
 * strtoll, overflow refused; reals through strtod, overflow refused). */
static int scan_number(scanner_t *s, td_scan_val_t *v) {
  const unsigned char *p = s->p, *end = s->end, *t0 = p;
  int real = 0;
  if (p < end && *p == '-') p++;
  if (p < end && *p == '0') {
    p++;
  } else if (p < end && *p >= '1' && *p <= '9') {
    while (p < end && *p >= '0' && *p <= '9') p++;
  } else {
    return NOT_HANDLED;
  }
  if (p < end && *p == '.') {
    real = 1;
    p++;
    if (p >= end || *p < '0' || *p > '9') return NOT_HANDLED;
    while (p < end && *p >= '0' && *p <= '9') p++;
  }
  if (p < end && (*p == 'e' || *p == 'E')) {
    real = 1;
    p++;
    if (p < end && (*p == '+' || *p == '-')) p++;
    if (p >= end || *p < '0' || *p > '9') return NOT_HANDLED;
    while (p < end && *p >= '0' && *p <= '9') p++;
  }
  size_t n = (size_t)(p - t0);
  char tmp[64];
  if (n >= sizeof tmp) return NOT_HANDLED; /* long numbers: jansson decides */
  memcpy(tmp, t0, n);
  tmp[n] = '\0';
  char *e;
  errno = 0;
  if (real) {
    double x = strtod(tmp, &e);
    if ((x == HUGE_VAL || x == -HUGE_VAL) && errno == ERANGE) return NOT_HANDLED;
    if (e != tmp + n) return NOT_HANDLED;
    v->kind = TD_SCAN_REAL;
    v->d = x;
  } else {
    long long x = strtoll(tmp, &e, 10);
    if (errno == ERANGE || e != tmp + n) return NOT_HANDLED;
    v->kind = TD_SCAN_INT;
    v->i = x;
  }
  s->p = p;
  return 1;
}

static int lit(scanner_t *s, const char *w, size_t n) {
  if ((size_t)(s->end - s->p) < n || memcmp(s->p, w, n)) return NOT_HANDLED;
  s->p += n;
  return 1;
}

/* Skips (and validates) any value. */
static int skip_value(scanner_t *s, int depth) {
  if (depth > MAX_DEPTH) return NOT_HANDLED;
  skip_ws(s);
  if (s->p >= s->end) return NOT_HANDLED;
  td_scan_val_t v;
  switch (*s->p) {
  case '"': return scan_string(s, 0, 0, NULL);
  case 't': return lit(s, "true", 4);
  case 'f': return lit(s, "false", 5);
  case 'n': return lit(s, "null", 4);
  case '[':
    s->p++;
    skip_ws(s);
    if (s->p < s->end && *s->p == ']') {
      s->p++;
      return 1;
    }
    for (;;) {
      if (!skip_value(s, depth + 1)) return NOT_HANDLED;
      skip_ws(s);
      if (s->p >= s->end) return NOT_HANDLED;
      if (*s->p == ']') {
        s->p++;
        return 1;
      }
      if (*s->p++ != ',') return NOT_HANDLED;
    }
  case '{':
    s->p++;
    skip_ws(s);
    if (s->p < s->end && *s->p == '}') {
      s->p++;
      return 1;
    }
    for (;;) {
      skip_ws(s);
      if (s->p >= s->end || *s->p != '"') return NOT_HANDLED;
      sstr_t k;
      /* a key with \u0000 is refused by scan_string too */
      if (!scan_string(s, 0, 0, &k)) return NOT_HANDLED;
      skip_ws(s);
      if (s->p >= s->end || *s->p++ != ':') return NOT_HANDLED;
      if (!skip_value(s, depth + 1)) return NOT_HANDLED;
      skip_ws(s);
      if (s->p >= s->end) return NOT_HANDLED;
      if (*s->p == '}') {
        s->p++;
        return 1;
      }
      if (*s->p++ != ',') return NOT_HANDLED;
    }
  default: return scan_number(s, &v);
  }
}

/* The known members. */
enum { K_ID, K_OP, K_TEXT, K_PASSAGES, K_THRESHOLD, K_TOP_K, K_EXPLAIN, K_INCLUDE_TEXT,
       K_DOCUMENTS, K_COUNT };
static const char *const knames[K_COUNT] = {"id",     "op",    "text",    "passages",
                                            "threshold", "top_k", "explain", "include_text",
                                            "documents"};

static td_scan_val_t *kval(td_docscan_t *d, int k) {
  switch (k) {
  case K_ID: return &d->id;
  case K_OP: return &d->op;
  case K_TEXT: return &d->text;
  case K_PASSAGES: return &d->passages;
  case K_THRESHOLD: return &d->threshold;
  case K_TOP_K: return &d->top_k;
  case K_EXPLAIN: return &d->explain;
  case K_INCLUDE_TEXT: return &d->include_text;
  default: return &d->documents;
  }
}

static int grow_items(td_docscan_t *d, size_t n) {
  if (n <= d->cap) return 0;
  size_t cap = d->cap ? 2 * d->cap : 64;
  while (cap < n) cap *= 2;
  td_span_t *it = realloc(d->items, cap * sizeof *it);
  if (it) d->items = it;
  size_t *of = realloc(d->offs, cap * sizeof *of);
  if (of) d->offs = of;
  int *il = realloc(d->inline_, cap * sizeof *il);
  if (il) d->inline_ = il;
  if (!it || !of || !il) return TD_ENOMEM;
  d->cap = cap;
  return 0;
}

/* One member value; k < 0: unknown (skipped). */
static int member(scanner_t *s, int k, sstr_t *sv) {
  td_docscan_t *d = s->d;
  if (k < 0) return skip_value(s, 1);
  td_scan_val_t *v = kval(d, k);
  if (v->kind != TD_SCAN_ABSENT) return NOT_HANDLED; /* a duplicate: jansson's rule */
  skip_ws(s);
  if (s->p >= s->end) return NOT_HANDLED;
  switch (*s->p) {
  case '"':
    /* id and op are used as C strings: copied; text stays in the line */
    if (!scan_string(s, 1, k == K_ID || k == K_OP, sv)) return NOT_HANDLED;
    v->kind = TD_SCAN_STRING;
    return 1;
  case 't':
    v->kind = TD_SCAN_TRUE;
    return lit(s, "true", 4);
  case 'f':
    v->kind = TD_SCAN_FALSE;
    return lit(s, "false", 5);
  case 'n':
    v->kind = TD_SCAN_NULL;
    return lit(s, "null", 4);
  case '{':
    v->kind = TD_SCAN_OTHER;
    return skip_value(s, 1);
  case '[':
    if (k != K_PASSAGES) {
      v->kind = TD_SCAN_OTHER;
      return skip_value(s, 1);
    }
    s->p++;
    d->npassages = 0;
    v->kind = TD_SCAN_ARRAY;
    skip_ws(s);
    if (s->p < s->end && *s->p == ']') {
      s->p++;
      return 1;
    }
    for (;;) {
      skip_ws(s);
      if (s->p >= s->end) return NOT_HANDLED;
      if (*s->p == '"' && v->kind == TD_SCAN_ARRAY) {
        if (grow_items(d, d->npassages + 1)) {
          s->oom = 1;
          return NOT_HANDLED;
        }
        sstr_t e;
        if (!scan_string(s, 1, 0, &e)) return NOT_HANDLED;
        d->inline_[d->npassages] = e.in_line;
        d->offs[d->npassages] = e.off;
        d->items[d->npassages++].len = e.len;
      } else {
        v->kind = TD_SCAN_OTHER; /* not all strings: the caller asks jansson */
        if (!skip_value(s, 2)) return NOT_HANDLED;
      }
      skip_ws(s);
      if (s->p >= s->end) return NOT_HANDLED;
      if (*s->p == ']') {
        s->p++;
        return 1;
      }
      if (*s->p++ != ',') return NOT_HANDLED;
    }
  default: return scan_number(s, v);
  }
}

int td_docscan(td_docscan_t *d, const char *line, size_t len) {
  static const td_scan_val_t none = {0};
  d->id = d->op = d->text = d->passages = d->threshold = d->top_k = d->explain =
      d->include_text = d->documents = none;
  d->npassages = 0;
  td_buf_reset(&d->dec);
  scanner_t s = {(const unsigned char *)line, (const unsigned char *)line + len,
                 (const unsigned char *)line, d, 0};
  sstr_t strs[K_COUNT];
  skip_ws(&s);
  if (s.p >= s.end || *s.p != '{') return NOT_HANDLED;
  s.p++;
  skip_ws(&s);
  if (s.p < s.end && *s.p == '}') {
    s.p++;
  } else {
    for (;;) {
      skip_ws(&s);
      if (s.p >= s.end || *s.p != '"') return NOT_HANDLED;
      /* keys: compared raw; a key with escapes is decoded first */
      const unsigned char *k0 = s.p + 1;
      sstr_t ks;
      size_t dec0 = d->dec.len;
      if (!scan_string(&s, 1, 0, &ks)) return s.oom ? TD_ENOMEM : NOT_HANDLED;
      const char *key = ks.in_line ? (const char *)k0 : d->dec.data + ks.off;
      int k = -1;
      for (int i = 0; i < K_COUNT; i++)
        if (strlen(knames[i]) == ks.len && !memcmp(knames[i], key, ks.len)) k = i;
      d->dec.len = dec0; /* the key's decoded bytes are not needed any more */
      skip_ws(&s);
      if (s.p >= s.end || *s.p++ != ':') return NOT_HANDLED;
      if (!member(&s, k, k >= 0 ? &strs[k] : NULL)) return s.oom ? TD_ENOMEM : NOT_HANDLED;
      skip_ws(&s);
      if (s.p >= s.end) return NOT_HANDLED;
      if (*s.p == '}') {
        s.p++;
        break;
      }
      if (*s.p++ != ',') return NOT_HANDLED;
    }
  }
  skip_ws(&s);
  if (s.p != s.end) return NOT_HANDLED; /* jansson: end of file expected */
  /* resolve: dec no longer moves */
  for (int k = 0; k < K_COUNT; k++) {
    td_scan_val_t *v = kval(d, k);
    if (v->kind != TD_SCAN_STRING) continue;
    v->s = strs[k].in_line ? line + strs[k].off : d->dec.data + strs[k].off;
    v->len = strs[k].len;
  }
  for (size_t i = 0; i < d->npassages; i++)
    d->items[i].s = d->inline_[i] ? line + d->offs[i] : d->dec.data + d->offs[i];
  return 1;
}
