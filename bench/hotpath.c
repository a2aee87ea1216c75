/*
 * hotpath: the engine's per-document work in a loop, for profilers.
 *
 *   build/bench/hotpath --model DIR [--plugins DIR] [--repeat N] FILE.jsonl
 *
 * Loads the model, reads FILE (one {"id","text"} or {"id","passages"} object
 * per line) into memory, then REPEAT times: parses each line with jansson,
 * classifies it, serializes the response into one reused buffer -- what a daemon worker does per request, without the
 * socket (the response through td_result_write, as the daemon does it).
 * Everything the measurement should count happens inside
 * hot_loop(), so
 *
 *   valgrind --tool=callgrind --toggle-collect=hot_loop build/bench/hotpath ...
 *
 * counts exactly the steady-state instructions; divide by the passages
 * printed on stderr for instructions per passage. `--load-only` stops after
 * the model load (profile td_model_load with --toggle-collect=td_model_load).
 */
#include <getopt.h>
#include <sys/resource.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "classify.h"
#include "common.h"
#include "model.h"

typedef struct line {
  const char *s;
  size_t len;
} line_t;

/* noinline: the name is what callgrind's --toggle-collect matches. */
__attribute__((noinline)) static int hot_loop(td_model_t *m, const line_t *lines, size_t n,
                                              long repeat, td_scratch_t *s, td_result_t *r,
                                              td_buf_t *out, size_t *passages, size_t *bytes) {
  td_classify_opts_t o;
  td_classify_opts_default(&o);
  td_err_t err;
  td_err_clear(&err);
  td_span_t *spans = NULL;
  size_t cap = 0;
  for (long rep = 0; rep < repeat; rep++) {
    for (size_t i = 0; i < n; i++) {
      json_error_t je;
      json_t *j = json_loadb(lines[i].s, lines[i].len, 0, &je);
      if (!json_is_object(j)) {
        fprintf(stderr, "hotpath: line %zu: %s\n", i + 1, j ? "not an object" : je.text);
        json_decref(j);
        free(spans);
        return 1;
      }
      const json_t *id = json_object_get(j, "id"), *text = json_object_get(j, "text"),
                   *ps = json_object_get(j, "passages");
      td_doc_t d = {0};
      d.id = json_string_value(id);
      if (json_is_string(text)) {
        d.text = json_string_value(text);
        d.len = json_string_length(text);
      } else if (json_is_array(ps)) {
        size_t np = json_array_size(ps);
        if (np > cap) {
          free(spans);
          cap = np;
          spans = malloc(cap * sizeof *spans);
          if (!spans) return 1;
        }
        for (size_t k = 0; k < np; k++) {
          spans[k].s = json_string_value(json_array_get(ps, k));
          spans[k].len = json_string_length(json_array_get(ps, k));
        }
        d.passages = spans;
        d.npassages = np;
      }
      if (td_classify(m, &d, &o, s, r, &err)) {
        fprintf(stderr, "hotpath: line %zu: %s\n", i + 1, err.msg);
        json_decref(j);
        free(spans);
        return 1;
      }
      td_buf_reset(out);
      if (td_result_write(m, &d, &o, r, s, TD_RESULT_ID_DOC, NULL, out)) {
        fprintf(stderr, "hotpath: out of memory\n");
        json_decref(j);
        free(spans);
        return 1;
      }
      *bytes += out->len;
      *passages += r->passages.count;
      json_decref(j);
    }
  }
  free(spans);
  return 0;
}

int main(int argc, char **argv) {
  static const struct option lo[] = {{"model", required_argument, 0, 'm'},
                                     {"plugins", required_argument, 0, 'p'},
                                     {"repeat", required_argument, 0, 'r'},
                                     {"load-only", no_argument, 0, 'l'},
                                     {0, 0, 0, 0}};
  const char *model = "models/rural-themes", *plugins = NULL;
  long repeat = 1;
  int load_only = 0, ch;
  while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
    switch (ch) {
    case 'm': model = optarg; break;
    case 'p': plugins = optarg; break;
    case 'r': repeat = strtol(optarg, NULL, 10); break;
    case 'l': load_only = 1; break;
    default: fprintf(stderr, "usage: hotpath --model DIR [--plugins DIR] [--repeat N] [--load-only] FILE.jsonl\n"); return 2;
    }
  }
  td_err_t err;
  td_err_clear(&err);
  td_model_t *m = NULL;
  /* --load-only loads as the daemon does (support vectors collapsed and
   * freed while parsing); the classifying run keeps them, as themectl does.
   * The CPU is the whole process's over the load: every thread of it. */
  struct rusage ru0, ru1;
  getrusage(RUSAGE_SELF, &ru0);
  uint64_t t0 = td_now_ns();
  if (td_model_load_flags(model, plugins, load_only ? TD_MODEL_LOAD_SERVE : 0, &m, &err)) {
    fprintf(stderr, "hotpath: %s\n", err.msg);
    return 1;
  }
  uint64_t t1 = td_now_ns();
  getrusage(RUSAGE_SELF, &ru1);
  double cpu = (double)(ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec) +
               (double)(ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec) / 1e6 +
               (double)(ru1.ru_stime.tv_sec - ru0.ru_stime.tv_sec) +
               (double)(ru1.ru_stime.tv_usec - ru0.ru_stime.tv_usec) / 1e6;
  fprintf(stderr, "load %.1f ms wall, %.1f ms CPU\n", (double)(t1 - t0) / 1e6, cpu * 1e3);
  if (load_only) {
    td_model_unref(&m);
    return 0;
  }
  if (optind >= argc) {
    fprintf(stderr, "hotpath: no input file\n");
    return 2;
  }
  char *data;
  size_t len;
  if (td_read_file(argv[optind], &data, &len, &err)) {
    fprintf(stderr, "hotpath: %s\n", err.msg);
    return 1;
  }
  line_t *lines = NULL;
  size_t n = 0, cap = 0;
  for (size_t pos = 0; pos < len;) {
    const char *nl = memchr(data + pos, '\n', len - pos);
    size_t ll = nl ? (size_t)(nl - (data + pos)) : len - pos;
    if (ll) {
      if (n == cap) {
        cap = cap ? 2 * cap : 1024;
        lines = realloc(lines, cap * sizeof *lines);
        if (!lines) return 1;
      }
      lines[n++] = (line_t){data + pos, ll};
    }
    pos += ll + 1;
  }
  td_scratch_t *s = td_scratch_new();
  td_result_t r;
  td_result_init(&r);
  td_buf_t out;
  td_buf_init(&out);
  size_t passages = 0, bytes = 0;
  uint64_t t2 = td_now_ns();
  int rc = hot_loop(m, lines, n, repeat, s, &r, &out, &passages, &bytes);
  uint64_t t3 = td_now_ns();
  double sec = (double)(t3 - t2) / 1e9;
  fprintf(stderr, "%zu docs x %ld, %zu passages, %zu output bytes, %.3f s, %.0f passages/s\n", n,
          repeat, passages, bytes, sec, sec > 0 ? (double)passages / sec : 0);
  td_buf_free(&out);
  td_result_free(&r);
  td_scratch_free(&s);
  free(lines);
  free(data);
  td_model_unref(&m);
  return rc;
}
