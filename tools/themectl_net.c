/*
 * themectl client plumbing: endpoints, connect, the pipelined request loop
 * and the non-blocking line reader. See themectl_net.h for the contracts.
 */
#include "themectl_net.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* A response line longer than this is a broken peer, not a big result. */
#define TD_MAX_RESPONSE_LINE ((size_t)256 << 20)
/* How long the single reconnect keeps trying (a restarting daemon needs a
 * moment before its socket exists again). */
#define TD_RECONNECT_WINDOW_MS 10000
#define TD_TICK_MS 200

static int64_t now_ms(void) { return (int64_t)(td_now_ns() / 1000000u); }

/* ---------------------------------------------------------------- endpoints */

static int set_unix(td_endpoint_t *ep, const char *path, td_err_t *err) {
  if (!*path) return td_err_set(err, TD_EINVAL, "empty socket path");
  if (strlen(path) >= sizeof ep->path)
    return td_err_set(err, TD_EINVAL, "socket path too long (max %zu bytes): %s",
                      sizeof ep->path - 1, path);
  memset(ep, 0, sizeof *ep);
  ep->is_unix = 1;
  snprintf(ep->path, sizeof ep->path, "%s", path);
  snprintf(ep->name, sizeof ep->name, "unix:%s", path);
  return 0;
}

int td_endpoint_tcp(td_endpoint_t *ep, const char *spec, td_err_t *err) {
  if (!strncmp(spec, "unix:", 5)) return set_unix(ep, spec + 5, err);
  if (!strncmp(spec, "tcp:", 4)) spec += 4;
  const char *host = spec, *colon;
  size_t hlen;
  int v6 = 0;
  if (*spec == '[') {
    const char *close = strchr(spec, ']');
    if (!close || close[1] != ':')
      return td_err_set(err, TD_EINVAL, "bad address '%s' (expected [ADDR]:PORT)", spec);
    host = spec + 1;
    hlen = (size_t)(close - host);
    colon = close + 1;
    v6 = 1;
  } else {
    colon = strrchr(spec, ':');
    if (!colon || strchr(spec, ':') != colon)
      return td_err_set(err, TD_EINVAL,
                        "bad address '%s' (expected HOST:PORT, or [ADDR]:PORT for IPv6)", spec);
    hlen = (size_t)(colon - spec);
  }
  const char *port = colon + 1;
  if (!hlen || !*port)
    return td_err_set(err, TD_EINVAL, "bad address '%s' (expected HOST:PORT)", spec);
  memset(ep, 0, sizeof *ep);
  if (hlen >= sizeof ep->host || strlen(port) >= sizeof ep->port)
    return td_err_set(err, TD_EINVAL, "address too long: %s", spec);
  memcpy(ep->host, host, hlen);
  snprintf(ep->port, sizeof ep->port, "%s", port);
  snprintf(ep->name, sizeof ep->name, v6 ? "tcp:[%s]:%s" : "tcp:%s:%s", ep->host, ep->port);
  return 0;
}

int td_endpoint_unix(td_endpoint_t *ep, const char *spec, td_err_t *err) {
  if (!strncmp(spec, "tcp:", 4)) return td_endpoint_tcp(ep, spec, err);
  if (!strncmp(spec, "unix:", 5)) spec += 5;
  return set_unix(ep, spec, err);
}

int td_endpoint_default(td_endpoint_t *ep, td_err_t *err) {
  const char *env = getenv("THEMED_SOCKET");
  if (env && *env) return td_endpoint_unix(ep, env, err);
  /* `make run` puts the socket here: the developer's daemon wins over the
   * system one when themectl runs from the checkout. */
  if (access("run/themed.sock", F_OK) == 0) return set_unix(ep, "run/themed.sock", err);
  return set_unix(ep, "/run/themed/themed.sock", err);
}

/* ------------------------------------------------------------------ connect */

