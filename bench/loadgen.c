/*
 * loadgen: drives a running themed over a unix socket or TCP, with either
 * protocol, and reports throughput and latency.
 *
 *   build/bench/loadgen (--unix PATH | --tcp HOST:PORT) --requests FILE
 *                       [--proto jsonl|http] [--conns N] [--depth D]
 *                       [--duration S] [--warmup S] [--rate R] [--label TEXT]
 *
 * FILE holds one request object per line ({"id":..,"text":..} or any other
 * classify request); they are sent in turn, cycling. JSON Lines requests are
 * pipelined: each connection keeps D requests in flight (default 8). HTTP
 * uses keep-alive, POST /v1/classify, D requests in flight per connection
 * (default 1: no pipelining).
 *
 * Closed loop (default): a connection sends its next request when a
 * response comes back, so the offered load is whatever the daemon sustains
 * (throughput). Open loop (--rate R): request k falls due at exactly
 * t0 + k/R, dealt round-robin over the connections. A timerfd armed at the
 * next due instant (absolute CLOCK_MONOTONIC, the clock of uv_hrtime, timer
 * slack 1 ns) and watched by uv_poll wakes the loop; every request due by
 * then is written on its connection at once, so the pacing resolution is the
 * wake-up latency (microseconds), not a timer tick. Each latency is measured
 * from the request's intended send time, not from when it was written: a
 * request held back (its connection already has 60 in flight, or the load
 * generator woke late) waits on the clock, so a daemon that falls behind
 * shows it in the latencies (no coordinated omission). --pace-us P makes
 * the pacer wake at most once every P us (requests still timed from their
 * own due instants) when its own CPU matters more than its resolution.
 *
 * Open loop counts the requests that fell due within [warmup, warmup +
 * duration] ("offered"), waits up to 3 s after the window for their
 * answers, and reports how many came back ("requests", and "rps" over the
 * window) and how many did not ("unanswered": each is counted in the
 * percentiles with the time it had waited when the run gave up, a lower
 * bound). "send_lag_*" is how late the load generator itself wrote them.
 *
 * Closed loop: only responses that arrive within [warmup, warmup + duration]
 * count.
 * Latencies are kept (nanoseconds) and sorted at the end: exact
 * percentiles. Passages are read from each response's
 * "summary":{"passages":N (every one in a batch); a response that is an
 * error (HTTP status other than 200, or {"error": / ,"error": in a JSON
 * line) counts as an error. Prints one JSON object on stdout.
 */
#include <errno.h>
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#define MAX_INFLIGHT 60  /* under themed's default --max-pending (64) */
#define READ_CHUNK 65536

typedef struct req_wire {
  char *data; /* what goes on the wire for this request */
  size_t len;
} req_wire_t;

typedef struct conn conn_t;

typedef struct wr {
  uv_write_t w;
  conn_t *c;
  struct wr *next;
} wr_t;

struct conn {
  union {
    uv_stream_t s;
    uv_pipe_t pipe;
    uv_tcp_t tcp;
  } h;
  uv_connect_t connect;
  int id, connected, closed;
  /* times (ns) of requests sent and not answered, oldest first */
  uint64_t *ts;
  size_t ts_head, ts_n, ts_cap;
  /* open loop: due times of requests not yet sent */
  uint64_t *due;
  size_t due_head, due_n, due_cap;
  /* received bytes not yet parsed */
  char *rb;
  size_t rb_len, rb_cap;
  wr_t *free_wr;
};

static struct {
  uv_loop_t *loop;
  const char *unix_path, *tcp, *reqfile, *label;
  int http, conns, depth;
  double duration, warmup, rate;
  req_wire_t *reqs;
  size_t nreq, next_req;
  conn_t *c;
  uint64_t t0, t_meas, t_end;
  int measuring, stopping, finished, failed;
  /* measured */
  uint64_t done, passages, errors, sent_total, done_total;
  uint64_t *lat;
  size_t nlat, caplat;
  /* open loop: request k is due at t_sched + k * 1e9 / rate */
  uint64_t due_total, t_sched, pace_ns, last_wake;
  uint64_t offered, unanswered;
  uint64_t *lag; /* send lag (ns) of the offered requests */
  size_t nlag, caplag;
  int tfd;
  uv_poll_t pacer;
  uv_timer_t phase;
  char err[256];
} G;

static uint64_t now_ns(void) { return uv_hrtime(); }

