/*
 * Replacing a bundle (td_model_write, td_model_install): a reader sees the
 * whole old bundle or the whole new one, a failed write leaves the old one
 * loadable, and the directory ends up holding exactly the new bundle.
 *
 * Two versions of one bundle differ in every file: A has three themes, B
 * two, B's svm/talent.model is A's ecology model, the idf tables and the
 * thresholds differ. So a load that mixed files from both would not equal
 * either version loaded on its own, which is what every load is compared
 * with (weights, biases, idf, thresholds, version).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <libsvm/svm.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "model.h"

#define DIM 1024u
#define NS 120
#define NT 3

static const char *const names_a[NT] = {"talent", "industry", "ecology"};
static const char *const names_b[2] = {"talent", "industry"};

static void quiet(const char *s) { (void)s; }

static uint64_t rng_state = 0x243f6a8885a308d3ull;
static uint32_t rnd(void) {
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return (uint32_t)((rng_state * 2685821657736338717ull) >> 32);
}
static double rndu(void) { return (rnd() + 0.5) / 4294967296.0; }

static char *pjoin(const char *a, const char *b) {
  char *p = malloc(strlen(a) + strlen(b) + 2);
  sprintf(p, "%s/%s", a, b);
  return p;
}

static const char *plugin_dir(void) { return getenv("THEMED_PLUGIN_DIR"); }

typedef struct fixture {
  struct svm_node *pool, **x;
  double y[NT][NS];
  struct svm_model *svm[NT];
  uint32_t df_a[DIM], df_b[DIM];
  double thr_a[NT], thr_b[2], pa[NT], pb[NT], C[NT];
  struct svm_model *svms_b[2];
  td_feat_config_t feat;
  td_split_opts_t split;
  json_t *tokopts;
  td_bundle_spec_t a, b;
  char *dir;
  td_model_t *ref_a, *ref_b; /* each version loaded from a directory of its own */
} fixture_t;

static td_model_t *load_ok(const char *dir) {
  td_model_t *m = NULL;
  td_err_t err;
  td_err_clear(&err);
  if (td_model_load(dir, plugin_dir(), &m, &err)) fail_msg("td_model_load(%s): %s", dir, err.msg);
  return m;
}

static void write_ok(const char *dir, const td_bundle_spec_t *s) {
  td_err_t err;
  td_err_clear(&err);
  if (td_model_write(dir, s, &err)) fail_msg("td_model_write(%s): %s", dir, err.msg);
}

static int group_setup(void **state) {
  svm_set_print_string_function(quiet);
  fixture_t *f = calloc(1, sizeof *f);
  f->x = calloc(NS, sizeof *f->x);
  f->pool = calloc(NS * 9, sizeof *f->pool);
  double hidden[NT][DIM];
  for (int k = 0; k < NT; k++)
    for (unsigned i = 0; i < DIM; i++) hidden[k][i] = rndu() * 2 - 1;
  for (int r = 0; r < NS; r++) {
    struct svm_node *row = f->pool + r * 9;
    f->x[r] = row;
    double dots[NT] = {0};
    for (int j = 0; j < 8; j++) {
      unsigned i = j * (DIM / 8) + rnd() % (DIM / 8);
      row[j].index = (int)i + 1;
      row[j].value = rndu();
      f->df_a[i]++;
      for (int k = 0; k < NT; k++) dots[k] += hidden[k][i] * row[j].value;
    }
    row[8].index = -1;
    for (int k = 0; k < NT; k++) f->y[k][r] = dots[k] > 0 ? +1 : -1;
  }
  for (int k = 0; k < NT; k++) {
    struct svm_problem prob = {NS, f->y[k], f->x};
    struct svm_parameter p = {.svm_type = C_SVC, .kernel_type = LINEAR, .degree = 3, .gamma = 0.5,
                              .cache_size = 20, .eps = 1e-3, .C = 1.0, .shrinking = 1};
    assert_null(svm_check_parameter(&prob, &p));
    assert_non_null(f->svm[k] = svm_train(&prob, &p));
    f->thr_a[k] = 0.3 + 0.1 * k;
    f->pa[k] = -2.0 - 0.25 * k;
    f->pb[k] = 0.1 * k;
    f->C[k] = 1.0;
  }
  for (unsigned i = 0; i < DIM; i++) f->df_b[i] = f->df_a[(i + 1) % DIM] + (i % 3 == 0);
  f->thr_b[0] = 0.6;
  f->thr_b[1] = 0.7;
  f->svms_b[0] = f->svm[2];
  f->svms_b[1] = f->svm[0];
  td_feat_config_default(&f->feat);
  f->feat.buckets = DIM;
  td_split_opts_default(&f->split);
  f->tokopts = json_object();

  td_bundle_spec_t s = {.name = "race", .tokenizer = "bigram", .tokenizer_options = f->tokopts,
                        .feat = &f->feat, .split = &f->split, .platt_a = f->pa,
                        .platt_b = f->pb, .C = f->C};
  f->a = s;
  f->a.version = "A";
  f->a.df = f->df_a;
  f->a.n_docs = NS;
  f->a.ntheme = NT;
  f->a.themes = names_a;
  f->a.svms = f->svm;
  f->a.thresholds = f->thr_a;
  f->b = s;
  f->b.version = "B";
  f->b.df = f->df_b;
  f->b.n_docs = NS + 7;
  f->b.ntheme = 2;
  f->b.themes = names_b;
  f->b.svms = f->svms_b;
  f->b.thresholds = f->thr_b;

  const char *t = getenv("TMPDIR");
  char buf[512];
  snprintf(buf, sizeof buf, "%s/td-mwrite-XXXXXX", t && *t ? t : "/tmp");
  assert_non_null(mkdtemp(buf));
  f->dir = strdup(buf);
  char *ra = pjoin(f->dir, "ref-a"), *rb = pjoin(f->dir, "ref-b");
  write_ok(ra, &f->a);
  write_ok(rb, &f->b);
  f->ref_a = load_ok(ra);
  f->ref_b = load_ok(rb);
  free(ra);
  free(rb);
  *state = f;
  return 0;
}

