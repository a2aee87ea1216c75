/*
 * The icu and bigram tokenizer plugins, loaded through the real loader from
 * $THEMED_PLUGIN_DIR (build/plugins).
 *
 * Expected token lists are exact. Dictionary segmentation (icu) depends on
 * the ICU data version: if an ICU upgrade changes them, the change also
 * changes a model's features, so it should be seen, not hidden.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "common.h"
#include "plugin.h"
/* White-box tests of the shared preparation code (T->S table vs ICU). */
#include "../../plugins/textprep.h"

static const char *plugin_dir(void) {
  const char *d = getenv("THEMED_PLUGIN_DIR");
  return d && *d ? d : "build/plugins";
}

static td_tokenizer_t *open_tok(const char *name, const char *opts_json) {
  json_error_t je;
  json_t *o = opts_json ? json_loads(opts_json, 0, &je) : NULL;
  if (opts_json) assert_non_null(o);
  td_tokenizer_t *t = NULL;
  td_err_t err = {0};
  int rc = td_tokenizer_open(plugin_dir(), name, o, &t, &err);
  if (rc) fail_msg("open %s %s: %s", name, opts_json ? opts_json : "", err.msg);
  json_decref(o);
  return t;
}

/* No cmocka asserts here: the concurrency test calls this from threads. */
static int collect(void *ud, const char *tok, size_t len) {
  td_buf_t *b = ud;
  if (len == 0) return TD_EINVAL;
  if (b->len && td_buf_append(b, "|", 1)) return TD_ENOMEM;
  return td_buf_append(b, tok, len);
}

/* Tokens joined by '|' into a malloc'd string ("" for none); NULL on error. */
static char *toks_raw(const td_tokenizer_t *t, const char *text, size_t len, td_err_t *err) {
  td_buf_t b;
  td_buf_init(&b);
  if (td_buf_reserve(&b, 0)) return NULL;
  b.data[0] = '\0';
  if (td_tokenizer_run(t, text, len, collect, &b, err) != 0) {
    td_buf_free(&b);
    return NULL;
  }
  return b.data;
}

static char *toks_n(const td_tokenizer_t *t, const char *text, size_t len) {
  td_err_t err = {0};
  char *s = toks_raw(t, text, len, &err);
  if (!s) fail_msg("tokenize: %s", err.msg[0] ? err.msg : "empty token or no memory");
  return s;
}

static char *toks(const td_tokenizer_t *t, const char *text) {
  return toks_n(t, text, strlen(text));
}

static void expect(const td_tokenizer_t *t, const char *text, const char *want) {
  char *got = toks(t, text);
  if (strcmp(got, want) != 0)
    fail_msg("%s(\"%s\")\n  got:  %s\n  want: %s", td_tokenizer_name(t), text, got, want);
  free(got);
}

static const char MIXED[] = "2023年村集体经济收入达50万元，5G网络覆盖";
static const char TRAD[] = "鄉村振興 黨建引領 組織";
static const char SIMP[] = "乡村振兴 党建引领 组织";

/* ---- icu --------------------------------------------------------------- */

static void icu_mixed(void **state) {
  td_tokenizer_t *t = open_tok("icu", NULL);
  expect(t, MIXED, "2023|年|村|集体|经济|收入|达|50|万|元|5g|网络|覆盖");
  expect(t, "第一书记带领村民发展特色产业，人均年收入提高到1.5万元。",
         "第一|书记|带领|村民|发展|特色|产业|人|均|年|收入|提高|到|1.5|万|元");
  td_tokenizer_free(&t);
  assert_null(t);
}

static void icu_normalization(void **state) {
  td_tokenizer_t *t = open_tok("icu", "{}");
  expect(t, "ＡＢＣ１２３", "abc123");           /* full-width -> ASCII */
  expect(t, "Hello WORLD Straße", "hello|world|strasse"); /* case folding */
  expect(t, "ＣＯＶＩＤ－１９ Ｅｘａｍｐｌｅ", "covid|19|example");
  td_tokenizer_free(&t);
}

static void icu_drops_punct_and_emoji(void **state) {
  td_tokenizer_t *t = open_tok("icu", NULL);
  expect(t, "“乡村振兴”：（一）抓党建、促发展。", "乡村|振兴|一|抓|党|建|促|发展");
  expect(t, "点赞👍🏻！！😀好", "点|赞|好");
  expect(t, " ，。！？…… ——\t\n", "");
  expect(t, "😀🎉❤️", "");
  td_tokenizer_free(&t);
}

