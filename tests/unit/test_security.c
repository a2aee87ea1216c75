/* security: the constant-time token compare, reading the admin token file
 * (modes, content), loopback addresses and the listen rule, and which model
 * paths a reload may load (td_config_model_path).
 *
 * config.c and log.c belong to the service, not the engine library the unit
 * tests link, so they are compiled into this test directly. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../daemon/config.c"
#include "../../daemon/log.c"

static char g_tmp[PATH_MAX];

static int setup(void **st) {
  const char *t = getenv("TMPDIR");
  snprintf(g_tmp, sizeof g_tmp, "%s/themed-test-security-XXXXXX", t && *t ? t : "/tmp");
  assert_non_null(mkdtemp(g_tmp));
  return 0;
}

static int teardown(void **st) {
  char cmd[PATH_MAX + 16];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_tmp);
  return system(cmd) == 0 ? 0 : -1;
}

static void test_secret_equal(void **st) {
  const char *tok = "s3cret-token";
  size_t n = strlen(tok);
  assert_true(td_secret_equal(tok, n, "s3cret-token", n));
  assert_false(td_secret_equal(tok, n, "s3cret-tokeN", n));   /* last byte */
  assert_false(td_secret_equal(tok, n, "x3cret-token", n));   /* first byte */
  assert_false(td_secret_equal(tok, n, "s3cret-toke", n - 1)); /* a prefix */
  assert_false(td_secret_equal(tok, n, "s3cret-token!", n + 1)); /* longer */
  assert_false(td_secret_equal(tok, n, "", 0));
  assert_false(td_secret_equal("", 0, tok, n));
  assert_true(td_secret_equal("", 0, "", 0));
  /* lengths, not NULs, bound the compare */
  assert_false(td_secret_equal("ab\0c", 4, "ab\0d", 4));
  assert_true(td_secret_equal("ab\0c", 4, "ab\0c", 4));
  /* a string padded with the NULs the loop reads past the shorter one */
  assert_false(td_secret_equal("ab", 2, "ab\0", 3));
}

static const char *write_file(const char *name, const char *content, size_t len, mode_t mode) {
  static char path[PATH_MAX + 64];
  snprintf(path, sizeof path, "%s/%s", g_tmp, name);
  FILE *f = fopen(path, "wb");
  assert_non_null(f);
  assert_int_equal(fwrite(content, 1, len, f), len);
  fclose(f);
  assert_int_equal(chmod(path, mode), 0);
  return path;
}

static void expect_token_refused(const char *path, int code, const char *want) {
  char *tok = (char *)"untouched";
  td_err_t err = {0};
  assert_int_equal(td_admin_token_read(path, &tok, &err), code);
  assert_null(tok);
  if (!strstr(err.msg, want)) fail_msg("message \"%s\" lacks \"%s\"", err.msg, want);
}

static void test_admin_token_file(void **st) {
  char *tok = NULL;
  td_err_t err = {0};
  const char *p = write_file("ok", "s3cret\r\n", 8, 0600);
  assert_int_equal(td_admin_token_read(p, &tok, &err), 0);
  assert_string_equal(tok, "s3cret");
  free(tok);
  p = write_file("group", "abc \t\n\n", 7, 0640); /* group-readable is fine */
  assert_int_equal(td_admin_token_read(p, &tok, &err), 0);
  assert_string_equal(tok, "abc");
  free(tok);

  expect_token_refused(write_file("world-r", "s3cret\n", 7, 0644), TD_EINVAL, "readable by others");
  expect_token_refused(write_file("world-r2", "s3cret\n", 7, 0604), TD_EINVAL, "mode 0604");
  expect_token_refused(write_file("world-w", "s3cret\n", 7, 0602), TD_EINVAL, "writable by others");
  expect_token_refused(write_file("empty", "", 0, 0600), TD_EINVAL, "is empty");
  expect_token_refused(write_file("blank", " \n\r\n", 4, 0600), TD_EINVAL, "is empty");
  expect_token_refused(write_file("space", "two words\n", 10, 0600), TD_EINVAL, "byte 3");
  expect_token_refused(write_file("nul", "ab\0cd", 5, 0600), TD_EINVAL, "printable ASCII");
  expect_token_refused(write_file("utf8", "p\xc3\xa4ss", 5, 0600), TD_EINVAL, "printable ASCII");
  char big[TD_ADMIN_TOKEN_MAX + 2];
  memset(big, 'k', sizeof big);
  p = write_file("max", big, TD_ADMIN_TOKEN_MAX, 0600);
  assert_int_equal(td_admin_token_read(p, &tok, &err), 0);
  assert_int_equal(strlen(tok), TD_ADMIN_TOKEN_MAX);
  free(tok);
  expect_token_refused(write_file("long", big, sizeof big, 0600), TD_EINVAL, "longer than 1024");
  expect_token_refused(g_tmp, TD_EINVAL, "not a regular file");
  char missing[PATH_MAX + 16];
  snprintf(missing, sizeof missing, "%s/missing", g_tmp);
  expect_token_refused(missing, TD_EIO, "No such file");
}

