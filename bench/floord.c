/*
 * floord: the latency floor. A server that answers every line it reads with
 * the same canned JSON answer, shaped like themed's to a one-passage request,
 * without parsing or classifying anything:
 *
 *   build/bench/floord --unix PATH [--loops N]
 *
 * It has themed's serving shape: the main loop accepts and hands each
 * connection to one of N worker loops (default: one per CPU it may run on),
 * each on its own thread, pinned one per CPU when there are as many loops as
 * CPUs (themed's default, cpu_affinity "match"); each loop answers all the
 * lines of a read in one write.
 *
 * bench.py drives it with the same load generator, at the same rates,
 * interleaved with themed: what its p99 shows is the tail the machine, the
 * kernel and the generator give any server at that rate. themed's p99 beside
 * it is then what themed adds. It exits on SIGINT/SIGTERM.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <uv.h>

#include "common.h"

#define MAX_LOOPS 64

static const char ANSWER[] =
    "{\"id\":0,\"model\":\"floor@0\",\"passages\":[{\"index\":0,\"start\":0,\"end\":14,"
    "\"byte_start\":0,\"byte_end\":42,\"heading\":false,\"themes\":[{\"theme\":\"industry\","
    "\"score\":1.0}]}],\"summary\":{\"passages\":1,\"other\":0,\"themes\":{\"industry\":"
    "{\"passages\":1,\"share\":1.0,\"max\":1.0}},\"top\":[\"industry\"]}}\n";

typedef struct {
  uv_loop_t loop;
  uv_async_t wake; /* fds queued for this loop, or stop */
  uv_mutex_t mu;
  int *fds;        /* accepted descriptors not yet opened here; owned */
  size_t nfds, cap;
  int stop;
  uv_thread_t th;
} floor_loop_t;

typedef struct {
  uv_pipe_t p;
  floor_loop_t *lp;
} floor_conn_t;

typedef struct {
  uv_write_t w;
  char *buf; /* owned: freed with the request */
} floor_write_t;

static floor_loop_t g_loops[MAX_LOOPS];
static int g_nloops;

static void die(const char *what, int err) {
  fprintf(stderr, "floord: %s: %s\n", what, err < 0 ? uv_strerror(err) : strerror(err));
  exit(1);
}

static void on_close(uv_handle_t *h) { free(h->data); }

static void on_alloc(uv_handle_t *h, size_t sugg, uv_buf_t *b) {
  static _Thread_local char rbuf[65536];
  (void)h;
  (void)sugg;
  b->base = rbuf;
  b->len = sizeof rbuf;
}

static void on_written(uv_write_t *w, int status) {
  floor_write_t *fw = (floor_write_t *)w;
  (void)status;
  free(fw->buf);
  free(fw);
}

/* Every newline read is one request; its answer goes out with the others of
 * the same read, in one write (the socket usually takes it at once). */
static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
  floor_conn_t *c = s->data;
  if (n < 0) {
    uv_close((uv_handle_t *)&c->p, on_close);
    return;
  }
  size_t lines = 0;
  for (const char *p = b->base, *end = b->base + n; (p = memchr(p, '\n', (size_t)(end - p))); p++)
    lines++;
  if (!lines) return;
  size_t len = (sizeof ANSWER - 1) * lines;
  char *out = malloc(len);
  if (!out) die("malloc", ENOMEM);
  for (size_t i = 0; i < lines; i++) memcpy(out + i * (sizeof ANSWER - 1), ANSWER, sizeof ANSWER - 1);
  uv_buf_t wb = uv_buf_init(out, (unsigned)len);
  int wr = uv_try_write(s, &wb, 1);
  if (wr == (int)len) {
    free(out);
    return;
  }
  size_t done = wr > 0 ? (size_t)wr : 0;
  floor_write_t *fw = malloc(sizeof *fw);
  if (!fw) die("malloc", ENOMEM);
  fw->buf = out;
  wb = uv_buf_init(out + done, (unsigned)(len - done));
  if (uv_write(&fw->w, s, &wb, 1, on_written)) {
    on_written(&fw->w, 0);
    uv_close((uv_handle_t *)&c->p, on_close);
  }
}

