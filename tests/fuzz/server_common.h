/*
 * What the two in-process server fixtures share: server_fixture.h (one
 * loop, driven from the fuzz thread: fuzz_jsonl, fuzz_http) and
 * loops_fixture.h (worker loops on their own threads: fuzz_loops).
 *
 *   fx_setup           the temp dir, the tiny bundle, the config
 *   fx_limits          the per-connection limits of selector byte 0
 *   fx_check_*         what every answer stream must look like
 */
#ifndef TD_FUZZ_SERVER_COMMON_H
#define TD_FUZZ_SERVER_COMMON_H

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "bundle_split.h"
#include "jalloc.h"
#include "config.h"
#include "fuzz_common.h"
#include "log.h"
#include "model.h"
#include "server.h"

/* Selector byte 0 and byte 1, the same in every server target:
 *   byte 0  configuration for this connection (the limits are read per
 *           request, so they may change between connections):
 *             bits 0-1  max_pending 64, 1, 2, 4
 *             bits 2-3  max_request_bytes/max_line_bytes 4M/4M, 100/200, 64/64, 300/300
 *             bit 4     the connection counts as TCP (admin ops need the token)
 *             bit 5     an admin token ("s3cret") is configured
 *             bit 6     max_output_bytes 1 (reading pauses after every answer)
 *             bit 7     max_passages 3, max_documents 2
 *   byte 1  write chunk size: all at once, 1, 2, 3, 7, 16, 100, 1000 (bits 0-2)
 */
#define FX_SEL_TCP 16u
#define FX_SEL_TOKEN 32u
#define FX_TOKEN "s3cret"
static const size_t fx_chunks[8] = {0, 1, 2, 3, 7, 16, 100, 1000};

static inline void fx_die(const char *what, const char *why) {
  fprintf(stderr, "fuzz fixture: %s: %s\n", what, why);
  exit(1);
}

/* Unpacks the fuzz_bundle seed into a temp dir (removed at exit) and fills
 * cfg (td_config_init'd here) to serve it on unix:<tmp>/s.sock, whose path
 * goes to sock. Not validated: the caller adds what it needs first. */
static inline void fx_setup(td_config_t *cfg, char *sock, size_t socksz) {
  td_jalloc_install(); /* as themed's main does: answers' trees in arenas */
  /* Nothing of a surrounding systemd may leak in. */
  unsetenv("NOTIFY_SOCKET");
  unsetenv("LISTEN_FDS");
  unsetenv("LISTEN_PID");
  unsetenv("WATCHDOG_USEC");
  setenv("UV_THREADPOOL_SIZE", "2", 1);
  td_log_init(TD_LOG_ERROR, 0);
  json_object_seed(1);

  char tmpl[] = "/tmp/themed-fuzz-srv-XXXXXX", path[PATH_MAX], listen[160];
  if (!mkdtemp(tmpl)) fx_die("mkdtemp", strerror(errno));
  fuzz_remove_at_exit(tmpl);
  const char *seed = fuzz_path("THEMED_FUZZ_BUNDLE", "tests/fuzz/corpus/fuzz_bundle/tiny.bundle");
  size_t n = 0;
  uint8_t *b = bundle_read(seed, &n);
  if (!b) fx_die(seed, "cannot read the seed bundle (run from the top of the tree)");
  snprintf(path, sizeof path, "%s/models", tmpl);
  mkdir(path, 0755);
  snprintf(path, sizeof path, "%s/models/tiny", tmpl);
  if (bundle_write(path, b, n)) fx_die(path, "cannot unpack the bundle");
  free(b);
  const char *plugins = fuzz_path("THEMED_PLUGIN_DIR", "build/fuzz/plugins");
  bundle_pin_plugins(plugins);

  td_config_init(cfg);
  cfg->model = strdup(path);
  cfg->plugins = strdup(plugins);
  snprintf(sock, socksz, "%s/s.sock", tmpl);
  snprintf(listen, sizeof listen, "unix:%s", sock);
  cfg->listen = calloc(1, sizeof *cfg->listen);
  cfg->listen[0] = strdup(listen);
  cfg->nlisten = 1;
}

/* The limits of selector byte 0 (the admin token is the fixture's business). */
/* Validates cfg, loads its model and starts a listening server with `workers`
 * workers on loop (cfg->worker_loops decides whether they are worker loops). */
static inline void fx_start(td_config_t *cfg, uv_loop_t *loop, td_server_t *srv, int workers) {
  td_err_t err = {0};
  if (td_config_validate(cfg, 0, &err)) fx_die("config", err.msg);
  td_model_t *m = NULL;
  if (td_model_load(cfg->model, cfg->plugins, &m, &err)) fx_die("model", err.msg);
  uv_loop_init(loop);
  if (td_server_init(srv, loop, cfg, workers, m, &err)) fx_die("server", err.msg);
  if (td_server_listen(srv, 0, &err)) fx_die("listen", err.msg);
}