static void die(const char *fmt, const char *a) {
  fprintf(stderr, "loadgen: ");
  fprintf(stderr, fmt, a);
  fputc('\n', stderr);
  exit(1);
}

static void *xrealloc(void *p, size_t n) {
  p = realloc(p, n);
  if (!p) die("%s", "out of memory");
  return p;
}

static void push_u64(uint64_t **a, size_t *head, size_t *n, size_t *cap, uint64_t v) {
  if (*n == *cap) {
    size_t nc = *cap ? 2 * *cap : 64;
    uint64_t *b = xrealloc(NULL, nc * sizeof *b);
    for (size_t i = 0; i < *n; i++) b[i] = (*a)[(*head + i) % *cap];
    free(*a);
    *a = b;
    *head = 0;
    *cap = nc;
  }
  (*a)[(*head + *n) % *cap] = v;
  (*n)++;
}

static uint64_t pop_u64(uint64_t *a, size_t *head, size_t *n, size_t cap) {
  uint64_t v = a[*head];
  *head = (*head + 1) % cap;
  (*n)--;
  return v;
}

/* ---- requests ---- */

static void load_requests(void) {
  FILE *f = fopen(G.reqfile, "r");
  if (!f) die("cannot open %s", G.reqfile);
  char *line = NULL;
  size_t cap = 0, rcap = 0;
  ssize_t n;
  while ((n = getline(&line, &cap, f)) > 0) {
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) n--;
    if (!n) continue;
    if (G.nreq == rcap) {
      rcap = rcap ? 2 * rcap : 1024;
      G.reqs = xrealloc(G.reqs, rcap * sizeof *G.reqs);
    }
    req_wire_t *r = &G.reqs[G.nreq++];
    if (G.http) {
      char head[256];
      int h = snprintf(head, sizeof head,
                       "POST /v1/classify HTTP/1.1\r\nHost: themed\r\n"
                       "Content-Type: application/json\r\nContent-Length: %zd\r\n\r\n",
                       n);
      r->len = (size_t)h + (size_t)n;
      r->data = xrealloc(NULL, r->len);
      memcpy(r->data, head, (size_t)h);
      memcpy(r->data + h, line, (size_t)n);
    } else {
      r->len = (size_t)n + 1;
      r->data = xrealloc(NULL, r->len);
      memcpy(r->data, line, (size_t)n);
      r->data[n] = '\n';
    }
  }
  free(line);
  fclose(f);
  if (!G.nreq) die("%s: no requests", G.reqfile);
}

/* ---- responses ---- */

static void push_lat(uint64_t **a, size_t *n, size_t *cap, uint64_t v) {
  if (*n == *cap) {
    *cap = *cap ? 2 * *cap : 65536;
    *a = xrealloc(*a, *cap * sizeof **a);
  }
  (*a)[(*n)++] = v;
}

/* Open loop: was a request due at t_due offered within the window? */
static int in_window(uint64_t t_due) {
  return G.measuring && t_due >= G.t_meas && t_due < G.t_end;
}

static void record(conn_t *c, int is_error, uint64_t passages) {
  uint64_t t = now_ns();
  uint64_t t_sent = pop_u64(c->ts, &c->ts_head, &c->ts_n, c->ts_cap);
  G.done_total++;
  if (G.rate > 0 ? !in_window(t_sent) : !G.measuring || t > G.t_end) return;
  G.done++;
  G.passages += passages;
  G.errors += is_error != 0;
  push_lat(&G.lat, &G.nlat, &G.caplat, t - t_sent);
}

/* Sum of every "summary":{"passages":N in [p, p+n). */
static uint64_t count_passages(const char *p, size_t n) {
  static const char key[] = "\"summary\":{\"passages\":";
  uint64_t sum = 0;
  const char *end = p + n;
  while (p < end) {
    const char *q = memmem(p, (size_t)(end - p), key, sizeof key - 1);
    if (!q) break;
    q += sizeof key - 1;
    uint64_t v = 0;
    while (q < end && *q >= '0' && *q <= '9') v = v * 10 + (uint64_t)(*q++ - '0');
    sum += v;
    p = q;
  }
  return sum;
}

static int json_is_error(const char *p, size_t n) {
  /* an error object has "error" as its first or second member */
  const char *q = memmem(p, n < 200 ? n : 200, "\"error\":{", 9);
  return q != NULL;
}

static void send_more(conn_t *c);
static int all_answered(void);
static void on_phase(uv_timer_t *t);

