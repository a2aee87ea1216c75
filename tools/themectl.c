/*
 * themectl: the command-line tool. Offline commands (train, classify, eval)
 * link the same engine as the daemon, so their output cannot disagree with
 * what the daemon serves; client commands are in themectl_client.c.
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "classify.h"
#include "common.h"
#include "corpus.h"
#include "jalloc.h"
#include "model.h"
#include "themectl.h"
#include "themectl_doc.h"
#include "train.h"
#include "wire.h"

void themectl_errorf(const char *fmt, ...) {
  va_list ap;
  fputs("themectl: ", stderr);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
}

static const char usage_main[] =
    "usage: themectl <command> [options]\n"
    "\n"
    "offline (no daemon needed):\n"
    "  train      train a model bundle from labelled JSON Lines\n"
    "  classify   tag the passages of articles with a model bundle\n"
    "  eval       score a model bundle against labelled JSON Lines\n"
    "  vectorize  write labelled JSON Lines as a bundle's feature vectors (libsvm format)\n"
    "talking to a running themed:\n"
    "  health, stats, model, reload, stream, classify --socket PATH\n"
    "NATS JetStream (themed --nats, docs/scaling.md):\n"
    "  publish, collect\n"
    "\n"
    "  themectl <command> --help   options of one command\n"
    "  themectl --version\n";

static const char usage_train[] =
    "usage: themectl train --data FILE.jsonl [--data FILE2.jsonl] --out DIR [options]\n"
    "  --data FILE           labelled passages {\"id\",\"doc\",\"text\",\"themes\"} (repeatable)\n"
    "  --out DIR             bundle directory, replaced atomically when training succeeds\n"
    "  --name NAME           bundle name (default: the last component of DIR)\n"
    "  --version VER         bundle version (default 1.0.0)\n"
    "  --themes a,b,c        fixed theme order; data naming another theme is an error\n"
    "  --tokenizer NAME      tokenizer plugin (default bigram)\n"
    "  --tokenizer-options JSON   options object for the plugin\n"
    "  --plugins DIR         plugin directory (default: $THEMED_PLUGIN_DIR or beside the binary)\n"
    "  --folds K             grouped cross-validation folds by doc (default 5; 1 = none, needs one --c)\n"
    "  --c C[,C...]          C grid (default 0.125,0.25,0.5,1,2,4)\n"
    "  --balanced            weight a theme's passages by n_neg/n_pos (at most 10)\n"
    "  --solver S            dcd (default): dual coordinate descent, hinge loss (liblinear's\n"
    "                        algorithm, no Gram matrix); dcd-l2: the same, squared hinge loss;\n"
    "                        smo: libsvm's SMO. Every solver writes libsvm LINEAR model files\n"
    "  --multiclass          exactly one label per passage, `other` an ordinary class\n"
    "  --seed N              fold shuffle seed (default 1)\n"
    "  --threads N           worker threads (default 0 = the CPUs it may run on)\n"
    "  --context-weight X    weight of the heading-context block (0 = off)\n"
    "  --neighbor-weight X   weight of the previous/next-passage blocks (0 = off, the default)\n"
    "  --doc-weight X        weight of the whole-document block (0 = off, the default)\n"
    "  --buckets N           hashed feature space, a power of two\n"
    "  --ngram N             1 = tokens, 2 = tokens and adjacent pairs\n"
    "  --norm l2-tokens|l2   how a passage vector is normalized (docs/model-format.md);\n"
    "                        l2-tokens (the default) lets linear models be scored without\n"
    "                        building vectors; l2 as bundles before rural-themes 1.3.0\n"
    "  --max-chars N         serving: cut longer passages at sentence ends (0 = never)\n"
    "  --heading-chars N     a heading is at most N characters\n"
    "  --quiet               no progress line and no report table\n";

static const char usage_classify[] =
    "usage: themectl classify --model DIR [options] [FILE...]\n"
    "  Each FILE (or stdin) is one plain-text article; prints one JSON object per article.\n"
    "  A document that fails is named on stderr with the reason, as with --socket, and\n"
    "  the others are still classified; the exit status is then 1.\n"
    "  --model DIR           model bundle\n"
    "  --plugins DIR         plugin directory\n"
    "  --jsonl               input lines are {\"id\",\"text\"} or {\"id\",\"passages\":[...]}\n"
    "  --lines               every input line is one document (a headline, a passage);\n"
    "                        its id is its line number; blank lines are skipped\n"
    "  --blocks              plain-text articles separated by blank lines: each run of\n"
    "                        non-blank lines is one document (one passage or more per\n"
    "                        line, as in a single-article FILE); its id is the line\n"
    "                        number of its first line\n"
    "  --format json|tsv     output: one JSON object per document (default), or one\n"
    "                        tab-separated row per passage: id, passage, themes\n"
    "                        (comma-separated, empty for none), a score per theme\n"
    "  --threshold X         one threshold for every theme instead of the tuned ones\n"
    "  --top-k K             at most K themes per passage\n"
    "  --explain             add the tokens that contributed most to each tag (json)\n"
    "  --text                echo each passage's text (json)\n"
    "  --socket PATH | --connect ADDR   ask a running daemon instead\n";

static const char usage_eval[] =
    "usage: themectl eval --model DIR --data FILE.jsonl [--data ...] [options]\n"
    "  Classifies the labelled passages article by article (so heading context applies)\n"
    "  and compares the tags with the labels.\n"
    "  --model DIR           model bundle\n"
    "  --data FILE           labelled passages (repeatable)\n"
    "  --plugins DIR         plugin directory\n"
    "  --threshold X         one threshold for every theme instead of the tuned ones\n"
    "  --top-k K             at most K themes per passage\n"
    "  --json                one JSON object instead of the table\n";

/* ---- small helpers ---- */

int themectl_usage_err(const char *cmd, const char *fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  themectl_errorf("%s: %s (see 'themectl %s --help')", cmd, msg, cmd);
  return THEMECTL_EXIT_USAGE;
}

int themectl_bad_option(const char *cmd, int ch, char **argv) {
  const char *arg = argv[optind - 1];
  if (ch == ':') return themectl_usage_err(cmd, "option %s needs a value", arg);
  if (optopt) return themectl_usage_err(cmd, "unknown option -%c", optopt);
  return themectl_usage_err(cmd, "unknown option %s", arg);
}

static int parse_long(const char *s, long lo, long hi, long *out) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || end == s || *end || v < lo || v > hi) return -1;
  *out = v;
  return 0;
}