static inline void fx_limits(td_config_t *cfg, unsigned sel) {
  static const size_t pending[] = {64, 1, 2, 4};
  static const size_t req[] = {4u << 20, 100, 64, 300}, line[] = {4u << 20, 200, 64, 300};
  cfg->max_pending = pending[sel & 3];
  cfg->max_request_bytes = req[(sel >> 2) & 3];
  cfg->max_line_bytes = line[(sel >> 2) & 3];
  cfg->max_output_bytes = sel & 64 ? 1 : TD_DEFAULT_MAX_OUTPUT_BYTES;
  cfg->max_passages = sel & 128 ? 3 : TD_DEFAULT_MAX_PASSAGES;
  cfg->max_documents = sel & 128 ? 2 : TD_DEFAULT_MAX_DOCUMENTS;
}

/* Every JSON error object the daemon writes: {"error":{"code":..,"message":..}}. */
static inline void fx_check_error_obj(const json_t *o) {
  const json_t *e = json_object_get(o, "error");
  if (!e) return;
  FUZZ_CHECK(json_is_object(e) && json_is_string(json_object_get(e, "code")) &&
                 json_is_string(json_object_get(e, "message")),
             "malformed error object");
  const char *code = json_string_value(json_object_get(e, "code"));
  int known = 0;
  for (int k = 1; k < TD_EC_COUNT; k++)
    if (!strcmp(code, td_ecode_name((td_ecode_t)k))) known = 1;
  FUZZ_CHECK(known, "unknown error code");
  FUZZ_CHECK(strcmp(code, "internal") != 0, "internal error (a bug or out of memory)");
}

static inline void fx_check_json_body(const char *p, size_t n) {
  json_error_t je;
  json_t *o = json_loadb(p, n, 0, &je);
  FUZZ_CHECK(o && json_is_object(o), "a JSON body does not parse as an object");
  fx_check_error_obj(o);
  json_decref(o);
}

/* JSON Lines answers to a stream of `lines` lines: each answer one line
 * holding one JSON object, no more answers than lines. */
static inline void fx_check_jsonl(const char *d, size_t n, size_t lines) {
  FUZZ_CHECK(n == 0 || d[n - 1] == '\n', "answer does not end with LF");
  size_t answers = 0;
  for (size_t p = 0; p < n;) {
    const char *nl = memchr(d + p, '\n', n - p);
    size_t len = (size_t)(nl - (d + p));
    json_error_t je;
    json_t *o = json_loadb(d + p, len, 0, &je);
    if (!o) fprintf(stderr, "bad answer line: %.*s\n", (int)(len > 300 ? 300 : len), d + p);
    FUZZ_CHECK(o && json_is_object(o), "an answer line is not one JSON object");
    fx_check_error_obj(o);
    json_decref(o);
    answers++;
    p += len + 1;
  }
  FUZZ_CHECK(answers <= lines, "more answers than request lines");
}

/* HTTP answers: a sequence of complete HTTP/1.1 responses (status line,
 * headers, a Content-Length body; 100 Continue interim ones), JSON bodies
 * that parse, nothing after a Connection: close one. */
static inline void fx_check_http(const char *d, size_t n) {
  size_t p = 0;
  int closed = 0;
  while (p < n) {
    FUZZ_CHECK(!closed, "bytes after a Connection: close response");
    const char *end = memmem(d + p, n - p, "\r\n\r\n", 4);
    FUZZ_CHECK(end, "incomplete response head");
    size_t hl = (size_t)(end - (d + p)) + 4;
    FUZZ_CHECK(hl > 13 && !memcmp(d + p, "HTTP/1.1 ", 9) && isdigit((unsigned char)d[p + 9]) &&
                   isdigit((unsigned char)d[p + 10]) && isdigit((unsigned char)d[p + 11]) &&
                   d[p + 12] == ' ',
               "bad status line");
    int status = atoi(d + p + 9);
    if (status == 100) {
      p += hl;
      continue;
    }
    long clen = -1;
    int json = 0;
    for (const char *h = (const char *)memchr(d + p, '\n', hl) + 1; h < end;) {
      const char *e = memmem(h, (size_t)(end + 2 - h), "\r\n", 2);
      size_t l = (size_t)(e - h);
      if (l > 16 && !strncasecmp(h, "Content-Length: ", 16)) clen = strtol(h + 16, NULL, 10);
      if (l >= 30 && !strncasecmp(h, "Content-Type: application/json", 30)) json = 1;
      if (l == 17 && !strncasecmp(h, "Connection: close", 17)) closed = 1;
      h = e + 2;
    }
    FUZZ_CHECK(clen >= 0 && (size_t)clen <= n - p - hl, "missing or wrong Content-Length");
    if (json) fx_check_json_body(d + p + hl, (size_t)clen);
    p += hl + (size_t)clen;
  }
}

/* A stream that is no protocol: one JSON error line, then the end. */
static inline void fx_check_not_a_protocol(const char *d, size_t n) {
  FUZZ_CHECK(n > 0 && d[n - 1] == '\n' && memchr(d, '\n', n) == d + n - 1,
             "an unknown protocol did not get one error line");
  fx_check_json_body(d, n - 1);
}

#endif
