/*
 * An in-process themed with worker loops, for fuzz_loops.
 *
 * The production mode (worker_loops = 1, the default): the main loop
 * accepts and hands each connection's descriptor to one of 2 worker loops,
 * each running on a thread of its own, which reads, frames, classifies and
 * answers it (docs/architecture.md, "Threads"). Here the main loop runs
 * uv_run on a thread of its own too, and the fuzz thread is a plain
 * blocking client, as a real one is: per input it connects (to the unix
 * socket, or to 127.0.0.1 over TCP), writes the stream in chunks,
 * half-closes, reads every answer until the server closes (poll(), so a
 * server that stops reading for backpressure cannot deadlock the client),
 * and then waits until every loop has let go of the connection, its
 * requests and any reload.
 *
 * The fuzz thread never touches a loop's state directly: it asks the loop
 * itself (lx_ask: a td_server_post, run on that loop's thread, answered
 * under a mutex). "Let go" is asked that way: no connection, no request in
 * flight (uv_work, writes, shutdowns), no reload at the main loop or
 * waiting for one on a worker loop, and the loop's handles back to what it
 * had before the first connection (every close callback has run, so the
 * connection has been freed). The connection count shared by every loop
 * (nconns_all and the connections gauge) is read under td_server_lock, as
 * the daemon reads it.
 *
 * The limits still change per input (server_common.h, byte 0) although
 * worker threads read the config while serving: the main loop writes them
 * (and the admin token, of which it is the only writer), in a function the
 * fuzz thread posts to it once every loop has said it is idle. So every read
 * of the previous connection happens before the write (loop → its answer
 * under lx_mu → the fuzz thread → the post, under the main loop's post_mu),
 * and the write before every read of the next one (the main loop hands the
 * connection over by a post too). No loop reads these limits while it holds
 * no connection.
 *
 * Byte 0, bit 4: connect over TCP (a real TCP connection, so admin ops need
 * the token) instead of the unix socket.
 *
 * At exit the server is stopped as SIGTERM would (td_server_stop, on the
 * main loop), the threads joined and everything freed, so LeakSanitizer
 * also sees what the stop of the worker loops leaves behind.
 */
#ifndef TD_FUZZ_LOOPS_FIXTURE_H
#define TD_FUZZ_LOOPS_FIXTURE_H

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "reload.h"
#include "server.h"
#include "server_common.h"

#define LX_WORKERS 2
#define LX_IO_TIMEOUT_MS 6000   /* connect to EOF; libFuzzer's own -timeout is 10 s */
#define LX_IDLE_TIMEOUT_MS 3000 /* EOF to every loop idle */

static uv_loop_t g_loop;
static td_server_t g_srv;
static td_config_t g_cfg;
static char g_sock[108];
static int g_port;                    /* the TCP listener's */
static uv_thread_t g_main_thread;
static size_t g_base[1 + LX_WORKERS]; /* each loop's handles while idle */
static uv_mutex_t lx_mu;
static uv_cond_t lx_cond;

/* One question to one loop, answered on that loop's thread. */
typedef struct lx_ask {
  size_t base;        /* in: the idle handle count (SIZE_MAX: just count) */
  int configure;      /* in: main loop, once idle: apply sel */
  unsigned sel;
  int answered;       /* out (under lx_mu) */
  int idle;
  size_t handles;
} lx_ask_t;

static void lx_count(uv_handle_t *h, void *arg) { (*(size_t *)arg)++; }

static void lx_answer(td_server_t *s, void *arg, int cancelled) {
  lx_ask_t *a = arg;
  size_t handles = 0;
  int idle = 0;
  if (!cancelled) {
    uv_walk(s->loop, lx_count, &handles);
    idle = !s->conns && !s->nconns && !s->nrejecting && !s->flush_head && !s->pool_inflight &&
           s->loop->active_reqs.count == 0 && (a->base == SIZE_MAX || handles == a->base);
    if (s->is_shard) idle = idle && !s->remote_pending;
    else idle = idle && !td_reload_busy(s);
    if (idle && a->configure) {
      fx_limits(&g_cfg, a->sel);
      td_server_set_admin_token(s, a->sel & FX_SEL_TOKEN ? FX_TOKEN : NULL);
    }
  }
  uv_mutex_lock(&lx_mu);
  a->idle = idle;
  a->handles = handles;
  a->answered = 1;
  uv_cond_broadcast(&lx_cond);
  uv_mutex_unlock(&lx_mu);
}

