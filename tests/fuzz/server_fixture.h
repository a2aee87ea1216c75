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
 * Input layout (both targets): byte 0 the limits for this connection, byte
 * 1 the write chunking (server_common.h), then the bytes the client sends.
 * Bit 4 of byte 0 marks the connection as TCP (its is_tcp is set by hand).
 *
 * A hang (a connection the server never finishes) is a libFuzzer timeout.
 */
#ifndef TD_FUZZ_SERVER_FIXTURE_H
#define TD_FUZZ_SERVER_FIXTURE_H

#include <sys/socket.h>
#include <sys/un.h>
#include <uv.h>

#include "reload.h"
#include "server.h"
#include "server_common.h"

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

static inline void fx_init(void) {
  fx_setup(&g_cfg, g_sock, sizeof g_sock);
  /* One loop, driven here. The worker-loop mode (the default), with its
   * hand-off to a loop on another thread, is fuzz_loops' (loops_fixture.h). */
  g_cfg.worker_loops = 0;
  fx_start(&g_cfg, &g_loop, &g_srv, 2);
}

static inline void fx_configure(unsigned sel) {
  fx_limits(&g_cfg, sel);
  td_server_set_admin_token(&g_srv, sel & FX_SEL_TOKEN ? FX_TOKEN : NULL);
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
  g_srv.conns->is_tcp = (sel & FX_SEL_TCP) != 0;
  uv_read_start((uv_stream_t *)&c->pipe, fx_alloc, fx_read);

  size_t chunk = fx_chunks[chunksel & 7], nw = chunk ? (n + chunk - 1) / chunk : 1;
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

#endif
