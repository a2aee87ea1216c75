/* text: strict UTF-8 validation, passage splitting with byte and code point
 * offsets, sentence cutting of long lines, heading detection and linking. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "text.h"

/* ---- UTF-8 ---- */

static void expect_bad(const char *s, size_t len, size_t at) {
  td_err_t err;
  td_err_clear(&err);
  size_t bad = 12345;
  assert_int_equal(td_text_check_utf8(s, len, &bad, &err), TD_EUTF8);
  assert_int_equal(err.code, TD_EUTF8);
  assert_int_equal(bad, at);
  char want[64];
  snprintf(want, sizeof want, "invalid UTF-8 at byte %zu", at);
  assert_memory_equal(err.msg, want, strlen(want));
}

static void test_utf8_valid(void **st) {
  (void)st;
  const char *ok[] = {"", "abc", "乡村振兴", "\xF0\x9F\x98\x80 emoji", "\xC2\xA0\xE3\x80\x80",
                      "\xEF\xBF\xBF", "\xF4\x8F\xBF\xBF", "\xED\x9F\xBF", "\xEE\x80\x80"};
  for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
    size_t bad = 7;
    assert_int_equal(td_text_check_utf8(ok[i], strlen(ok[i]), &bad, NULL), 0);
  }
  /* Long ASCII runs go through the 8-byte fast path; a bad byte after it. */
  char buf[64];
  memset(buf, 'a', sizeof buf);
  assert_int_equal(td_text_check_utf8(buf, sizeof buf, NULL, NULL), 0);
  buf[17] = (char)0x80;
  expect_bad(buf, sizeof buf, 17);
  buf[17] = 0;
  expect_bad(buf, sizeof buf, 17);
}

static void test_utf8_invalid(void **st) {
  (void)st;
  expect_bad("ab\xC0\x80", 4, 2);             /* overlong NUL */
  expect_bad("\xC1\xBF", 2, 0);               /* overlong 2-byte */
  expect_bad("x\xE0\x80\x80", 4, 1);          /* overlong 3-byte */
  expect_bad("\xF0\x80\x80\x80", 4, 0);       /* overlong 4-byte */
  expect_bad("ok\xED\xA0\x80", 5, 2);         /* surrogate D800 */
  expect_bad("\xED\xBF\xBF", 3, 0);           /* surrogate DFFF */
  expect_bad("\xF4\x90\x80\x80", 4, 0);       /* U+110000 */
  expect_bad("\xF5\x80\x80\x80", 4, 0);       /* lead byte past F4 */
  expect_bad("乡\xE6\x9D", 5, 3);             /* truncated at the end */
  expect_bad("\xE6\x9D" "a", 3, 0);           /* truncated before ASCII */
  expect_bad("a\x80", 2, 1);                  /* lone continuation */
  expect_bad("\xFF", 1, 0);
  expect_bad("a\0b", 3, 1);                   /* NUL */
  /* err may be NULL */
  size_t bad = 0;
  assert_int_equal(td_text_check_utf8("\xC0\x80", 2, &bad, NULL), TD_EUTF8);
  assert_int_equal(bad, 0);
}

static void test_count_chars(void **st) {
  (void)st;
  assert_int_equal(td_text_count_chars("", 0), 0);
  assert_int_equal(td_text_count_chars("abc", 3), 3);
  assert_int_equal(td_text_count_chars("乡村a\xF0\x9F\x98\x80", 11), 4);
}

/* ---- splitting ---- */

typedef struct want {
  const char *text;
  int heading;
  long context;
} want_t;

/* Checks the passages of text against want[] and the offset invariants. */
static void check_split(const char *text, const td_split_opts_t *o, const want_t *w, size_t nw) {
  td_passages_t ps;
  td_passages_init(&ps);
  td_err_t err;
  td_err_clear(&err);
  assert_int_equal(td_text_split(text, strlen(text), o, &ps, &err), 0);
  if (ps.count != nw) {
    for (size_t i = 0; i < ps.count; i++)
      fprintf(stderr, "  got [%.*s] h=%d ctx=%ld\n", (int)(ps.items[i].end - ps.items[i].start),
              text + ps.items[i].start, ps.items[i].is_heading, ps.items[i].context);
  }
  assert_int_equal(ps.count, nw);
  for (size_t i = 0; i < nw; i++) {
    const td_passage_t *p = &ps.items[i];
    assert_int_equal(p->end - p->start, strlen(w[i].text));
    assert_memory_equal(text + p->start, w[i].text, strlen(w[i].text));
    assert_int_equal(p->cstart, td_text_count_chars(text, p->start));
    assert_int_equal(p->cend, td_text_count_chars(text, p->end));
    if (w[i].heading >= 0) assert_int_equal(p->is_heading, w[i].heading);
    if (w[i].context >= -1) assert_int_equal(p->context, w[i].context);
  }
  td_passages_free(&ps);
}

