/*
 * An in-process themed for fuzz_jsonl and fuzz_http.
 *
 * The real server (server.c, listener.c, proto_*.c, request.c, reload.c,
 * the engine) runs on a libuv loop in the fuzzer's own process, listening on
 * a unix socket in a temp dir and serving the tiny bundle from the
 * fuzz_bundle seed. Each input is one client connection: the harness
 * connects, writes the stream (in chunks, running the loop in between so
 * the server sees partial reads), half-closes, reads every answer until the
 * server closes, and then waits until the server has freed the connection
 * and every request. Nothing in the daemon is stubbed or refactored: the
 * bytes go through exactly the code a socket's bytes go through.
 *
 * Input layout (both targets):
 *   byte 0  configuration for this connection (the limits are read per
 *           request, so they may change between connections):
 *             bits 0-1  max_pending 64, 1, 2, 4
 *             bits 2-3  max_request_bytes/max_line_bytes 4M/4M, 100/200, 64/64, 300/300
 *             bit 4     the connection counts as TCP (admin ops need the token)
 *             bit 5     an admin token ("s3cret") is configured
 *             bit 6     max_output_bytes 1 (reading pauses after every answer)
 *             bit 7     max_passages 3, max_documents 2
 *   byte 1  write chunk size: all at once, 1, 2, 3, 7, 16, 100, 1000 (bits 0-2)
 *   rest    the bytes the client sends
 *
 * A hang (a connection the server never finishes) is a libFuzzer timeout.
 */
#ifndef TD_FUZZ_SERVER_FIXTURE_H
#define TD_FUZZ_SERVER_FIXTURE_H

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <uv.h>

#include "bundle_split.h"
#include "config.h"
#include "fuzz_common.h"
#include "log.h"
#include "model.h"
#include "reload.h"
#include "server.h"

static uv_loop_t g_loop;
static td_server_t g_srv;
static td_config_t g_cfg;
static char g_sock[108];

typedef struct fx_client {
  uv_pipe_t pipe;
  uv_shutdown_t sreq;
  uv_write_t *wreqs;
  td_buf_t out;
  int eof, closed;
} fx_client_t;

static inline void fx_die(const char *what, const char *why) {
  fprintf(stderr, "fuzz fixture: %s: %s\n", what, why);
  exit(1);
}

static inline void fx_init(void) {
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

  td_config_init(&g_cfg);
  g_cfg.model = strdup(path);
  g_cfg.plugins = strdup(plugins);
  snprintf(g_sock, sizeof g_sock, "%s/s.sock", tmpl);
  snprintf(listen, sizeof listen, "unix:%s", g_sock);
  g_cfg.listen = calloc(1, sizeof *g_cfg.listen);
  g_cfg.listen[0] = strdup(listen);
  g_cfg.nlisten = 1;
  /* One loop, driven here: the framing and request code the fuzzers reach
   * is the same on a worker loop (tests/integration/test_loops.py). */
  g_cfg.worker_loops = 0;
  td_err_t err = {0};
  if (td_config_validate(&g_cfg, 0, &err)) fx_die("config", err.msg);
  td_model_t *m = NULL;
  if (td_model_load(g_cfg.model, g_cfg.plugins, &m, &err)) fx_die("model", err.msg);
  uv_loop_init(&g_loop);
  td_server_init(&g_srv, &g_loop, &g_cfg, 2, m, &err);
  if (td_server_listen(&g_srv, 0, &err)) fx_die("listen", err.msg);
}

static inline void fx_configure(unsigned sel) {
  static const size_t pending[] = {64, 1, 2, 4};
  static const size_t req[] = {4u << 20, 100, 64, 300}, line[] = {4u << 20, 200, 64, 300};
  g_cfg.max_pending = pending[sel & 3];
  g_cfg.max_request_bytes = req[(sel >> 2) & 3];
  g_cfg.max_line_bytes = line[(sel >> 2) & 3];
  g_cfg.max_output_bytes = sel & 64 ? 1 : TD_DEFAULT_MAX_OUTPUT_BYTES;
  g_cfg.max_passages = sel & 128 ? 3 : TD_DEFAULT_MAX_PASSAGES;
  g_cfg.max_documents = sel & 128 ? 2 : TD_DEFAULT_MAX_DOCUMENTS;
  td_server_set_admin_token(&g_srv, sel & 32 ? "s3cret" : NULL);
}

static void fx_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  fx_client_t *c = h->data;
  if (td_buf_reserve(&c->out, 65536)) {
    *buf = uv_buf_init(NULL, 0);
    return;
  }
  *buf = uv_buf_init(c->out.data + c->out.len, 65536);
}

static void fx_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  fx_client_t *c = s->data;
  if (n > 0) c->out.len += (size_t)n;
  else if (n < 0) {
    c->eof = 1;
    uv_read_stop(s);
  }
}

static void fx_written(uv_write_t *w, int status) {}
static void fx_shut(uv_shutdown_t *r, int status) {}
static void fx_closed(uv_handle_t *h) { ((fx_client_t *)h->data)->closed = 1; }

/* Runs one connection; the server's answers end up in out (caller frees). */
static inline void fx_run(const uint8_t *stream, size_t n, unsigned sel, unsigned chunksel,
                          td_buf_t *out) {
  static const size_t chunks[] = {0, 1, 2, 3, 7, 16, 100, 1000};
  fx_configure(sel);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  snprintf(sa.sun_path, sizeof sa.sun_path, "%s", g_sock);
  if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa)) fx_die("connect", strerror(errno));

  fx_client_t *c = calloc(1, sizeof *c);
  td_buf_init(&c->out);
  uv_pipe_init(&g_loop, &c->pipe, 0);
  uv_pipe_open(&c->pipe, fd);
  c->pipe.data = c;
  uint64_t before = g_srv.next_conn_id;
  while (g_srv.next_conn_id == before) uv_run(&g_loop, UV_RUN_ONCE);
  FUZZ_CHECK(g_srv.conns && g_srv.conns->id == g_srv.next_conn_id, "accepted connection not found");
  g_srv.conns->is_tcp = (sel & 16) != 0;
  uv_read_start((uv_stream_t *)&c->pipe, fx_alloc, fx_read);

  size_t chunk = chunks[chunksel & 7], nw = chunk ? (n + chunk - 1) / chunk : 1;
  c->wreqs = calloc(nw ? nw : 1, sizeof *c->wreqs);
  for (size_t i = 0, off = 0; i < nw && off < n; i++) {
    size_t len = chunk && n - off > chunk ? chunk : n - off;
    uv_buf_t b = uv_buf_init((char *)stream + off, (unsigned)len);
    uv_write(&c->wreqs[i], (uv_stream_t *)&c->pipe, &b, 1, fx_written);
    off += len;
    if (chunk) uv_run(&g_loop, UV_RUN_NOWAIT);
  }
  uv_shutdown(&c->sreq, (uv_stream_t *)&c->pipe, fx_shut);
  while (!c->eof) uv_run(&g_loop, UV_RUN_ONCE);
  uv_close((uv_handle_t *)&c->pipe, fx_closed);
  /* The server must let go of the connection, every request and reload. */
  while (!c->closed || g_srv.conns || g_srv.nconns || td_reload_busy(&g_srv) ||
         g_loop.active_reqs.count)
    uv_run(&g_loop, UV_RUN_ONCE);
  FUZZ_CHECK(g_srv.metrics.connections == 0, "connection gauge did not return to 0");
  *out = c->out;
  free(c->wreqs);
  free(c);
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

#endif
