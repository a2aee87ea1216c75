/*
 * The dual coordinate descent solver (daemon/svm_dcd.c) on a small synthetic
 * problem that is not separable: the optimality conditions at the end of a
 * run, the duality gap of a long run (a certificate that it is the optimum),
 * the objective of a default run against that optimum, liblinear-train on the
 * same problem (when installed), the libsvm model file read back by libsvm's
 * own svm_load_model, determinism, and the argument checks.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "svm_dcd.h"

#define L 240
#define DIM 60
#define NNZ 8

typedef struct fixture {
  struct svm_node nodes[L * (NNZ + 1)];
  const struct svm_node *x[L];
  int y[L];
  td_dcd_problem_t p;
} fixture_t;

static fixture_t fx;

/* Rows of NNZ distinct features with values k/16 (exact in libsvm's %.8g
 * text), labels from a hidden linear rule plus a bias, 1 in 6 flipped, so
 * the problem has margin violators at every C. */
static int setup_fixture(void **state) {
  (void)state;
  uint64_t s = 12345;
  double hidden[DIM];
  for (int j = 0; j < DIM; j++) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    hidden[j] = (double)((s >> 33) % 17) / 8.0 - 1.0;
  }
  size_t at = 0;
  for (int i = 0; i < L; i++) {
    int used[DIM] = {0}, idx[NNZ];
    for (int q = 0; q < NNZ; q++) {
      int j;
      do {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        j = (int)((s >> 33) % DIM);
      } while (used[j]);
      used[j] = 1;
      idx[q] = j;
    }
    /* ascending indices, as libsvm wants */
    for (int a = 1; a < NNZ; a++)
      for (int b = a; b > 0 && idx[b - 1] > idx[b]; b--) {
        int t = idx[b];
        idx[b] = idx[b - 1];
        idx[b - 1] = t;
      }
    fx.x[i] = &fx.nodes[at];
    double f = 0.3;
    for (int q = 0; q < NNZ; q++) {
      s = s * 6364136223846793005ull + 1442695040888963407ull;
      double v = (double)(1 + (s >> 33) % 16) / 16.0;
      fx.nodes[at].index = idx[q] + 1;
      fx.nodes[at++].value = v;
      f += hidden[idx[q]] * v;
    }
    fx.nodes[at++].index = -1;
    fx.y[i] = f > 0 ? 1 : -1;
    if (i % 6 == 5) fx.y[i] = -fx.y[i];
  }
  fx.p.l = L;
  fx.p.x = fx.x;
  fx.p.y = fx.y;
  fx.p.dim = DIM;
  return 0;
}

static void param(td_dcd_param_t *par, int loss, double eps) {
  td_dcd_param_default(par);
  par->loss = loss;
  par->C_pos = 2;
  par->C_neg = 0.5; /* per-class C, as --balanced gives */
  par->eps = eps;
}

static void train(const td_dcd_param_t *par, td_dcd_model_t *m) {
  td_err_t err;
  td_err_clear(&err);
  if (td_dcd_train(&fx.p, par, m, &err)) fail_msg("%s", err.msg);
}

/* The gradient of the dual (minimization form) at alpha_i, from w as it is. */
static double grad(const td_dcd_param_t *par, const td_dcd_model_t *m, size_t i) {
  double C = fx.y[i] > 0 ? par->C_pos : par->C_neg;
  double diag = par->loss == TD_DCD_L2 ? 0.5 / C : 0;
  return fx.y[i] * td_dcd_decision(m, fx.x[i]) - 1 + diag * m->alpha[i];
}