static int parse_double(const char *s, double *out) {
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (errno || end == s || *end || !isfinite(v)) return -1;
  *out = v;
  return 0;
}

/* A file's name for its document id: its last component ("a/b.txt" ->
 * "b.txt"), as the trainer names a bundle after --out. A path with no name
 * in it ("/") stays as it is. */
static const char *base_name(const char *p) {
  const char *s;
  size_t n = td_path_last(p, &s);
  return n && !s[n] ? s : p;
}

/* As td_read_file, for an open stream (stdin): name is what messages call it. */
static int read_stream(FILE *f, const char *name, char **out, size_t *len, td_err_t *err) {
  td_buf_t b;
  td_buf_init(&b);
  char chunk[65536];
  size_t n;
  while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
    if (td_buf_append(&b, chunk, n)) {
      td_buf_free(&b);
      return td_err_set(err, TD_ENOMEM, "%s: out of memory", name);
    }
  if (ferror(f)) {
    td_buf_free(&b);
    return td_err_set(err, TD_EIO, "%s: %s", name, strerror(errno));
  }
  if (td_buf_reserve(&b, 0)) {
    td_buf_free(&b);
    return td_err_set(err, TD_ENOMEM, "%s: out of memory", name);
  }
  b.data[b.len] = '\0';
  *out = b.data;
  *len = b.len;
  return 0;
}

/* Copies the model's theme names into c as its fixed theme list. */
static int corpus_fix_themes(td_corpus_t *c, char *const *names, size_t n) {
  if (!(c->themes = calloc(n ? n : 1, sizeof *c->themes))) return TD_ENOMEM;
  for (c->ntheme = 0; c->ntheme < n; c->ntheme++)
    if (!(c->themes[c->ntheme] = strdup(names[c->ntheme]))) return TD_ENOMEM;
  return 0;
}

/* ---- train ---- */

typedef struct progress {
  uint64_t t0, last;
  const char *stage;
} progress_t;

static void on_progress(void *ud, const char *stage, size_t done, size_t total) {
  progress_t *p = ud;
  uint64_t now = td_now_ns();
  /* a terminal needs no more than ~10 updates a second */
  if (p->stage && !strcmp(p->stage, stage) && done != total && now - p->last < 100000000ull)
    return;
  p->stage = stage;
  p->last = now;
  const char *unit = !strcmp(stage, "cv") ? "jobs" : !strcmp(stage, "fit") ? "themes"
                   : !strcmp(stage, "gram") ? "rows" : "docs";
  fprintf(stderr, "\r[%s] %zu/%zu %s  %.1fs\033[K", stage, done, total, unit,
          (double)(now - p->t0) / 1e9);
  fflush(stderr);
}

static double jnum(const json_t *o, const char *key) {
  const json_t *v = json_object_get(o, key);
  return json_is_number(v) ? json_number_value(v) : NAN;
}

static void print_train_report(const json_t *rep) {
  int mc = json_is_true(json_object_get(rep, "multiclass"));
  const json_t *themes = json_object_get(rep, "themes"), *met = json_object_get(rep, "metrics");
  int cv = json_object_get(met, "micro_f1") != NULL;
  printf("%-14s %7s %9s %9s %9s %9s %8s\n", "theme", "C", mc ? "-" : "threshold",
         "cv-P", "cv-R", "cv-F1", "support");
  size_t i;
  json_t *t;
  json_array_foreach(themes, i, t) {
    printf("%-14s %7g", json_string_value(json_object_get(t, "theme")), jnum(t, "C"));
    if (mc) printf(" %9s", "-");
    else printf(" %9.3f", jnum(t, "threshold"));
    if (cv)
      printf(" %9.3f %9.3f %9.3f %8.0f\n", jnum(t, "precision"), jnum(t, "recall"), jnum(t, "f1"),
             jnum(t, "support"));
    else
      printf(" %9s %9s %9s %8s\n", "-", "-", "-", "-");
  }
  if (cv) {
    if (mc) printf("cv accuracy %.4f  macro-F1 %.4f", jnum(met, "accuracy"), jnum(met, "macro_f1"));
    else
      printf("cv micro-F1 %.4f  macro-F1 %.4f  exact match %.4f", jnum(met, "micro_f1"),
             jnum(met, "macro_f1"), jnum(met, "exact_match"));
    printf("  (%d-fold by doc; %.0f passage%s, %.0f doc%s)\n",
           (int)json_integer_value(json_object_get(rep, "folds")), jnum(rep, "items"),
           td_plural((unsigned long long)jnum(rep, "items")), jnum(rep, "docs"),
           td_plural((unsigned long long)jnum(rep, "docs")));
  } else {
    printf("no cross-validation (folds 1); %.0f passage%s, %.0f doc%s\n", jnum(rep, "items"),
           td_plural((unsigned long long)jnum(rep, "items")), jnum(rep, "docs"),
           td_plural((unsigned long long)jnum(rep, "docs")));
  }
  const json_t *tm = json_object_get(rep, "timings");
  printf("wrote %s (%s, solver %s) in %.1fs: features %.1fs, cv %.1fs, fit %.1fs, write %.1fs\n",
         json_string_value(json_object_get(rep, "out")), json_string_value(json_object_get(rep, "name")),
         json_string_value(json_object_get(rep, "solver")),
         jnum(tm, "total_s"), jnum(tm, "features_s"), jnum(tm, "cv_s"), jnum(tm, "fit_s"),
         jnum(tm, "write_s"));
}

/* Doubts about the training data: reported, and training goes on. */
static void warn_data(void *ud, const char *msg) {
  (void)ud;
  themectl_errorf("warning: %s", msg);
}

static void warn_few_positives(const td_corpus_t *c, const td_train_opts_t *o) {
  for (size_t k = 0; k < c->ntheme; k++) {
    size_t n = td_corpus_positives(c, k);
    if (n == 0 || n >= TD_CORPUS_MIN_POSITIVES) continue; /* none: train refuses it */
    themectl_errorf("warning: theme \"%s\" has only %zu positive passage%s (fewer than %d): %s",
                    c->themes[k], n, td_plural(n), TD_CORPUS_MIN_POSITIVES,
                    o->folds > 1 ? "its cross-validated F1 and tuned threshold are unreliable"
                                 : "its classifier rests on too few examples to be reliable");
  }
}