static void icu_traditional(void **state) {
  td_tokenizer_t *off = open_tok("icu", "{\"traditional_to_simplified\": false}");
  td_tokenizer_t *on = open_tok("icu", "{\"traditional_to_simplified\": true}");
  char *simp = toks(off, SIMP);
  assert_string_equal(simp, "乡村|振兴|党|建|引领|组织");
  char *trad_on = toks(on, TRAD), *trad_off = toks(off, TRAD);
  assert_string_equal(trad_on, simp);
  assert_string_not_equal(trad_off, simp);
  assert_string_equal(trad_off, "鄉村|振興|黨|建|引領|組織");
  /* Simplified input is unchanged by the conversion. */
  char *simp_on = toks(on, SIMP);
  assert_string_equal(simp_on, simp);
  free(simp), free(trad_on), free(trad_off), free(simp_on);
  td_tokenizer_free(&on);
  td_tokenizer_free(&off);
}

/* char_ngrams: the words, then each CJK run's unigrams and bigrams. */
static void icu_char_ngrams(void **state) {
  td_tokenizer_t *t = open_tok("icu", "{\"char_ngrams\": true}");
  expect(t, "乡村振兴，5G网络", "乡村|振兴|5g|网络|乡|乡村|村|村振|振|振兴|兴|网|网络|络");
  expect(t, "covid19", "covid19");
  td_tokenizer_free(&t);
}

/* ---- bigram ------------------------------------------------------------ */

static void bigram_mixed(void **state) {
  td_tokenizer_t *t = open_tok("bigram", NULL);
  expect(t, MIXED,
         "2023|年|年村|村|村集|集|集体|体|体经|经|经济|济|济收|收|收入|入|入达|达|50|万|万元|元|"
         "5g|网|网络|络|络覆|覆|覆盖|盖");
  expect(t, "covid19 COVID-19 5G", "covid19|covid|19|5g");
  expect(t, "コーヒー 한국어", "コ|コー|ー|ーヒ|ヒ|ヒー|ー|한|한국|국|국어|어");
  td_tokenizer_free(&t);
}

static void bigram_normalization(void **state) {
  td_tokenizer_t *t = open_tok("bigram", NULL);
  expect(t, "ＡＢＣ１２３", "abc123");
  expect(t, "Hello WORLD Straße", "hello|world|strasse");
  expect(t, "ＡＢＣ１２３村", "abc123|村");
  td_tokenizer_free(&t);
}

static void bigram_drops_punct_and_emoji(void **state) {
  td_tokenizer_t *t = open_tok("bigram", NULL);
  expect(t, "“乡村振兴”：（一）抓党建、促发展。",
         "乡|乡村|村|村振|振|振兴|兴|一|抓|抓党|党|党建|建|促|促发|发|发展|展");
  /* An emoji separates runs: no 赞好 bigram across it. */
  expect(t, "点赞👍🏻！！😀好", "点|点赞|赞|好");
  expect(t, " ，。！？…… ——\t\n😀🎉❤️", "");
  td_tokenizer_free(&t);
}

static void bigram_options(void **state) {
  td_tokenizer_t *bi = open_tok("bigram", "{\"unigrams\": false}");
  expect(bi, "乡村振兴 乡 5G", "乡村|村振|振兴|5g");
  td_tokenizer_free(&bi);
  td_tokenizer_t *uni = open_tok("bigram", "{\"bigrams\": false, \"unigrams\": true}");
  expect(uni, "乡村振兴 5G", "乡|村|振|兴|5g");
  td_tokenizer_free(&uni);
}

static void bigram_traditional(void **state) {
  td_tokenizer_t *off = open_tok("bigram", NULL);
  td_tokenizer_t *on = open_tok("bigram", "{\"traditional_to_simplified\": true}");
  char *simp = toks(off, SIMP), *trad_on = toks(on, TRAD), *trad_off = toks(off, TRAD);
  assert_string_equal(trad_on, simp);
  assert_string_not_equal(trad_off, simp);
  free(simp), free(trad_on), free(trad_off);
  td_tokenizer_free(&on);
  td_tokenizer_free(&off);
}

/* ---- both -------------------------------------------------------------- */

static const char *const NAMES[] = {"icu", "bigram"};