#define ANY -2

static void test_split_line_breaks(void **st) {
  (void)st;
  /* LF, CRLF, CR, NEL, LS, PS, VT/FF; empty and blank lines dropped. */
  const char *t = "one.\ntwo.\r\nthree.\rfour.\xC2\x85" "five.\xE2\x80\xA8six.\xE2\x80\xA9seven.\f"
                  "eight.\n\n \t\n\r\n\xE3\x80\x80\nnine.";
  want_t w[] = {{"one.", 0, ANY},  {"two.", 0, ANY},    {"three.", 0, ANY},
                {"four.", 0, ANY}, {"five.", 0, ANY},   {"six.", 0, ANY},
                {"seven.", 0, ANY}, {"eight.", 0, ANY}, {"nine.", 0, ANY}};
  check_split(t, NULL, w, sizeof w / sizeof w[0]);
  check_split("", NULL, NULL, 0);
  check_split("\n\r\n \xE3\x80\x80 \n", NULL, NULL, 0);
}

static void test_split_trim(void **st) {
  (void)st;
  /* U+3000, NBSP, ZWSP, BOM, tabs around; inner spaces kept. */
  const char *t = "\xEF\xBB\xBF\xE3\x80\x80\xE3\x80\x80乡村 振兴。\xC2\xA0\t\n"
                  "\xE2\x80\x8B 产业兴旺，生态宜居。\xE2\x80\x8B\xE3\x80\x80";
  want_t w[] = {{"乡村 振兴。", 0, ANY}, {"产业兴旺，生态宜居。", 0, ANY}};
  check_split(t, NULL, w, 2);
}

static void test_split_offsets_multibyte(void **st) {
  (void)st;
  /* 4-byte code points before the passage: bytes and code points differ. */
  const char *t = "\xF0\x9F\x98\x80\xF0\x9F\x98\x80\n  村\xF0\x9F\x98\x80。 \nb.";
  td_passages_t ps;
  td_passages_init(&ps);
  assert_int_equal(td_text_split(t, strlen(t), NULL, &ps, NULL), 0);
  assert_int_equal(ps.count, 3);
  assert_int_equal(ps.items[0].start, 0);
  assert_int_equal(ps.items[0].end, 8);
  assert_int_equal(ps.items[0].cstart, 0);
  assert_int_equal(ps.items[0].cend, 2);
  assert_int_equal(ps.items[1].start, 11);
  assert_int_equal(ps.items[1].cstart, 5);
  assert_int_equal(ps.items[1].cend, 8);
  assert_int_equal(ps.items[2].cstart, 10);
  td_passages_free(&ps);
}

static void test_split_invalid_utf8(void **st) {
  (void)st;
  td_passages_t ps;
  td_passages_init(&ps);
  td_err_t err;
  td_err_clear(&err);
  assert_int_equal(td_text_split("ok\nfine\n", 8, NULL, &ps, &err), 0);
  size_t before = ps.count;
  const char bad[] = "一、标题\n正文内容。\xED\xA0\x80\n";
  assert_int_equal(td_text_split(bad, sizeof bad - 1, NULL, &ps, &err), TD_EUTF8);
  assert_string_equal(err.msg, "invalid UTF-8 at byte 28");
  assert_int_equal(ps.count, before); /* nothing appended */
  assert_int_equal(td_text_split("a\0b", 3, NULL, &ps, &err), TD_EUTF8);
  assert_int_equal(ps.count, before);
  td_passages_free(&ps);
}