static int connect_unix(const td_endpoint_t *ep, int timeout_ms, td_err_t *err) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return td_err_set(err, TD_EIO, "cannot connect to %s: %s", ep->name, strerror(errno));
  struct sockaddr_un sa;
  memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  memcpy(sa.sun_path, ep->path, strlen(ep->path));
  /* A unix connect completes at once unless the listener's backlog is full;
   * then a blocking connect waits, for at most SO_SNDTIMEO (a non-blocking
   * one would fail with EAGAIN and could not be polled for). */
  if (timeout_ms > 0) {
    struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  }
  int rc;
  do rc = connect(fd, (struct sockaddr *)&sa, sizeof sa);
  while (rc < 0 && errno == EINTR);
  if (rc < 0) {
    int e = errno;
    close(fd);
    if (e == EAGAIN || e == EWOULDBLOCK)
      return td_err_set(err, TD_EIO, "cannot connect to %s: timed out (the daemon accepts no connections)",
                        ep->name);
    return td_err_set(err, TD_EIO, "cannot connect to %s: %s", ep->name, strerror(e));
  }
  struct timeval zero = {0, 0};
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &zero, sizeof zero);
  if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0) {
    int e = errno;
    close(fd);
    return td_err_set(err, TD_EIO, "cannot connect to %s: %s", ep->name, strerror(e));
  }
  return fd;
}

static int connect_tcp(const td_endpoint_t *ep, int timeout_ms, td_err_t *err) {
  struct addrinfo hints, *res = NULL;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  int gai = getaddrinfo(ep->host, ep->port, &hints, &res);
  if (gai)
    return td_err_set(err, TD_EIO, "cannot connect to %s: %s", ep->name, gai_strerror(gai));
  int64_t deadline = timeout_ms > 0 ? now_ms() + timeout_ms : 0;
  int last = ECONNREFUSED, fd = -1;
  for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
    fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) { last = errno; continue; }
    int rc = connect(fd, ai->ai_addr, ai->ai_addrlen);
    if (rc < 0 && errno == EINPROGRESS) {
      struct pollfd p = {.fd = fd, .events = POLLOUT};
      for (;;) {
        int wait = -1;
        if (deadline) {
          int64_t left = deadline - now_ms();
          wait = left > 0 ? (int)left : 0;
        }
        rc = poll(&p, 1, wait);
        if (rc < 0 && errno == EINTR) continue;
        break;
      }
      if (rc == 0) { errno = ETIMEDOUT; rc = -1; }
      else if (rc > 0) {
        int soerr = 0;
        socklen_t sl = sizeof soerr;
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
        if (soerr) { errno = soerr; rc = -1; } else rc = 0;
      }
    }
    if (rc == 0) break;
    last = errno;
    close(fd);
    fd = -1;
  }
  freeaddrinfo(res);
  if (fd < 0) return td_err_set(err, TD_EIO, "cannot connect to %s: %s", ep->name, strerror(last));
  /* Requests are small writes answered one by one: do not wait for ACKs. */
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

int td_client_connect(const td_endpoint_t *ep, int timeout_ms, td_err_t *err) {
  return ep->is_unix ? connect_unix(ep, timeout_ms, err) : connect_tcp(ep, timeout_ms, err);
}

/* ------------------------------------------------------------------- json */

char *td_json_id_key(const json_t *obj) {
  json_t *id = json_is_object(obj) ? json_object_get(obj, "id") : NULL;
  if (!id) return NULL;
  return json_dumps(id, JSON_ENCODE_ANY | JSON_COMPACT);
}

/* Errors that describe the connection, not the request: the request was not
 * processed and is resent on the next connection. */
static const char *conn_level_error(json_t *resp) {
  json_t *e = json_is_object(resp) ? json_object_get(resp, "error") : NULL;
  const char *code = json_string_value(json_object_get(e, "code"));
  if (!code) return NULL;
  if (!strcmp(code, "shutting_down") || !strcmp(code, "too_many_connections") ||
      !strcmp(code, "idle_timeout"))
    return code;
  return NULL;
}

static const char *error_message(json_t *resp) {
  json_t *e = json_is_object(resp) ? json_object_get(resp, "error") : NULL;
  const char *m = json_string_value(json_object_get(e, "message"));
  if (!m) m = json_string_value(json_object_get(e, "code"));
  return m ? m : "error";
}

/* --------------------------------------------------------------- the loop */