static inline uint64_t lx_now_ms(void) { return uv_hrtime() / 1000000u; }

/* Asks loop i (0 the main loop, 1.. the worker loops); 1 if it is idle. */
static inline int lx_ask(int i, lx_ask_t *a) {
  td_server_t *s = i ? &g_srv.shards[i - 1] : &g_srv;
  a->answered = 0;
  FUZZ_CHECK(td_server_post(s, lx_answer, a) == 0, "a loop has stopped");
  uv_mutex_lock(&lx_mu);
  uint64_t until = lx_now_ms() + LX_IDLE_TIMEOUT_MS;
  while (!a->answered) {
    uint64_t now = lx_now_ms();
    FUZZ_CHECK(now < until, "a loop does not run what is posted to it");
    (void)uv_cond_timedwait(&lx_cond, &lx_mu, (until - now) * 1000000u);
  }
  uv_mutex_unlock(&lx_mu);
  return a->idle;
}

/* Waits until every loop is idle (the connection is gone everywhere). */
static inline void lx_wait_idle(void) {
  uint64_t until = lx_now_ms() + LX_IDLE_TIMEOUT_MS;
  for (unsigned pause = 0;; pause = pause ? (pause < 2000 ? pause * 2 : pause) : 50) {
    int idle = 1;
    for (int i = LX_WORKERS; i >= 0 && idle; i--) { /* the worker loops first */
      lx_ask_t a = {.base = g_base[i]};
      idle = lx_ask(i, &a);
    }
    if (idle) break;
    FUZZ_CHECK(lx_now_ms() < until, "the server did not let go of the connection");
    if (pause) usleep(pause);
  }
  td_server_lock(&g_srv);
  size_t all = g_srv.nconns_all;
  uint64_t gauge = g_srv.metrics.connections;
  td_server_unlock(&g_srv);
  FUZZ_CHECK(all == 0, "nconns_all did not return to 0");
  FUZZ_CHECK(gauge == 0, "connection gauge did not return to 0");
}

static void lx_main_run(void *arg) {
  uv_run(&g_loop, UV_RUN_DEFAULT);
  td_server_close(&g_srv);
  uv_run(&g_loop, UV_RUN_DEFAULT); /* the close callbacks */
}

static void lx_stop_here(td_server_t *s, void *arg, int cancelled) {
  if (!cancelled) td_server_stop(s);
}

/* At exit (not after a finding: libFuzzer leaves by _Exit then). */
static void lx_fini(void) {
  if (td_server_post(&g_srv, lx_stop_here, NULL)) fx_die("stop", "the main loop has stopped");
  uv_thread_join(&g_main_thread);
  td_server_free(&g_srv);
  if (uv_loop_close(&g_loop)) fx_die("stop", "the main loop closed with handles open");
  td_config_free(&g_cfg);
  uv_cond_destroy(&lx_cond);
  uv_mutex_destroy(&lx_mu);
}

static inline void lx_init(void) {
  fx_setup(&g_cfg, g_sock, sizeof g_sock);
  char **l = realloc(g_cfg.listen, 2 * sizeof *l);
  if (!l) fx_die("config", "out of memory");
  g_cfg.listen = l;
  g_cfg.listen[g_cfg.nlisten++] = strdup("tcp:127.0.0.1:0");
  g_cfg.worker_loops = 1;
  fx_start(&g_cfg, &g_loop, &g_srv, LX_WORKERS);
  if (g_srv.nshards != LX_WORKERS) fx_die("server", "the worker loops did not start");
  for (size_t i = 0; i < g_srv.nlisteners; i++) {
    const char *name = g_srv.listeners[i].name, *colon = strrchr(name, ':');
    if (!strncmp(name, "tcp:", 4) && colon) g_port = atoi(colon + 1);
  }
  if (g_port <= 0) fx_die("listen", "no TCP port");
  if (uv_mutex_init(&lx_mu) || uv_cond_init(&lx_cond)) fx_die("init", "mutex");
  if (uv_thread_create(&g_main_thread, lx_main_run, NULL)) fx_die("init", "main loop thread");
  for (int i = 0; i <= LX_WORKERS; i++) {
    lx_ask_t a = {.base = SIZE_MAX};
    if (!lx_ask(i, &a)) fx_die("init", "a loop is busy before the first connection");
    g_base[i] = a.handles;
  }
  atexit(lx_fini);
}