/* Passages appended to a non-empty array get contexts in its numbering. */
static void test_split_appends(void **st) {
  (void)st;
  td_passages_t ps;
  td_passages_init(&ps);
  const char *a = "正文一句。";
  const char *b = "抓队伍建设\n选优配强乡村骨干力量，全面推行村党组织书记任职资格联审。";
  assert_int_equal(td_text_split(a, strlen(a), NULL, &ps, NULL), 0);
  assert_int_equal(td_text_split(b, strlen(b), NULL, &ps, NULL), 0);
  assert_int_equal(ps.count, 3);
  assert_int_equal(ps.items[0].context, -1);
  assert_true(ps.items[1].is_heading);
  assert_int_equal(ps.items[1].context, -1);
  assert_int_equal(ps.items[2].context, 1);
  td_passages_reset(&ps);
  assert_int_equal(td_text_split(b, strlen(b), NULL, &ps, NULL), 0);
  assert_int_equal(ps.count, 2);
  assert_int_equal(ps.items[1].context, 0);
  td_passages_free(&ps);
}

/* Sentences packed greedily into chunks of at most max_chars. */
static void test_split_long_sentences(void **st) {
  (void)st;
  td_split_opts_t o;
  td_split_opts_default(&o);
  o.max_chars = 12;
  /* sentences of 6, 5, 4, 8 code points */
  const char *t = "标题行\n甲乙丙丁戊。己庚辛壬！子丑寅？卯辰巳午未申酉。";
  want_t w[] = {{"标题行", 1, -1}, {"甲乙丙丁戊。己庚辛壬！", 0, 0}, {"子丑寅？卯辰巳午未申酉。", 0, 0}};
  check_split(t, &o, w, 3);
  /* max_chars 0: never cut */
  o.max_chars = 0;
  want_t w0[] = {{"标题行", 1, -1}, {"甲乙丙丁戊。己庚辛壬！子丑寅？卯辰巳午未申酉。", 0, 0}};
  check_split(t, &o, w0, 2);
  /* exactly max_chars: not cut */
  o.max_chars = 23;
  check_split(t, &o, w0, 2);
  o.max_chars = 22;
  want_t w22[] = {{"标题行", 1, -1}, {"甲乙丙丁戊。己庚辛壬！子丑寅？", 0, 0},
                  {"卯辰巳午未申酉。", 0, 0}};
  check_split(t, &o, w22, 3);
}

/* One sentence longer than max_chars: cut after a comma in the second half
 * of the window, else exactly at max_chars. */
static void test_split_hard_cut(void **st) {
  (void)st;
  td_split_opts_t o;
  td_split_opts_default(&o);
  o.max_chars = 10;
  const char *t = "一二三四五六七，八九十一二三四五六七八九十一二三四五。";
  want_t w[] = {{"一二三四五六七，", 0, -1}, {"八九十一二三四五六七", 0, -1},
                {"八九十一二三四五。", 0, -1}};
  check_split(t, &o, w, 3);
  /* a comma in the first half is not used */
  const char *t2 = "一二，三四五六七八九十一二三四五";
  want_t w2[] = {{"一二，三四五六七八九", 0, -1}, {"十一二三四五", 0, -1}};
  check_split(t2, &o, w2, 2);
  /* chunks are re-trimmed: the space at a cut does not start a passage */
  const char *t3 = "aaaa bbbb cccc dddd eeee";
  want_t w3[] = {{"aaaa bbbb", 0, -1}, {"cccc dddd", 0, -1}, {"eeee", 0, -1}};
  check_split(t3, &o, w3, 3);
}

