/*
 * libFuzzer target: td_text_check_utf8 + td_text_split with random options.
 *
 * Input: byte 0 picks max_chars, byte 1 heading_chars, byte 2 flags; the rest
 * is the text. Besides "no sanitizer report", the target checks what the
 * engine promises (text.h):
 *   - the validator and the splitter agree on what is valid UTF-8, and a
 *     refused text appends nothing;
 *   - passages are in order, do not overlap, start and end on code point
 *     boundaries, hold no line break, are trimmed of ASCII white space, and
 *     their code point offsets match the bytes;
 *   - with max_chars set no passage is longer;
 *   - each body passage's context is the nearest heading before it.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "text.h"

static int is_cont(unsigned char b) { return (b & 0xC0) == 0x80; }

static void check_passages(const char *t, size_t len, const td_passages_t *ps, size_t n0,
                           const td_split_opts_t *o) {
  size_t prev_end = 0;
  long last_heading = -1;
  for (size_t i = n0; i < ps->count; i++) {
    const td_passage_t *p = &ps->items[i];
    FUZZ_CHECK(p->start < p->end && p->end <= len, "passage bytes out of range");
    FUZZ_CHECK(p->start >= prev_end, "passages overlap or are out of order");
    FUZZ_CHECK(!is_cont((unsigned char)t[p->start]), "passage starts inside a code point");
    FUZZ_CHECK(p->end == len || !is_cont((unsigned char)t[p->end]),
               "passage ends inside a code point");
    FUZZ_CHECK(p->cstart == td_text_count_chars(t, p->start), "cstart does not match the bytes");
    FUZZ_CHECK(p->cend - p->cstart == td_text_count_chars(t + p->start, p->end - p->start),
               "code point length does not match the bytes");
    for (size_t b = p->start; b < p->end; b++) {
      unsigned char c = (unsigned char)t[b];
      FUZZ_CHECK(c != '\n' && c != '\r' && c != '\v' && c != '\f', "line break inside a passage");
      /* NEL U+0085 = C2 85; LS/PS U+2028/2029 = E2 80 A8/A9 */
      FUZZ_CHECK(!(c == 0xC2 && b + 1 < p->end && (unsigned char)t[b + 1] == 0x85),
                 "NEL inside a passage");
      FUZZ_CHECK(!(c == 0xE2 && b + 2 < p->end && (unsigned char)t[b + 1] == 0x80 &&
                   ((unsigned char)t[b + 2] == 0xA8 || (unsigned char)t[b + 2] == 0xA9)),
                 "LS/PS inside a passage");
    }
    unsigned char f = (unsigned char)t[p->start], l = (unsigned char)t[p->end - 1];
    FUZZ_CHECK(f != ' ' && f != '\t' && l != ' ' && l != '\t', "passage not trimmed");
    if (o->max_chars) FUZZ_CHECK(p->cend - p->cstart <= o->max_chars, "passage over max_chars");
    if (p->is_heading) {
      FUZZ_CHECK(p->context == -1, "a heading has a context");
      last_heading = (long)i;
    } else {
      FUZZ_CHECK(p->context == last_heading, "context is not the nearest heading before");
    }
    prev_end = p->end;
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 3) return 0;
  static const size_t maxes[] = {0, 1, 2, 3, 5, 8, 13, 40, 100, 600};
  td_split_opts_t o;
  o.max_chars = data[0] < 128 ? maxes[data[0] % 10] : (size_t)(data[0] - 128);
  o.heading_chars = data[1] % 64;
  int flags = data[2];
  const char *text = (const char *)data + 3;
  size_t len = size - 3;
  /* A private copy of exactly len bytes, so reading past it is caught. */
  char *t = malloc(len ? len : 1);
  if (!t) return 0;
  memcpy(t, text, len);

  td_err_t err = {0};
  size_t bad = (size_t)-1;
  int vrc = td_text_check_utf8(t, len, &bad, &err);
  FUZZ_CHECK(vrc == 0 || vrc == TD_EUTF8, "td_text_check_utf8: unexpected code");
  if (vrc) FUZZ_CHECK(bad < len && err.msg[0], "td_text_check_utf8: no position or message");

  td_passages_t ps;
  td_passages_init(&ps);
  size_t n0 = 0;
  if (flags & 1) { /* append after what is there: contexts count from the start of out */
    td_err_t e2 = {0};
    if (td_text_split("标题\n正文。", strlen("标题\n正文。"), &o, &ps, &e2) == 0) n0 = ps.count;
  }
  td_err_clear(&err);
  int src = td_text_split(t, len, &o, &ps, &err);
  if (vrc) {
    FUZZ_CHECK(src == TD_EUTF8, "split accepted text the validator refused");
    FUZZ_CHECK(ps.count == n0, "a refused text appended passages");
  } else {
    FUZZ_CHECK(src == 0 || src == TD_ENOMEM, "split refused valid UTF-8");
    if (src == 0) check_passages(t, len, &ps, n0, &o);
  }
  /* Heading detection on arbitrary valid slices, as training does per row. */
  if (!vrc && len) (void)td_text_is_heading(t, len, o.heading_chars);
  td_passages_free(&ps);
  free(t);
  return 0;
}