/* A non-blocking socket connected to the server. Signals (libFuzzer's
 * timers) may interrupt: the connection then completes in the background. */
static inline int lx_connect(int tcp) {
  uint64_t until = lx_now_ms() + LX_IO_TIMEOUT_MS;
  for (;;) {
    int fd = socket(tcp ? AF_INET : AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) fx_die("socket", strerror(errno));
    int rc;
    if (tcp) {
      struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)g_port)};
      sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      rc = connect(fd, (struct sockaddr *)&sa, sizeof sa);
    } else {
      struct sockaddr_un sa = {.sun_family = AF_UNIX};
      snprintf(sa.sun_path, sizeof sa.sun_path, "%s", g_sock);
      rc = connect(fd, (struct sockaddr *)&sa, sizeof sa);
    }
    if (rc && (errno == EINPROGRESS || errno == EINTR)) {
      struct pollfd p = {.fd = fd, .events = POLLOUT};
      int err = 0;
      socklen_t len = sizeof err;
      while ((rc = poll(&p, 1, LX_IO_TIMEOUT_MS)) < 0 && errno == EINTR) {}
      FUZZ_CHECK(rc == 1, "connect: the server does not accept");
      if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) || err)
        fx_die("connect", strerror(err ? err : errno));
      rc = 0;
    }
    if (rc == 0) return fd;
    /* A unix socket's backlog full (EAGAIN): the main loop is behind. */
    if (errno != EAGAIN) fx_die("connect", strerror(errno));
    close(fd);
    FUZZ_CHECK(lx_now_ms() < until, "connect: the server does not accept");
    usleep(1000);
  }
}

/* Runs one connection, writing chunk bytes at a time (0: all at once); the
 * server's answers end up in out (caller frees). */
static inline void lx_run(const uint8_t *stream, size_t n, unsigned sel, size_t chunk,
                          td_buf_t *out) {
  lx_ask_t conf = {.base = g_base[0], .configure = 1, .sel = sel};
  FUZZ_CHECK(lx_ask(0, &conf), "the main loop is busy before the connection");
  int fd = lx_connect((sel & FX_SEL_TCP) != 0);
  size_t off = 0;
  int wdone = 0;
  td_buf_init(out);
  uint64_t until = lx_now_ms() + LX_IO_TIMEOUT_MS;
  for (;;) {
    if (!wdone && off == n) {
      shutdown(fd, SHUT_WR); /* the server may have gone already: no matter */
      wdone = 1;
    }
    struct pollfd p = {.fd = fd, .events = POLLIN | (wdone ? 0 : POLLOUT)};
    uint64_t now = lx_now_ms();
    FUZZ_CHECK(now < until, "the server never closed the connection");
    if (poll(&p, 1, (int)(until - now)) < 0) {
      if (errno == EINTR) continue;
      fx_die("poll", strerror(errno));
    }
    if (p.revents & POLLOUT) {
      size_t len = chunk && n - off > chunk ? chunk : n - off;
      ssize_t w = send(fd, stream + off, len, MSG_NOSIGNAL);
      if (w > 0) off += (size_t)w;
      else if (w < 0 && errno != EAGAIN && errno != EINTR) off = n; /* EPIPE, ECONNRESET */
    }
    if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
      if (td_buf_reserve(out, 65536)) fx_die("read", "out of memory");
      ssize_t r = recv(fd, out->data + out->len, 65536, 0);
      if (r > 0) out->len += (size_t)r;
      else if (r == 0 || (errno != EAGAIN && errno != EINTR)) break; /* EOF or a reset */
    }
  }
  close(fd);
  lx_wait_idle();
}

#endif