/* Random documents: offsets, trimming, lengths and ordering hold for all. */
static void test_split_random_invariants(void **st) {
  (void)st;
  static const char *pieces[] = {"乡村", "振兴", "。", "，", " ", "\xE3\x80\x80", "\n", "\r\n",
                                 "\r", "\xE2\x80\xA8", "a", "Bc", "\xF0\x9F\x98\x80", "！",
                                 "\xC2\xA0", "一、", "（二）", "? ", ". ", "\xE2\x80\x8B"};
  const size_t np = sizeof pieces / sizeof pieces[0];
  unsigned seed = 12345;
  td_buf_t b;
  td_buf_init(&b);
  td_passages_t ps;
  td_passages_init(&ps);
  for (int round = 0; round < 400; round++) {
    td_buf_reset(&b);
    size_t n = (size_t)(round % 50) * 8;
    for (size_t i = 0; i < n; i++) {
      seed = seed * 1103515245u + 12345u;
      const char *p = pieces[(seed >> 16) % np];
      assert_int_equal(td_buf_append(&b, p, strlen(p)), 0);
    }
    td_split_opts_t o = {.max_chars = 1 + (size_t)(round % 30), .heading_chars = 10};
    td_passages_reset(&ps);
    assert_int_equal(td_text_split(b.data ? b.data : "", b.len, &o, &ps, NULL), 0);
    size_t prev_end = 0, prev_cend = 0;
    for (size_t i = 0; i < ps.count; i++) {
      const td_passage_t *p = &ps.items[i];
      assert_true(p->start < p->end);
      assert_true(p->start >= prev_end);
      assert_true(p->cstart >= prev_cend);
      assert_int_equal(p->cstart, td_text_count_chars(b.data, p->start));
      assert_int_equal(p->cend - p->cstart, td_text_count_chars(b.data + p->start, p->end - p->start));
      assert_true(p->cend - p->cstart <= o.max_chars);
      for (size_t q = p->start; q < p->end; q++) assert_true(b.data[q] != '\n' && b.data[q] != '\r');
      assert_true(b.data[p->start] != ' ' && b.data[p->end - 1] != ' ');
      assert_true(p->context < (long)i);
      if (p->is_heading) assert_int_equal(p->context, -1);
      prev_end = p->end;
      prev_cend = p->cend;
    }
  }
  td_passages_free(&ps);
  td_buf_free(&b);
}

/* Random bytes: split fails exactly when the validator does, at the same
 * offset, and appends nothing then; heading detection never crashes. */
static void test_split_random_bytes(void **st) {
  (void)st;
  static const uint8_t alphabet[] = {'a', ' ', '\n', '\r', 0x80, 0xBF, 0xC2, 0xA0, 0xE3,
                                     0x80, 0x82, 0xED, 0xA0, 0xF0, 0x9F, 0xF4, 0x90, 0xC0};
  unsigned seed = 7;
  char buf[64];
  td_passages_t ps;
  td_passages_init(&ps);
  for (int round = 0; round < 20000; round++) {
    size_t n = (size_t)(round % 64);
    for (size_t i = 0; i < n; i++) {
      seed = seed * 1103515245u + 12345u;
      buf[i] = (char)alphabet[(seed >> 16) % sizeof alphabet];
    }
    size_t bad = 0;
    td_err_t e1, e2;
    int v = td_text_check_utf8(buf, n, &bad, &e1);
    td_passages_reset(&ps);
    int r = td_text_split(buf, n, NULL, &ps, &e2);
    assert_int_equal(v, r);
    if (r) {
      assert_string_equal(e1.msg, e2.msg);
      assert_int_equal(ps.count, 0);
    }
    (void)td_text_is_heading(buf, n, 40);
    (void)td_text_is_heading(buf, n, 3);
  }
  td_passages_free(&ps);
}

/* ---- headings ---- */

static int h(const char *s) { return td_text_is_heading(s, strlen(s), 40); }

static void test_heading_positive(void **st) {
  (void)st;
  const char *yes[] = {
      "抓队伍建设",
      "选优配强乡村骨干力量",
      "一、强化组织引领",
      "（二）抓集体经济",
      "(三)探索“党建+人才振兴”,带领农民增收致富",
      "〔四〕村务公开",
      "1. 传统村落保护",
      "1.1 乡村垃圾的组成与特点",
      "2.1.2 实施农产品品牌战略",
      "3、加强人才培养",
      "① 建强堡垒",
      "第一章 总则",
      "第二部分：从空心村到明星村的蝶变之路",
      "金昌市:党建引领促发展 乡村振兴展画卷",
      "抓责任落实，在整体统筹推进中提升领导力",
      "——以浙江湖州和山东淄博为例",
      "“要想村子环境好，就得勤拾掇”",
      "7. 乡风文明良好：",
      "- 产业振兴:",
      "一、党建工作为乡村振兴提供坚强政治保证。",
      "**一、产业同质化：当特色沦为流水线产品**",
      "## 二、主要做法",
      "2023年乡镇年度工作计划",
      "河南省乡村振兴战略规划(2018—2022年)",
      "组织有力 发展给力",
      "  \xE3\x80\x80抓组织引领\xE3\x80\x80 ",
      "谁来振兴乡村？",
      "一、什么是“三清一改”?",
      "从年少时离开到富后归来，他们在寻找什么？",
      /* enumerated: up to 2 * heading_chars */
      "（一）劳动力外流和人口老龄化导致农村党员队伍“空心化”、老龄化严重以及后备力量不足",
  };
  for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
    if (!h(yes[i])) fail_msg("expected a heading: %s", yes[i]);
  }
}