typedef struct pipe_state {
  const td_pipe_cfg_t *cfg;
  const td_pipe_ops_t *ops;
  void *ctx;
  td_pipe_stats_t *st;
  /* Unanswered requests, oldest first, in a ring. The first `si` of them have
   * been written completely, the next one `so` bytes of it. */
  td_req_t *q;
  size_t cap, head, count;
  size_t si, so;
  uint64_t seq;
  int fd;
  td_buf_t rb;              /* bytes read, not yet a full line */
  size_t rscan;             /* bytes of rb already searched for '\n' */
  int reconnected;          /* the one reconnect has been used and nothing came back since */
  int64_t waiting_since;    /* when we last heard from the daemon with requests outstanding */
  char conn_note[256];      /* a connection-level error line the daemon sent */
} pipe_state_t;

static td_req_t *qat(pipe_state_t *p, size_t i) { return &p->q[(p->head + i) % p->cap]; }

static void req_free(td_req_t *r) {
  TD_FREE(r->data);
  TD_FREE(r->key);
  TD_FREE(r->local);
}

static int q_push(pipe_state_t *p, td_req_t *r) {
  if (p->count == p->cap) {
    size_t ncap = p->cap ? p->cap * 2 : 64;
    td_req_t *nq = malloc(ncap * sizeof *nq);
    if (!nq) return TD_ENOMEM;
    for (size_t i = 0; i < p->count; i++) nq[i] = *qat(p, i);
    free(p->q);
    p->q = nq;
    p->cap = ncap;
    p->head = 0;
  }
  r->seq = p->seq++;
  p->q[(p->head + p->count) % p->cap] = *r;
  p->count++;
  return 0;
}

static void q_pop(pipe_state_t *p) {
  req_free(qat(p, 0));
  p->head = (p->head + 1) % p->cap;
  p->count--;
  if (p->si > 0) p->si--;
  else p->so = 0;  /* answered while partly written: the peer gave up on it */
}

/* Requests that need the daemon and have not been answered. */
static size_t q_remote(pipe_state_t *p) {
  size_t n = 0;
  for (size_t i = 0; i < p->count; i++) n += qat(p, i)->local == NULL;
  return n;
}

static int q_unsent(pipe_state_t *p) {
  for (size_t i = p->si; i < p->count; i++)
    if (!qat(p, i)->local) return 1;
  return 0;
}

/* Delivers locally made responses sitting at the head. */
static int deliver_local(pipe_state_t *p, td_err_t *err) {
  while (p->count && qat(p, 0)->local) {
    td_req_t *r = qat(p, 0);
    json_t *resp = json_loads(r->local, 0, NULL);
    int rc = p->ops->done(p->ctx, r, r->local, strlen(r->local), resp, err);
    json_decref(resp);
    if (rc) return rc;
    p->st->answered++;
    q_pop(p);
  }
  return 0;
}

static void conn_close(pipe_state_t *p) {
  if (p->fd >= 0) close(p->fd);
  p->fd = -1;
  td_buf_reset(&p->rb);
  p->rscan = 0;
  p->si = p->so = 0;  /* everything unanswered goes again on the next connection */
}

static int conn_open(pipe_state_t *p, int retry_ms, td_err_t *err) {
  int64_t until = now_ms() + retry_ms;
  for (;;) {
    int fd = td_client_connect(p->cfg->ep, p->cfg->timeout_ms, err);
    if (fd >= 0) {
      p->fd = fd;
      p->conn_note[0] = '\0';
      p->waiting_since = now_ms();
      return 0;
    }
    if (now_ms() >= until) return fd;
    struct timespec ts = {0, 200 * 1000000L};
    nanosleep(&ts, NULL);
  }
}

/* The connection is gone with requests unanswered: reconnect once, or fail. */
static int conn_lost(pipe_state_t *p, const char *why, td_err_t *err) {
  size_t pending = q_remote(p);
  conn_close(p);
  char reason[400];
  if (p->conn_note[0]) snprintf(reason, sizeof reason, "%s (%s)", why, p->conn_note);
  else snprintf(reason, sizeof reason, "%s", why);
  if (!pending) return 0;  /* idle close: reconnect when there is work */
  if (!p->cfg->reconnect || p->reconnected)
    return td_err_set(err, TD_EIO, "connection to %s lost: %s; %zu request%s unanswered",
                      p->cfg->ep->name, reason, pending, pending == 1 ? "" : "s");
  if (!p->cfg->quiet)
    fprintf(stderr, "themectl: connection to %s lost: %s; reconnecting to resend %zu unanswered request%s\n",
            p->cfg->ep->name, reason, pending, pending == 1 ? "" : "s");
  int rc = conn_open(p, TD_RECONNECT_WINDOW_MS, err);
  if (rc < 0) return td_err_prefix(err, "reconnect after connection loss failed");
  p->reconnected = 1;
  p->st->reconnects++;
  p->st->resent += pending;
  return 0;
}

