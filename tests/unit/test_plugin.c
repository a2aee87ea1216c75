/*
 * The plugin loader (daemon/plugin.c): every rejection is TD_EPLUGIN with a
 * message naming the file and what was expected, and leaves the plugin
 * unloaded; unsafe locations are refused; the example plugin loads, gets its
 * options, and tokenizes.
 *
 * Plugins come from $THEMED_TEST_PLUGIN_DIR (tests/plugins/, each broken
 * in one way) and $THEMED_EXAMPLE_PLUGIN_DIR (examples/plugin/hello.c).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dlfcn.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common.h"
#include "plugin.h"
#include "td_paths.h" /* TD_PLUGIN_DIR, the compiled-in default */

static const char *env_or(const char *name, const char *dflt) {
  const char *v = getenv(name);
  return v && *v ? v : dflt;
}
static const char *test_dir(void) { return env_or("THEMED_TEST_PLUGIN_DIR", "build/tests/plugins"); }
static const char *example_dir(void) { return env_or("THEMED_EXAMPLE_PLUGIN_DIR", "build/examples"); }

static int is_loaded(const char *path) {
  void *h = dlopen(path, RTLD_NOW | RTLD_NOLOAD);
  if (h) dlclose(h); /* drop the reference NOLOAD took */
  return h != NULL;
}

static int collect(void *ud, const char *tok, size_t len) {
  td_buf_t *b = ud;
  if (b->len && td_buf_append(b, "|", 1)) return TD_ENOMEM;
  return td_buf_append(b, tok, len);
}

static void expect_tokens(const td_tokenizer_t *t, const char *text, const char *want) {
  td_buf_t b;
  td_buf_init(&b);
  assert_int_equal(td_buf_append(&b, "", 0), 0);
  td_err_t err = {0};
  assert_int_equal(td_tokenizer_run(t, text, strlen(text), collect, &b, &err), 0);
  assert_string_equal(b.data, want);
  td_buf_free(&b);
}

/* Loads dir/name.so and expects TD_EPLUGIN, the path and every needle in the
 * message, no handle, and the .so unloaded again. */
static void expect_reject(const char *dir, const char *name, const json_t *opts, ...) {
  char path[PATH_MAX];
  snprintf(path, sizeof path, "%s/%s.so", dir, name);
  td_tokenizer_t *t = (td_tokenizer_t *)&t; /* must be reset to NULL */
  td_err_t err = {0};
  int rc = td_tokenizer_open(dir, name, opts, &t, &err);
  if (rc != TD_EPLUGIN) fail_msg("%s: rc %d (%s), expected TD_EPLUGIN", name, rc, err.msg);
  assert_int_equal(err.code, TD_EPLUGIN);
  assert_null(t);
  if (!strstr(err.msg, path)) fail_msg("%s: message \"%s\" does not name %s", name, err.msg, path);
  va_list ap;
  va_start(ap, opts);
  for (const char *needle; (needle = va_arg(ap, const char *));)
    if (!strstr(err.msg, needle)) fail_msg("%s: message \"%s\" lacks \"%s\"", name, err.msg, needle);
  va_end(ap);
  if (is_loaded(path)) fail_msg("%s: still loaded after the rejection", name);
}

/* ---- success ------------------------------------------------------------ */

static void loads_example(void **state) {
  td_tokenizer_t *t = NULL;
  td_err_t err = {0};
  assert_int_equal(td_tokenizer_open(example_dir(), "hello", NULL, &t, &err), 0);
  assert_non_null(t);
  assert_string_equal(td_tokenizer_name(t), "hello");
  assert_string_equal(td_tokenizer_version(t), "1.0.0");
  const json_t *o = td_tokenizer_options(t);
  assert_true(json_is_object(o));
  assert_int_equal(json_object_size(o), 0);
  expect_tokens(t, "Hello, World! 42 times", "hello|world|42|times");
  expect_tokens(t, "", "");
  char path[PATH_MAX];
  snprintf(path, sizeof path, "%s/hello.so", example_dir());
  assert_true(is_loaded(path));
  td_tokenizer_free(&t);
  assert_null(t);
  assert_false(is_loaded(path));
  td_tokenizer_free(&t); /* NULL is fine */
}

