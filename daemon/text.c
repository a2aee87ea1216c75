#include "text.h"

#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <unicode/ubrk.h>
#include <unicode/uchar.h>
#include <unicode/utext.h>
#include <unicode/utf8.h>

/* ---- passages array ---- */

void td_passages_init(td_passages_t *ps) {
  ps->items = NULL;
  ps->count = ps->cap = 0;
}

void td_passages_free(td_passages_t *ps) {
  TD_FREE(ps->items);
  ps->count = ps->cap = 0;
}

static int passages_push(td_passages_t *ps, size_t b0, size_t b1, size_t c0, size_t c1,
                         int heading) {
  if (ps->count == ps->cap) {
    size_t cap = ps->cap ? ps->cap * 2 : 32;
    td_passage_t *p = realloc(ps->items, cap * sizeof *p);
    if (!p) return TD_ENOMEM;
    ps->items = p;
    ps->cap = cap;
  }
  ps->items[ps->count++] = (td_passage_t){
      .start = b0, .end = b1, .cstart = c0, .cend = c1, .is_heading = heading, .context = -1};
  return 0;
}

int td_text_has_words(const char *s, size_t len) {
  const uint8_t *p = (const uint8_t *)s;
  int32_t i = 0, n = len > INT32_MAX ? INT32_MAX : (int32_t)len;
  while (i < n) {
    if (p[i] < 0x80) { /* ASCII without ICU */
      uint8_t c = p[i++];
      if ((c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z')) return 1;
      continue;
    }
    UChar32 c;
    U8_NEXT(p, i, n, c);
    if (c >= 0 && u_isalnum(c)) return 1;
  }
  return 0;
}

void td_split_opts_default(td_split_opts_t *o) {
  o->max_chars = TD_SPLIT_DEFAULT_MAX_CHARS;
  o->heading_chars = TD_SPLIT_DEFAULT_HEADING_CHARS;
}

/* ---- UTF-8 ---- */

/* True if the 8 bytes are all ASCII and none is NUL (the validator's fast path). */
static inline int ascii8_nonul(const uint8_t *p) {
  uint64_t w;
  memcpy(&w, p, 8);
  const uint64_t hi = 0x8080808080808080ull, lo = 0x0101010101010101ull;
  return !(w & hi) && !((w - lo) & ~w & hi);
}

int td_text_check_utf8(const char *s, size_t len, size_t *bad_at, td_err_t *err) {
  const uint8_t *p = (const uint8_t *)s;
  size_t i = 0;
  while (i < len) {
    if (len - i >= 8 && ascii8_nonul(p + i)) {
      i += 8;
      continue;
    }
    size_t at = i;
    if (p[i] == 0) {
      if (bad_at) *bad_at = at;
      return td_err_set(err, TD_EUTF8, "invalid UTF-8 at byte %zu (NUL byte)", at);
    }
    if (p[i] < 0x80) {
      i++;
      continue;
    }
    /* U8_NEXT is strict: it rejects overlongs, surrogates, > U+10FFFF and
     * truncated sequences (c < 0). We report the sequence's first byte. */
    UChar32 c;
    U8_NEXT(p, i, len, c);
    if (c < 0) {
      if (bad_at) *bad_at = at;
      return td_err_set(err, TD_EUTF8, "invalid UTF-8 at byte %zu", at);
    }
  }
  return 0;
}

size_t td_text_count_chars(const char *s, size_t len) {
  size_t n = 0;
  for (size_t i = 0; i < len; i++) n += ((unsigned char)s[i] & 0xC0) != 0x80;
  return n;
}

/* Decodes one code point of text already known to be valid. */
static inline UChar32 next_cp(const uint8_t *p, size_t *i, size_t len) {
  UChar32 c = p[*i];
  if (c < 0x80) {
    (*i)++;
    return c;
  }
  U8_NEXT_OR_FFFD(p, *i, len, c);
  return c;
}

/* Trimmed at both ends: Unicode White_Space (incl. U+3000, NBSP, NEL) plus
 * the invisible format characters that pages leave at line edges. */
static inline int is_trim_space(UChar32 c) {
  if (c < 0x80) return c == ' ' || (c >= 0x09 && c <= 0x0D);
  /* Nothing above U+3000 is White_Space: skip ICU's lookup for Han text. */
  if (c > 0x3000) return c == 0xFEFF;
  return c == 0x200B || c == 0x2060 || u_isUWhiteSpace(c);
}

/* Mandatory breaks (UAX #14 BK/CR/LF/NL): LF, VT, FF, CR, NEL, LS, PS. CRLF
 * needs no special case: the empty line between CR and LF is dropped. */
static inline int is_line_break(UChar32 c) {
  return (c >= 0x0A && c <= 0x0D) || c == 0x85 || c == 0x2028 || c == 0x2029;
}

/* ---- splitting ---- */

typedef struct splitter {
  const char *text;
  const td_split_opts_t *o;
  td_passages_t *out;
  UBreakIterator *bi; /* opened on the first over-long passage of a call */
  td_err_t *err;
} splitter_t;

/* Appends [b0,b1) (starting at code point c0) trimmed, if anything is left. */
static int push_trimmed(splitter_t *sp, size_t b0, size_t b1, size_t c0, int heading) {
  const uint8_t *p = (const uint8_t *)sp->text;
  size_t i = b0, ci = c0, fb = 0, fc = 0, lb = 0, lc = 0;
  int have = 0;
  while (i < b1) {
    size_t at = i;
    UChar32 c = next_cp(p, &i, b1);
    if (!is_trim_space(c)) {
      if (!have) {
        have = 1;
        fb = at;
        fc = ci;
      }
      lb = i;
      lc = ci + 1;
    }
    ci++;
  }
  if (!have) return 0;
  if (passages_push(sp->out, fb, lb, fc, lc, heading))
    return td_err_set(sp->err, TD_ENOMEM, "out of memory");
  return 0;
}

static inline int is_soft_break(UChar32 c) {
  return c == 0xFF0C || c == ',' || c == 0x3001 || c == 0xFF1B || c == ';' ||
         c == 0xFF1A || c == ':' || is_trim_space(c);
}

/*
 * A single sentence longer than max_chars: pieces of at most max_chars code
 * points, each ending just after the last comma-like mark (，,、；;：: or a
 * space) found in its second half, else exactly at max_chars. Cutting after
 * a clause keeps the pieces readable; the second-half condition stops a
 * comma near the start from producing a run of tiny pieces.
 */
static int hard_cut(splitter_t *sp, size_t b0, size_t b1, size_t c0) {
  const uint8_t *p = (const uint8_t *)sp->text;
  size_t max = sp->o->max_chars, i = b0, ci = c0;
  while (i < b1) {
    size_t start = i, cstart = ci, n = 0, soft_b = 0, soft_c = 0;
    while (i < b1 && n < max) {
      UChar32 c = next_cp(p, &i, b1);
      n++;
      ci++;
      if (n * 2 >= max && is_soft_break(c)) {
        soft_b = i;
        soft_c = ci;
      }
    }
    if (i < b1 && soft_b) {
      i = soft_b;
      ci = soft_c;
    }
    int rc = push_trimmed(sp, start, i, cstart, 0);
    if (rc) return rc;
  }
  return 0;
}

/*
 * A line longer than max_chars: ICU sentence boundaries over a UTF-8 UText
 * (no UTF-16 copy of the text), consecutive sentences packed greedily into
 * chunks of at most max_chars code points. Chunks are body text, never
 * headings. The iterator is opened once per td_text_split call that needs it
 * and closed at its end, so nothing is shared between threads; long lines are
 * rare enough that ICU's own data caching makes the open cheap.
 */
static int cut_long(splitter_t *sp, size_t b0, size_t b1, size_t c0) {
  size_t max = sp->o->max_chars;
  if (b1 - b0 > INT32_MAX) return hard_cut(sp, b0, b1, c0); /* ICU indexes are int32 */
  UErrorCode st = U_ZERO_ERROR;
  if (!sp->bi) {
    sp->bi = ubrk_open(UBRK_SENTENCE, "zh", NULL, 0, &st);
    if (U_FAILURE(st)) {
      sp->bi = NULL;
      return td_err_set(sp->err, st == U_MEMORY_ALLOCATION_ERROR ? TD_ENOMEM : TD_EINVAL,
                        "ICU sentence break iterator: %s", u_errorName(st));
    }
  }
  UText ut = UTEXT_INITIALIZER;
  utext_openUTF8(&ut, sp->text + b0, (int64_t)(b1 - b0), &st);
  ubrk_setUText(sp->bi, &ut, &st);
  if (U_FAILURE(st)) {
    utext_close(&ut);
    return td_err_set(sp->err, TD_EINVAL, "ICU sentence segmentation: %s", u_errorName(st));
  }
  int rc = 0;
  size_t cb = b0, cc = c0, chunk_n = 0; /* open chunk: start byte, start cp, length */
  int32_t prev = ubrk_first(sp->bi);
  for (int32_t b = ubrk_next(sp->bi); b != UBRK_DONE && !rc; b = ubrk_next(sp->bi)) {
    size_t sb = b0 + (size_t)prev, se = b0 + (size_t)b;
    size_t sn = td_text_count_chars(sp->text + sb, se - sb);
    prev = b;
    if (chunk_n + sn <= max) {
      chunk_n += sn;
      continue;
    }
    if (chunk_n) {
      rc = push_trimmed(sp, cb, sb, cc, 0);
      cc += chunk_n;
      cb = sb;
      chunk_n = 0;
    }
    if (rc) break;
    if (sn <= max) {
      chunk_n = sn;
    } else {
      rc = hard_cut(sp, sb, se, cc);
      cc += sn;
      cb = se;
    }
  }
  if (!rc && chunk_n) rc = push_trimmed(sp, cb, b0 + (size_t)prev, cc, 0);
  /* Detach the iterator from the stack UText before it goes away. */
  UErrorCode st2 = U_ZERO_ERROR;
  ubrk_setText(sp->bi, NULL, 0, &st2);
  utext_close(&ut);
  return rc;
}

static int emit_line(splitter_t *sp, size_t b0, size_t b1, size_t c0, size_t c1) {
  size_t n = c1 - c0;
  if (sp->o->max_chars && n > sp->o->max_chars) return cut_long(sp, b0, b1, c0);
  int h = td_text_is_heading(sp->text + b0, b1 - b0, sp->o->heading_chars);
  if (passages_push(sp->out, b0, b1, c0, c1, h))
    return td_err_set(sp->err, TD_ENOMEM, "out of memory");
  return 0;
}

int td_text_split(const char *text, size_t len, const td_split_opts_t *o,
                  td_passages_t *out, td_err_t *err) {
  td_split_opts_t def;
  if (!o) {
    td_split_opts_default(&def);
    o = &def;
  }
  if ((!text && len) || !out) return td_err_set(err, TD_EINVAL, "td_text_split: bad arguments");
  splitter_t sp = {.text = text, .o = o, .out = out, .bi = NULL, .err = err};
  const uint8_t *p = (const uint8_t *)text;
  size_t n0 = out->count, i = 0, ci = 0;
  /* The current line: first non-space (fb, fc), end of last non-space (lb, lc). */
  size_t fb = 0, fc = 0, lb = 0, lc = 0;
  int have = 0, rc = 0;
  /* One pass: validation, line breaks, trimming and code point offsets
   * together, so offsets cost O(n) whatever the number of lines. */
  while (i < len) {
    size_t at = i;
    UChar32 c = p[i];
    if (c < 0x80) {
      i++;
      if (c == 0) {
        rc = td_err_set(err, TD_EUTF8, "invalid UTF-8 at byte %zu (NUL byte)", at);
        break;
      }
    } else {
      U8_NEXT(p, i, len, c);
      if (c < 0) {
        rc = td_err_set(err, TD_EUTF8, "invalid UTF-8 at byte %zu", at);
        break;
      }
    }
    if (is_line_break(c)) {
      if (have && (rc = emit_line(&sp, fb, lb, fc, lc))) break;
      have = 0;
    } else if (!is_trim_space(c)) {
      if (!have) {
        have = 1;
        fb = at;
        fc = ci;
      }
      lb = i;
      lc = ci + 1;
    }
    ci++;
  }
  if (!rc && have) rc = emit_line(&sp, fb, lb, fc, lc);
  if (sp.bi) ubrk_close(sp.bi);
  if (rc) {
    out->count = n0; /* all or nothing */
    return rc;
  }
  /* Nothing appended to a still empty array: items may be NULL, and even
   * NULL + 0 is undefined behaviour (found by fuzz_split). */
  if (out->count > n0) td_text_link_headings(out->items + n0, out->count - n0);
  for (size_t k = n0; k < out->count; k++)
    if (out->items[k].context >= 0) out->items[k].context += (long)n0;
  return 0;
}

void td_text_link_headings(td_passage_t *ps, size_t n) {
  /* Body text before the first section heading takes the title, which is
   * simply the first heading when the article starts with a short one. */
  long cur = -1;
  for (size_t i = 0; i < n; i++) {
    if (ps[i].is_heading) {
      ps[i].context = -1;
      cur = (long)i;
    } else {
      ps[i].context = cur;
    }
  }
}

/* ---- heading detection ----
 *
 * Tuned by reading ../shared/corpus/train.jsonl, where half the passages are
 * short: a heading is a short line that does not end like a sentence, minus
 * the page furniture that is short too (bylines, dates, sources, breadcrumbs,
 * table rows, affiliations). The rule works on at most 2 * heading_chars + 8
 * code points, decoded once onto the stack.
 */

static inline int is_digit_cp(UChar32 c) {
  return (c >= '0' && c <= '9') || (c >= 0xFF10 && c <= 0xFF19);
}

static inline int is_han(UChar32 c) {
  return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) ||
         (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x20000 && c <= 0x2FA1F);
}

static inline int is_cn_numeral(UChar32 c) {
  switch (c) {
  case 0x4E00: case 0x4E8C: case 0x4E09: case 0x56DB: case 0x4E94: /* 一二三四五 */
  case 0x516D: case 0x4E03: case 0x516B: case 0x4E5D: case 0x5341: /* 六七八九十 */
  case 0x767E: case 0x96F6: case 0x3007: case 0x4E24:              /* 百零〇两 */
    return 1;
  default:
    return 0;
  }
}

static inline int is_colon(UChar32 c) { return c == ':' || c == 0xFF1A; }
static inline int is_comma(UChar32 c) { return c == ',' || c == 0xFF0C; }

/* Code points that end a sentence (or a clause that continues on the next
 * line, like a trailing comma): such a line is body text. '.' counts only
 * after a non-digit, so "1." stays an enumerator. */
static int is_final(const UChar32 *a, size_t n) {
  UChar32 c = a[n - 1];
  switch (c) {
  case 0x3002: case 0xFF61: case 0xFF01: case 0xFF1F: case 0xFF1B: /* 。｡！？； */
  case '!': case '?': case ';': case 0x2026:                       /* !?;… */
  case 0xFF0C: case ',': case 0x3001:                              /* ，,、 */
    return 1;
  case '.': case 0xFF0E:
    return n < 2 || !is_digit_cp(a[n - 2]);
  default:
    return 0;
  }
}

static inline int is_closer(UChar32 c) {
  switch (c) {
  case 0x201D: case 0x2019: case '"': case '\'': case ')': case 0xFF09: case 0x3011:
  case 0x300F: case 0x300D: case 0x300B: case 0x3009: case ']': case 0x3015:
    return 1;
  default:
    return 0;
  }
}

static inline int is_bullet(UChar32 c) {
  switch (c) {
  case '-': case '*': case '>': case 0x2022: case 0x00B7: case 0x25AA: case 0x25CF:
  case 0x25CB: case 0x25C6: case 0x25C7: case 0x25A0: case 0x25A1: case 0x203B:
  case 0x221A: case 0x2605: case 0x2606: case 0x25BA: case 0x25B6: case 0x2713:
  case 0x27A2: case 0x2756:
    return 1;
  default:
    return 0;
  }
}

static inline uint8_t utf8_lead(UChar32 c) {
  return c < 0x80 ? (uint8_t)c
         : c < 0x800 ? (uint8_t)(0xC0 | (c >> 6))
         : c < 0x10000 ? (uint8_t)(0xE0 | (c >> 12))
                       : (uint8_t)(0xF0 | (c >> 18));
}

/* Length of the UTF-8 literal `lit` matched at a[i], in code points, or 0.
 * The lead byte is compared first: most positions fail there. */
static size_t match_at(const UChar32 *a, size_t n, size_t i, const char *lit) {
  const uint8_t *p = (const uint8_t *)lit;
  if (i >= n || utf8_lead(a[i]) != p[0]) return 0;
  size_t k = i;
  for (size_t j = 0; p[j];) {
    if (k >= n) return 0;
    UChar32 c;
    U8_NEXT_OR_FFFD(p, j, SIZE_MAX, c);
    if (a[k++] != c) return 0;
  }
  return k - i;
}

/* The first code point of a UTF-8 literal. */
static UChar32 first_cp(const char *lit) {
  const uint8_t *p = (const uint8_t *)lit;
  size_t j = 0;
  UChar32 c;
  U8_NEXT_OR_FFFD(p, j, SIZE_MAX, c);
  return c;
}

/* Positions are first compared with the literal's first code point:
 * calling match_at everywhere made heading detection costly (bench/NOTES.md). */
static int contains(const UChar32 *a, size_t n, const char *lit) {
  UChar32 c0 = first_cp(lit);
  for (size_t i = 0; i < n; i++)
    if (a[i] == c0 && match_at(a, n, i, lit)) return 1;
  return 0;
}

static size_t digit_run(const UChar32 *a, size_t n, size_t i) {
  size_t k = i;
  while (k < n && is_digit_cp(a[k])) k++;
  return k - i;
}

static size_t cn_run(const UChar32 *a, size_t n, size_t i) {
  size_t k = i;
  while (k < n && is_cn_numeral(a[k])) k++;
  return k - i;
}

/* 一、 （一） (1) 〔一〕 1. 1、 1) 1.1 ① ❶ 第一章 第二部分 第三条 第1篇 ...
 * Returns the length of the enumerator (its punctuation included), or 0. */
static size_t enumerator_len(const UChar32 *a, size_t n) {
  if (n < 2) return 0;
  UChar32 c = a[0];
  size_t k;
  if ((k = cn_run(a, n, 0)) && k <= 4 && k < n)
    return a[k] == 0x3001 || a[k] == '.' || a[k] == 0xFF0E ? k + 1 : 0;
  if (c == '(' || c == 0xFF08 || c == 0x3014 || c == 0x3010 || c == '[') {
    k = cn_run(a, n, 1);
    if (!k) k = digit_run(a, n, 1);
    if (!k || k > 4 || 1 + k >= n) return 0;
    UChar32 d = a[1 + k];
    return d == ')' || d == 0xFF09 || d == 0x3015 || d == 0x3011 || d == ']' ? k + 2 : 0;
  }
  if (is_digit_cp(c)) {
    size_t i = digit_run(a, n, 0);
    if (i > 2) return 0;
    /* 1.2.3: dotted groups, but "1.7万" is a number, not an enumerator. */
    while (i + 1 < n && (a[i] == '.' || a[i] == 0xFF0E) && is_digit_cp(a[i + 1]))
      i += 1 + digit_run(a, n, i + 1);
    if (i >= n) return 0;
    UChar32 d = a[i];
    if (is_trim_space(d)) return i;
    return d == '.' || d == 0xFF0E || d == 0x3001 || d == ')' || d == 0xFF09 ? i + 1 : 0;
  }
  if ((c >= 0x2460 && c <= 0x249B) || (c >= 0x2776 && c <= 0x2793)) return 1;
  if (c == 0x7B2C) { /* 第 */
    k = cn_run(a, n, 1);
    if (!k) k = digit_run(a, n, 1);
    if (!k || k > 4 || 1 + k >= n) return 0;
    switch (a[1 + k]) {
    case 0x3001: case ',': case 0xFF0C: case ':': case 0xFF1A: case '.': case 0xFF0E:
      return k + 2;
    case 0x7AE0: case 0x8282: case 0x90E8: case 0x7BC7: case 0x6761: /* 章节部篇条 */
    case 0x6B3E: case 0x6B65: case 0x9636: case 0x6279: case 0x9879: /* 款步阶批项 */
    case 0x662F:                                                     /* 是 */
      return k + 1;
    default:
      return is_trim_space(a[1 + k]) ? k + 1 : 0;
    }
  }
  return 0;
}

/* Labels of page metadata: "来源：人民网", "2024-01-21 09:51 作者: 张三". */
static const char *const meta_labels[] = {
    "来源", "作者", "编辑", "责任编辑", "责编", "发布时间", "发布日期", "发表时间",
    "更新时间", "更新于", "记者", "通讯员", "摄影", "图源", "图片来源", "关键词",
    "关键字", "摘要", "摘 要", "基金项目", "收稿日期", "作者简介", "中图分类号",
    "文献标识码", "文献标志码", "文章编号", "DOI", "doi", "点击", "浏览", "浏览量",
    "阅读", "阅读量", "字体", "字号", "时间", "日期", "出处", "原标题", "审核",
    "校对", "供稿", "撰稿", "投稿", "主办", "承办", "网址", "电话", "邮箱", "地址",
    "页数", "大小", "格式", "标签", "栏目", "信息来源", "文章来源", "本文来源",
    "转载", "免责声明", "声明", "当前位置", "您的位置", "您现在的位置", "被引量",
    "下载", "下载量", "一审", "二审", "三审", "文号", "制作", "新闻热线", "执笔人",
    "供图"};
/* Bylines without a colon: "（记者 王崎鉴 刘茜）", "深圳特区报记者 吴绪山". */
static const char *const person_labels[] = {"记者", "通讯员", "作者", "编辑", "摄影",
                                            "责任编辑"};
/* Site furniture: breadcrumbs, copyright, download and share prompts. */
static const char *const furniture[] = {
    "免费阅读", "下载到本地", "立即注册", "登录", "读完约", "阅读全文", "点击查看",
    "扫一扫", "二维码", "分享到", "打印本页", "关闭窗口", "上一篇", "下一篇",
    "返回顶部", "相关阅读", "相关推荐", "浏览器", "首页", "当前位置", "版权所有", "Copyright",
    "©", "ICP", "www.", "http:", "https:", ".com", ".cn", ".org", "@", "文/图"};
/* Lead-ins to a list ("主要包括以下几个方面：") are sentences, not headings. */
static const char *const leadins[] = {"以下", "如下", "下列", "几个方面", "几方面"};

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

static inline int label_boundary(UChar32 c) {
  return is_trim_space(c) || is_digit_cp(c) || c == '[' || c == ']' || c == 0x3010 ||
         c == 0x3011 || c == '(' || c == ')' || c == 0xFF08 || c == 0xFF09 || c == '|' ||
         c == '/' || c == '<' || c == '>';
}

/* The first code points of the literals above, decoded once, and for each
 * value of a code point's low byte the literals whose first code point has
 * it (bit l = literal l): a text is walked once and a position compares
 * only the literals that can start there (scanning the text once per
 * literal was most of the cost of a headline; bench/NOTES.md). */
static UChar32 meta0[NELEM(meta_labels)], person0[NELEM(person_labels)],
    furniture0[NELEM(furniture)];
static uint64_t meta_by[256][2], person_by[256], furniture_by[256];
_Static_assert(NELEM(meta_labels) <= 128 && NELEM(person_labels) <= 64 && NELEM(furniture) <= 64,
               "literal sets fit their masks");
static pthread_once_t first_once = PTHREAD_ONCE_INIT;
static void first_init(void) {
  for (size_t l = 0; l < NELEM(meta_labels); l++) {
    meta0[l] = first_cp(meta_labels[l]);
    meta_by[(uint8_t)meta0[l]][l >> 6] |= UINT64_C(1) << (l & 63);
  }
  for (size_t l = 0; l < NELEM(person_labels); l++) {
    person0[l] = first_cp(person_labels[l]);
    person_by[(uint8_t)person0[l]] |= UINT64_C(1) << l;
  }
  for (size_t l = 0; l < NELEM(furniture); l++) {
    furniture0[l] = first_cp(furniture[l]);
    furniture_by[(uint8_t)furniture0[l]] |= UINT64_C(1) << l;
  }
}

/* Walks the set bits of mask in ascending order (literal order). */
#define FOR_EACH_BIT(l, mask, base)                                                   \
  for (uint64_t mk_ = (mask); mk_; mk_ &= mk_ - 1)                                   \
    for (size_t l = (base) + (size_t)__builtin_ctzll(mk_), once_ = 1; once_; once_ = 0)

static int has_furniture(const UChar32 *a, size_t n) {
  for (size_t i = 0; i < n; i++)
    FOR_EACH_BIT(l, furniture_by[(uint8_t)a[i]], 0)
      if (a[i] == furniture0[l] && match_at(a, n, i, furniture[l])) return 1;
  return 0;
}

static int has_label(const UChar32 *a, size_t n) {
  pthread_once(&first_once, first_init);
  for (size_t i = 0; i < n; i++) {
    if (i > 0 && !label_boundary(a[i - 1])) continue;
    const uint64_t *by = meta_by[(uint8_t)a[i]];
    for (size_t w = 0; w < 2; w++)
      FOR_EACH_BIT(l, by[w], w * 64) {
        if (a[i] != meta0[l]) continue;
        size_t m = match_at(a, n, i, meta_labels[l]);
        if (!m) continue;
        size_t k = i + m;
        while (k < n && is_trim_space(a[k])) k++;
        if (k < n && is_colon(a[k])) return 1;
      }
  }
  for (size_t i = 0; i < n; i++)
    FOR_EACH_BIT(l, person_by[(uint8_t)a[i]], 0) {
      if (a[i] != person0[l]) continue;
      size_t m = match_at(a, n, i, person_labels[l]);
      if (m && i + m < n && is_trim_space(a[i + m])) return 1;
    }
  /* [关键词]..., 【摘要】..., <正>... */
  if (a[0] == '[' || a[0] == 0x3010 || a[0] == '<') {
    for (size_t l = 0; l < NELEM(meta_labels) + 2; l++) {
      const char *lab = l < NELEM(meta_labels) ? meta_labels[l] : l == NELEM(meta_labels) ? "正" : "正文";
      size_t m = match_at(a, n, 1, lab);
      if (m && 1 + m < n && (a[1 + m] == ']' || a[1 + m] == 0x3011 || a[1 + m] == '>')) return 1;
    }
  }
  return 0;
}

static size_t skip_spaces(const UChar32 *a, size_t n, size_t i) {
  while (i < n && is_trim_space(a[i])) i++;
  return i;
}

/* 2024-01-21, 2016/6/2, 2021年10月, 09:51, 2023年6期 (a journal issue). */
static int has_date(const UChar32 *a, size_t n) {
  for (size_t i = 0; i < n; i++) {
    if (!is_digit_cp(a[i])) continue;
    if (i + 4 <= n && digit_run(a, n, i) >= 4) {
      size_t k = i + 4;
      /* \d{4} [-/.] \d{1,2} [-/.] \d{1,2} */
      size_t q = skip_spaces(a, n, k);
      if (q < n && (a[q] == '-' || a[q] == '/' || a[q] == '.')) {
        q = skip_spaces(a, n, q + 1);
        size_t d = digit_run(a, n, q);
        if (d >= 1) {
          q = skip_spaces(a, n, q + (d > 2 ? 2 : d));
          if (q < n && (a[q] == '-' || a[q] == '/' || a[q] == '.')) {
            q = skip_spaces(a, n, q + 1);
            if (q < n && is_digit_cp(a[q])) return 1;
          }
        }
      }
      if (k < n && a[k] == 0x5E74) { /* 年 */
        size_t d = digit_run(a, n, k + 1);
        if (d >= 1 && d <= 2 && k + 1 + d < n && a[k + 1 + d] == 0x6708) return 1; /* 月 */
        q = k + 1 + (k + 1 < n && a[k + 1] == 0x7B2C);                        /* 第 */
        d = digit_run(a, n, q);
        if (d >= 1 && q + d < n && a[q + d] == 0x671F) return 1; /* 期 */
      }
    }
    size_t d = digit_run(a, n, i);
    if (d <= 2 && i + d + 2 < n && a[i + d] == ':' && digit_run(a, n, i + d + 1) >= 2) return 1;
  }
  return 0;
}

/* "马建富 蔡巧燕", "杨帅,郭彩霞,刘淑兰": two or more names of 1-3 Han characters. */
static int is_name_list(const UChar32 *a, size_t n) {
  size_t segs = 0, cur = 0;
  for (size_t i = 0; i <= n; i++) {
    UChar32 c = i < n ? a[i] : ' ';
    if (is_trim_space(c) || is_comma(c) || c == 0x3001 || c == 0x00B7) {
      if (cur) {
        if (cur > 3) return 0;
        segs++;
        cur = 0;
      }
    } else if (is_han(c)) {
      cur++;
    } else {
      return 0;
    }
  }
  return segs >= 2;
}

static int is_gt(UChar32 c) { return c == '>' || c == 0x00BB || c == 0x203A; }
static int is_bar(UChar32 c) { return c == '|' || c == 0xFF5C; }

/* Page furniture, metadata and bylines: short, unpunctuated, not headings. */
static int is_meta(const UChar32 *a, size_t n, int en) {
  pthread_once(&first_once, first_init);
  if (has_label(a, n) || has_date(a, n)) return 1;
  size_t d = 0, h = 0, gt = 0, bars = 0; /* one pass for every count below */
  for (size_t i = 0; i < n; i++) {
    UChar32 c = a[i];
    d += is_digit_cp(c) != 0;
    h += is_han(c) != 0;
    gt += is_gt(c) != 0;
    bars += is_bar(c) != 0;
  }
  if (!en) {
    if (d * 3 > n && h * 2 <= n) return 1;
    if (n >= 7 && is_trim_space(a[n - 7]) && digit_run(a, n, n - 6) == 6) return 1; /* postcode */
    if ((a[0] == '(' || a[0] == 0xFF08) && (a[n - 1] == ')' || a[n - 1] == 0xFF09)) return 1;
  }
  if (has_furniture(a, n)) return 1;
  if (gt >= 2) return 1;
  if (n >= 2 && match_at(a, n, n - 2, "正文")) return 1;
  if (bars >= 2 || is_bar(a[0]) || is_bar(a[n - 1])) return 1;
  return !en && is_name_list(a, n); /* "第一章 总则" is no byline */
}

static int is_leadin_colon(const UChar32 *a, size_t n) {
  for (size_t l = 0; l < NELEM(leadins); l++)
    if (contains(a, n, leadins[l])) return 1;
  size_t k = n - 1; /* a[k] is the colon */
  while (k > 0 && is_trim_space(a[k - 1])) k--;
  if (k == 0) return 0;
  switch (a[k - 1]) {
  case 0x662F: case 0x62EC: case 0x4E3A: case 0x6709: case 0x542B: case 0x5982: /* 是括为有含如 */
  case 0x793A: case 0x9053: case 0x8BF4: case 0x51FA: case 0x79F0:              /* 示道说出称 */
    return 1;
  default:
    return 0;
  }
}

static int heading_rule(const UChar32 *a, size_t n, size_t hc) {
  /* Markdown: "## 一、...", "**标题**". */
  while (n && a[0] == '#') a++, n--;
  if (n >= 2 && a[0] == '*' && a[1] == '*') a += 2, n -= 2;
  if (n >= 2 && a[n - 1] == '*' && a[n - 2] == '*') n -= 2;
  while (n && is_trim_space(a[0])) a++, n--;
  while (n && is_trim_space(a[n - 1])) n--;
  if (!n) return 0;
  size_t enl = enumerator_len(a, n);
  int en = enl > 0;
  if (n > 2 * hc || (!en && n > hc)) return 0;
  size_t core = n; /* without closing quotes and brackets */
  while (core && is_closer(a[core - 1])) core--;
  if (!core) return 0;
  if (n >= 3 && a[n - 1] == '.' && a[n - 2] == '.' && a[n - 3] == '.') return 0;
  size_t stops = 0, clause = 0, commas = 0;
  for (size_t i = 0; i < n; i++) {
    UChar32 c = a[i];
    stops += c == 0x3002;
    commas += is_comma(c);
    clause += i >= enl && (is_comma(c) || is_colon(c) || c == ';' || c == 0xFF1B || c == 0x3001);
  }
  /* A question as a heading ("谁来振兴乡村？", "一、什么是“三清一改”?"): the
   * mark ends the line (dialogue closes a quote after it) and is the only
   * sentence punctuation; at most one comma. */
  int question = core == n && (a[n - 1] == '?' || a[n - 1] == 0xFF1F);
  for (size_t i = 0; question && i + 1 < n; i++)
    if (is_final(a, i + 1) && !is_comma(a[i]) && a[i] != 0x3001) question = 0;
  if (question && commas > 1) return 0;
  if (a[core - 1] == 0x3002) {
    /* "一、党建工作为乡村振兴提供坚强政治保证。" is a heading in official
     * style; "1. 清理污水：整治……，防止……。" is a list item. */
    if (!(en && stops == 1 && n <= hc && !clause)) return 0;
  } else if (!question && is_final(a, core)) {
    return 0;
  } else if (stops) {
    return 0;
  } else if (is_colon(a[core - 1])) {
    size_t c2 = 0;
    for (size_t i = 0; i < n; i++)
      c2 += is_comma(a[i]) || a[i] == ';' || a[i] == 0xFF1B || a[i] == 0x3001;
    if (c2 || is_leadin_colon(a, core)) return 0;
  } else {
    if (is_bullet(a[0])) return 0; /* list items; "- 产业振兴：" is caught above */
    if (commas > 2) return 0;
    /* A long line with a comma is more often a sentence broken by the page
     * than a heading: "抓责任落实，在整体统筹推进中提升领导力" stays in. */
    if (commas && !en && n * 4 > hc * 3) return 0;
  }
  return !is_meta(a, n, en);
}

int td_text_is_heading(const char *s, size_t len, size_t heading_chars) {
  if (!s || !len || !heading_chars) return 0;
  const uint8_t *p = (const uint8_t *)s;
  size_t b = 0, e = len;
  /* Trailing white space, backwards, so the cap below counts content only. */
  while (e > b) {
    size_t k = e - 1, j;
    while (k > b && e - k < 4 && (p[k] & 0xC0) == 0x80) k--;
    UChar32 c;
    j = k;
    U8_NEXT_OR_FFFD(p, j, e, c);
    if (j != e || !is_trim_space(c)) break; /* ill-formed tail: not space */
    e = k;
  }
  /* Room for 2 * heading_chars plus Markdown markers; anything longer is no heading. */
  size_t cap = heading_chars > SIZE_MAX / 4 ? SIZE_MAX / 2 : 2 * heading_chars + 8;
  UChar32 stack[256], *a = stack;
  if (cap > NELEM(stack)) {
    /* Only with an unusually large heading_chars; a failure means "no". */
    size_t need = td_text_count_chars(s + b, e - b);
    if (need > cap) return 0;
    if (!(a = malloc((need + 1) * sizeof *a))) return 0;
    cap = need + 1;
  }
  size_t n = 0;
  while (b < e) {
    UChar32 c;
    U8_NEXT_OR_FFFD(p, b, e, c);
    if (n == 0 && is_trim_space(c)) continue;
    if (n == cap) break;
    a[n++] = c;
  }
  int r = b < e ? 0 : heading_rule(a, n, heading_chars);
  if (a != stack) free(a);
  return r;
}