/* Whether any written request is still unanswered. */
static int outstanding(pipe_state_t *p) {
  for (size_t i = 0; i < p->si && i < p->count; i++)
    if (!qat(p, i)->local) return 1;
  return p->so > 0;
}

/* Writes as much of the unsent requests as the socket takes. 1 = the peer
 * closed its side (EPIPE and friends), 0 = fine, < 0 fatal. */
static int pump_write(pipe_state_t *p, td_err_t *err) {
  while (p->si < p->count) {
    td_req_t *r = qat(p, p->si);
    if (r->local) { p->si++; p->so = 0; continue; }
    ssize_t n = send(p->fd, r->data + p->so, r->len - p->so, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
      if (errno == EPIPE || errno == ECONNRESET) return 1;
      return td_err_set(err, TD_EIO, "write to %s: %s", p->cfg->ep->name, strerror(errno));
    }
    if (p->so == 0) {
      p->st->sent++;
      /* The response clock starts when the daemon first has work from us. */
      if (!outstanding(p)) p->waiting_since = now_ms();
    }
    p->so += (size_t)n;
    if (p->so == r->len) { p->si++; p->so = 0; }
  }
  return 0;
}

/* One complete line from the daemon. 0 = handled, 2 = the daemon reported a
 * connection-level error (drop the connection), < 0 fatal. */
static int on_line(pipe_state_t *p, const char *line, size_t n, td_err_t *err) {
  json_t *resp = json_loadb(line, n, 0, NULL);
  if (!resp)
    return td_err_set(err, TD_EFORMAT, "%s sent a line that is not JSON: %.*s", p->cfg->ep->name,
                      (int)td_utf8_prefix(line, 80), line);
  int rc = 0;
  const char *cl = conn_level_error(resp);
  if (cl || !outstanding(p)) {
    if (!cl && !json_object_get(resp, "error")) {
      rc = td_err_set(err, TD_EFORMAT, "%s sent a response to no request: %.*s",
                      p->cfg->ep->name, (int)td_utf8_prefix(line, 80), line);
    } else {
      snprintf(p->conn_note, sizeof p->conn_note, "%s", error_message(resp));
      rc = 2;
    }
    json_decref(resp);
    return rc;
  }
  td_req_t *r = qat(p, 0);
  char *rk = td_json_id_key(resp);
  if (rk && (!r->key || strcmp(rk, r->key))) {
    rc = td_err_set(err, TD_EFORMAT, "%s answered id %s where id %s was expected (responses out of order)",
                    p->cfg->ep->name, rk, r->key ? r->key : "(none)");
    free(rk);
    json_decref(resp);
    return rc;
  }
  free(rk);
  rc = p->ops->done(p->ctx, r, line, n, resp, err);
  json_decref(resp);
  if (rc) return rc;
  p->st->answered++;
  p->reconnected = 0;  /* progress: a later loss may reconnect once again */
  q_pop(p);
  return deliver_local(p, err);
}

/* Reads what the socket has and hands over complete lines. 0 = fine (would
 * block), 1 = end of stream or reset, 2 = connection-level error line, < 0 fatal. */
