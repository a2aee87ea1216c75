/*
 * Text: UTF-8 validation, passage splitting and heading detection (ICU).
 *
 * Offsets: every passage carries [start,end) in UTF-8 *bytes* and
 * [cstart,cend) in Unicode *code points*, both into the original text as the
 * caller sent it (before any normalization, which plugins do per token).
 */
#ifndef TD_TEXT_H
#define TD_TEXT_H

#include <stddef.h>

#include "common.h"

typedef struct td_passage {
  size_t start, end;   /* UTF-8 byte offsets into the document, [start,end) */
  size_t cstart, cend; /* code point offsets, [cstart,cend) */
  int is_heading;      /* 1 if this passage looks like a section heading */
  long context;        /* index of the heading whose signal this passage
                          receives, or -1 (see td_text_link_headings) */
  int no_words;        /* 1 if it has no letter or digit (td_text_has_words):
                          td_classify tags it with no theme */
} td_passage_t;

/* A reusable, growable array of passages. Owns `items`. */
typedef struct td_passages {
  td_passage_t *items;
  size_t count, cap;
} td_passages_t;

void td_passages_init(td_passages_t *ps);
void td_passages_free(td_passages_t *ps);
static inline void td_passages_reset(td_passages_t *ps) { ps->count = 0; }

typedef struct td_split_opts {
  size_t max_chars;     /* passages longer than this many code points are cut
                           at ICU sentence boundaries; 0 = never cut */
  size_t heading_chars; /* a line of at most this many code points without
                           sentence-final punctuation is a heading candidate */
} td_split_opts_t;

#define TD_SPLIT_DEFAULT_MAX_CHARS 600
#define TD_SPLIT_DEFAULT_HEADING_CHARS 40
void td_split_opts_default(td_split_opts_t *o);

/*
 * Returns 0 if [s, s+len) is valid UTF-8 (no overlongs, no surrogates, no
 * code points past U+10FFFF, NUL bytes rejected too); otherwise TD_EUTF8 with
 * the offset of the first bad byte in *bad_at (if not NULL) and err set.
 */
int td_text_check_utf8(const char *s, size_t len, size_t *bad_at, td_err_t *err);

/* Number of code points in valid UTF-8. */
size_t td_text_count_chars(const char *s, size_t len);

/*
 * Splits `text` into passages at line breaks (LF, CRLF, CR, U+2028, U+2029;
 * also NEL, VT and FF, the other mandatory breaks of UAX #14), trims Unicode
 * white space (incl. U+3000 and NBSP, plus U+200B, U+2060 and the BOM) from
 * both ends, drops empty lines, cuts over-long passages at sentence
 * boundaries, marks headings and links each passage to its heading context.
 * The pieces of a cut passage are body text, never headings. Appends to `out`
 * (call td_passages_reset first to reuse it); context indexes count from the
 * start of `out`. Text must be valid UTF-8: anything else (NUL included)
 * fails with TD_EUTF8, "invalid UTF-8 at byte N", and appends nothing.
 */
int td_text_split(const char *text, size_t len, const td_split_opts_t *o,
                  td_passages_t *out, td_err_t *err);

/*
 * Heading test for one passage: short (<= heading_chars code points), no
 * sentence-final punctuation (。！？；!?;) at its end, or an enumerator at its
 * start (一、 （一） 1. 第一 ...) and still short. Used identically at training
 * time (passages given one per row) and at serving time. Trims the passage
 * itself. Page furniture that is short too is not a heading: bylines and
 * source/date lines ("来源：", "2024-01-21 09:51", "责任编辑："), breadcrumbs,
 * table rows, name lists, affiliations. Refinements: a short question with
 * no other punctuation is a heading, so is "一、……。" without inner
 * punctuation; a line ending in a colon is one unless it leads into a list
 * ("包括以下几个方面："); bulleted lines are list items. heading_chars 0: never.
 */
int td_text_is_heading(const char *s, size_t len, size_t heading_chars);

/*
 * 1 if the valid UTF-8 text has a letter or a digit (ICU's u_isalnum: the
 * general categories L* and Nd). A passage without one -- punctuation,
 * symbols, emoji, blanks -- says nothing a theme could be about; the
 * features it would get come from its heading and neighbours alone.
 */
int td_text_has_words(const char *s, size_t len);

/*
 * Fills in `context` for passages[0..n): each non-heading passage points at
 * the nearest heading before it; headings point at -1. is_heading must be set.
 */
void td_text_link_headings(td_passage_t *ps, size_t n);

#endif