static void check_kkt(int loss) {
  const double eps = 1e-3;
  td_dcd_param_t par;
  param(&par, loss, eps);
  td_dcd_model_t m;
  train(&par, &m);
  assert_true(m.converged);
  /* w is y.alpha-weighted sum of the rows (the bias too, B = 1) */
  double w[DIM] = {0}, b = 0;
  size_t nsv = 0;
  for (size_t i = 0; i < L; i++) {
    double C = fx.y[i] > 0 ? par.C_pos : par.C_neg, U = loss == TD_DCD_L2 ? INFINITY : C;
    assert_true(m.alpha[i] >= 0 && m.alpha[i] <= U);
    for (const struct svm_node *n = fx.x[i]; n->index != -1; n++)
      w[n->index - 1] += fx.y[i] * m.alpha[i] * n->value;
    b += fx.y[i] * m.alpha[i];
    nsv += m.alpha[i] > 0;
  }
  for (int j = 0; j < DIM; j++) assert_true(fabs(w[j] - m.w[j]) < 1e-9);
  assert_true(fabs(b - m.b) < 1e-9);
  assert_true(nsv > 0 && nsv < L);
  /* Projected gradient: >= 0 at the lower bound, <= 0 at the upper one, 0
   * inside. The run stops when max PG - min PG <= eps over a pass in which
   * w still moves a little after each variable is seen, hence the slack. */
  double pgmax = 0, pgmin = 0;
  for (size_t i = 0; i < L; i++) {
    double G = grad(&par, &m, i), C = fx.y[i] > 0 ? par.C_pos : par.C_neg, PG;
    if (m.alpha[i] == 0) PG = G < 0 ? G : 0;
    else if (loss == TD_DCD_L1 && m.alpha[i] == C) PG = G > 0 ? G : 0;
    else PG = G;
    if (PG > pgmax) pgmax = PG;
    if (PG < pgmin) pgmin = PG;
  }
  if (pgmax - pgmin > 2 * eps) fail_msg("projected gradient spread %g > %g", pgmax - pgmin, 2 * eps);
  td_dcd_model_free(&m);
}

static void test_kkt_l1(void **state) {
  (void)state;
  check_kkt(TD_DCD_L1);
}

static void test_kkt_l2(void **state) {
  (void)state;
  check_kkt(TD_DCD_L2);
}

/* A long run closes the duality gap (so it is the optimum, whatever solver
 * one would compare it with); the default eps (0.1) lands within 1% of its
 * objective, and never below it. */
static void check_objective(int loss) {
  td_dcd_param_t par;
  param(&par, loss, 1e-10);
  par.max_iter = 1000000;
  par.shrinking = 0;
  td_dcd_model_t opt, def;
  train(&par, &opt);
  assert_true(opt.converged);
  double P = td_dcd_primal(&fx.p, &par, opt.w, opt.b), D = td_dcd_dual(&fx.p, &par, opt.alpha);
  if (!(P - D >= -1e-9 && P - D <= 1e-7 * P)) fail_msg("duality gap %g (primal %.12g)", P - D, P);

  param(&par, loss, 0.1);
  train(&par, &def);
  assert_true(def.converged);
  double Pd = td_dcd_primal(&fx.p, &par, def.w, def.b), Dd = td_dcd_dual(&fx.p, &par, def.alpha);
  assert_true(Dd <= P + 1e-9 && Pd >= P - 1e-9); /* weak duality around the optimum */
  if ((Pd - P) > 1e-2 * P) fail_msg("eps 0.1: primal %.9g, optimum %.9g", Pd, P);
  td_dcd_model_free(&opt);
  td_dcd_model_free(&def);
}

static void test_objective_l1(void **state) {
  (void)state;
  check_objective(TD_DCD_L1);
}

static void test_objective_l2(void **state) {
  (void)state;
  check_objective(TD_DCD_L2);
}

/* liblinear-train (Debian's liblinear-tools) solves the same problems
 * (-s 3: L1 loss dual, -s 1: L2 loss dual, -B 1: the same bias): its
 * weights must match a tight run. Skipped when the tool is missing. */