/* Parses whole responses out of c->rb; returns bytes consumed. */
static size_t parse(conn_t *c) {
  size_t off = 0;
  for (;;) {
    char *p = c->rb + off;
    size_t n = c->rb_len - off;
    if (!n || !c->ts_n) break;
    if (!G.http) {
      char *nl = memchr(p, '\n', n);
      if (!nl) break;
      size_t ll = (size_t)(nl - p);
      record(c, json_is_error(p, ll), count_passages(p, ll));
      off += ll + 1;
      continue;
    }
    /* HTTP/1.1 <status> ...\r\n headers \r\n\r\n body[Content-Length] */
    char *he = memmem(p, n, "\r\n\r\n", 4);
    if (!he) break;
    size_t hl = (size_t)(he - p) + 4, clen = 0;
    int status = n > 12 ? atoi(p + 9) : 0;
    for (char *h = memchr(p, '\n', hl); h && h < he; h = memchr(h + 1, '\n', (size_t)(he - h))) {
      if (!strncasecmp(h + 1, "content-length:", 15)) clen = (size_t)strtoul(h + 16, NULL, 10);
    }
    if (n < hl + clen) break;
    record(c, status != 200 || json_is_error(p + hl, clen), count_passages(p + hl, clen));
    off += hl + clen;
  }
  return off;
}

static void on_alloc(uv_handle_t *h, size_t sugg, uv_buf_t *buf) {
  conn_t *c = h->data;
  (void)sugg;
  if (c->rb_cap - c->rb_len < READ_CHUNK) {
    c->rb_cap = c->rb_len + 2 * READ_CHUNK;
    c->rb = xrealloc(c->rb, c->rb_cap);
  }
  buf->base = c->rb + c->rb_len;
  buf->len = c->rb_cap - c->rb_len;
}

static void on_close(uv_handle_t *h) {
  conn_t *c = h->data;
  c->closed = 1;
}

static void close_conn(conn_t *c) {
  if (!uv_is_closing((uv_handle_t *)&c->h.s)) uv_close((uv_handle_t *)&c->h.s, on_close);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  conn_t *c = s->data;
  (void)buf;
  if (nread < 0) {
    if (!G.stopping) {
      snprintf(G.err, sizeof G.err, "connection %d: %s", c->id, uv_strerror((int)nread));
      G.failed = 1;
    }
    close_conn(c);
    return;
  }
  c->rb_len += (size_t)nread;
  size_t used = parse(c);
  if (used) {
    memmove(c->rb, c->rb + used, c->rb_len - used);
    c->rb_len -= used;
  }
  send_more(c);
  if (G.stopping && !c->ts_n && !c->due_n) {
    close_conn(c);
    if (all_answered()) on_phase(&G.phase); /* nothing to wait for */
  }
}

static void on_write(uv_write_t *w, int status) {
  wr_t *r = (wr_t *)w;
  conn_t *c = r->c;
  r->next = c->free_wr;
  c->free_wr = r;
  if (status < 0 && !G.stopping) {
    snprintf(G.err, sizeof G.err, "connection %d: write: %s", c->id, uv_strerror(status));
    G.failed = 1;
    close_conn(c);
  }
}

/* Sends what this connection may send now, in one write. Open loop: its
 * due requests, also while stopping (those fell due within the window). */