static int count_cb(void *ud, const char *tok, size_t len) {
  (*(int *)ud)++;
  return 0;
}

static void empty_input(void **state) {
  for (size_t i = 0; i < 2; i++) {
    td_tokenizer_t *t = open_tok(NAMES[i], NULL);
    int n = 0;
    td_err_t err = {0};
    assert_int_equal(td_tokenizer_run(t, "", 0, count_cb, &n, &err), 0);
    assert_int_equal(td_tokenizer_run(t, NULL, 0, count_cb, &n, &err), 0);
    assert_int_equal(td_tokenizer_run(t, "abc", 0, count_cb, &n, &err), 0);
    assert_int_equal(n, 0);
    td_tokenizer_free(&t);
  }
}

typedef struct stopper {
  int seen, stop_after, value;
} stopper_t;

static int stop_cb(void *ud, const char *tok, size_t len) {
  stopper_t *s = ud;
  return ++s->seen == s->stop_after ? s->value : 0;
}

static void early_stop(void **state) {
  for (size_t i = 0; i < 2; i++) {
    td_tokenizer_t *t = open_tok(NAMES[i], NULL);
    td_err_t err = {0};
    stopper_t s = {0, 2, 7};
    assert_int_equal(td_tokenizer_run(t, MIXED, strlen(MIXED), stop_cb, &s, &err), 7);
    assert_int_equal(s.seen, 2);
    /* A negative host code passes through as is, not as a plugin failure. */
    s = (stopper_t){0, 1, TD_ENOMEM};
    assert_int_equal(td_tokenizer_run(t, MIXED, strlen(MIXED), stop_cb, &s, &err), TD_ENOMEM);
    assert_int_equal(s.seen, 1);
    /* The instance is still usable afterwards. */
    s = (stopper_t){0, -1, 1};
    assert_int_equal(td_tokenizer_run(t, MIXED, strlen(MIXED), stop_cb, &s, &err), 0);
    assert_true(s.seen > 10);
    td_tokenizer_free(&t);
  }
}

static void expect_create_error(const char *name, const char *opts, const char *needle) {
  json_error_t je;
  json_t *o = json_loads(opts, 0, &je);
  assert_non_null(o);
  td_tokenizer_t *t = NULL;
  td_err_t err = {0};
  assert_int_equal(td_tokenizer_open(plugin_dir(), name, o, &t, &err), TD_EPLUGIN);
  assert_null(t);
  if (!strstr(err.msg, needle)) fail_msg("%s %s: message \"%s\" lacks \"%s\"", name, opts, err.msg, needle);
  json_decref(o);
}

static void bad_options(void **state) {
  expect_create_error("icu", "{\"traditional_to_simplifed\": true}", "\"traditional_to_simplifed\"");
  expect_create_error("icu", "{\"traditional_to_simplified\": 1}", "true or false");
  expect_create_error("bigram", "{\"unigram\": true}", "unknown option \"unigram\"");
  expect_create_error("bigram", "{\"bigrams\": \"yes\"}", "\"bigrams\" must be true or false");
  expect_create_error("bigram", "{\"unigrams\": false, \"bigrams\": false}", "both false");
}

static void invalid_bytes(void **state) {
  static const char bad[] = "abc\xff\xfe" "def\xc3" "村\xe6\x9d" "民\xed\xa0\x80" "xyz\xc3";
  td_tokenizer_t *icu = open_tok("icu", NULL), *bg = open_tok("bigram", NULL);
  char *a = toks_n(icu, bad, sizeof bad - 1), *b = toks_n(bg, bad, sizeof bad - 1);
  assert_string_equal(a, "abc|def|村|民|xyz");
  assert_string_equal(b, "abc|def|村|民|xyz"); /* invalid bytes separate runs: no 村民 */
  free(a), free(b);
  /* Embedded NUL and control bytes separate too. */
  a = toks_n(icu, "ab\0cd\x01" "ef", 8);
  assert_string_equal(a, "ab|cd|ef");
  free(a);
  /* Random bytes: no crash, no sanitizer report, tokens non-empty. */
  uint32_t x = 12345;
  char buf[512];
  for (int round = 0; round < 2000; round++) {
    size_t n = (size_t)(round % 500) + 1;
    for (size_t i = 0; i < n; i++) {
      x = x * 1103515245u + 12345u;
      buf[i] = (char)(x >> 16);
    }
    for (int k = 0; k < 2; k++) {
      int cnt = 0;
      td_err_t err = {0};
      assert_int_equal(td_tokenizer_run(k ? bg : icu, buf, n, count_cb, &cnt, &err), 0);
    }
  }
  td_tokenizer_free(&icu);
  td_tokenizer_free(&bg);
}