static void check_liblinear(int loss) {
  const char *tool = "/usr/bin/liblinear-train";
  if (access(tool, X_OK) != 0) skip();
  char dir[] = "/tmp/td-dcd-XXXXXX";
  assert_non_null(mkdtemp(dir));
  char data[64], model[64], cmd[512];
  snprintf(data, sizeof data, "%s/p.svm", dir);
  snprintf(model, sizeof model, "%s/p.model", dir);
  FILE *f = fopen(data, "w");
  assert_non_null(f);
  for (size_t i = 0; i < L; i++) {
    fprintf(f, "%+d", fx.y[i]);
    for (const struct svm_node *n = fx.x[i]; n->index != -1; n++) fprintf(f, " %d:%.17g", n->index, n->value);
    fputc('\n', f);
  }
  fclose(f);
  snprintf(cmd, sizeof cmd, "%s -s %d -c 1 -w1 2 -w-1 0.5 -B 1 -e 1e-8 -q %s %s", tool,
           loss == TD_DCD_L1 ? 3 : 1, data, model);
  assert_int_equal(system(cmd), 0);
  f = fopen(model, "r");
  assert_non_null(f);
  char line[256];
  int first = 0, in_w = 0, nw = 0;
  double ll[DIM + 1];
  while (fgets(line, sizeof line, f)) {
    if (!strncmp(line, "label ", 6)) first = atoi(line + 6);
    else if (!strcmp(line, "w\n")) in_w = 1;
    else if (in_w && nw <= DIM) ll[nw++] = strtod(line, NULL);
  }
  fclose(f);
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  assert_int_equal(system(cmd), 0);
  assert_int_equal(nw, DIM + 1);
  assert_true(first == 1 || first == -1); /* liblinear's w points to its first label */
  td_dcd_param_t par;
  param(&par, loss, 1e-10);
  par.max_iter = 1000000;
  td_dcd_model_t m;
  train(&par, &m);
  for (int j = 0; j < DIM; j++)
    if (fabs(first * ll[j] - m.w[j]) > 1e-4) fail_msg("w[%d]: liblinear %.9g, dcd %.9g", j, first * ll[j], m.w[j]);
  if (fabs(first * ll[DIM] - m.b) > 1e-4) fail_msg("bias: liblinear %.9g, dcd %.9g", first * ll[DIM], m.b);
  td_dcd_model_free(&m);
}

static void test_liblinear_l1(void **state) {
  (void)state;
  check_liblinear(TD_DCD_L1);
}

static void test_liblinear_l2(void **state) {
  (void)state;
  check_liblinear(TD_DCD_L2);
}

/* The fit written as a libsvm LINEAR model: libsvm's own loader and
 * svm_predict_values give w.x + b, for both losses. */
static void check_libsvm_file(int loss) {
  td_dcd_param_t par;
  param(&par, loss, 0.1);
  td_dcd_model_t m;
  train(&par, &m);
  td_err_t err;
  struct svm_model *s = td_dcd_to_svm(&fx.p, &m, 1.0, &err);
  if (!s) fail_msg("%s", err.msg);
  int npos = 0, nneg = 0;
  for (size_t i = 0; i < L; i++)
    if (m.alpha[i] > 0) fx.y[i] > 0 ? npos++ : nneg++;
  assert_int_equal(s->l, npos + nneg);
  char path[] = "/tmp/td-dcd-model-XXXXXX";
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  close(fd);
  assert_int_equal(svm_save_model(path, s), 0);
  svm_free_and_destroy_model(&s);
  struct svm_model *r = svm_load_model(path);
  unlink(path);
  assert_non_null(r);
  assert_int_equal(svm_get_nr_class(r), 2);
  assert_int_equal(r->param.kernel_type, LINEAR);
  assert_int_equal(r->label[0], 1);
  assert_int_equal(r->nSV[0], npos);
  assert_int_equal(r->nSV[1], nneg);
  for (size_t i = 0; i < L; i++) {
    double dv = 0, want = td_dcd_decision(&m, fx.x[i]);
    double lab = svm_predict_values(r, fx.x[i], &dv);
    if (fabs(dv - want) > 1e-9 * (1 + fabs(want))) fail_msg("row %zu: libsvm %.17g, w.x+b %.17g", i, dv, want);
    assert_true(lab == (dv > 0 ? 1 : -1));
  }
  svm_free_and_destroy_model(&r);
  td_dcd_model_free(&m);
}

static void test_libsvm_file_l1(void **state) {
  (void)state;
  check_libsvm_file(TD_DCD_L1);
}

static void test_libsvm_file_l2(void **state) {
  (void)state;
  check_libsvm_file(TD_DCD_L2);
}

typedef struct job {
  uint64_t seed;
  td_dcd_model_t m;
} job_t;