static int group_teardown(void **state) {
  fixture_t *f = *state;
  td_model_unref(&f->ref_a);
  td_model_unref(&f->ref_b);
  for (int k = 0; k < NT; k++) svm_free_and_destroy_model(&f->svm[k]);
  json_decref(f->tokopts);
  free(f->x);
  free(f->pool);
  td_remove_tree(f->dir);
  free(f->dir);
  free(f);
  return 0;
}

/* m is exactly ref: every number the three kinds of file contribute. */
static int same_model(const td_model_t *m, const td_model_t *ref) {
  size_t nt = ref->ntheme, nb = ref->feat.buckets;
  if (strcmp(m->version, ref->version) || m->ntheme != nt || m->feat.buckets != nb) return 0;
  for (size_t k = 0; k < nt; k++)
    if (strcmp(m->themes[k].name, ref->themes[k].name) ||
        m->themes[k].threshold != ref->themes[k].threshold || m->bias[k] != ref->bias[k])
      return 0;
  return !memcmp(m->w, ref->w, nb * nt * sizeof *m->w) &&
         !memcmp(m->idf, ref->idf, nb * sizeof *m->idf);
}

/* Nothing of a write is left beside the bundle: no "<dir>.new.*", "<dir>.old.*". */
static void assert_no_siblings(const fixture_t *f, const char *name) {
  char pat[300];
  snprintf(pat, sizeof pat, "%s.", name);
  char cmd[1024];
  snprintf(cmd, sizeof cmd, "ls -a '%s' | grep -q '^%s'", f->dir, pat);
  if (system(cmd) == 0) fail_msg("a staging directory of %s was left in %s", name, f->dir);
}

static int exists(const char *dir, const char *rel) {
  char *p = pjoin(dir, rel);
  struct stat st;
  int ok = lstat(p, &st) == 0;
  free(p);
  return ok;
}

/* The new directory holds exactly the new bundle: stale SVM files and
 * extra files of the old one are gone, its permissions are kept, and a
 * symlink to the bundle stays a symlink. */
static void test_write_replaces_whole_bundle(void **state) {
  fixture_t *f = *state;
  char *dir = pjoin(f->dir, "whole");
  write_ok(dir, &f->a);
  assert_true(exists(dir, "svm/ecology.model"));
  char *extra = pjoin(dir, "notes.txt");
  FILE *fp = fopen(extra, "w");
  assert_non_null(fp);
  fputs("x\n", fp);
  fclose(fp);
  assert_int_equal(chmod(dir, 0750), 0);

  write_ok(dir, &f->b);
  td_model_t *m = load_ok(dir);
  assert_true(same_model(m, f->ref_b));
  td_model_unref(&m);
  assert_false(exists(dir, "svm/ecology.model"));
  assert_false(exists(dir, "notes.txt"));
  struct stat st;
  assert_int_equal(stat(dir, &st), 0);
  assert_int_equal(st.st_mode & 07777, 0750);
  assert_no_siblings(f, "whole");

  /* through a symlink: the directory it names is replaced, the link kept */
  char *link = pjoin(f->dir, "current");
  assert_int_equal(symlink("whole", link), 0);
  char with_slash[600];
  snprintf(with_slash, sizeof with_slash, "%s/", link);
  write_ok(with_slash, &f->a);
  assert_int_equal(lstat(link, &st), 0);
  assert_true(S_ISLNK(st.st_mode));
  m = load_ok(dir);
  assert_true(same_model(m, f->ref_a));
  td_model_unref(&m);
  assert_no_siblings(f, "whole");
  assert_no_siblings(f, "current");

  /* a directory that is not a bundle is not replaced */
  char *other = pjoin(f->dir, "other");
  assert_int_equal(mkdir(other, 0755), 0);
  char *keep = pjoin(other, "keep.txt");
  fp = fopen(keep, "w");
  fclose(fp);
  td_err_t err;
  td_err_clear(&err);
  assert_int_equal(td_model_write(other, &f->a, &err), TD_EINVAL);
  assert_non_null(strstr(err.msg, "not a model bundle"));
  assert_int_equal(access(keep, F_OK), 0);
  assert_no_siblings(f, "other");
  /* an empty one is */
  assert_int_equal(unlink(keep), 0);
  write_ok(other, &f->a);
  m = load_ok(other);
  assert_true(same_model(m, f->ref_a));
  td_model_unref(&m);

  free(keep);
  free(other);
  free(link);
  free(extra);
  free(dir);
}