static void send_more(conn_t *c) {
  if (!c->connected || uv_is_closing((uv_handle_t *)&c->h.s)) return;
  if (G.stopping && G.rate <= 0) return;
  uv_buf_t bufs[MAX_INFLIGHT];
  unsigned nb = 0;
  uint64_t t = now_ns();
  size_t limit = G.rate > 0 ? MAX_INFLIGHT : (size_t)G.depth;
  while (c->ts_n < limit && nb < MAX_INFLIGHT) {
    uint64_t t_due;
    if (G.rate > 0) {
      if (!c->due_n) break;
      t_due = pop_u64(c->due, &c->due_head, &c->due_n, c->due_cap);
      if (in_window(t_due)) push_lat(&G.lag, &G.nlag, &G.caplag, t > t_due ? t - t_due : 0);
    } else {
      t_due = t;
    }
    req_wire_t *q = &G.reqs[G.next_req++ % G.nreq];
    bufs[nb++] = uv_buf_init(q->data, (unsigned)q->len);
    push_u64(&c->ts, &c->ts_head, &c->ts_n, &c->ts_cap, t_due);
    G.sent_total++;
  }
  if (!nb) return;
  /* Straight into the socket when it takes it all (the common case): no
   * write request, no callback, and no epoll_ctl, which libuv 1.44 issues
   * after every completed uv_write (bench/NOTES.md, "What changed in the
   * daemon"); the generator's CPU is taken from the daemon's two cores. */
  int w = uv_try_write(&c->h.s, bufs, nb);
  if (w > 0) {
    size_t left = (size_t)w;
    unsigned k = 0;
    while (k < nb && left >= bufs[k].len) left -= bufs[k++].len;
    if (k == nb) return;
    bufs[k].base += left;
    bufs[k].len -= (unsigned)left;
    memmove(bufs, bufs + k, (nb - k) * sizeof *bufs);
    nb -= k;
  } else if (w != UV_EAGAIN && w != UV_ENOSYS) {
    snprintf(G.err, sizeof G.err, "connection %d: write: %s", c->id, uv_strerror(w));
    G.failed = 1;
    close_conn(c);
    return;
  }
  wr_t *r = c->free_wr;
  if (r) c->free_wr = r->next;
  else r = xrealloc(NULL, sizeof *r);
  r->c = c;
  int rc = uv_write(&r->w, &c->h.s, bufs, nb, on_write);
  if (rc) {
    snprintf(G.err, sizeof G.err, "connection %d: write: %s", c->id, uv_strerror(rc));
    G.failed = 1;
    r->next = c->free_wr;
    c->free_wr = r;
    close_conn(c);
  }
}

static void on_connect(uv_connect_t *cr, int status) {
  conn_t *c = cr->data;
  if (status < 0) {
    snprintf(G.err, sizeof G.err, "connect: %s", uv_strerror(status));
    G.failed = 1;
    close_conn(c);
    return;
  }
  c->connected = 1;
  uv_read_start(&c->h.s, on_alloc, on_read);
  send_more(c);
}

/* ---- phases and the open-loop clock ---- */

static uint64_t due_at(uint64_t k) {
  return G.t_sched + (uint64_t)((double)k * 1e9 / G.rate + 0.5);
}

/* Hands every request due by `upto` to its connection and writes them. */
static void release_due(uint64_t upto) {
  uint64_t first = G.due_total;
  while (due_at(G.due_total) <= upto) {
    uint64_t t_due = due_at(G.due_total);
    conn_t *c = &G.c[G.due_total % (uint64_t)G.conns];
    push_u64(&c->due, &c->due_head, &c->due_n, &c->due_cap, t_due);
    G.offered += in_window(t_due);
    G.due_total++;
  }
  uint64_t n = G.due_total - first;
  if (n >= (uint64_t)G.conns) {
    for (int i = 0; i < G.conns; i++) send_more(&G.c[i]);
  } else {
    for (uint64_t k = first; k < G.due_total; k++) send_more(&G.c[k % (uint64_t)G.conns]);
  }
}

static void arm_pacer(uint64_t at) {
  struct itimerspec its = {{0, 0}, {(time_t)(at / 1000000000u), (long)(at % 1000000000u)}};
  if (timerfd_settime(G.tfd, TFD_TIMER_ABSTIME, &its, NULL))
    die("timerfd_settime: %s", strerror(errno));
}

/* No read(2) of the expiration count: timerfd_settime below resets it, which
 * is what makes the descriptor unreadable again (one syscall per wake-up
 * fewer; the pacer's own CPU competes with the daemon for the same cores). */
static void on_pace(uv_poll_t *p, int status, int events) {
  (void)p, (void)status, (void)events;
  if (G.stopping) return;
  uint64_t now = now_ns();
  release_due(now);
  uint64_t next = due_at(G.due_total);
  if (G.pace_ns && next < now + G.pace_ns) next = now + G.pace_ns;
  arm_pacer(next);
}

static int all_answered(void) {
  for (int i = 0; i < G.conns; i++)
    if (G.c[i].ts_n || G.c[i].due_n) return 0;
  return 1;
}

