/* Regressions for what the libFuzzer targets found (tests/fuzz/, docs/testing.md),
 * as plain unit tests so they also run under the normal and the ASan+UBSan
 * builds. The crashing inputs themselves are in tests/fuzz/regressions/ and
 * replayed by make fuzz-ci. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz/bundle_split.h"
#include "model.h"
#include "text.h"

/* fuzz_split: a text with no passage at all, split into a passages array that
 * was never grown (items == NULL), computed NULL + 0 (undefined behaviour). */
static void test_split_blank_into_empty_array(void **st) {
  const char *blank[] = {"", "\r", " \n\t", "\xe3\x80\x80\n\xe2\x80\xa8", "\xef\xbb\xbf"};
  for (size_t i = 0; i < sizeof blank / sizeof blank[0]; i++) {
    td_passages_t ps;
    td_passages_init(&ps);
    td_err_t err = {0};
    assert_int_equal(td_text_split(blank[i], strlen(blank[i]), NULL, &ps, &err), 0);
    assert_int_equal(ps.count, 0);
    td_passages_free(&ps);
  }
}

static char g_dir[PATH_MAX];

/* The fuzz_bundle seed (a real bundle) unpacked, with svm/0.model replaced. */
static int load_with_svm(const char *svm, td_err_t *err) {
  char tmpl[] = "/tmp/themed-test-fuzzreg-XXXXXX";
  assert_non_null(mkdtemp(tmpl));
  snprintf(g_dir, sizeof g_dir, "%s/b", tmpl);
  size_t n = 0;
  uint8_t *b = bundle_read("tests/fuzz/corpus/fuzz_bundle/tiny.bundle", &n);
  assert_non_null(b);
  assert_int_equal(bundle_write(g_dir, b, n), 0);
  free(b);
  assert_int_equal(bundle_put(g_dir, "svm/0.model", (const uint8_t *)svm, strlen(svm)), 0);
  td_model_t *m = NULL;
  int rc = td_model_load(g_dir, getenv("THEMED_PLUGIN_DIR"), &m, err);
  if (m) td_model_unref(&m);
  char cmd[PATH_MAX + 16];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpl);
  assert_int_equal(system(cmd), 0);
  return rc;
}

/* The seed's svm/0.model, as a string (caller frees). */
static char *seed_svm0(void) {
  size_t n = 0;
  uint8_t *b = bundle_read("tests/fuzz/corpus/fuzz_bundle/tiny.bundle", &n);
  assert_non_null(b);
  const uint8_t *s0 = memmem(b, n, BUNDLE_SEP, 4);
  const uint8_t *s1 = memmem(s0 + 4, n - (size_t)(s0 + 4 - b), BUNDLE_SEP, 4);
  const uint8_t *s2 = memmem(s1 + 4, n - (size_t)(s1 + 4 - b), BUNDLE_SEP, 4);
  char *svm0 = strndup((const char *)s1 + 4, (size_t)(s2 - s1 - 4));
  free(b);
  return svm0;
}

/* fuzz_bundle: a header key without its value ("kernel_type" alone) passed
 * strtok's NULL to strcmp: a crash loading (or reloading) such a bundle. */
static void test_svm_header_key_without_value(void **st) {
  static const char *const cases[][2] = {
      {"svm_type c_svc\nkernel_type\nnr_class 2\n", "kernel_type: expected linear"},
      {"svm_type c_svc\nkernel_type \nnr_class 2\n", "kernel_type: expected linear"},
      {"svm_type\n", "got svm_type (unknown)"},
      {"svm_type \t\r\nkernel_type linear\n", "got svm_type (unknown)"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    td_err_t err = {0};
    assert_int_equal(load_with_svm(cases[i][0], &err), TD_EMODEL);
    if (!strstr(err.msg, cases[i][1])) fail_msg("\"%s\" lacks \"%s\"", err.msg, cases[i][1]);
    assert_non_null(strstr(err.msg, "line "));
  }
  /* the unmodified seed loads: the cases above fail for their own reason */
  td_err_t err = {0};
  char *svm0 = seed_svm0();
  assert_int_equal(load_with_svm(svm0, &err), 0);
  free(svm0);
}

/* fuzz_bundle: a header key given twice ("rho" ... "rho") made libsvm's
 * reader allocate the array again and leak the first, on every (re)load.
 * Either refused or loaded, never leaked (the ASan+UBSan run checks). */
static void test_svm_duplicate_header_keys(void **st) {
  char *svm0 = seed_svm0();
  const char *keys[] = {"rho 0.5\n", "label 1 -1\n", "nr_sv 1 1\n", "probA 0.1\n", "probB 0.2\n",
                        "nr_class 2\n", "svm_type c_svc\n", "kernel_type linear\n", "total_sv 2\n"};
  for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
    /* the key once more just before "SV" */
    char *sv = strstr(svm0, "\nSV\n");
    assert_non_null(sv);
    size_t head = (size_t)(sv - svm0) + 1, kl = strlen(keys[i]);
    char *svm = malloc(strlen(svm0) + kl + 1);
    memcpy(svm, svm0, head);
    memcpy(svm + head, keys[i], kl);
    strcpy(svm + head + kl, svm0 + head);
    td_err_t err = {0};
    int rc = load_with_svm(svm, &err);
    if (rc != 0 && rc != TD_EMODEL) fail_msg("%s: rc %d: %s", keys[i], rc, err.msg);
    if (rc) assert_non_null(strstr(err.msg, "svm/0.model"));
    free(svm);
  }
  free(svm0);
}

/* fuzz_bundle: the fast index:value path read the index digits into a long
 * before checking their number: 40 digits overflowed it (UB). Long indexes
 * and values go to the general parser and are refused as out of range. */
static void test_svm_long_index_digits(void **st) {
  char *svm0 = seed_svm0();
  static const char *const pairs[] = {"5655555555555555555555555555555555555550:0.5",
                                      "99999999999:0.5", "12345678901234567890:1",
                                      "1:99999999999999999999999999999999999999.5"};
  for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
    /* the first support vector's first pair replaced */
    char *sv = strstr(svm0, "\nSV\n");
    assert_non_null(sv);
    char *first = strchr(sv + 4, ' ') + 1, *after = strchr(first, ' ');
    size_t head = (size_t)(first - svm0), pl = strlen(pairs[i]);
    char *svm = malloc(strlen(svm0) + pl + 1);
    memcpy(svm, svm0, head);
    memcpy(svm + head, pairs[i], pl);
    strcpy(svm + head + pl, after);
    td_err_t err = {0};
    int rc = load_with_svm(svm, &err);
    if (i < 3) {
      assert_int_equal(rc, TD_EMODEL);
      if (!strstr(err.msg, "out of range") && !strstr(err.msg, "expected index:value"))
        fail_msg("%s: %s", pairs[i], err.msg);
    } else if (rc != 0 && rc != TD_EMODEL) { /* a huge value: loads, or refused cleanly */
      fail_msg("%s: rc %d: %s", pairs[i], rc, err.msg);
    }
    free(svm);
  }
  free(svm0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_split_blank_into_empty_array),
      cmocka_unit_test(test_svm_header_key_without_value),
      cmocka_unit_test(test_svm_duplicate_header_keys),
      cmocka_unit_test(test_svm_long_index_digits),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