enum {
  O_DATA = 256, O_OUT, O_TOKENIZER, O_TOKOPTS, O_FOLDS, O_MULTICLASS, O_C, O_SEED, O_THREADS,
  O_BALANCED, O_NAME, O_VERSION, O_CTXW, O_BUCKETS, O_NGRAM, O_MAXCHARS, O_HEADCHARS, O_THEMES,
  O_PLUGINS, O_QUIET, O_MODEL, O_JSONL, O_LINES, O_BLOCKS, O_FORMAT, O_THRESHOLD, O_TOPK, O_EXPLAIN, O_TEXT, O_JSON, O_NBW, O_DOCW,
  O_SOLVER, O_NORM
};

static int cmd_train(int argc, char **argv) {
  static const struct option lo[] = {
      {"data", required_argument, 0, O_DATA}, {"out", required_argument, 0, O_OUT},
      {"tokenizer", required_argument, 0, O_TOKENIZER},
      {"tokenizer-options", required_argument, 0, O_TOKOPTS},
      {"folds", required_argument, 0, O_FOLDS}, {"multiclass", no_argument, 0, O_MULTICLASS},
      {"c", required_argument, 0, O_C}, {"seed", required_argument, 0, O_SEED},
      {"threads", required_argument, 0, O_THREADS}, {"balanced", no_argument, 0, O_BALANCED},
      {"name", required_argument, 0, O_NAME}, {"version", required_argument, 0, O_VERSION},
      {"context-weight", required_argument, 0, O_CTXW}, {"buckets", required_argument, 0, O_BUCKETS},
      {"neighbor-weight", required_argument, 0, O_NBW}, {"doc-weight", required_argument, 0, O_DOCW},
      {"ngram", required_argument, 0, O_NGRAM}, {"max-chars", required_argument, 0, O_MAXCHARS},
      {"heading-chars", required_argument, 0, O_HEADCHARS}, {"themes", required_argument, 0, O_THEMES},
      {"plugins", required_argument, 0, O_PLUGINS}, {"quiet", no_argument, 0, O_QUIET},
      {"solver", required_argument, 0, O_SOLVER}, {"norm", required_argument, 0, O_NORM},
      {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
  const char *cmd = "train";
  td_train_opts_t o;
  td_train_opts_default(&o);
  char **data = calloc((size_t)argc + 1, sizeof *data);
  size_t ndata = 0, nc = 0, nthemes = 0;
  double grid[64];
  const char *topts = NULL, *themes_arg = NULL;
  char *themes_buf = NULL;
  char **themes = NULL;
  int quiet = 0, rc = THEMECTL_EXIT_USAGE, ch;
  long v;
  json_t *tokopts = NULL, *report = NULL;
  td_corpus_t c;
  td_corpus_init(&c);
  td_err_t err;
  td_err_clear(&err);
  if (!data) {
    themectl_errorf("out of memory");
    return THEMECTL_EXIT_FAIL;
  }
  while ((ch = getopt_long(argc, argv, ":h", lo, NULL)) != -1) {
    switch (ch) {
    case 'h': fputs(usage_train, stdout); rc = 0; goto out;
    case O_DATA: data[ndata++] = optarg; break;
    case O_OUT: o.out_dir = optarg; break;
    case O_TOKENIZER: o.tokenizer = optarg; break;
    case O_TOKOPTS: topts = optarg; break;
    case O_FOLDS:
      if (parse_long(optarg, 1, 1000, &v)) { themectl_usage_err(cmd, "--folds: expected an integer >= 1, got \"%s\"", optarg); goto out; }
      o.folds = (int)v;
      break;
    case O_MULTICLASS: o.multiclass = 1; break;
    case O_C: {
      char *dup = strdup(optarg), *save = NULL;
      nc = 0;
      for (char *tok = strtok_r(dup, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (nc == sizeof grid / sizeof *grid || parse_double(tok, &grid[nc]) || grid[nc] <= 0) {
          free(dup);
          themectl_usage_err(cmd, "--c: expected positive numbers separated by commas, got \"%s\"", optarg);
          goto out;
        }
        nc++;
      }
      free(dup);
      if (!nc) { themectl_usage_err(cmd, "--c: empty list"); goto out; }
      break;
    }
    case O_SEED: {
      char *end;
      errno = 0;
      unsigned long long s = strtoull(optarg, &end, 10);
      if (errno || end == optarg || *end || optarg[0] == '-') { themectl_usage_err(cmd, "--seed: expected an unsigned integer, got \"%s\"", optarg); goto out; }
      o.seed = s;
      break;
    }
    case O_THREADS:
      if (parse_long(optarg, 0, 1024, &v)) { themectl_usage_err(cmd, "--threads: expected an integer >= 0, got \"%s\"", optarg); goto out; }
      o.threads = (int)v;
      break;
    case O_BALANCED: o.balanced = 1; break;
    case O_SOLVER:
      if (td_train_solver_parse(optarg, &o.solver)) { themectl_usage_err(cmd, "--solver: expected dcd, dcd-l2 or smo, got \"%s\"", optarg); goto out; }
      break;
    case O_NAME: o.name = optarg; break;
    case O_VERSION: o.version = optarg; break;
    case O_CTXW:
      if (parse_double(optarg, &o.feat.context_weight) || o.feat.context_weight < 0) { themectl_usage_err(cmd, "--context-weight: expected a number >= 0, got \"%s\"", optarg); goto out; }
      break;
    case O_NBW:
      if (parse_double(optarg, &o.feat.neighbor_weight) || o.feat.neighbor_weight < 0 || o.feat.neighbor_weight > 100) { themectl_usage_err(cmd, "--neighbor-weight: expected a number between 0 and 100, got \"%s\"", optarg); goto out; }
      break;
    case O_DOCW:
      if (parse_double(optarg, &o.feat.doc_weight) || o.feat.doc_weight < 0 || o.feat.doc_weight > 100) { themectl_usage_err(cmd, "--doc-weight: expected a number between 0 and 100, got \"%s\"", optarg); goto out; }
      break;
    case O_BUCKETS:
      /* The loader's range: anything else would train, then fail to load. */
      if (parse_long(optarg, 0, LONG_MAX, &v) || !td_feat_buckets_ok(v)) { themectl_usage_err(cmd, "--buckets: expected %s, got \"%s\"", TD_FEAT_BUCKETS_RULE, optarg); goto out; }
      o.feat.buckets = (uint32_t)v;
      break;
    case O_NORM:
      if (strcmp(optarg, "l2") && strcmp(optarg, "l2-tokens")) { themectl_usage_err(cmd, "--norm: expected l2-tokens or l2, got \"%s\"", optarg); goto out; }
      o.feat.norm = strcmp(optarg, "l2") == 0 ? TD_NORM_L2 : TD_NORM_L2_TOKENS;
      break;
    case O_NGRAM:
      if (parse_long(optarg, 1, 2, &v)) { themectl_usage_err(cmd, "--ngram: expected 1 or 2, got \"%s\"", optarg); goto out; }
      o.feat.ngram_max = (int)v;
      break;
    case O_MAXCHARS:
      if (parse_long(optarg, 0, 1L << 30, &v)) { themectl_usage_err(cmd, "--max-chars: expected an integer >= 0, got \"%s\"", optarg); goto out; }
      o.split.max_chars = (size_t)v;
      break;
    case O_HEADCHARS:
      if (parse_long(optarg, 1, 10000, &v)) { themectl_usage_err(cmd, "--heading-chars: expected an integer >= 1, got \"%s\"", optarg); goto out; }
      o.split.heading_chars = (size_t)v;
      break;
    case O_THEMES: themes_arg = optarg; break;
    case O_PLUGINS: o.plugin_dir = optarg; break;
    case O_QUIET: quiet = 1; break;
    default: themectl_bad_option(cmd, ch, argv); goto out;
    }
  }
  if (optind < argc) { themectl_usage_err(cmd, "unexpected argument \"%s\"", argv[optind]); goto out; }
  if (!ndata) { themectl_usage_err(cmd, "--data is required"); goto out; }
  if (!o.out_dir) { themectl_usage_err(cmd, "--out is required"); goto out; }
  if (nc) {
    o.c_grid = grid;
    o.nc = nc;
  }
  if (topts) {
    json_error_t je;
    tokopts = json_loads(topts, 0, &je);
    if (!json_is_object(tokopts)) {
      themectl_usage_err(cmd, "--tokenizer-options: expected a JSON object%s%s", tokopts ? "" : ": ", tokopts ? "" : je.text);
      goto out;
    }
    o.tokenizer_options = tokopts;
  }
  rc = THEMECTL_EXIT_FAIL;
  if (themes_arg) {
    /* The list becomes the corpus's fixed theme list (unknown labels are
     * errors) and the bundle's theme order. */
    themes_buf = strdup(themes_arg);
    themes = calloc(strlen(themes_arg) + 1, sizeof *themes);
    if (!themes_buf || !themes) { themectl_errorf("out of memory"); goto out; }
    char *save = NULL;
    for (char *t = strtok_r(themes_buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
      if (!o.multiclass && strcmp(t, "other") == 0) {
        rc = themectl_usage_err(cmd, "--themes: \"other\" is not a theme (it means none) unless --multiclass");
        goto out;
      }
      /* Checked here, or the first label of the data would be reported
       * as unknown instead. */
      if (!td_theme_name_ok(t)) {
        rc = themectl_usage_err(cmd, "--themes: \"%s\" is not a valid theme name (%s)", t, TD_THEME_NAME_RULE);
        goto out;
      }
      for (size_t j = 0; j < nthemes; j++)
        if (!strcmp(themes[j], t)) {
          rc = themectl_usage_err(cmd, "--themes: \"%s\" is listed twice", t);
          goto out;
        }
      themes[nthemes++] = t;
    }
    if (!nthemes) { rc = themectl_usage_err(cmd, "--themes: empty list"); goto out; }
    if (corpus_fix_themes(&c, themes, nthemes)) { themectl_errorf("out of memory"); goto out; }
    o.theme_order = (const char *const *)themes;
    o.ntheme_order = nthemes;
  }
  c.warn = warn_data;
  for (size_t i = 0; i < ndata; i++)
    if (td_corpus_load(&c, data[i], o.multiclass, themes_arg != NULL, &err)) {
      themectl_errorf("%s", err.msg);
      goto out;
    }
  if (td_corpus_finish(&c, &err)) {
    themectl_errorf("%s", err.msg);
    goto out;
  }
  warn_few_positives(&c, &o);
  progress_t prog = {td_now_ns(), 0, NULL};
  int show = !quiet && isatty(STDERR_FILENO);
  if (show) {
    o.progress = on_progress;
    o.progress_ud = &prog;
  }
  int trc = td_train(&o, &c, (const char *const *)data, ndata, &report, &err);
  if (show) fputs("\r\033[K", stderr);
  if (trc) {
    themectl_errorf("train: %s", err.msg);
    goto out;
  }
  if (!quiet) print_train_report(report);
  rc = 0;
out:
  json_decref(report);
  json_decref(tokopts);
  td_corpus_free(&c);
  free(themes);
  free(themes_buf);
  free(data);
  return rc;
}

/* ---- classify ---- */

typedef struct runner {
  td_model_t *m;
  td_classify_opts_t co;
  td_scratch_t *s;
  td_result_t r;
  td_buf_t out; /* one response line, reused */
  int tsv;      /* --format tsv */
} runner_t;

/* TSV fields escape as PostgreSQL's text COPY format does, so a tab or a
 * newline inside an id cannot shift the columns. */
static int tsv_field(td_buf_t *b, const char *s) {
  size_t run = 0, i;
  for (i = 0; s[i]; i++) {
    const char *esc = s[i] == '\t' ? "\\t" : s[i] == '\n' ? "\\n" : s[i] == '\r' ? "\\r"
                    : s[i] == '\\' ? "\\\\" : NULL;
    if (!esc) continue;
    if (td_buf_append(b, s + run, i - run) || td_buf_append(b, esc, 2)) return -1;
    run = i + 1;
  }
  return td_buf_append(b, s + run, i - run);
}

/* A score in [0,1] with four decimals, as the JSON responses round it; the
 * digits come from one integer, not a printf per number. */
static int tsv_score(td_buf_t *b, double x) {
  char tmp[32];
  int n;
  if (x >= 0 && x <= 1) {
    unsigned k = (unsigned)lround(x * 1e4);
    tmp[0] = (char)('0' + k / 10000);
    tmp[1] = '.';
    for (int d = 5; d >= 2; d--, k /= 10) tmp[d] = (char)('0' + k % 10);
    n = 6;
  } else {
    n = snprintf(tmp, sizeof tmp, "%.4f", x);
  }
  return td_buf_append(b, tmp, (size_t)n);
}

static int tsv_header(const td_model_t *m, td_buf_t *b) {
  static const char head[] = "id\tpassage\tthemes";
  if (td_buf_append(b, head, sizeof head - 1)) return -1;
  for (size_t k = 0; k < m->ntheme; k++)
    if (td_buf_append(b, "\t", 1) || tsv_field(b, m->themes[k].name)) return -1;
  return td_buf_append(b, "\n", 1);
}

/* One row per passage: id, index, tagged themes, every theme's score. */
static int tsv_rows(const runner_t *rn, const td_doc_t *doc, td_buf_t *b) {
  const td_model_t *m = rn->m;
  const td_result_t *r = &rn->r;
  for (size_t i = 0; i < r->passages.count; i++) {
    char idx[24];
    int n = snprintf(idx, sizeof idx, "\t%zu\t", i);
    if (tsv_field(b, doc->id ? doc->id : "") || td_buf_append(b, idx, (size_t)n)) return -1;
    int first = 1;
    for (size_t k = 0; k < m->ntheme; k++) {
      if (!td_result_tagged(m, &rn->co, r, i, k)) continue;
      if ((!first && td_buf_append(b, ",", 1)) || tsv_field(b, m->themes[k].name)) return -1;
      first = 0;
    }
    for (size_t k = 0; k < m->ntheme; k++)
      if (td_buf_append(b, "\t", 1) || tsv_score(b, r->scores[i * m->ntheme + k])) return -1;
    if (td_buf_append(b, "\n", 1)) return -1;
  }
  return 0;
}

/*
 * Classifies one document and writes its output. id_mode/id as for
 * td_result_write (a --jsonl line's own id; TD_RESULT_ID_DOC otherwise).
 * 0, or the engine's code with the reason in err (nothing written).
 */
static int classify_print(runner_t *rn, const td_doc_t *doc, td_result_id_t id_mode, const json_t *id,
                          td_err_t *err) {
  int rc = td_classify(rn->m, doc, &rn->co, rn->s, &rn->r, err);
  if (rc) return rc;
  /* The bytes of td_result_json, written directly (the hot path of a
   * --jsonl run; bench/NOTES.md); stdout is flushed once per input file. */
  td_buf_reset(&rn->out);
  if (rn->tsv ? tsv_rows(rn, doc, &rn->out)
              : td_result_write(rn->m, doc, &rn->co, &rn->r, rn->s, id_mode, id, &rn->out) ||
                    td_buf_append(&rn->out, "\n", 1))
    return td_err_set(err, TD_ENOMEM, "out of memory");
  fwrite(rn->out.data, 1, rn->out.len, stdout);
  return 0;
}

/* The error code and message the daemon answers an engine failure with
 * (daemon/request.c, map_engine), so an offline failure reads the same. */
static const char *engine_code(int rc, const td_err_t *err, char *msg, size_t cap) {
  td_ecode_t c = td_ecode_of_engine(rc);
  snprintf(msg, cap, c == TD_EC_INTERNAL ? "classification failed: %s" : "%s", err->msg);
  return td_ecode_name(c);
}

/* A whole-file document (id: its name) that failed, reported as
 * `classify --socket` reports it. */
static void doc_failed(const char *id, int rc, const td_err_t *err) {
  char msg[sizeof err->msg + 64];
  json_t *jid = json_string(id);
  themectl_doc_error(jid, engine_code(rc, err, msg, sizeof msg), msg);
  json_decref(jid);
}

/* The line of data[0..len) that starts at pos: its length without the
 * '\n'; *next is where the line after it starts. */
static size_t line_at(const char *data, size_t len, size_t pos, size_t *next) {
  const char *l = data + pos, *nl = memchr(l, '\n', len - pos);
  size_t n = nl ? (size_t)(nl - l) : len - pos;
  *next = pos + n + (nl != NULL);
  return n;
}

/* Only spaces, tabs and CRs. */
static int is_blank(const char *l, size_t n) {
  size_t k = 0;
  while (k < n && (l[k] == ' ' || l[k] == '\t' || l[k] == '\r')) k++;
  return k == n;
}

/* The next line of data[0..len) that is not blank from *pos on, without
 * its '\n'; *lineno counts every line passed. 0 at the end. */
static int next_line(const char *data, size_t len, size_t *pos, size_t *lineno, const char **line,
                     size_t *ll) {
  while (*pos < len) {
    const char *l = data + *pos;
    size_t n = line_at(data, len, *pos, pos);
    ++*lineno;
    if (!is_blank(l, n)) {
      *line = l;
      *ll = n;
      return 1;
    }
  }
  return 0;
}

/*
 * One JSON Lines input: {"id","text"} or {"id","passages":[...]} per line,
 * each answered as `classify --socket` answers it: the result on stdout, or
 * an error line on stderr and on to the next line. Lines are read by
 * themectl_doc.c as the client reads them; the checks the daemon makes on
 * what the client sends are made here with the daemon's words
 * (daemon/request.c, classify_doc). Returns THEMECTL_EXIT_FAIL if any line
 * failed.
 */
static int classify_jsonl(runner_t *rn, const char *name, const char *data, size_t len) {
  size_t lineno = 0, pos = 0, ll;
  const char *line;
  int failed = 0;
  td_span_t *spans = NULL;
  size_t nspans = 0;
  while (next_line(data, len, &pos, &lineno, &line, &ll)) {
    if (line[ll - 1] == '\r') ll--;  /* as the client's line reader */
    themectl_jdoc_t d;
    const char *code = NULL;
    char msg[sizeof d.msg + 64];
    td_err_t err;
    td_err_clear(&err);
    td_doc_t doc = {0};
    char *idtext = NULL;
    if (themectl_jdoc_parse(&d, name, lineno, line, ll)) {
      code = d.code;
      snprintf(msg, sizeof msg, "%s", d.msg);
    } else if (d.id && !td_wire_id_ok(d.id)) {
      code = "invalid_request";
      snprintf(msg, sizeof msg, "id: expected a JSON scalar");
    } else if (d.text) {
      doc.text = d.text;
      doc.len = d.len;
    } else {
      size_t n = json_array_size(d.passages);
      if (n > nspans) {
        td_span_t *ns = realloc(spans, n * sizeof *spans);
        if (!ns) {
          themectl_jdoc_free(&d);
          free(spans);
          themectl_errorf("out of memory");
          return THEMECTL_EXIT_FAIL;
        }
        spans = ns;
        nspans = n;
      }
      for (size_t i = 0; !code && i < n; i++) {
        const json_t *p = json_array_get(d.passages, i);
        if (!json_is_string(p)) {
          code = "invalid_request";
          snprintf(msg, sizeof msg, "passages[%zu]: expected a string", i);
        } else {
          spans[i].s = json_string_value(p);
          spans[i].len = json_string_length(p);
        }
      }
      doc.passages = spans;
      doc.npassages = n;
    }
    if (!code) {
      /* The daemon echoes any scalar id as it came, and leaves "id" out when
       * the line has none; --format tsv shows a non-string id as JSON. */
      td_result_id_t mode = !d.id ? TD_RESULT_ID_OMIT : json_is_string(d.id) ? TD_RESULT_ID_DOC
                                                                             : TD_RESULT_ID_JSON;
      if (json_is_string(d.id)) doc.id = json_string_value(d.id);
      /* as text only for a TSV row: JSON output writes d.id itself */
      else if (d.id) doc.id = rn->tsv ? (idtext = json_dumps(d.id, JSON_ENCODE_ANY | JSON_COMPACT)) : "";
      int rc = classify_print(rn, &doc, mode, d.id, &err);
      if (rc) code = engine_code(rc, &err, msg, sizeof msg);
    }
    if (code) {
      /* The daemon leaves out an id it rejects; the client then names the
       * document by the id it sent, which is this one. */
      themectl_doc_error(d.id, code, msg);
      failed = 1;
    }
    free(idtext);
    themectl_jdoc_free(&d);
  }
  free(spans);
  return failed ? THEMECTL_EXIT_FAIL : 0;
}

/* --lines/--blocks: a document that failed is named by its input line, and
 * the documents after it are still classified. 1 if rc is a failure. */
static int line_failed(int rc, const char *name, size_t lineno, const td_err_t *err) {
  if (!rc) return 0;
  themectl_errorf("%s line %zu: %s", name, lineno, err->msg);
  return 1;
}

/* --lines: every non-blank line is a document whose id is its line number. */
static int classify_lines(runner_t *rn, const char *name, const char *data, size_t len) {
  size_t lineno = 0, pos = 0, ll;
  const char *line;
  td_err_t err;
  int failed = 0;
  while (next_line(data, len, &pos, &lineno, &line, &ll)) {
    if (line[ll - 1] == '\r') ll--;
    char id[24];
    snprintf(id, sizeof id, "%zu", lineno);
    td_doc_t doc = {.id = id, .text = line, .len = ll};
    failed |= line_failed(classify_print(rn, &doc, TD_RESULT_ID_DOC, NULL, &err), name, lineno, &err);
  }
  return failed ? THEMECTL_EXIT_FAIL : 0;
}

/* --blocks: every run of non-blank lines is one article, given as its bytes
 * (no copy): the lines are its passages as in a plain-text file. */
static int classify_blocks(runner_t *rn, const char *name, const char *data, size_t len) {
  size_t lineno = 0, pos = 0, ll;
  const char *line;
  int failed = 0;
  td_err_t err;
  while (next_line(data, len, &pos, &lineno, &line, &ll)) {
    size_t first = lineno, next;
    /* extend over the following lines up to a blank one (or the end) */
    while (pos < len && !is_blank(data + pos, line_at(data, len, pos, &next))) {
      pos = next;
      lineno++;
    }
    size_t dl = (size_t)(data + pos - line);
    while (dl && (line[dl - 1] == '\n' || line[dl - 1] == '\r')) dl--;
    char id[24];
    snprintf(id, sizeof id, "%zu", first);
    td_doc_t doc = {.id = id, .text = line, .len = dl};
    failed |= line_failed(classify_print(rn, &doc, TD_RESULT_ID_DOC, NULL, &err), name, first, &err);
  }
  return failed ? THEMECTL_EXIT_FAIL : 0;
}

static int cmd_classify(int argc, char **argv) {
  static const struct option lo[] = {
      {"model", required_argument, 0, O_MODEL}, {"plugins", required_argument, 0, O_PLUGINS},
      {"jsonl", no_argument, 0, O_JSONL}, {"lines", no_argument, 0, O_LINES},
      {"blocks", no_argument, 0, O_BLOCKS}, {"format", required_argument, 0, O_FORMAT}, {"threshold", required_argument, 0, O_THRESHOLD},
      {"top-k", required_argument, 0, O_TOPK}, {"explain", no_argument, 0, O_EXPLAIN},
      {"text", no_argument, 0, O_TEXT}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
  const char *cmd = "classify", *model = NULL, *plugins = NULL;
  int jsonl = 0, lines = 0, blocks = 0, ch, rc = 0;
  long v;
  runner_t rn;
  memset(&rn, 0, sizeof rn);
  td_classify_opts_default(&rn.co);
  while ((ch = getopt_long(argc, argv, ":h", lo, NULL)) != -1) {
    switch (ch) {
    case 'h': fputs(usage_classify, stdout); return 0;
    case O_MODEL: model = optarg; break;
    case O_PLUGINS: plugins = optarg; break;
    case O_JSONL: jsonl = 1; break;
    case O_LINES: lines = 1; break;
    case O_BLOCKS: blocks = 1; break;
    case O_FORMAT:
      if (strcmp(optarg, "json") && strcmp(optarg, "tsv"))
        return themectl_usage_err(cmd, "--format: expected json or tsv, got \"%s\"", optarg);
      rn.tsv = strcmp(optarg, "tsv") == 0;
      break;
    case O_THRESHOLD:
      if (parse_double(optarg, &rn.co.threshold) || rn.co.threshold < 0 || rn.co.threshold > 1)
        return themectl_usage_err(cmd, "--threshold: expected a number in [0,1], got \"%s\"", optarg);
      break;
    case O_TOPK:
      if (parse_long(optarg, 0, TD_MAX_TOP_K, &v))
        return themectl_usage_err(cmd, "--top-k: expected an integer in [0,%d], got \"%s\"", TD_MAX_TOP_K,
                                  optarg);
      rn.co.top_k = (int)v;
      break;
    case O_EXPLAIN: rn.co.explain = 1; break;
    case O_TEXT: rn.co.include_text = 1; break;
    default: return themectl_bad_option(cmd, ch, argv);
    }
  }
  if (jsonl + lines + blocks > 1)
    return themectl_usage_err(cmd, "--jsonl, --lines and --blocks exclude each other");
  if (rn.tsv && (rn.co.explain || rn.co.include_text))
    return themectl_usage_err(cmd, "--%s needs --format json", rn.co.explain ? "explain" : "text");
  if (!model) return themectl_usage_err(cmd, "--model is required (or --socket PATH for a running daemon)");
  td_err_t err;
  td_err_clear(&err);
  if (td_model_load(model, plugins, &rn.m, &err)) {
    themectl_errorf("%s", err.msg);
    return THEMECTL_EXIT_FAIL;
  }
  td_result_init(&rn.r);
  if (!(rn.s = td_scratch_new())) {
    themectl_errorf("out of memory");
    rc = THEMECTL_EXIT_FAIL;
  }
  if (!rc && rn.tsv) {
    if (tsv_header(rn.m, &rn.out)) {
      themectl_errorf("out of memory");
      rc = THEMECTL_EXIT_FAIL;
    } else {
      fwrite(rn.out.data, 1, rn.out.len, stdout);
    }
  }
  int nfiles = argc - optind, failed = 0;
  /* A document that fails is reported and the others still classified, as
   * `classify --socket` does; an input that cannot be read stops the run. */
  for (int f = 0; !rc && f < (nfiles ? nfiles : 1); f++) {
    const char *path = nfiles ? argv[optind + f] : "-";
    int is_stdin = strcmp(path, "-") == 0;
    const char *name = is_stdin ? "stdin" : path;
    char *data = NULL;
    size_t len = 0;
    if (is_stdin ? read_stream(stdin, name, &data, &len, &err) != 0
                 : td_read_file(path, &data, &len, &err) != 0) {
      themectl_errorf("%s", err.msg);
      rc = THEMECTL_EXIT_FAIL;
      break;
    }
    if (jsonl) {
      failed |= classify_jsonl(&rn, name, data, len);
    } else if (lines) {
      failed |= classify_lines(&rn, name, data, len);
    } else if (blocks) {
      failed |= classify_blocks(&rn, name, data, len);
    } else {
      td_doc_t doc = {.id = is_stdin ? "stdin" : base_name(path), .text = data, .len = len};
      int crc = classify_print(&rn, &doc, TD_RESULT_ID_DOC, NULL, &err);
      if (crc) {
        doc_failed(doc.id, crc, &err);
        failed = 1;
      }
    }
    fflush(stdout);
    free(data);
  }
  if (!rc && failed) rc = THEMECTL_EXIT_FAIL;
  td_buf_free(&rn.out);
  td_scratch_free(&rn.s);
  td_result_free(&rn.r);
  td_model_unref(&rn.m);
  return rc;
}

/* ---- eval ---- */

typedef struct counts {
  size_t tp, fp, fn;
} counts_t;

static double f1_of(const counts_t *c) {
  return c->tp ? 2.0 * (double)c->tp / (double)(2 * c->tp + c->fp + c->fn) : 0;
}

static int cmd_eval(int argc, char **argv) {
  static const struct option lo[] = {
      {"model", required_argument, 0, O_MODEL}, {"data", required_argument, 0, O_DATA},
      {"plugins", required_argument, 0, O_PLUGINS}, {"json", no_argument, 0, O_JSON},
      {"threshold", required_argument, 0, O_THRESHOLD}, {"top-k", required_argument, 0, O_TOPK},
      {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
  const char *cmd = "eval", *model = NULL, *plugins = NULL;
  char **data = calloc((size_t)argc + 1, sizeof *data);
  size_t ndata = 0;
  int as_json = 0, ch, rc = THEMECTL_EXIT_USAGE;
  long v;
  runner_t rn;
  memset(&rn, 0, sizeof rn);
  td_classify_opts_default(&rn.co);
  td_result_init(&rn.r);
  td_corpus_t c;
  td_corpus_init(&c);
  counts_t *cnt = NULL;
  td_span_t *spans = NULL;
  json_t *out = NULL;
  td_err_t err;
  td_err_clear(&err);
  if (!data) {
    themectl_errorf("out of memory");
    return THEMECTL_EXIT_FAIL;
  }
  while ((ch = getopt_long(argc, argv, ":h", lo, NULL)) != -1) {
    switch (ch) {
    case 'h': fputs(usage_eval, stdout); rc = 0; goto done;
    case O_MODEL: model = optarg; break;
    case O_DATA: data[ndata++] = optarg; break;
    case O_PLUGINS: plugins = optarg; break;
    case O_JSON: as_json = 1; break;
    case O_THRESHOLD:
      if (parse_double(optarg, &rn.co.threshold) || rn.co.threshold < 0 || rn.co.threshold > 1) {
        themectl_usage_err(cmd, "--threshold: expected a number in [0,1], got \"%s\"", optarg);
        goto done;
      }
      break;
    case O_TOPK:
      if (parse_long(optarg, 0, TD_MAX_TOP_K, &v)) {
        themectl_usage_err(cmd, "--top-k: expected an integer in [0,%d], got \"%s\"", TD_MAX_TOP_K, optarg);
        goto done;
      }
      rn.co.top_k = (int)v;
      break;
    default: themectl_bad_option(cmd, ch, argv); goto done;
    }
  }
  if (optind < argc) { themectl_usage_err(cmd, "unexpected argument \"%s\"", argv[optind]); goto done; }
  if (!model) { themectl_usage_err(cmd, "--model is required"); goto done; }
  if (!ndata) { themectl_usage_err(cmd, "--data is required"); goto done; }
  rc = THEMECTL_EXIT_FAIL;
  if (td_model_load(model, plugins, &rn.m, &err)) {
    themectl_errorf("%s", err.msg);
    goto done;
  }
  td_model_t *m = rn.m;
  size_t K = m->ntheme;
  char **names = calloc(K, sizeof *names);
  for (size_t k = 0; names && k < K; k++) names[k] = m->themes[k].name;
  int fix = names ? corpus_fix_themes(&c, names, K) : TD_ENOMEM;
  free(names);
  if (fix) { themectl_errorf("out of memory"); goto done; }
  /* The model's theme list is fixed: a label it does not know is an error. */
  for (size_t i = 0; i < ndata; i++)
    if (td_corpus_load(&c, data[i], m->multiclass, 1, &err)) {
      themectl_errorf("%s", err.msg);
      goto done;
    }
  if (td_corpus_finish(&c, &err)) { themectl_errorf("%s", err.msg); goto done; }
  size_t maxd = 0;
  for (size_t d = 0; d < c.ndocs; d++)
    if (c.doc_start[d + 1] - c.doc_start[d] > maxd) maxd = c.doc_start[d + 1] - c.doc_start[d];
  cnt = calloc(K, sizeof *cnt);
  spans = calloc(maxd, sizeof *spans);
  if (!cnt || !spans || !(rn.s = td_scratch_new())) { themectl_errorf("out of memory"); goto done; }
  long other = m->multiclass ? td_model_theme_index(m, "other") : -1;
  size_t exact = 0;
  for (size_t d = 0; d < c.ndocs; d++) {
    size_t b = c.doc_start[d], nd = c.doc_start[d + 1] - b;
    for (size_t j = 0; j < nd; j++) {
      spans[j].s = c.items[b + j].text;
      spans[j].len = c.items[b + j].len;
    }
    td_doc_t doc = {.id = c.items[b].doc, .passages = spans, .npassages = nd};
    if (td_classify(m, &doc, &rn.co, rn.s, &rn.r, &err)) {
      themectl_errorf("doc \"%s\": %s", doc.id, err.msg);
      goto done;
    }
    for (size_t j = 0; j < nd; j++) {
      uint64_t gold = c.items[b + j].labels, pred = 0;
      for (size_t k = 0; k < K; k++)
        if (td_result_tagged(m, &rn.co, &rn.r, j, k)) pred |= 1ull << k;
      /* multiclass: a passage tagged with nothing was given the `other` class */
      if (m->multiclass && !pred && other >= 0) pred = 1ull << other;
      for (size_t k = 0; k < K; k++) {
        int p = (pred >> k) & 1, g = (gold >> k) & 1;
        cnt[k].tp += p && g;
        cnt[k].fp += p && !g;
        cnt[k].fn += !p && g;
      }
      exact += pred == gold;
    }
  }
  counts_t micro = {0};
  double macro = 0;
  json_t *per = json_object();
  for (size_t k = 0; k < K; k++) {
    micro.tp += cnt[k].tp;
    micro.fp += cnt[k].fp;
    micro.fn += cnt[k].fn;
    double f1 = f1_of(&cnt[k]);
    macro += f1 / (double)K;
    double p = cnt[k].tp + cnt[k].fp ? (double)cnt[k].tp / (double)(cnt[k].tp + cnt[k].fp) : 0;
    double r = cnt[k].tp + cnt[k].fn ? (double)cnt[k].tp / (double)(cnt[k].tp + cnt[k].fn) : 0;
    json_object_set_new(per, m->themes[k].name,
                        json_pack("{s:f,s:f,s:f,s:I}", "precision", p, "recall", r, "f1", f1,
                                  "support", (json_int_t)(cnt[k].tp + cnt[k].fn)));
  }
  double em = (double)exact / (double)c.n;
  json_t *files = json_array();
  for (size_t i = 0; i < ndata; i++) json_array_append_new(files, json_string(data[i]));
  out = json_pack("{s:s,s:o,s:I,s:I,s:f,s:f,s:o,s:f,s:o}", "model", m->label, "data", files,
                  "items", (json_int_t)c.n, "docs", (json_int_t)c.ndocs, "micro_f1", f1_of(&micro),
                  "macro_f1", macro, "accuracy", m->multiclass ? json_real(em) : json_null(),
                  "exact_match", em, "per_theme", per);
  if (!out) { themectl_errorf("out of memory"); goto done; }
  if (as_json) {
    char *s = json_dumps(out, TD_JSON_DUMP_FLAGS);
    if (!s) { themectl_errorf("out of memory"); goto done; }
    puts(s);
    free(s);
  } else {
    printf("%s on", m->label);
    for (size_t i = 0; i < ndata; i++) printf(" %s", data[i]);
    printf(": %zu passage%s, %zu doc%s\n", c.n, td_plural(c.n), c.ndocs, td_plural(c.ndocs));
    printf("%-14s %9s %9s %9s %8s\n", "theme", "precision", "recall", "F1", "support");
    const char *key;
    json_t *t;
    json_object_foreach(per, key, t)
      printf("%-14s %9.3f %9.3f %9.3f %8.0f\n", key, jnum(t, "precision"), jnum(t, "recall"),
             jnum(t, "f1"), jnum(t, "support"));
    if (m->multiclass) printf("accuracy %.4f  macro-F1 %.4f\n", em, macro);
    else printf("micro-F1 %.4f  macro-F1 %.4f  exact match %.4f\n", f1_of(&micro), macro, em);
  }
  rc = 0;
done:
  json_decref(out);
  free(cnt);
  free(spans);
  td_corpus_free(&c);
  td_scratch_free(&rn.s);
  td_result_free(&rn.r);
  td_model_unref(&rn.m);
  free(data);
  return rc;
}

/* ---- main ---- */

static int has_flag(int argc, char **argv, const char *flag) {
  size_t n = strlen(flag);
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--") == 0) break;
    if (strncmp(argv[i], flag, n) == 0 && (argv[i][n] == '\0' || argv[i][n] == '=')) return 1;
  }
  return 0;
}

int main(int argc, char **argv) {
  td_jalloc_install(); /* before any jansson value exists */
  if (argc < 2) {
    fputs(usage_main, stderr);
    return THEMECTL_EXIT_USAGE;
  }
  const char *cmd = argv[1];
  if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
    fputs(usage_main, stdout);
    return 0;
  }
  if (!strcmp(cmd, "--version") || !strcmp(cmd, "-V")) {
    printf("themectl %s\n", TD_VERSION);
    return 0;
  }
  /* Sub-commands see argv[0] = their own name, like a main(). */
  int sargc = argc - 1;
  char **sargv = argv + 1;
  opterr = 0;
  optind = 1;
  static const char *const client_cmds[] = {"health", "reload", "stats", "stream", "model"};
  for (size_t i = 0; i < sizeof client_cmds / sizeof *client_cmds; i++)
    if (!strcmp(cmd, client_cmds[i])) return themectl_client_main(sargc, sargv);
  if (!strcmp(cmd, "classify")) {
    if (has_flag(sargc, sargv, "--socket") || has_flag(sargc, sargv, "--connect"))
      return themectl_client_main(sargc, sargv);
    return cmd_classify(sargc, sargv);
  }
  if (!strcmp(cmd, "publish") || !strcmp(cmd, "collect")) return themectl_nats_main(sargc, sargv);
  if (!strcmp(cmd, "train")) return cmd_train(sargc, sargv);
  if (!strcmp(cmd, "eval")) return cmd_eval(sargc, sargv);
  int themectl_vectorize_main(int, char **); /* tools/themectl_vectorize.c */
  if (!strcmp(cmd, "vectorize")) return themectl_vectorize_main(sargc, sargv);
  if (cmd[0] == '-') themectl_errorf("unknown option %s (see 'themectl --help')", cmd);
  else themectl_errorf("unknown command \"%s\" (see 'themectl --help')", cmd);
  return THEMECTL_EXIT_USAGE;
}