static void on_wake(uv_async_t *a) {
  floor_loop_t *lp = a->data;
  uv_mutex_lock(&lp->mu);
  int *fds = lp->fds, stop = lp->stop;
  size_t n = lp->nfds;
  lp->fds = NULL;
  lp->nfds = lp->cap = 0;
  uv_mutex_unlock(&lp->mu);
  for (size_t i = 0; i < n; i++) {
    floor_conn_t *c = calloc(1, sizeof *c);
    if (!c) die("calloc", ENOMEM);
    c->lp = lp;
    uv_pipe_init(&lp->loop, &c->p, 0);
    c->p.data = c;
    int rc = uv_pipe_open(&c->p, fds[i]);
    if (!rc) rc = uv_read_start((uv_stream_t *)&c->p, on_alloc, on_read);
    if (rc) uv_close((uv_handle_t *)&c->p, on_close);
  }
  free(fds);
  if (stop) uv_stop(&lp->loop);
}

static void loop_run(void *arg) {
  floor_loop_t *lp = arg;
  uv_run(&lp->loop, UV_RUN_DEFAULT);
}

static void hand(int fd) {
  static int next;
  floor_loop_t *lp = &g_loops[next++ % g_nloops];
  uv_mutex_lock(&lp->mu);
  if (lp->nfds == lp->cap) {
    size_t cap = lp->cap ? 2 * lp->cap : 16;
    int *f = realloc(lp->fds, cap * sizeof *f);
    if (!f) die("realloc", ENOMEM);
    lp->fds = f;
    lp->cap = cap;
  }
  lp->fds[lp->nfds++] = fd;
  uv_mutex_unlock(&lp->mu);
  uv_async_send(&lp->wake);
}

static void on_listen(uv_poll_t *h, int status, int events) {
  int lfd = *(int *)h->data;
  (void)status;
  (void)events;
  for (;;) {
    int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0) return; /* EAGAIN, or a failure the next readiness retries */
    hand(fd);
  }
}

static void on_signal(uv_signal_t *s, int sig) {
  (void)sig;
  uv_stop(s->loop);
}

int main(int argc, char **argv) {
  const char *path = NULL;
  cpu_set_t allowed;
  if (td_cpu_set_allowed(&allowed)) die("sched_getaffinity", errno);
  g_nloops = CPU_COUNT(&allowed);
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--unix") && i + 1 < argc) path = argv[++i];
    else if (!strcmp(argv[i], "--loops") && i + 1 < argc) g_nloops = atoi(argv[++i]);
    else path = NULL, i = argc;
  }
  if (!path || g_nloops < 1 || g_nloops > MAX_LOOPS) {
    fprintf(stderr, "usage: floord --unix PATH [--loops N (1..%d)]\n", MAX_LOOPS);
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  if (lfd < 0) die("socket", errno);
  if (strlen(path) >= sizeof sa.sun_path) die(path, ENAMETOOLONG);
  strcpy(sa.sun_path, path);
  unlink(path);
  if (bind(lfd, (struct sockaddr *)&sa, sizeof sa) || listen(lfd, 1024)) die(path, errno);

  int pin = g_nloops == CPU_COUNT(&allowed), cpu = -1;
  for (int i = 0; i < g_nloops; i++) {
    floor_loop_t *lp = &g_loops[i];
    if (uv_loop_init(&lp->loop) || uv_mutex_init(&lp->mu) || uv_async_init(&lp->loop, &lp->wake, on_wake))
      die("loop", ENOMEM);
    lp->wake.data = lp;
    int rc = uv_thread_create(&lp->th, loop_run, lp);
    if (rc) die("uv_thread_create", rc);
    while (pin && !CPU_ISSET(++cpu, &allowed)) {
    }
    if (pin) {
      cpu_set_t one;
      CPU_ZERO(&one);
      CPU_SET(cpu, &one);
      if ((rc = pthread_setaffinity_np(lp->th, sizeof one, &one))) die("pthread_setaffinity_np", rc);
    }
  }
  uv_loop_t *main_loop = uv_default_loop();
  uv_poll_t lh;
  uv_signal_t sint, sterm;
  lh.data = &lfd;
  if (uv_poll_init(main_loop, &lh, lfd) || uv_poll_start(&lh, UV_READABLE, on_listen)) die("poll", EINVAL);
  uv_signal_init(main_loop, &sint);
  uv_signal_init(main_loop, &sterm);
  uv_signal_start(&sint, on_signal, SIGINT);
  uv_signal_start(&sterm, on_signal, SIGTERM);
  fprintf(stderr, "floord: %s, %d loops%s\n", path, g_nloops, pin ? ", pinned one per CPU" : "");
  uv_run(main_loop, UV_RUN_DEFAULT);
  for (int i = 0; i < g_nloops; i++) {
    uv_mutex_lock(&g_loops[i].mu);
    g_loops[i].stop = 1;
    uv_mutex_unlock(&g_loops[i].mu);
    uv_async_send(&g_loops[i].wake);
    uv_thread_join(&g_loops[i].th);
  }
  unlink(path);
  return 0;
}