static void long_text(void **state) {
  /* Far past any initial buffer size: exercises every growth path. */
  const char *unit = "鄉村振興ＡＢＣ，5G網絡覆蓋。";
  size_t ulen = strlen(unit), reps = 5000;
  char *text = malloc(ulen * reps + 1);
  for (size_t i = 0; i < reps; i++) memcpy(text + i * ulen, unit, ulen);
  text[ulen * reps] = '\0';
  for (size_t i = 0; i < 2; i++) {
    td_tokenizer_t *t = open_tok(NAMES[i], "{\"traditional_to_simplified\": true}");
    char *one = toks(t, unit);
    int per = 1;
    for (char *p = one; *p; p++) per += *p == '|';
    int n = 0;
    td_err_t err = {0};
    assert_int_equal(td_tokenizer_run(t, text, ulen * reps, count_cb, &n, &err), 0);
    /* 。 ends every unit, so units tokenize independently. */
    assert_int_equal(n, per * (int)reps);
    free(one);
    td_tokenizer_free(&t);
  }
  free(text);
}

/* ---- Traditional -> Simplified table vs ICU itself ---------------------- */

static UTransliterator *icu_t2s(void) {
  UErrorCode st = U_ZERO_ERROR;
  UChar id[32];
  u_uastrcpy(id, "Traditional-Simplified");
  UTransliterator *tr = utrans_openU(id, -1, UTRANS_FORWARD, NULL, 0, NULL, &st);
  assert_true(U_SUCCESS(st));
  return tr;
}

/* Compares the table with ICU on s[0..n). */
static void check_same(const tp_t2s_t *tab, UTransliterator *tr, const UChar *s, int32_t n) {
  UChar *mine = malloc(((size_t)n * tab->grow + 1) * sizeof(UChar));
  int32_t cap = n * 2 + 16, len = n, limit = n;
  UChar *ref = malloc((size_t)cap * sizeof(UChar));
  memcpy(ref, s, (size_t)n * sizeof(UChar));
  UErrorCode st = U_ZERO_ERROR;
  utrans_transUChars(tr, ref, &len, cap, 0, &limit, &st);
  assert_true(U_SUCCESS(st));
  int32_t m = tp_t2s_apply(tab, s, n, mine);
  if (m != len || memcmp(mine, ref, (size_t)m * sizeof(UChar)) != 0) {
    int32_t i = 0;
    while (i < m && i < len && mine[i] == ref[i]) i++;
    fail_msg("T->S differs from ICU at unit %d of %d (mine %d units, ICU %d)", i, n, m, len);
  }
  free(mine);
  free(ref);
}