static void *run_job(void *arg) {
  job_t *j = arg;
  td_dcd_param_t par;
  param(&par, TD_DCD_L1, 0.1);
  par.seed = j->seed;
  td_err_t err;
  if (td_dcd_train(&fx.p, &par, &j->m, &err)) j->m.w = NULL;
  return NULL;
}

/* The seed alone fixes the result: the same fits run one after the other or
 * on two threads at once are bit for bit the same; another seed visits the
 * variables in another order. */
static void test_determinism(void **state) {
  (void)state;
  job_t serial[2] = {{.seed = 7}, {.seed = 8}}, par[2] = {{.seed = 7}, {.seed = 8}};
  for (int i = 0; i < 2; i++) run_job(&serial[i]);
  pthread_t th[2];
  for (int i = 0; i < 2; i++) assert_int_equal(pthread_create(&th[i], NULL, run_job, &par[i]), 0);
  for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
  for (int i = 0; i < 2; i++) {
    assert_non_null(serial[i].m.w);
    assert_non_null(par[i].m.w);
    assert_memory_equal(serial[i].m.w, par[i].m.w, DIM * sizeof(double));
    assert_memory_equal(serial[i].m.alpha, par[i].m.alpha, L * sizeof(double));
    assert_true(serial[i].m.b == par[i].m.b);
  }
  assert_true(memcmp(serial[0].m.alpha, serial[1].m.alpha, L * sizeof(double)) != 0);
  for (int i = 0; i < 2; i++) {
    td_dcd_model_free(&serial[i].m);
    td_dcd_model_free(&par[i].m);
  }
}

static void expect_einval(const td_dcd_problem_t *p, const td_dcd_param_t *par, const char *what) {
  td_dcd_model_t m;
  td_err_t err;
  td_err_clear(&err);
  assert_int_equal(td_dcd_train(p, par, &m, &err), TD_EINVAL);
  if (!strstr(err.msg, what)) fail_msg("\"%s\" does not say \"%s\"", err.msg, what);
  assert_null(m.w);
  assert_null(m.alpha);
}

static void test_errors(void **state) {
  (void)state;
  td_dcd_param_t par;
  param(&par, TD_DCD_L1, 0.1);
  par.loss = 3;
  expect_einval(&fx.p, &par, "loss");
  param(&par, TD_DCD_L1, 0.1);
  par.C_neg = 0;
  expect_einval(&fx.p, &par, "C must be positive");
  param(&par, TD_DCD_L1, 0.1);
  par.eps = 0;
  expect_einval(&fx.p, &par, "eps");
  param(&par, TD_DCD_L1, 0.1);
  /* a label that is not +-1 */
  td_dcd_problem_t p = fx.p;
  int y[L];
  memcpy(y, fx.y, sizeof y);
  y[3] = 0;
  p.y = y;
  expect_einval(&p, &par, "label of row 3");
  /* a feature past dim, and indices out of order */
  p = fx.p;
  p.dim = DIM / 2;
  expect_einval(&p, &par, "out of order or past");
  struct svm_node bad[] = {{3, 1.0}, {2, 1.0}, {-1, 0}};
  const struct svm_node *bx[] = {bad};
  int by[] = {1};
  td_dcd_problem_t bp = {.l = 1, .x = bx, .y = by, .dim = DIM};
  expect_einval(&bp, &par, "out of order or past");
  /* no support vector: nothing a libsvm file could hold */
  td_dcd_model_t m;
  train(&par, &m);
  memset(m.alpha, 0, L * sizeof *m.alpha);
  td_err_t err;
  td_err_clear(&err);
  assert_null(td_dcd_to_svm(&fx.p, &m, 1.0, &err));
  assert_int_equal(err.code, TD_EINVAL);
  td_dcd_model_free(&m);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_kkt_l1),          cmocka_unit_test(test_kkt_l2),
      cmocka_unit_test(test_objective_l1),    cmocka_unit_test(test_objective_l2),
      cmocka_unit_test(test_liblinear_l1),    cmocka_unit_test(test_liblinear_l2),
      cmocka_unit_test(test_libsvm_file_l1),  cmocka_unit_test(test_libsvm_file_l2),
      cmocka_unit_test(test_determinism),     cmocka_unit_test(test_errors),
  };
  return cmocka_run_group_tests(tests, setup_fixture, NULL);
}