static void test_heading_negative(void **st) {
  (void)st;
  const char *no[] = {
      "",
      "   ",
      "以遵纪守法为荣、以违法乱纪为耻。",
      "值得一提的是，新会茶坑村是广东省唯一入选的村！",
      "“会不会想在村里捞油水?”",
      "给自家的狗套上嘴笼,在城市里或许不稀奇,但如果是在农村呢?",
      "争议很大！制度与能力如何权衡？",
      "来源：人民网",
      "来源: 中共金昌市委组织部 更新于: 2021-08-12 15:49:15",
      "2024-01-21 09:51",
      "2024-01-21 09:51程方俞尧明",
      "责任编辑：张三",
      "（记者 王崎鉴 刘茜）",
      "关键词:乡村振兴;基层治理",
      "[关键词]农村基层党建;网格化管理",
      "中共乐山市委党校学报 2023年6期",
      "马建富 蔡巧燕",
      "杨帅,郭彩霞,刘淑兰",
      "首页 > 新闻中心 > 正文",
      "浙江义乌 | 智慧赋能城乡融合助力乡村振兴 |",
      "(南京农业大学 公共管理学院,江苏 南京 210095)",
      "福州大学,福建 福州 350108",
      "- 识别制约乡村振兴的瓶颈因素和深层次矛盾",
      "• 乡村风貌遭到破坏，传统文化流失",
      "传统乡村治理模式主要依靠行政命令和道德说教,存在以下突出问题:",
      "红色美丽村庄试点建设的主要目标是:",
      "4. 建立健全长效机制,巩固移风易俗成果。",
      "1. 清理污水:整治村内排水系统,疏通沟渠,防止污水乱排。",
      "乡村治理是一个复杂的系统工程,涉及政府、社会组织、村民等多元主体的互动与",
      "- 2024-11-26第十五届农业贸易政策国际...",
      "乡镇时评网 xzspw.org.cn 版权所有",
      "已阅读5页,还剩6页未读 继续免费阅读",
      /* too long for a plain heading (41 code points) */
      "乡村振兴视角下农村基层治理的机制创新研究乡村振兴视角下农村基层治理的机制创新研究究",
      /* enumerated but a 。 inside */
      "（二）推进交通互联促流通。打通外部交通环线",
  };
  for (size_t i = 0; i < sizeof no / sizeof no[0]; i++) {
    if (h(no[i])) fail_msg("expected no heading: %s", no[i]);
  }
  /* heading_chars 0 turns detection off */
  assert_int_equal(td_text_is_heading("抓队伍建设", strlen("抓队伍建设"), 0), 0);
  /* a smaller limit */
  assert_int_equal(td_text_is_heading("选优配强乡村骨干力量", strlen("选优配强乡村骨干力量"), 5), 0);
  assert_int_equal(td_text_is_heading("抓队伍建设", strlen("抓队伍建设"), 5), 1);
  /* large limits take the heap path */
  assert_int_equal(td_text_is_heading("抓队伍建设", strlen("抓队伍建设"), 1000), 1);
  /* ill-formed input reads as U+FFFD, an ordinary character */
  assert_int_equal(h("抓\xE6\x9D建设"), 1);
  assert_int_equal(h("抓\xE6\x9D建设。"), 0);
}

static void test_link_headings(void **st) {
  (void)st;
  td_passage_t ps[7] = {{0}};
  int hd[7] = {0, 1, 0, 0, 1, 1, 0};
  for (int i = 0; i < 7; i++) ps[i].is_heading = hd[i], ps[i].context = 99;
  td_text_link_headings(ps, 7);
  long want[7] = {-1, -1, 1, 1, -1, -1, 5};
  for (int i = 0; i < 7; i++) assert_int_equal(ps[i].context, want[i]);
  td_text_link_headings(ps, 0);
}

/* A whole article: the title is context for body before the first section
 * heading; bylines and dates are not headings. */