static int pump_read(pipe_state_t *p, td_err_t *err) {
  for (;;) {
    if (td_buf_reserve(&p->rb, 65536)) return td_err_set(err, TD_ENOMEM, "out of memory");
    ssize_t n = read(p->fd, p->rb.data + p->rb.len, 65536);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
      if (errno == ECONNRESET || errno == EPIPE) return 1;
      return td_err_set(err, TD_EIO, "read from %s: %s", p->cfg->ep->name, strerror(errno));
    }
    if (n == 0) return 1;
    p->rb.len += (size_t)n;
    p->waiting_since = now_ms();
    size_t off = 0;
    char *nl;
    while ((nl = memchr(p->rb.data + p->rscan, '\n', p->rb.len - p->rscan))) {
      size_t len = (size_t)(nl - (p->rb.data + off));
      *nl = '\0';
      if (len && nl[-1] == '\r') nl[-1] = '\0', len--;
      int rc = on_line(p, p->rb.data + off, len, err);
      if (rc) return rc;  /* rb is untouched by on_line; a drop resets it */
      off = (size_t)(nl - p->rb.data) + 1;
      p->rscan = off;
    }
    if (off) {
      memmove(p->rb.data, p->rb.data + off, p->rb.len - off);
      p->rb.len -= off;
    }
    p->rscan = p->rb.len;
    if (p->rb.len > TD_MAX_RESPONSE_LINE)
      return td_err_set(err, TD_ELIMIT, "%s sent a line longer than %zu bytes", p->cfg->ep->name,
                        TD_MAX_RESPONSE_LINE);
  }
}

int td_pipe_run(const td_pipe_cfg_t *cfg, const td_pipe_ops_t *ops, void *ctx,
                td_pipe_stats_t *stats, td_err_t *err) {
  td_pipe_stats_t scratch;
  pipe_state_t p;
  memset(&p, 0, sizeof p);
  p.cfg = cfg;
  p.ops = ops;
  p.ctx = ctx;
  p.st = stats ? stats : &scratch;
  memset(p.st, 0, sizeof *p.st);
  p.fd = -1;
  td_buf_init(&p.rb);
  size_t inflight = cfg->inflight > 0 ? (size_t)cfg->inflight : 1;
  int input_done = 0, write_dead = 0;
  int64_t last_tick = now_ms();

  /* Connect before reading any input: an unreachable daemon is reported at
   * once, not after a slow producer has filled the first batch. */
  int rc = conn_open(&p, 0, err);
  while (rc == 0) {
    int wait_fd = -1;
    while (!input_done && p.count < inflight) {
      td_req_t r;
      memset(&r, 0, sizeof r);
      int n = ops->next(ctx, &r, &wait_fd, err);
      if (n == 1) {
        if (q_push(&p, &r)) {
          req_free(&r);
          rc = td_err_set(err, TD_ENOMEM, "out of memory");
          break;
        }
        if ((rc = deliver_local(&p, err))) break;
        continue;
      }
      if (n == 0) break;
      /* -1 is also TD_ENOMEM: the end of input only when no error was set. */
      if (n == -1 && !err->code) { input_done = 1; break; }
      rc = n;
      break;
    }
    if (rc) break;
    if (input_done && p.count == 0) break;

    if (p.fd < 0 && q_unsent(&p)) {
      /* The daemon closed an idle connection (its idle timeout): open another. */
      if ((rc = conn_open(&p, cfg->reconnect ? TD_RECONNECT_WINDOW_MS : 0, err))) break;
      write_dead = 0;
    }
    if (p.fd >= 0 && !write_dead && q_unsent(&p)) {
      int w = pump_write(&p, err);
      if (w < 0) { rc = w; break; }
      /* The daemon closed its side: read what it answered before it did. */
      if (w == 1) write_dead = 1;
    }

    struct pollfd pf[2];
    int np = 0, sock_i = -1;
    if (p.fd >= 0) {
      pf[np].fd = p.fd;
      pf[np].events = POLLIN | (!write_dead && q_unsent(&p) ? POLLOUT : 0);
      pf[np].revents = 0;
      sock_i = np++;
    }
    if (wait_fd >= 0 && !input_done && p.count < inflight) {
      pf[np].fd = wait_fd;
      pf[np].events = POLLIN;
      pf[np].revents = 0;
      np++;
    }
    if (np == 0) {
      rc = td_err_set(err, TD_ESTATE, "internal error: input stalled with nothing to wait for");
      break;
    }
    int64_t now = now_ms();
    int timeout = ops->tick ? TD_TICK_MS : -1;
    int waiting = p.fd >= 0 && outstanding(&p);
    if (waiting && cfg->timeout_ms > 0) {
      int64_t left = p.waiting_since + cfg->timeout_ms - now;
      if (left < 0) left = 0;
      if (timeout < 0 || left < timeout) timeout = (int)left;
    }
    int n = poll(pf, (nfds_t)np, timeout);
    if (n < 0 && errno != EINTR) {
      rc = td_err_set(err, TD_EIO, "poll: %s", strerror(errno));
      break;
    }
    now = now_ms();
    if (ops->tick && now - last_tick >= TD_TICK_MS) {
      ops->tick(ctx);
      last_tick = now;
    }
    if (n > 0 && sock_i >= 0 && (pf[sock_i].revents & (POLLIN | POLLHUP | POLLERR))) {
      int r = pump_read(&p, err);
      if (r < 0) { rc = r; break; }
      if (r == 1 || r == 2) {
        rc = conn_lost(&p, r == 1 ? "closed by the daemon" : "ended by the daemon", err);
        write_dead = 0;
        continue;
      }
    }
    if (p.fd >= 0 && cfg->timeout_ms > 0 && outstanding(&p) &&
        now_ms() - p.waiting_since >= cfg->timeout_ms) {
      size_t pending = q_remote(&p);
      rc = td_err_set(err, TD_EIO, "no response from %s within %g s (%zu request%s unanswered)",
                      cfg->ep->name, cfg->timeout_ms / 1000.0, pending, pending == 1 ? "" : "s");
      break;
    }
  }
  conn_close(&p);
  while (p.count) q_pop(&p);
  free(p.q);
  td_buf_free(&p.rb);
  return rc;
}

