/*
 * docscan: a fast, strict reader for the common shape of one classify
 * request (a JSON Lines line, an HTTP body, a `themectl classify --jsonl`
 * line): one JSON object with "id", "op", "text" or "passages", the
 * classify options, and any other members, which are skipped.
 *
 * Why: jansson builds a tree of objects with a malloc per value and copies
 * every string byte by byte; for a typical article that cost more than
 * classifying it (bench/NOTES.md). This reads the line in one pass and
 * hands out spans, pointing into the line itself unless a string has
 * escapes (then into the scanner's own buffer).
 *
 * It never decides anything jansson would decide differently. It accepts
 * only input jansson accepts with the same values (JSON_DECODE_ANY and no
 * other flags, as request.c parses); for anything else -- a syntax error,
 * invalid UTF-8, \u0000, a lone surrogate, a duplicate known member, a
 * number it cannot convert exactly as jansson does, nesting deeper than it
 * cares to follow -- it answers "not handled" and the caller parses with
 * jansson, which produces the documented error. Callers validate values
 * (types, ranges) and, on any doubt, take the jansson path too, so the
 * fast path only ever serves requests that succeed.
 */
#ifndef TD_DOCSCAN_H
#define TD_DOCSCAN_H

#include <stddef.h>

#include "common.h"
#include "features.h"

typedef enum td_scan_kind {
  TD_SCAN_ABSENT = 0,
  TD_SCAN_NULL,
  TD_SCAN_FALSE,
  TD_SCAN_TRUE,
  TD_SCAN_INT,    /* an integer jansson holds as json_int_t: .i */
  TD_SCAN_REAL,   /* a number with a fraction or exponent: .d (strtod's) */
  TD_SCAN_STRING, /* .s (NUL-terminated), .len */
  TD_SCAN_ARRAY,  /* passages only: every element a string */
  TD_SCAN_OTHER   /* an object or an array with other elements */
} td_scan_kind_t;

typedef struct td_scan_val {
  td_scan_kind_t kind;
  const char *s; /* strings: decoded UTF-8, NUL-terminated, no NUL inside */
  size_t len;
  long long i;
  double d;
} td_scan_val_t;

typedef struct td_docscan {
  td_scan_val_t id, op, text, passages, threshold, top_k, explain, include_text, documents;
  td_span_t *items; /* passages: npassages decoded strings */
  size_t npassages;
  /* storage, reused across lines */
  td_buf_t dec;     /* decoded strings (escapes, NUL-terminated copies) */
  size_t *offs;     /* items as offsets into dec until the end of the line */
  int *inline_;     /* 1: item points into the line, 0: into dec */
  size_t cap;
} td_docscan_t;

void td_docscan_init(td_docscan_t *d);
void td_docscan_free(td_docscan_t *d);

/*
 * Reads line[0..len). Returns 1 and fills d when the line is one JSON
 * object jansson would accept with exactly these values; 0 when the caller
 * must ask jansson (which will accept it or report the error); TD_ENOMEM.
 * The spans stay valid until the next call or td_docscan_free, and point
 * into `line` where no decoding was needed (the line must outlive them).
 */
int td_docscan(td_docscan_t *d, const char *line, size_t len);

#endif