static void options_passed_through(void **state) {
  json_t *opts = json_pack("{s:i}", "min_len", 3);
  td_tokenizer_t *t = NULL;
  td_err_t err = {0};
  assert_int_equal(td_tokenizer_open(example_dir(), "hello", opts, &t, &err), 0);
  expect_tokens(t, "a bb ccc dddd", "ccc|dddd");
  /* The handle keeps its own deep copy: later edits by the caller do not
   * reach it, and it reports what the instance was created with. */
  const json_t *kept = td_tokenizer_options(t);
  assert_ptr_not_equal(kept, opts);
  assert_true(json_equal((json_t *)kept, opts));
  json_object_set_new(opts, "min_len", json_integer(1));
  assert_int_equal(json_integer_value(json_object_get(kept, "min_len")), 3);
  json_decref(opts);
  expect_tokens(t, "a bb ccc dddd", "ccc|dddd");
  td_tokenizer_free(&t);
}

static void options_rejected_by_plugin(void **state) {
  json_t *bad = json_pack("{s:i}", "min_length", 3);
  expect_reject(example_dir(), "hello", bad, "create() failed", "\"min_length\"", NULL);
  json_decref(bad);
  bad = json_pack("{s:i}", "min_len", 0);
  expect_reject(example_dir(), "hello", bad, "\"min_len\"", NULL);
  json_decref(bad);
}

static void options_must_be_object(void **state) {
  json_t *arr = json_array();
  td_tokenizer_t *t = NULL;
  td_err_t err = {0};
  assert_int_equal(td_tokenizer_open(example_dir(), "hello", arr, &t, &err), TD_EINVAL);
  assert_null(t);
  assert_non_null(strstr(err.msg, "JSON object"));
  json_decref(arr);
}

/* ---- rejections ---------------------------------------------------------- */

static void rejects_abi_major(void **state) {
  char found[32], expected[64];
  snprintf(found, sizeof found, "ABI %d.0 ", THEMED_PLUGIN_ABI_MAJOR + 1);
  snprintf(expected, sizeof expected, "expected %d.0 to %d.%d", THEMED_PLUGIN_ABI_MAJOR,
           THEMED_PLUGIN_ABI_MAJOR, THEMED_PLUGIN_ABI_MINOR);
  expect_reject(test_dir(), "bad_abi_major", NULL, found, expected, NULL);
}

static void rejects_newer_minor(void **state) {
  char found[32], expected[64];
  snprintf(found, sizeof found, "ABI %d.%d ", THEMED_PLUGIN_ABI_MAJOR, THEMED_PLUGIN_ABI_MINOR + 1);
  snprintf(expected, sizeof expected, "expected %d.0 to %d.%d", THEMED_PLUGIN_ABI_MAJOR,
           THEMED_PLUGIN_ABI_MAJOR, THEMED_PLUGIN_ABI_MINOR);
  expect_reject(test_dir(), "newer_minor", NULL, found, expected, NULL);
}

static void rejects_missing_entry(void **state) {
  expect_reject(test_dir(), "no_entry", NULL, "no exported symbol " THEMED_PLUGIN_ENTRY,
                "THEMED_EXPORT", NULL);
}

static void rejects_null_descriptor(void **state) {
  expect_reject(test_dir(), "null_api", NULL, THEMED_PLUGIN_ENTRY "() returned NULL", NULL);
}

static void rejects_missing_function(void **state) {
  expect_reject(test_dir(), "missing_fn", NULL, "no tokenize function", NULL);
}

static void rejects_small_struct(void **state) {
  char found[64], min[64];
  snprintf(found, sizeof found, "struct_size %zu", offsetof(themed_tokenizer_api_t, tokenize));
  snprintf(min, sizeof min, "expected at least %zu",
           offsetof(themed_tokenizer_api_t, tokenize) + sizeof(void (*)(void)));
  expect_reject(test_dir(), "small_struct", NULL, found, min, NULL);
}

static void rejects_name_mismatch(void **state) {
  expect_reject(test_dir(), "name_mismatch", NULL, "\"other_name\"", "expected \"name_mismatch\"",
                NULL);
  /* By explicit path only the syntax of the name is checked. */
  char path[PATH_MAX];
  snprintf(path, sizeof path, "%s/name_mismatch.so", test_dir());
  td_tokenizer_t *t = NULL;
  td_err_t err = {0};
  assert_int_equal(td_tokenizer_open_path(path, NULL, &t, &err), 0);
  assert_string_equal(td_tokenizer_name(t), "other_name");
  td_tokenizer_free(&t);
}