static void test_split_article(void **st) {
  (void)st;
  const char *t =
      "金昌市：党建引领促发展 乡村振兴展画卷\n"
      "来源： 中共金昌市委组织部 更新于： 2021-08-12 15:49:15\n"
      "\n"
      "金昌市认真贯彻落实党中央关于实施乡村振兴战略重大决策部署，着力打造乡村振兴金昌样板。\n"
      "抓组织引领  \n"
      "筑牢乡村振兴战斗堡垒\n"
      "坚持把标准化理念贯穿基层党建全过程，常态化推进学标用标达标。\n"
      "抓队伍建设\n"
      "全面推行村党组织书记任职县乡资格联审。\n";
  want_t w[] = {{"金昌市：党建引领促发展 乡村振兴展画卷", 1, -1},
                {"来源： 中共金昌市委组织部 更新于： 2021-08-12 15:49:15", 0, 0},
                {"金昌市认真贯彻落实党中央关于实施乡村振兴战略重大决策部署，着力打造乡村振兴金昌样板。", 0, 0},
                {"抓组织引领", 1, -1},
                {"筑牢乡村振兴战斗堡垒", 1, -1},
                {"坚持把标准化理念贯穿基层党建全过程，常态化推进学标用标达标。", 0, 4},
                {"抓队伍建设", 1, -1},
                {"全面推行村党组织书记任职县乡资格联审。", 0, 6}};
  check_split(t, NULL, w, sizeof w / sizeof w[0]);
}

/* The seed articles, if ../shared is present: the section headings of seed
 * 004 are found, and long paragraphs cut at 80 code points stay <= 80. */
static void test_seed_articles(void **st) {
  (void)st;
  const char *shared = getenv("THEMED_SHARED");
  char path[1024];
  snprintf(path, sizeof path, "%s/seeds/004_92884a1731698b58.txt", shared ? shared : "../shared");
  char *text = NULL;
  size_t len = 0;
  if (td_read_file(path, &text, &len, NULL)) {
    fprintf(stderr, "skipping: %s not readable (no ../shared)\n", path);
    skip();
  }
  assert_int_equal(td_text_check_utf8(text, len, NULL, NULL), 0);
  td_passages_t ps;
  td_passages_init(&ps);
  td_split_opts_t o;
  td_split_opts_default(&o);
  assert_int_equal(td_text_split(text, len, &o, &ps, NULL), 0);
  const char *heads[] = {"抓组织引领", "抓队伍建设", "抓智力支撑", "抓集体经济", "抓治理效能"};
  size_t found = 0, headings = 0;
  for (size_t i = 0; i < ps.count; i++) {
    const td_passage_t *p = &ps.items[i];
    headings += p->is_heading;
    for (size_t k = 0; k < 5; k++)
      if (p->end - p->start == strlen(heads[k]) &&
          memcmp(text + p->start, heads[k], strlen(heads[k])) == 0) {
        assert_true(p->is_heading);
        /* the body two lines below takes the heading's second line */
        assert_true(i + 2 < ps.count);
        assert_false(ps.items[i + 2].is_heading);
        assert_int_equal(ps.items[i + 2].context, (long)i + 1);
        found++;
      }
  }
  assert_int_equal(found, 5);
  assert_true(headings >= 11 && headings <= 14);
  td_passages_reset(&ps);
  o.max_chars = 80;
  assert_int_equal(td_text_split(text, len, &o, &ps, NULL), 0);
  for (size_t i = 0; i < ps.count; i++) {
    assert_true(ps.items[i].cend - ps.items[i].cstart <= 80);
    assert_int_equal(ps.items[i].cstart, td_text_count_chars(text, ps.items[i].start));
  }
  td_passages_free(&ps);
  free(text);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_utf8_valid),
      cmocka_unit_test(test_utf8_invalid),
      cmocka_unit_test(test_count_chars),
      cmocka_unit_test(test_split_line_breaks),
      cmocka_unit_test(test_split_trim),
      cmocka_unit_test(test_split_offsets_multibyte),
      cmocka_unit_test(test_split_invalid_utf8),
      cmocka_unit_test(test_split_appends),
      cmocka_unit_test(test_split_long_sentences),
      cmocka_unit_test(test_split_hard_cut),
      cmocka_unit_test(test_split_random_invariants),
      cmocka_unit_test(test_split_random_bytes),
      cmocka_unit_test(test_heading_positive),
      cmocka_unit_test(test_heading_negative),
      cmocka_unit_test(test_link_headings),
      cmocka_unit_test(test_split_article),
      cmocka_unit_test(test_seed_articles),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