static void on_phase(uv_timer_t *t) {
  if (G.finished) return;
  if (!G.measuring) {
    G.measuring = 1;
    G.t_meas = now_ns();
    G.t_end = G.t_meas + (uint64_t)(G.duration * 1e9);
    uv_timer_start(t, on_phase, (uint64_t)(G.duration * 1000), 0);
    return;
  }
  if (!G.stopping) {
    if (G.rate > 0) release_due(G.t_end - 1); /* the window's last ones */
    G.stopping = 1;
    if (G.rate > 0) uv_poll_stop(&G.pacer);
    for (int i = 0; i < G.conns; i++)
      if (!G.c[i].ts_n && !G.c[i].due_n) close_conn(&G.c[i]);
    if (!all_answered()) {
      uv_timer_start(t, on_phase, 3000, 0); /* stragglers: give them 3 s */
      return;
    }
  }
  /* Open loop: what is still unanswered counts with the wait so far. */
  uint64_t now = now_ns();
  for (int i = 0; G.rate > 0 && i < G.conns; i++) {
    conn_t *c = &G.c[i];
    while (c->ts_n) {
      uint64_t t_due = pop_u64(c->ts, &c->ts_head, &c->ts_n, c->ts_cap);
      if (in_window(t_due)) G.unanswered++, push_lat(&G.lat, &G.nlat, &G.caplat, now - t_due);
    }
    while (c->due_n) {
      uint64_t t_due = pop_u64(c->due, &c->due_head, &c->due_n, c->due_cap);
      if (in_window(t_due)) G.unanswered++, push_lat(&G.lat, &G.nlat, &G.caplat, now - t_due);
    }
  }
  G.finished = 1;
  for (int i = 0; i < G.conns; i++) close_conn(&G.c[i]);
  if (G.rate > 0) uv_close((uv_handle_t *)&G.pacer, NULL);
  uv_close((uv_handle_t *)t, NULL);
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static double pct_of(const uint64_t *a, size_t n, double p) {
  if (!n) return 0;
  size_t i = (size_t)(p * (double)(n - 1) + 0.5);
  return (double)a[i] / 1e3;
}

static double pct(double p) { return pct_of(G.lat, G.nlat, p); }

int main(int argc, char **argv) {
  static const struct option lo[] = {
      {"unix", required_argument, 0, 'u'},     {"tcp", required_argument, 0, 't'},
      {"requests", required_argument, 0, 'r'}, {"proto", required_argument, 0, 'p'},
      {"conns", required_argument, 0, 'c'},    {"depth", required_argument, 0, 'd'},
      {"duration", required_argument, 0, 'D'}, {"warmup", required_argument, 0, 'W'},
      {"rate", required_argument, 0, 'R'},     {"label", required_argument, 0, 'l'},
      {"pace-us", required_argument, 0, 'P'},  {"help", no_argument, 0, 'h'},
      {0, 0, 0, 0}};
  G.conns = 1;
  G.depth = 0;
  G.duration = 5;
  G.warmup = 1;
  G.label = "";
  int ch;
  while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
    switch (ch) {
    case 'u': G.unix_path = optarg; break;
    case 't': G.tcp = optarg; break;
    case 'r': G.reqfile = optarg; break;
    case 'p':
      if (!strcmp(optarg, "http")) G.http = 1;
      else if (strcmp(optarg, "jsonl")) die("--proto: jsonl or http, not %s", optarg);
      break;
    case 'c': G.conns = atoi(optarg); break;
    case 'd': G.depth = atoi(optarg); break;
    case 'D': G.duration = atof(optarg); break;
    case 'W': G.warmup = atof(optarg); break;
    case 'R': G.rate = atof(optarg); break;
    case 'l': G.label = optarg; break;
    case 'P': G.pace_ns = (uint64_t)(atof(optarg) * 1e3); break;
    default:
      fprintf(stderr, "usage: loadgen (--unix PATH | --tcp HOST:PORT) --requests FILE "
                      "[--proto jsonl|http] [--conns N] [--depth D] [--duration S] "
                      "[--warmup S] [--rate R [--pace-us P]] [--label TEXT]\n");
      return ch == 'h' ? 0 : 2;
    }
  }
  if ((!G.unix_path == !G.tcp) || !G.reqfile) die("%s", "give --unix or --tcp, and --requests");
  if (G.conns < 1 || G.conns > 4096) die("%s", "--conns: 1..4096");
  if (!G.depth) G.depth = G.http ? 1 : 8;
  if (G.depth < 1 || G.depth > MAX_INFLIGHT) die("%s", "--depth: 1..60");
  load_requests();
  G.loop = uv_default_loop();
  G.c = calloc((size_t)G.conns, sizeof *G.c);
  struct sockaddr_storage sa;
  if (G.tcp) {
    char host[256];
    const char *colon = strrchr(G.tcp, ':');
    if (!colon || (size_t)(colon - G.tcp) >= sizeof host) die("--tcp %s: expected HOST:PORT", G.tcp);
    memcpy(host, G.tcp, (size_t)(colon - G.tcp));
    host[colon - G.tcp] = '\0';
    if (uv_ip4_addr(host, atoi(colon + 1), (struct sockaddr_in *)&sa) &&
        uv_ip6_addr(host, atoi(colon + 1), (struct sockaddr_in6 *)&sa))
      die("--tcp %s: not an IP address", G.tcp);
  }
  struct rusage ru0, ru1;
  getrusage(RUSAGE_SELF, &ru0);
  G.t0 = now_ns();
  for (int i = 0; i < G.conns; i++) {
    conn_t *c = &G.c[i];
    c->id = i;
    c->connect.data = c;
    if (G.tcp) {
      uv_tcp_init(G.loop, &c->h.tcp);
      uv_tcp_nodelay(&c->h.tcp, 1);
      c->h.s.data = c;
      uv_tcp_connect(&c->connect, &c->h.tcp, (struct sockaddr *)&sa, on_connect);
    } else {
      uv_pipe_init(G.loop, &c->h.pipe, 0);
      c->h.s.data = c;
      uv_pipe_connect(&c->connect, &c->h.pipe, G.unix_path, on_connect);
    }
  }
  uv_timer_init(G.loop, &G.phase);
  if (G.rate > 0) {
    /* the default 50 us slack would be most of a request's service time */
    prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
    G.tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (G.tfd < 0) die("timerfd_create: %s", strerror(errno));
    uv_poll_init(G.loop, &G.pacer, G.tfd);
    uv_poll_start(&G.pacer, UV_READABLE, on_pace);
    G.t_sched = now_ns();
    arm_pacer(G.t_sched);
  }
  uv_timer_start(&G.phase, on_phase, (uint64_t)(G.warmup * 1000), 0);
  uv_run(G.loop, UV_RUN_DEFAULT);
  getrusage(RUSAGE_SELF, &ru1);
  double meas = G.t_end > G.t_meas ? (double)(G.t_end - G.t_meas) / 1e9 : 0;
  qsort(G.lat, G.nlat, sizeof *G.lat, cmp_u64);
  double cpu = (double)(ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec) +
               (double)(ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec) / 1e6 +
               (double)(ru1.ru_stime.tv_sec - ru0.ru_stime.tv_sec) +
               (double)(ru1.ru_stime.tv_usec - ru0.ru_stime.tv_usec) / 1e6;
  qsort(G.lag, G.nlag, sizeof *G.lag, cmp_u64);
  printf("{\"label\":\"%s\",\"transport\":\"%s\",\"proto\":\"%s\",\"conns\":%d,\"depth\":%d,"
         "\"rate\":%.1f,\"seconds\":%.3f,\"requests\":%llu,\"passages\":%llu,\"errors\":%llu,"
         "\"rps\":%.1f,\"pps\":%.1f,\"p50_us\":%.1f,\"p90_us\":%.1f,\"p99_us\":%.1f,"
         "\"p999_us\":%.1f,\"max_us\":%.1f,\"loadgen_cpu_s\":%.3f,",
         G.label, G.tcp ? "tcp" : "unix", G.http ? "http" : "jsonl", G.conns, G.depth, G.rate,
         meas, (unsigned long long)G.done, (unsigned long long)G.passages,
         (unsigned long long)G.errors, meas > 0 ? (double)G.done / meas : 0,
         meas > 0 ? (double)G.passages / meas : 0, pct(0.5), pct(0.9), pct(0.99), pct(0.999),
         G.nlat ? (double)G.lat[G.nlat - 1] / 1e3 : 0, cpu);
  if (G.rate > 0)
    printf("\"pacing\":\"timerfd\",\"pace_us\":%.1f,\"offered\":%llu,\"offered_rps\":%.1f,"
           "\"unanswered\":%llu,\"send_lag_p50_us\":%.1f,\"send_lag_p99_us\":%.1f,"
           "\"send_lag_max_us\":%.1f,",
           (double)G.pace_ns / 1e3, (unsigned long long)G.offered,
           meas > 0 ? (double)G.offered / meas : 0, (unsigned long long)G.unanswered,
           pct_of(G.lag, G.nlag, 0.5), pct_of(G.lag, G.nlag, 0.99),
           G.nlag ? (double)G.lag[G.nlag - 1] / 1e3 : 0);
  printf("\"failed\":%s%s%s%s}\n", G.failed ? "true" : "false", G.failed ? ",\"error\":\"" : "",
         G.failed ? G.err : "", G.failed ? "\"" : "");
  return G.failed || G.done == 0 ? 1 : 0;
}