/* ------------------------------------------------------- single request */

typedef struct call_ctx {
  const char *req;
  int given;
  char *line;
  json_t *resp;
} call_ctx_t;

static int call_next(void *ctx, td_req_t *r, int *wait_fd, td_err_t *err) {
  call_ctx_t *c = ctx;
  (void)wait_fd;
  if (c->given) return -1;
  size_t n = strlen(c->req);
  r->data = malloc(n + 2);
  if (!r->data) return td_err_set(err, TD_ENOMEM, "out of memory");
  memcpy(r->data, c->req, n);
  r->data[n] = '\n';
  r->data[n + 1] = '\0';
  r->len = n + 1;
  json_t *o = json_loads(c->req, 0, NULL);
  r->key = td_json_id_key(o);
  json_decref(o);
  c->given = 1;
  return 1;
}

static int call_done(void *ctx, const td_req_t *r, const char *line, size_t len, json_t *resp,
                     td_err_t *err) {
  call_ctx_t *c = ctx;
  (void)r;
  c->line = strndup(line, len);
  if (!c->line) return td_err_set(err, TD_ENOMEM, "out of memory");
  c->resp = json_incref(resp);
  return 0;
}

int td_client_call(const td_endpoint_t *ep, int timeout_ms, const char *reqline,
                   char **line, json_t **resp, td_err_t *err) {
  call_ctx_t c = {.req = reqline};
  td_pipe_cfg_t cfg = {.ep = ep, .inflight = 1, .timeout_ms = timeout_ms, .reconnect = 0};
  td_pipe_ops_t ops = {.next = call_next, .done = call_done};
  int rc = td_pipe_run(&cfg, &ops, &c, NULL, err);
  if (rc) {
    free(c.line);
    json_decref(c.resp);
    return rc;
  }
  *line = c.line;
  *resp = c.resp;
  return 0;
}

/* ------------------------------------------------------------ line reader */

void td_lines_init(td_lines_t *l, int fd) {
  memset(l, 0, sizeof *l);
  l->fd = fd;
  l->max_line = (size_t)64 << 20;
  struct stat st;
  l->regular = fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
}

void td_lines_free(td_lines_t *l) {
  TD_FREE(l->buf);
  l->len = l->off = l->cap = l->scanned = 0;
}