static void t2s_matches_icu(void **state) {
  tp_core_t core;
  char eb[256];
  assert_int_equal(tp_core_init(&core, 0, 1, eb, sizeof eb), 0);
  /* On the ICU we build against, the fast table must be in use, its rules
   * compiled from ICU's data without the registry (tp_t2s_from_data). */
  assert_non_null(core.t2s);
  assert_true(core.t2s->nrules > 1000);
  assert_int_equal(core.t2s_from_data, 1);
  UTransliterator *tr = icu_t2s();
  /* ... and those rules are the registry's Traditional-Simplified, to the
   * letter (the table below is also checked against its output) */
  UTransliterator *fd = tp_t2s_from_data();
  assert_non_null(fd);
  UChar *rules[2];
  int32_t nrules[2];
  for (int i = 0; i < 2; i++) {
    UErrorCode st = U_ZERO_ERROR;
    UTransliterator *x = i ? fd : tr;
    nrules[i] = utrans_toRules(x, 0, NULL, 0, &st);
    rules[i] = malloc(((size_t)nrules[i] + 1) * sizeof(UChar));
    st = U_ZERO_ERROR;
    nrules[i] = utrans_toRules(x, 0, rules[i], nrules[i] + 1, &st);
    assert_true(U_SUCCESS(st));
  }
  assert_true(nrules[0] > 10000);
  assert_int_equal(nrules[0], nrules[1]);
  assert_memory_equal(rules[0], rules[1], (size_t)nrules[0] * sizeof(UChar));
  free(rules[0]);
  free(rules[1]);
  utrans_close(fd);
  const tp_t2s_t *tab = core.t2s;

  /* 1. Every rule's lhs on its own, and all lhs concatenated in rule order
   *    and in reverse (phrases overlapping their neighbours). */
  size_t total = 0;
  for (uint32_t k = 0; k < tab->nrules; k++) total += tab->rules[k].lhs_len + 1u;
  UChar *all = malloc(total * sizeof(UChar)), *rev = malloc(total * sizeof(UChar));
  int32_t n = 0, nr = 0;
  for (uint32_t k = 0; k < tab->nrules; k++) {
    const tp_t2s_rule_t *r = &tab->rules[k], *q = &tab->rules[tab->nrules - 1 - k];
    check_same(tab, tr, tab->pool + r->lhs, r->lhs_len);
    memcpy(all + n, tab->pool + r->lhs, r->lhs_len * sizeof(UChar));
    n += r->lhs_len;
    memcpy(rev + nr, tab->pool + q->lhs, q->lhs_len * sizeof(UChar));
    nr += q->lhs_len;
    if (k % 3 == 0) all[n++] = 0x6751, rev[nr++] = 0x0020; /* 村, space */
  }
  check_same(tab, tr, all, n);
  check_same(tab, tr, rev, nr);
  free(all);
  free(rev);

  /* 2. Every BMP code point, one after another (incl. unpaired surrogates),
   *    then a supplementary ideograph. */
  UChar *bmp = malloc(0x10002 * sizeof(UChar));
  for (int32_t c = 0; c < 0x10000; c++) bmp[c] = (UChar)c;
  bmp[0x10000] = 0xD840, bmp[0x10001] = 0xDC00; /* U+20000 */
  check_same(tab, tr, bmp, 0x10002);
  free(bmp);

  /* 3. Real prose, when ../shared is here: corpus text turned Traditional by
   *    ICU's own Simplified-Traditional. */
  const char *shared = getenv("THEMED_SHARED");
  char path[512];
  snprintf(path, sizeof path, "%s/corpus/train.jsonl", shared ? shared : "../shared");
  char *data = NULL;
  size_t dlen = 0;
  if (td_read_file(path, &data, &dlen, NULL) == 0) {
    size_t take = dlen < 400000 ? dlen : 400000;
    UChar *u = malloc((take + 1) * 2 * sizeof(UChar));
    int32_t un = 0;
    UErrorCode st = U_ZERO_ERROR;
    u_strFromUTF8WithSub(u, (int32_t)take + 1, &un, data, (int32_t)take, 0xFFFD, NULL, &st);
    assert_true(U_SUCCESS(st));
    UChar id[32];
    u_uastrcpy(id, "Simplified-Traditional");
    UTransliterator *s2t = utrans_openU(id, -1, UTRANS_FORWARD, NULL, 0, NULL, &st);
    assert_true(U_SUCCESS(st));
    int32_t limit = un;
    utrans_transUChars(s2t, u, &un, (int32_t)(take + 1) * 2, 0, &limit, &st);
    assert_true(U_SUCCESS(st));
    check_same(tab, tr, u, un);
    utrans_close(s2t);
    free(u);
    free(data);
  } else {
    print_message("t2s_matches_icu: %s absent, corpus part skipped\n", path);
  }
  utrans_close(tr);
  tp_core_free(&core);
}

/* The fallback (ICU transliterator clones) gives what the table gives. */
static void t2s_fallback_same(void **state) {
  tp_core_t fast, slow;
  char eb[256];
  assert_int_equal(tp_core_init(&fast, 1, 1, eb, sizeof eb), 0);
  assert_int_equal(tp_core_init(&slow, 1, 1, eb, sizeof eb), 0);
  tp_t2s_free(slow.t2s);
  slow.t2s = NULL;
  slow.tr = icu_t2s();
  tp_state_t *a = tp_acquire(&fast, eb, sizeof eb), *b = tp_acquire(&slow, eb, sizeof eb);
  assert_non_null(a);
  assert_non_null(b);
  assert_non_null(b->tr);
  static const char *const texts[] = {TRAD, "乾坤 乾麵 頭髮 於是 甚麼 關係 餘額", MIXED,
                                      "ＡＢＣ１２３ 鄉村"};
  for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
    const UChar *ua, *ub;
    int32_t na, nb;
    assert_int_equal(tp_prepare(&fast, a, texts[i], strlen(texts[i]), &ua, &na, eb, sizeof eb), 0);
    assert_int_equal(tp_prepare(&slow, b, texts[i], strlen(texts[i]), &ub, &nb, eb, sizeof eb), 0);
    assert_int_equal(na, nb);
    assert_memory_equal(ua, ub, (size_t)na * sizeof(UChar));
  }
  tp_release(&fast, a);
  tp_release(&slow, b);
  tp_core_free(&fast);
  tp_core_free(&slow);
}