static void create_failure(void **state) {
  /* create_fails.so aborts if destroy() is called after the failed create(). */
  expect_reject(test_dir(), "create_fails", NULL, "create() failed",
                "cannot open dictionary \"zh.dict\"", NULL);
}

static void rejects_missing_file(void **state) {
  expect_reject(test_dir(), "does_not_exist", NULL, "not found", NULL);
}

static void rejects_invalid_names(void **state) {
  static const char *const bad[] = {"", "../icu", "ICU", "a/b", "icu.so", "ic u", ".",
                                    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    td_tokenizer_t *t = NULL;
    td_err_t err = {0};
    assert_int_equal(td_tokenizer_open(test_dir(), bad[i], NULL, &t, &err), TD_EINVAL);
    assert_null(t);
    assert_non_null(strstr(err.msg, "[a-z0-9_-]"));
  }
}

/* ---- unsafe locations ----------------------------------------------------- */

/* Temporary paths, removed by tmp_cleanup() even when an assertion fails:
 * files and links first, then directories (in reverse order of creation). */
static char tmp_paths[8][128];
static int ntmp;

static const char *tmp_add(const char *path) {
  assert_true(ntmp < 8);
  snprintf(tmp_paths[ntmp], sizeof tmp_paths[ntmp], "%s", path);
  return tmp_paths[ntmp++];
}

static int tmp_cleanup(void **state) {
  while (ntmp > 0) {
    const char *p = tmp_paths[--ntmp];
    chmod(p, 0755);
    if (unlink(p) != 0) rmdir(p);
  }
  return 0;
}

/* A fresh 0755 directory; returns its path. */
static const char *tmp_dir(const char *tag) {
  char d[64];
  snprintf(d, sizeof d, "/tmp/td-plugin-%s-XXXXXX", tag);
  assert_non_null(mkdtemp(d));
  assert_int_equal(chmod(d, 0755), 0);
  return tmp_add(d);
}

/* A private 0644 copy of hello.so in a fresh directory; returns the file. */
static const char *tmp_hello(const char *tag, const char **dir) {
  char src[PATH_MAX], file[128];
  snprintf(src, sizeof src, "%s/hello.so", example_dir());
  char *data = NULL;
  size_t len = 0;
  td_err_t err = {0};
  if (td_read_file(src, &data, &len, &err)) fail_msg("%s", err.msg);
  *dir = tmp_dir(tag);
  snprintf(file, sizeof file, "%s/hello.so", *dir);
  FILE *f = fopen(file, "wb");
  assert_non_null(f);
  const char *kept = tmp_add(file);
  assert_int_equal(fwrite(data, 1, len, f), len);
  assert_int_equal(fclose(f), 0);
  free(data);
  assert_int_equal(chmod(kept, 0644), 0);
  return kept;
}

static void refuses_world_writable(void **state) {
  const char *dir, *file = tmp_hello("ww", &dir);
  td_tokenizer_t *t = NULL;
  td_err_t err = {0};

  assert_int_equal(chmod(dir, 0777), 0);
  expect_reject(dir, "hello", NULL, "world-writable directory", "mode 777", NULL);

  assert_int_equal(chmod(dir, 0755), 0);
  assert_int_equal(chmod(file, 0666), 0);
  expect_reject(dir, "hello", NULL, "world-writable file", "mode 666", NULL);
  /* The same rule by explicit path. */
  assert_int_equal(td_tokenizer_open_path(file, NULL, &t, &err), TD_EPLUGIN);
  assert_null(t);

  /* Fixed: loads. */
  assert_int_equal(chmod(file, 0644), 0);
  assert_int_equal(td_tokenizer_open(dir, "hello", NULL, &t, &err), 0);
  expect_tokens(t, "It Works", "it|works");
  td_tokenizer_free(&t);
}

static void refuses_symlink_into_world_writable(void **state) {
  /* safe/hello.so -> unsafe/hello.so: the real location counts too. */
  const char *unsafe, *target = tmp_hello("unsafe", &unsafe);
  const char *safe = tmp_dir("safe");
  char link[128];
  snprintf(link, sizeof link, "%s/hello.so", safe);
  assert_int_equal(symlink(target, link), 0);
  tmp_add(link);
  assert_int_equal(chmod(unsafe, 0777), 0);
  expect_reject(safe, "hello", NULL, "world-writable directory", unsafe, NULL);
}