int td_lines_next(td_lines_t *l, char **line, size_t *n, td_err_t *err) {
  for (;;) {
    char *start = l->buf + l->off;
    size_t avail = l->len - l->off;
    char *nl = avail > l->scanned ? memchr(start + l->scanned, '\n', avail - l->scanned) : NULL;
    if (nl || (l->eof && avail)) {
      size_t len = nl ? (size_t)(nl - start) : avail;
      l->off += nl ? len + 1 : len;
      l->consumed += nl ? len + 1 : len;
      l->scanned = 0;
      l->lineno++;
      if (len && start[len - 1] == '\r') len--;
      start[len] = '\0';  /* the '\n', the '\r', or the spare byte kept below */
      *line = start;
      *n = len;
      return 1;
    }
    if (l->eof) return -1;
    l->scanned = avail;
    if (avail > l->max_line)
      return td_err_set(err, TD_ELIMIT, "line %llu is longer than %zu bytes",
                        (unsigned long long)l->lineno + 1, l->max_line);
    if (!l->regular) {
      struct pollfd pf = {.fd = l->fd, .events = POLLIN};
      int r = poll(&pf, 1, 0);
      if (r == 0) return 0;
      if (r < 0) return errno == EINTR ? 0 : td_err_set(err, TD_EIO, "poll: %s", strerror(errno));
    }
    if (l->off) {
      memmove(l->buf, l->buf + l->off, avail);
      l->len = avail;
      l->off = 0;
    }
    /* Always one spare byte past the data, for the NUL of an unterminated last line. */
    if (l->cap - l->len < 65536 + 1) {
      size_t ncap = l->cap ? l->cap * 2 : 131072;
      while (ncap - l->len < 65536 + 1) ncap *= 2;
      char *nb = realloc(l->buf, ncap);
      if (!nb) return td_err_set(err, TD_ENOMEM, "out of memory");
      l->buf = nb;
      l->cap = ncap;
    }
    ssize_t r = read(l->fd, l->buf + l->len, l->cap - l->len - 1);
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
      return td_err_set(err, TD_EIO, "read: %s", strerror(errno));
    }
    if (r == 0) l->eof = 1;
    l->len += (size_t)r;
  }
}

/* ------------------------------------------------------ inputs */

void td_inputs_init(td_inputs_t *in, const char *const *names, size_t n) {
  memset(in, 0, sizeof *in);
  in->names = names;
  in->n = n;
  in->fd = -1;
}

static void inputs_close(td_inputs_t *in) {
  if (in->fd < 0) return;
  in->consumed += in->lines.consumed;
  td_lines_free(&in->lines);
  if (in->fd > 0) close(in->fd);
  in->fd = -1;
}

void td_inputs_free(td_inputs_t *in) { inputs_close(in); }

int td_inputs_next(td_inputs_t *in, char **line, size_t *len, int *wait_fd, td_err_t *err) {
  for (;;) {
    if (in->fd < 0) {
      if (in->next >= (in->n ? in->n : 1)) return -1;
      in->name = in->n ? in->names[in->next] : "-";
      in->next++;
      if (!strcmp(in->name, "-")) in->fd = 0, in->name = "stdin";
      else if ((in->fd = open(in->name, O_RDONLY | O_CLOEXEC)) < 0)
        return td_err_set(err, TD_EIO, "%s: %s", in->name, strerror(errno));
      td_lines_init(&in->lines, in->fd);
    }
    int rc = td_lines_next(&in->lines, line, len, err);
    if (rc == 0) {
      *wait_fd = in->fd;
      return 0;
    }
    if (rc < -1 || err->code) return td_err_prefix(err, "%s", in->name);
    if (rc == -1) {
      inputs_close(in);
      continue;
    }
    size_t k = 0;
    while (k < *len && ((*line)[k] == ' ' || (*line)[k] == '\t')) k++;
    if (k < *len) return 1;
  }
}

uint64_t td_inputs_consumed(const td_inputs_t *in) {
  return in->consumed + (in->fd >= 0 ? in->lines.consumed : 0);
}

/* ------------------------------------------------------ requests */

int td_req_local_error(td_req_t *r, const json_t *id, const char *code, const char *msg) {
  json_t *o = json_object();
  if (!o) return TD_ENOMEM;
  if (id) json_object_set(o, "id", (json_t *)id);
  json_object_set_new(o, "error", json_pack("{s:s, s:s}", "code", code, "message", msg));
  r->local = json_dumps(o, JSON_COMPACT);
  json_decref(o);
  return r->local ? 0 : TD_ENOMEM;
}

int td_req_take_line(td_req_t *r, char *s) {
  size_t n = strlen(s);
  char *line = realloc(s, n + 2);
  if (!line) {
    free(s);
    return TD_ENOMEM;
  }
  line[n] = '\n';
  line[n + 1] = '\0';
  r->data = line;
  r->len = n + 1;
  return 0;
}