/* ---- concurrency ------------------------------------------------------- */

#define NTHREADS 4
#define NROUNDS 40

static const char *const CTEXTS[] = {
    MIXED, TRAD, SIMP, "ＡＢＣ１２３ Hello WORLD Straße",
    "“乡村振兴”：（一）抓党建、促发展。点赞👍🏻！！😀好",
    "第一书记带领村民发展特色产业，人均年收入提高到1.5万元。",
    "組織振興是鄉村振興的「第一工程」，要選好配強村黨組織書記。",
    "コーヒー 한국어 covid19 COVID-19",
};
#define NCTEXTS (sizeof CTEXTS / sizeof CTEXTS[0])

typedef struct conc {
  td_tokenizer_t *t;
  char *want[NCTEXTS + 1];
  const char *big; /* a long text, to make threads overlap inside ICU */
  size_t biglen;
  int failures;
} conc_t;

static void *conc_worker(void *arg) {
  conc_t *c = arg;
  for (int r = 0; r < NROUNDS; r++) {
    for (size_t i = 0; i <= NCTEXTS; i++) {
      size_t k = (i + (size_t)r) % (NCTEXTS + 1); /* threads start at different texts */
      const char *text = k < NCTEXTS ? CTEXTS[k] : c->big;
      char *got = toks_raw(c->t, text, k < NCTEXTS ? strlen(text) : c->biglen, NULL);
      if (!got || strcmp(got, c->want[k]) != 0)
        __atomic_add_fetch(&c->failures, 1, __ATOMIC_RELAXED);
      free(got);
    }
  }
  return NULL;
}

static void concurrent(void **state) {
  size_t biglen = 0;
  char *big = malloc(64 * 1024);
  while (biglen + 200 < 64 * 1024)
    for (size_t i = 0; i < NCTEXTS && biglen + 200 < 64 * 1024; i++) {
      size_t n = strlen(CTEXTS[i]);
      memcpy(big + biglen, CTEXTS[i], n);
      biglen += n;
    }
  static const char *const opts[] = {"{}", "{\"traditional_to_simplified\": true}"};
  for (size_t p = 0; p < 2; p++) {
    for (size_t o = 0; o < 2; o++) {
      conc_t c = {.t = open_tok(NAMES[p], opts[o]), .big = big, .biglen = biglen};
      for (size_t i = 0; i < NCTEXTS; i++) c.want[i] = toks(c.t, CTEXTS[i]);
      c.want[NCTEXTS] = toks_n(c.t, big, biglen);
      pthread_t th[NTHREADS];
      for (int i = 0; i < NTHREADS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, conc_worker, &c), 0);
      for (int i = 0; i < NTHREADS; i++) pthread_join(th[i], NULL);
      if (c.failures) fail_msg("%s %s: %d concurrent results differ", NAMES[p], opts[o], c.failures);
      for (size_t i = 0; i <= NCTEXTS; i++) free(c.want[i]);
      td_tokenizer_free(&c.t);
    }
  }
  free(big);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(icu_mixed),
      cmocka_unit_test(icu_normalization),
      cmocka_unit_test(icu_drops_punct_and_emoji),
      cmocka_unit_test(icu_traditional),
      cmocka_unit_test(icu_char_ngrams),
      cmocka_unit_test(bigram_mixed),
      cmocka_unit_test(bigram_normalization),
      cmocka_unit_test(bigram_drops_punct_and_emoji),
      cmocka_unit_test(bigram_options),
      cmocka_unit_test(bigram_traditional),
      cmocka_unit_test(empty_input),
      cmocka_unit_test(early_stop),
      cmocka_unit_test(bad_options),
      cmocka_unit_test(invalid_bytes),
      cmocka_unit_test(long_text),
      cmocka_unit_test(t2s_matches_icu),
      cmocka_unit_test(t2s_fallback_same),
      cmocka_unit_test(concurrent),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