static void rejects_non_library(void **state) {
  const char *dir = tmp_dir("junk");
  char file[128];
  snprintf(file, sizeof file, "%s/junk.so", dir);
  FILE *f = fopen(file, "w");
  assert_non_null(f);
  tmp_add(file);
  fputs("not an ELF file\n", f);
  fclose(f);
  expect_reject(dir, "junk", NULL, "dlopen failed", NULL);
}

/* ---- default directory, running ------------------------------------------- */

static void default_dir(void **state) {
  char *saved = getenv("THEMED_PLUGIN_DIR") ? strdup(getenv("THEMED_PLUGIN_DIR")) : NULL;

  setenv("THEMED_PLUGIN_DIR", example_dir(), 1);
  assert_string_equal(td_plugin_default_dir(), example_dir());
  td_tokenizer_t *t = NULL;
  td_err_t err = {0};
  assert_int_equal(td_tokenizer_open(NULL, "hello", NULL, &t, &err), 0); /* NULL dir */
  td_tokenizer_free(&t);

  /* Unset: <dir of this executable>/plugins if it is a directory (it is for
   * build/tests/test_plugin: the test plugins), else TD_PLUGIN_DIR. */
  unsetenv("THEMED_PLUGIN_DIR");
  char exe[PATH_MAX], want[PATH_MAX + 16];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  assert_true(n > 0);
  exe[n] = '\0';
  *strrchr(exe, '/') = '\0';
  snprintf(want, sizeof want, "%s/plugins", exe);
  struct stat sb;
  if (stat(want, &sb) == 0 && S_ISDIR(sb.st_mode))
    assert_string_equal(td_plugin_default_dir(), want);
  else
    assert_string_equal(td_plugin_default_dir(), TD_PLUGIN_DIR);

  if (saved) setenv("THEMED_PLUGIN_DIR", saved, 1);
  free(saved);
}

typedef struct stopper {
  int seen, stop_value;
} stopper_t;

static int stop_cb(void *ud, const char *tok, size_t len) {
  stopper_t *s = ud;
  s->seen++;
  return s->stop_value;
}

static void run_errors(void **state) {
  td_tokenizer_t *t = NULL;
  td_err_t err = {0};
  assert_int_equal(td_tokenizer_open(test_dir(), "tokenize_fails", NULL, &t, &err), 0);

  /* Plugin failure: TD_EPLUGIN, with the plugin's message and name. */
  stopper_t s = {0, 0};
  assert_int_equal(td_tokenizer_run(t, "abc", 3, stop_cb, &s, &err), TD_EPLUGIN);
  assert_int_equal(s.seen, 1);
  assert_non_null(strstr(err.msg, "tokenize_fails"));
  assert_non_null(strstr(err.msg, "segmenter failed at byte 1"));

  /* The host stopping on the first token is not a plugin failure. */
  s = (stopper_t){0, 5};
  assert_int_equal(td_tokenizer_run(t, "abc", 3, stop_cb, &s, &err), 5);
  s = (stopper_t){0, TD_ELIMIT};
  assert_int_equal(td_tokenizer_run(t, "abc", 3, stop_cb, &s, &err), TD_ELIMIT);
  assert_int_equal(s.seen, 1);

  assert_int_equal(td_tokenizer_run(NULL, "abc", 3, stop_cb, &s, &err), TD_EINVAL);
  assert_int_equal(td_tokenizer_run(t, "abc", 3, NULL, &s, &err), TD_EINVAL);
  td_tokenizer_free(&t);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(loads_example),
      cmocka_unit_test(options_passed_through),
      cmocka_unit_test(options_rejected_by_plugin),
      cmocka_unit_test(options_must_be_object),
      cmocka_unit_test(rejects_abi_major),
      cmocka_unit_test(rejects_newer_minor),
      cmocka_unit_test(rejects_missing_entry),
      cmocka_unit_test(rejects_null_descriptor),
      cmocka_unit_test(rejects_missing_function),
      cmocka_unit_test(rejects_small_struct),
      cmocka_unit_test(rejects_name_mismatch),
      cmocka_unit_test(create_failure),
      cmocka_unit_test(rejects_missing_file),
      cmocka_unit_test(rejects_invalid_names),
      cmocka_unit_test_teardown(refuses_world_writable, tmp_cleanup),
      cmocka_unit_test_teardown(refuses_symlink_into_world_writable, tmp_cleanup),
      cmocka_unit_test_teardown(rejects_non_library, tmp_cleanup),
      cmocka_unit_test(default_dir),
      cmocka_unit_test(run_errors),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