static int loopback4(const char *a) {
  struct sockaddr_in sa = {.sin_family = AF_INET};
  assert_int_equal(inet_pton(AF_INET, a, &sa.sin_addr), 1);
  return td_sockaddr_is_loopback((struct sockaddr *)&sa);
}

static int loopback6(const char *a) {
  struct sockaddr_in6 sa = {.sin6_family = AF_INET6};
  assert_int_equal(inet_pton(AF_INET6, a, &sa.sin6_addr), 1);
  return td_sockaddr_is_loopback((struct sockaddr *)&sa);
}

static void test_loopback(void **st) {
  assert_true(loopback4("127.0.0.1"));
  assert_true(loopback4("127.255.3.4"));
  assert_false(loopback4("0.0.0.0"));
  assert_false(loopback4("10.0.0.1"));
  assert_false(loopback4("128.0.0.1"));
  assert_false(loopback4("126.255.255.255"));
  assert_true(loopback6("::1"));
  assert_false(loopback6("::"));
  assert_false(loopback6("::2"));
  assert_true(loopback6("::ffff:127.0.0.1"));
  assert_false(loopback6("::ffff:10.0.0.1"));
  assert_false(loopback6("fe80::1"));
}

/* A config as main has it: a model in g_tmp/models/a, listening on spec. */
static int validate_listen(td_config_t *c, const char *spec, int allow_remote, td_err_t *err) {
  char model[PATH_MAX + 16];
  snprintf(model, sizeof model, "%s/models/a", g_tmp);
  td_config_init(c);
  c->model = strdup(model);
  c->listen = calloc(1, sizeof *c->listen);
  c->listen[0] = strdup(spec);
  c->nlisten = 1;
  c->allow_remote = allow_remote;
  return td_config_validate(c, 0, err);
}

static void mkdirs(const char *rel) {
  char p[PATH_MAX + 64];
  snprintf(p, sizeof p, "%s/%s", g_tmp, rel);
  assert_int_equal(mkdir(p, 0755), 0);
}

static void test_listen_rule(void **st) {
  mkdirs("models");
  mkdirs("models/a");
  td_config_t c;
  td_err_t err = {0};
  const char *refused[] = {"tcp:0.0.0.0:7300", "tcp:[::]:7300", "tcp:192.0.2.1:1"};
  for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
    assert_int_equal(validate_listen(&c, refused[i], 0, &err), TD_EINVAL);
    assert_non_null(strstr(err.msg, "not a loopback address"));
    assert_non_null(strstr(err.msg, "--allow-remote"));
    td_config_free(&c);
    assert_int_equal(validate_listen(&c, refused[i], 1, &err), 0);
    td_config_free(&c);
  }
  const char *fine[] = {"tcp:127.0.0.1:7300", "tcp:[::1]:0", "tcp:127.9.9.9:1", "unix:/x.sock"};
  for (size_t i = 0; i < sizeof fine / sizeof fine[0]; i++) {
    assert_int_equal(validate_listen(&c, fine[i], 0, &err), 0);
    td_config_free(&c);
  }
}

static void expect_path(td_config_t *c, const char *path, int code, const char *want) {
  char where[PATH_MAX];
  td_err_t err = {0};
  int rc = td_config_model_path(c, path, where, &err);
  if (rc != code) fail_msg("%s: got %d (%s), want %d", path, rc, err.msg, code);
  if (want && (rc ? !strstr(err.msg, want) : strcmp(where, want)))
    fail_msg("%s: got \"%s\", want \"%s\"", path, rc ? err.msg : where, want);
}

