/*
 * soakclient: the load loop of tests/soak/soak.py, in C so that a million
 * requests take a minute rather than the Python client's ten.
 *
 *   soakclient (--unix PATH | --tcp HOST:PORT) --texts FILE --requests N
 *              [--conns 32] [--http 4] [--depth 32] [--timeout-ms 10000]
 *
 * One thread per connection, blocking sockets with timeouts. Each thread
 * writes `depth` classify requests at once (JSON Lines, or pipelined HTTP
 * POST /v1/classify on the first --http connections), then reads as many
 * answers, and checks every one: in order (the id it carries), no error,
 * a result with passages. --texts holds one JSON string literal per line
 * (the request's "text", already escaped).
 *
 * Prints "progress N" about five times a second and, at the end,
 * "done ok=N failed=N seconds=S"; the first few failures go to stderr.
 * Exit status 0 iff nothing failed. Built by soak.py with plain cc.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static const char *g_unix, *g_tcp;
static char **g_texts;
static size_t g_ntexts;
static long long g_requests;
static int g_conns = 32, g_http = 4, g_depth = 32, g_timeout_ms = 10000;
static atomic_llong g_ok, g_failed;
static atomic_int g_reported;

static void failf(const char *fmt, ...) {
  if (atomic_fetch_add(&g_reported, 1) >= 10) return;
  va_list ap;
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

typedef struct buf {
  char *p;
  size_t len, cap;
} buf_t;

static void buf_reserve(buf_t *b, size_t more) {
  if (b->len + more <= b->cap) return;
  size_t cap = b->cap ? b->cap : 65536;
  while (cap < b->len + more) cap *= 2;
  char *p = realloc(b->p, cap);
  if (!p) {
    perror("realloc");
    exit(2);
  }
  b->p = p;
  b->cap = cap;
}

static void buf_printf(buf_t *b, const char *fmt, ...) {
  for (;;) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    if (n < 0) exit(2);
    if ((size_t)n < b->cap - b->len) {
      b->len += (size_t)n;
      return;
    }
    buf_reserve(b, (size_t)n + 1);
  }
}

static int dial(void) {
  int fd;
  if (g_unix) {
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", g_unix);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa)) {
      failf("connect unix:%s: %s", g_unix, strerror(errno));
      if (fd >= 0) close(fd);
      return -1;
    }
  } else {
    char host[256];
    snprintf(host, sizeof host, "%s", g_tcp);
    char *port = strrchr(host, ':');
    if (!port) return -1;
    *port++ = '\0';
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai;
    if (getaddrinfo(host, port, &hints, &ai)) return -1;
    fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, ai->ai_addr, ai->ai_addrlen)) {
      failf("connect tcp:%s: %s", g_tcp, strerror(errno));
      freeaddrinfo(ai);
      if (fd >= 0) close(fd);
      return -1;
    }
    freeaddrinfo(ai);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  struct timeval tv = {.tv_sec = g_timeout_ms / 1000, .tv_usec = (g_timeout_ms % 1000) * 1000};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  return fd;
}

static int write_all(int fd, const char *p, size_t n) {
  while (n) {
    ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return -1;
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

/* Reads more into b; -1 on error, timeout or EOF. */
static int fill(int fd, buf_t *b) {
  buf_reserve(b, 65536);
  for (;;) {
    ssize_t r = recv(fd, b->p + b->len, b->cap - b->len, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return -1;
    b->len += (size_t)r;
    return 0;
  }
}

/* A good answer to request `id`: {"id":<id>, ... "passages" ... } and no error. */
static int check_body(const char *p, size_t n, long long id, int conn) {
  char want[48];
  int wl = snprintf(want, sizeof want, "{\"id\":%lld,", id);
  if (n < (size_t)wl || memcmp(p, want, (size_t)wl) != 0 || !memmem(p, n, "\"passages\":", 11) ||
      memmem(p, n, "\"error\":", 8)) {
    failf("conn %d: bad answer to id %lld: %.*s", conn, id, (int)(n > 300 ? 300 : n), p);
    return 0;
  }
  return 1;
}

typedef struct worker {
  pthread_t th;
  int index;
  long long quota, answered;
} worker_t;

static void *run(void *arg) {
  worker_t *w = arg;
  int http = w->index < g_http;
  buf_t out = {0}, in = {0};
  long long base = (long long)w->index * 1000000000LL, sent = 0;
  size_t pos = 0;
  int fd = dial();
  if (fd < 0) {
    atomic_fetch_add(&g_failed, w->quota);
    return NULL;
  }
  buf_reserve(&out, 65536);
  while (sent < w->quota) {
    long long batch = w->quota - sent < g_depth ? w->quota - sent : g_depth;
    out.len = 0;
    for (long long k = 0; k < batch; k++) {
      long long id = base + sent + k;
      const char *t = g_texts[(size_t)(sent + k + (long long)w->index) % g_ntexts];
      if (http) {
        char body[8192];
        int bl = snprintf(body, sizeof body, "{\"id\":%lld,\"text\":%s}", id, t);
        buf_printf(&out, "POST /v1/classify HTTP/1.1\r\nHost: soak\r\nContent-Type: application/json\r\n"
                         "Content-Length: %d\r\n\r\n%s", bl, body);
      } else {
        buf_printf(&out, "{\"id\":%lld,\"text\":%s}\n", id, t);
      }
    }
    if (write_all(fd, out.p, out.len)) {
      failf("conn %d: write: %s", w->index, strerror(errno));
      break;
    }
    for (long long k = 0; k < batch; k++) {
      long long id = base + sent + k;
      int good = 0;
      if (!http) {
        char *nl;
        while (!(nl = memchr(in.p + pos, '\n', in.len - pos)))
          if (fill(fd, &in)) goto io_error;
        good = check_body(in.p + pos, (size_t)(nl - (in.p + pos)), id, w->index);
        pos = (size_t)(nl - in.p) + 1;
      } else {
        char *end;
        while (!(end = memmem(in.p + pos, in.len - pos, "\r\n\r\n", 4)))
          if (fill(fd, &in)) goto io_error;
        const char *head = in.p + pos;
        size_t hl = (size_t)(end - head);
        const char *cl = memmem(head, hl, "Content-Length: ", 16);
        size_t blen = cl ? strtoul(cl + 16, NULL, 10) : 0;
        size_t start = (size_t)(end - in.p) + 4;
        while (in.len - start < blen)
          if (fill(fd, &in)) goto io_error;
        if (hl < 12 || memcmp(head, "HTTP/1.1 200", 12) != 0)
          failf("conn %d: HTTP status for id %lld: %.*s", w->index, id, (int)(hl > 40 ? 40 : hl), head);
        else
          good = check_body(in.p + start, blen, id, w->index);
        pos = start + blen;
      }
      atomic_fetch_add(good ? &g_ok : &g_failed, 1);
      w->answered++;
    }
    /* keep the read buffer small: drop what is consumed */
    memmove(in.p, in.p + pos, in.len - pos);
    in.len -= pos;
    pos = 0;
    sent += batch;
  }
  goto done;
io_error:
  failf("conn %d: read: %s after %lld requests", w->index, errno ? strerror(errno) : "EOF", w->answered);
done:
  /* whatever was not answered failed: the totals always add up */
  atomic_fetch_add(&g_failed, w->quota - w->answered);
  close(fd);
  free(out.p);
  free(in.p);
  return NULL;
}

static void load_texts(const char *path) {
  FILE *f = fopen(path, "r");
  if (!f) {
    perror(path);
    exit(2);
  }
  char *line = NULL;
  size_t cap = 0;
  ssize_t n;
  while ((n = getline(&line, &cap, f)) > 0) {
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = '\0';
    if (!n) continue;
    g_texts = realloc(g_texts, (g_ntexts + 1) * sizeof *g_texts);
    g_texts[g_ntexts++] = strdup(line);
  }
  free(line);
  fclose(f);
  if (!g_ntexts) {
    fprintf(stderr, "%s: no texts\n", path);
    exit(2);
  }
}

int main(int argc, char **argv) {
  const char *texts = NULL;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!v) goto usage;
    if (!strcmp(a, "--unix")) g_unix = v;
    else if (!strcmp(a, "--tcp")) g_tcp = v;
    else if (!strcmp(a, "--texts")) texts = v;
    else if (!strcmp(a, "--requests")) g_requests = atoll(v);
    else if (!strcmp(a, "--conns")) g_conns = atoi(v);
    else if (!strcmp(a, "--http")) g_http = atoi(v);
    else if (!strcmp(a, "--depth")) g_depth = atoi(v);
    else if (!strcmp(a, "--timeout-ms")) g_timeout_ms = atoi(v);
    else goto usage;
    i++;
  }
  if ((!g_unix == !g_tcp) || !texts || g_requests <= 0 || g_conns <= 0 || g_depth <= 0) goto usage;
  load_texts(texts);
  worker_t *ws = calloc((size_t)g_conns, sizeof *ws);
  double t0 = now_s();
  for (int i = 0; i < g_conns; i++) {
    ws[i].index = i;
    ws[i].quota = g_requests / g_conns + (i < g_requests % g_conns);
    pthread_create(&ws[i].th, NULL, run, &ws[i]);
  }
  /* progress until every request is accounted for (a thread that fails
   * counts its unanswered requests as failed before it ends) */
  for (;;) {
    long long done = atomic_load(&g_ok) + atomic_load(&g_failed);
    printf("progress %lld\n", done);
    fflush(stdout);
    if (done >= g_requests) break;
    usleep(200000);
  }
  for (int i = 0; i < g_conns; i++) pthread_join(ws[i].th, NULL);
  double secs = now_s() - t0;
  long long ok = atomic_load(&g_ok), failed = g_requests - ok;
  printf("done ok=%lld failed=%lld seconds=%.3f\n", ok, failed, secs);
  fflush(stdout);
  free(ws);
  return failed ? 1 : 0;
usage:
  fprintf(stderr, "usage: soakclient (--unix PATH | --tcp HOST:PORT) --texts FILE --requests N "
                  "[--conns 32] [--http 4] [--depth 32] [--timeout-ms 10000]\n");
  return 2;
}