/* A write that fails halfway (the file size limit hit in the first SVM
 * file) leaves the old bundle as it was, and nothing beside it. */
static void test_failed_write_keeps_old_bundle(void **state) {
  fixture_t *f = *state;
  char *dir = pjoin(f->dir, "fail");
  write_ok(dir, &f->a);

  struct rlimit old, lim;
  assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
  lim = old;
  lim.rlim_cur = 512;
  void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
  assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
  td_err_t err;
  td_err_clear(&err);
  int rc = td_model_write(dir, &f->b, &err);
  assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
  signal(SIGXFSZ, prev);
  assert_int_equal(rc, TD_EIO);
  assert_non_null(strstr(err.msg, ".model"));

  td_model_t *m = load_ok(dir);
  assert_true(same_model(m, f->ref_a));
  td_model_unref(&m);
  assert_true(exists(dir, "svm/ecology.model"));
  assert_no_siblings(f, "fail");

  /* an unwritable parent (only meaningful when permissions apply to us) */
  if (geteuid() != 0) {
    assert_int_equal(chmod(f->dir, 0555), 0);
    td_err_clear(&err);
    rc = td_model_write(dir, &f->b, &err);
    assert_int_equal(chmod(f->dir, 0700), 0);
    assert_int_equal(rc, TD_EIO);
    m = load_ok(dir);
    assert_true(same_model(m, f->ref_a));
    td_model_unref(&m);
  }
  free(dir);
}

/*
 * A child process rewrites one bundle directory, alternating between A and
 * B, as fast as it can; this process loads it over and over meanwhile. Every
 * load must succeed and be exactly A or exactly B.
 */
static void test_load_racing_rewrites(void **state) {
  fixture_t *f = *state;
  char *dir = pjoin(f->dir, "race");
  write_ok(dir, &f->a);
  const double secs = 2.0;

  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int bad = 0;
    for (unsigned i = 1; !bad; i++) {
      td_err_t err;
      td_err_clear(&err);
      if (td_model_write(dir, i % 2 ? &f->b : &f->a, &err)) {
        fprintf(stderr, "writer: %s\n", err.msg);
        bad = 1;
      }
      clock_gettime(CLOCK_MONOTONIC, &t);
      if ((t.tv_sec - t0.tv_sec) + (t.tv_nsec - t0.tv_nsec) / 1e9 > secs) break;
    }
    _exit(bad);
  }

  unsigned na = 0, nb = 0, mixed = 0, failed = 0;
  int status = 0;
  char first_err[600] = "";
  while (waitpid(pid, &status, WNOHANG) == 0) {
    td_model_t *m = NULL;
    td_err_t err;
    td_err_clear(&err);
    if (td_model_load(dir, plugin_dir(), &m, &err)) {
      if (!failed++) snprintf(first_err, sizeof first_err, "%s", err.msg);
      continue;
    }
    if (same_model(m, f->ref_a)) na++;
    else if (same_model(m, f->ref_b)) nb++;
    else mixed++;
    td_model_unref(&m);
  }
  print_message("loads: %u of A, %u of B, %u mixed, %u failed\n", na, nb, mixed, failed);
  assert_true(WIFEXITED(status));
  assert_int_equal(WEXITSTATUS(status), 0);
  assert_int_equal(mixed, 0);
  if (failed) fail_msg("%u loads failed, the first: %s", failed, first_err);
  assert_true(na > 0 && nb > 0);
  assert_no_siblings(f, "race");
  free(dir);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_write_replaces_whole_bundle),
      cmocka_unit_test(test_failed_write_keeps_old_bundle),
      cmocka_unit_test(test_load_racing_rewrites),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