static void test_model_paths(void **st) {
  mkdirs("models");
  mkdirs("models/a");
  mkdirs("models/b");
  mkdirs("outside");
  char root[PATH_MAX], p[PATH_MAX + 64], q[PATH_MAX + 64], want[PATH_MAX + 64];
  assert_non_null(realpath(g_tmp, root)); /* TMPDIR itself may be a symlink */
  snprintf(p, sizeof p, "%s/outside", g_tmp);
  snprintf(q, sizeof q, "%s/models/escape", g_tmp);
  assert_int_equal(symlink(p, q), 0);

  td_config_t c;
  td_err_t err = {0};
  assert_int_equal(validate_listen(&c, "unix:/x.sock", 0, &err), 0);
  snprintf(want, sizeof want, "%s/models", root);
  assert_string_equal(c.models_dir, want); /* default: the parent of --model, resolved */

  snprintf(p, sizeof p, "%s/models/b", g_tmp);
  snprintf(want, sizeof want, "%s/models/b", root);
  expect_path(&c, p, 0, want);
  snprintf(p, sizeof p, "%s/models/a/../b/.", g_tmp);
  expect_path(&c, p, 0, want);
  snprintf(p, sizeof p, "%s/models", g_tmp); /* the directory itself */
  expect_path(&c, p, 0, NULL);
  snprintf(p, sizeof p, "%s/models/nothing", g_tmp); /* inside, missing */
  expect_path(&c, p, TD_EIO, "No such file");
  snprintf(p, sizeof p, "%s/outside", g_tmp);
  expect_path(&c, p, TD_ESTATE, "outside the models directory");
  snprintf(p, sizeof p, "%s/models/escape", g_tmp); /* a symlink out */
  expect_path(&c, p, TD_ESTATE, "outside the models directory");
  snprintf(p, sizeof p, "%s/models/a/../../outside", g_tmp);
  expect_path(&c, p, TD_ESTATE, "outside the models directory");
  snprintf(p, sizeof p, "%s/models/nothing/../../../x", g_tmp); /* missing, lexically out */
  expect_path(&c, p, TD_ESTATE, "outside the models directory");
  snprintf(p, sizeof p, "%s/models-evil", g_tmp); /* a sibling with the same prefix */
  expect_path(&c, p, TD_ESTATE, "outside the models directory");
  expect_path(&c, "/", TD_ESTATE, "outside the models directory");
  expect_path(&c, "relative/x", TD_ESTATE, "outside the models directory");

  c.allow_any_model_path = 1;
  snprintf(p, sizeof p, "%s/outside", g_tmp);
  snprintf(want, sizeof want, "%s/outside", root);
  expect_path(&c, p, 0, want);
  td_config_free(&c);

  /* an explicit --models-dir must exist and hold the model */
  td_config_init(&c);
  snprintf(p, sizeof p, "%s/models/a", g_tmp);
  c.model = strdup(p);
  c.listen = calloc(1, sizeof *c.listen);
  c.listen[0] = strdup("unix:/x.sock");
  c.nlisten = 1;
  snprintf(p, sizeof p, "%s/outside", g_tmp);
  c.models_dir = strdup(p);
  assert_int_equal(td_config_validate(&c, 0, &err), TD_EINVAL);
  assert_non_null(strstr(err.msg, "outside the models directory"));
  free(c.models_dir);
  snprintf(p, sizeof p, "%s/missing", g_tmp);
  c.models_dir = strdup(p);
  assert_int_equal(td_config_validate(&c, 0, &err), TD_EINVAL);
  assert_non_null(strstr(err.msg, "models_dir"));
  free(c.models_dir);
  c.models_dir = strdup("/");
  assert_int_equal(td_config_validate(&c, 0, &err), 0);
  expect_path(&c, "/", 0, "/");
  td_config_free(&c);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_secret_equal),
      cmocka_unit_test_setup_teardown(test_admin_token_file, setup, teardown),
      cmocka_unit_test(test_loopback),
      cmocka_unit_test_setup_teardown(test_listen_rule, setup, teardown),
      cmocka_unit_test_setup_teardown(test_model_paths, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
