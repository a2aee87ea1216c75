/*
 * Connections, the per-connection response queue, backpressure, timeouts,
 * signals and the graceful stop. Listening sockets live in listener.c,
 * protocol framing in proto_jsonl.c / proto_http.c, request handling in
 * request.c, model reloads in reload.c.
 */
#include "server.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <systemd/sd-daemon.h>
#include <time.h>
#include <unistd.h>

#include "classify.h"
#include "log.h"
#include "nats.h"
#include "proto_http.h"
#include "proto_jsonl.h"
#include "reload.h"
#include "request.h"

#define TD_READ_CHUNK 65536
#define TD_LINGER_MS 2000
#define TD_REJECT_WAIT_MS 1000 /* how long a refused client may take to speak */
#define TD_MAX_REJECTING 64    /* refused connections waiting for their error */
/* A request this small (a line or body, bytes) may be classified on the loop
 * thread while the threadpool is idle: at most ~50 us of loop time.
 * -DTD_INLINE_MAX_BYTES=0 turns it off (to measure against). */
#ifndef TD_INLINE_MAX_BYTES
#define TD_INLINE_MAX_BYTES 2048
#endif
/* A worker loop classifies requests up to this size itself (a document of
 * some 50 passages, ~3 ms); larger ones go to the threadpool, so one big
 * document does not hold up every other connection of its loop. */
#ifndef TD_SHARD_INLINE_MAX_BYTES
#define TD_SHARD_INLINE_MAX_BYTES 16384
#endif
/* ... and at most this many request bytes of one connection per loop
 * iteration (libuv reads a connection up to 32 times per wake-up): a client
 * pipelining large documents gets the threadpool for the rest, rather than
 * holding up the loop's other connections for hundreds of milliseconds. */
#ifndef TD_SHARD_INLINE_CONN_BYTES
#define TD_SHARD_INLINE_CONN_BYTES 65536
#endif

static void conn_close(td_conn_t *c);
static void on_data(td_conn_t *c);
static void maybe_finished(td_server_t *s);
static void conn_flush_later(td_conn_t *c);
static void drain_conns(td_server_t *s);
static void post_node(td_server_t *to, td_post_t *p, int *rc);

void td_server_lock(td_server_t *s) {
  if (s->main->nshards) uv_mutex_lock(&s->main->mu);
}
void td_server_unlock(td_server_t *s) {
  if (s->main->nshards) uv_mutex_unlock(&s->main->mu);
}

#ifdef TD_LATTRACE
/* Where a request's time goes, per stage (uv_hrtime deltas, loop thread
 * only), printed as percentiles at exit. Built with -DTD_LATTRACE only
 * (bench/NOTES.md, "Serving latency"). */
enum { LT_POOL, LT_WORK, LT_WAKE, LT_ORDER, LT_TOTAL, LT_N };
static const char *const lt_name[LT_N] = {"queued->work start (pool wake)",
                                          "work (parse+classify+dump)",
                                          "work end->loop sees it", "loop sees it->written",
                                          "framed->written"};
static _Thread_local struct { /* per loop thread; each reports its own at exit */
  uint64_t *v;
  size_t n, cap;
} g_lt[LT_N];

static void lt_add(int k, uint64_t a, uint64_t b) {
  if (!a || !b || b < a) return;
  if (g_lt[k].n == g_lt[k].cap) {
    size_t nc = g_lt[k].cap ? 2 * g_lt[k].cap : 65536;
    uint64_t *v = realloc(g_lt[k].v, nc * sizeof *v);
    if (!v) return;
    g_lt[k].v = v;
    g_lt[k].cap = nc;
  }
  g_lt[k].v[g_lt[k].n++] = b - a;
}

static int lt_cmp(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static void lt_report(void) {
  for (int k = 0; k < LT_N; k++) {
    size_t n = g_lt[k].n;
    if (!n) continue;
    uint64_t *v = g_lt[k].v;
    qsort(v, n, sizeof *v, lt_cmp);
#define LT_P(p) ((double)v[(size_t)((p) * (double)(n - 1))] / 1e3)
    fprintf(stderr, "lattrace %-32s n=%zu p50=%.1f p90=%.1f p99=%.1f p99.9=%.1f max=%.1f us\n",
            lt_name[k], n, LT_P(0.5), LT_P(0.9), LT_P(0.99), LT_P(0.999), LT_P(1.0));
#undef LT_P
    free(v);
    g_lt[k].v = NULL;
    g_lt[k].n = g_lt[k].cap = 0;
  }
}
#endif

/* ------------------------------------------------------------------ */
/* Requests                                                             */

td_req_t *td_req_new(td_conn_t *c, int kind, td_proto_t proto) {
  td_req_t *r = calloc(1, sizeof *r);
  if (!r) return NULL;
  r->conn = c;
  r->kind = kind;
  r->proto = proto;
  r->status = 200;
  r->ctype = "application/json";
  r->keepalive = 1;
  r->t0 = uv_hrtime();
  r->work.data = r;
  r->wr.data = r;
  td_buf_init(&r->head);
  td_buf_init(&r->body);
  c->refs++;
  return r;
}

static void conn_unref(td_conn_t *c) {
  if (--c->refs > 0) return;
  td_buf_free(&c->rbuf);
  td_http_free(c);
  free(c);
}

void td_req_free(td_req_t *r) {
  if (!r) return;
  td_conn_t *c = r->conn;
  free(r->in);
  free(r->auth);
  json_decref(r->json);
  json_decref(r->id);
  td_buf_free(&r->head);
  td_buf_free(&r->body);
  free(r->theme_passages);
  if (r->model) td_model_unref(&r->model);
  free(r);
  conn_unref(c);
}

static int dump_cb(const char *buf, size_t n, void *ud) { return td_buf_append(ud, buf, n) ? -1 : 0; }

int td_req_set_json(td_req_t *r, json_t *v) {
  td_buf_reset(&r->body);
  if (!v) return TD_ENOMEM;
  /* One pass straight into the response buffer, however big the result. */
  int rc = json_dump_callback(v, dump_cb, &r->body, TD_JSON_DUMP_FLAGS) ? TD_ENOMEM : 0;
  if (!rc && r->proto == TD_PROTO_JSONL) rc = td_buf_append(&r->body, "\n", 1);
  if (rc) td_buf_reset(&r->body);
  json_decref(v);
  return rc;
}

void td_req_set_error(td_req_t *r, td_ecode_t code, const char *fmt, ...) {
  char msg[600];
  va_list ap;
  va_start(ap, fmt);
  td_vformat(msg, sizeof msg, fmt, ap);
  va_end(ap);
  r->ecode = code;
  r->status = td_ecode_status(code);
  r->ctype = "application/json";
  if (td_req_set_json(r, td_wire_error(r->id, code, msg))) {
    /* Out of memory while reporting: a fixed error still keeps the order. */
    static const char oom[] = "{\"error\":{\"code\":\"internal\",\"message\":\"out of memory\"}}\n";
    r->ecode = TD_EC_INTERNAL;
    r->status = 500;
    td_buf_reset(&r->body);
    td_buf_append(&r->body, oom, sizeof oom - (r->proto == TD_PROTO_JSONL ? 1 : 2));
  }
}

static void after_work(uv_work_t *w, int status) {
  td_req_t *r = w->data;
  if (r->pooled) {
    r->pooled = 0;
    r->conn->srv->pool_inflight--;
  }
#ifdef TD_LATTRACE
  r->t_after = uv_hrtime();
#endif
  if (status == UV_ECANCELED) td_req_set_error(r, TD_EC_SHUTTING_DOWN, "server is shutting down");
  if (r->body.len == 0) td_request_local(r); /* parsed on the worker, answered here */
  else td_req_done(r);
}

void td_server_dispatch(td_req_t *r) {
  td_conn_t *c = r->conn;
  td_server_t *s = c->srv;
  if (c->qtail) c->qtail->next = r;
  else c->qhead = r;
  c->qtail = r;
  c->qlen++;
  if (r->body.len) { /* already answered (an error found while framing) */
    td_req_done(r);
    return;
  }
  if (s->draining) {
    td_req_set_error(r, TD_EC_SHUTTING_DOWN, "server is shutting down");
    td_req_done(r);
    return;
  }
  if (r->kind == TD_REQ_LOCAL) {
    td_request_local(r);
    return;
  }
  if (r->kind != TD_REQ_HTTP_RELOAD) {
    td_server_lock(s);
    r->model = td_model_ref(s->main->model);
    td_server_unlock(s);
  }
  if (s->is_shard && r->kind != TD_REQ_HTTP_RELOAD && r->inlen <= TD_SHARD_INLINE_MAX_BYTES) {
    if (c->inline_iter != s->iter) {
      c->inline_iter = s->iter;
      c->inline_bytes = 0;
    }
    if (c->inline_bytes + r->inlen <= TD_SHARD_INLINE_CONN_BYTES) {
      /* A worker loop does its connections' work itself: no hand-off. */
      c->inline_bytes += r->inlen;
      td_request_work(&r->work);
      after_work(&r->work, 0);
      return;
    }
  }
  if (r->kind != TD_REQ_HTTP_RELOAD && r->inlen && r->inlen <= TD_INLINE_MAX_BYTES &&
      !s->pool_inflight && !s->inline_used) {
    /* The pool is idle: waking a worker for this and the loop again for its
     * answer would cost more than the work (bench/NOTES.md, "Serving
     * latency"). One per iteration, so a burst still goes to the pool. */
    s->inline_used = 1;
    td_request_work(&r->work);
    after_work(&r->work, 0);
    return;
  }
  r->pooled = 1;
  s->pool_inflight++;
#ifdef TD_LATTRACE
  r->t_queued = uv_hrtime();
#endif
  int rc = uv_queue_work(s->loop, &r->work, td_request_work, after_work);
  if (rc) {
    r->pooled = 0;
    s->pool_inflight--;
    td_req_set_error(r, TD_EC_INTERNAL, "cannot queue work: %s", uv_strerror(rc));
    td_req_done(r);
  }
}

void td_req_done(td_req_t *r) {
  td_conn_t *c = r->conn;
  td_server_t *s = c->srv;
  td_metrics_t *m = &s->main->metrics;
  double secs = (double)(uv_hrtime() - r->t0) / 1e9;
  r->done = 1;
  td_server_lock(s);
  td_metrics_request(m, r->proto, r->op, r->ecode, secs);
  if (r->passages) {
    m->passages += r->passages;
    if (r->theme_passages && r->model) {
      size_t nt = r->model->ntheme;
      for (size_t k = 0; k < nt; k++)
        if (r->theme_passages[k])
          td_metrics_theme_at(m, k, r->model->themes[k].name, r->theme_passages[k]);
      td_metrics_theme_at(m, nt, "other", r->theme_passages[nt]);
    }
  }
  td_server_unlock(s);
  /* The model may be freed here if a reload replaced it meanwhile. */
  if (r->model) td_model_unref(&r->model);
  conn_flush_later(c);
}

/* ------------------------------------------------------------------ */
/* Writing                                                              */

/* Frees a written batch: r and the requests chained after it. */
static void batch_free(td_req_t *r) {
  while (r) {
    td_req_t *next = r->next;
    td_req_free(r);
    r = next;
  }
}

static void on_write(uv_write_t *wr, int status) {
  td_req_t *r = wr->data;
  td_conn_t *c = r->conn;
  int closing = c->state == TD_CONN_CLOSING;
  c->out_bytes -= r->wlen;
  batch_free(r); /* may free c if it is closing; else its handles hold it */
  if (closing) return;
  if (status < 0) {
    td_log_debug("conn %llu: write failed: %s", (unsigned long long)c->id, uv_strerror(status));
    conn_close(c);
    return;
  }
  td_conn_check(c);
}

#define TD_WRITE_BATCH 64 /* answers per write at most (two buffers each) */

/* Writes the answered requests at the head of the queue, in order: the run
 * of them in one uv_write (the first request's wr; the rest chained to it by
 * `next` and freed with it when the write completes). */
void td_conn_flush(td_conn_t *c) {
  td_server_t *s = c->srv;
  while (c->qhead && c->qhead->done) {
    uv_buf_t bufs[2 * TD_WRITE_BATCH];
    unsigned n = 0, nreq = 0;
    td_req_t *first = NULL, *last = NULL;
    size_t len = 0;
    int close_after = 0, bad = 0;
    while (c->qhead && c->qhead->done && nreq < TD_WRITE_BATCH) {
      td_req_t *r = c->qhead;
      c->qhead = r->next;
      if (!c->qhead) c->qtail = NULL;
      c->qlen--;
      r->next = NULL;
      if (c->state == TD_CONN_CLOSING || c->state == TD_CONN_SHUTDOWN) {
        td_req_free(r);
        continue;
      }
      if (r->proto == TD_PROTO_HTTP && s->draining) r->close_after = 1;
      if (r->proto == TD_PROTO_HTTP && td_http_head(r)) {
        td_req_free(r);
        bad = 1;
        break;
      }
#ifdef TD_LATTRACE
      uint64_t now = uv_hrtime();
      lt_add(LT_POOL, r->t_queued, r->t_wstart);
      lt_add(LT_WORK, r->t_wstart, r->t_wend);
      lt_add(LT_WAKE, r->t_wend, r->t_after);
      lt_add(LT_ORDER, r->t_after, now);
      lt_add(LT_TOTAL, r->t0, now);
#endif
      if (r->head.len) bufs[n++] = uv_buf_init(r->head.data, (unsigned)r->head.len);
      bufs[n++] = uv_buf_init(r->body.data ? r->body.data : "", (unsigned)r->body.len);
      len += r->head.len + r->body.len;
      close_after |= r->close_after;
      if (last) last->next = r;
      else first = r;
      last = r;
      nreq++;
    }
    if (first) {
      /* Straight to the socket when it takes it all (the usual case): no
       * write request, no completion callback, and libuv does not re-arm the
       * descriptor in epoll after each write. uv_write takes the rest. */
      int rc = uv_try_write(&c->h.stream, bufs, n);
      size_t done = rc > 0 ? (size_t)rc : 0;
      if (rc < 0 && rc != UV_EAGAIN) {
        td_log_debug("conn %llu: write: %s", (unsigned long long)c->id, uv_strerror(rc));
        batch_free(first);
        bad = 1;
      } else if (done == len) {
        batch_free(first); /* the connection's handles still hold it */
      } else {
        unsigned k = 0;
        size_t off = done; /* < len: some buffer is left unwritten */
        while (off >= bufs[k].len) off -= bufs[k++].len;
        bufs[k].base += off;
        bufs[k].len -= off;
        first->wlen = len - done;
        c->out_bytes += first->wlen;
        rc = uv_write(&first->wr, &c->h.stream, bufs + k, n - k, on_write);
        if (rc) {
          c->out_bytes -= first->wlen;
          td_log_debug("conn %llu: write: %s", (unsigned long long)c->id, uv_strerror(rc));
          batch_free(first);
          bad = 1;
        }
      }
      if (!bad && close_after && c->state == TD_CONN_OPEN) c->state = TD_CONN_FINISHING;
    }
    if (bad) conn_close(c); /* frees the rest of the answered ones */
  }
}

/* Once per loop iteration: writes what the connections on the flush list
 * have ready, then rechecks them (backpressure, the end of a connection). */
static void on_flush_check(uv_check_t *h) {
  td_server_t *s = h->data;
  s->inline_used = 0; /* a new iteration begins after this */
  s->iter++;
  while (s->flush_head) {
    td_conn_t *c = s->flush_head;
    s->flush_head = c->flush_next;
    if (!s->flush_head) s->flush_tail = NULL;
    c->flush_next = NULL;
    c->flush_queued = 0;
    td_conn_flush(c);
    td_conn_check(c);
    conn_unref(c);
  }
  uv_idle_stop(&s->flush_idle);
}

static void on_flush_idle(uv_idle_t *h) { (void)h; } /* only keeps the poll from blocking */

static void conn_flush_later(td_conn_t *c) {
  td_server_t *s = c->srv;
  if (c->flush_queued) return;
  c->flush_queued = 1;
  c->refs++;
  if (s->flush_tail) s->flush_tail->flush_next = c;
  else s->flush_head = c;
  s->flush_tail = c;
  uv_idle_start(&s->flush_idle, on_flush_idle);
}

/* ------------------------------------------------------------------ */
/* Connection lifecycle                                                 */

static void on_close(uv_handle_t *h) { conn_unref(h->data); }

static void conn_close(td_conn_t *c) {
  if (c->state == TD_CONN_CLOSING) return;
  td_server_t *s = c->srv;
  c->state = TD_CONN_CLOSING;
  if (c->prev) c->prev->next = c->next;
  else s->conns = c->next;
  if (c->next) c->next->prev = c->prev;
  c->prev = c->next = NULL;
  if (c->rejecting) s->nrejecting--;
  else {
    s->nconns--;
    td_server_lock(s);
    s->main->nconns_all--;
    s->main->metrics.connections--;
    if (s->is_shard) s->live--;
    td_server_unlock(s);
  }
  if (!c->handed) td_log_debug("conn %llu: closed", (unsigned long long)c->id);
  uv_close(&c->h.handle, on_close);
  uv_close((uv_handle_t *)&c->idle_timer, on_close);
  uv_close((uv_handle_t *)&c->header_timer, on_close);
  td_conn_flush(c); /* frees answered requests; the rest free as they finish */
  maybe_finished(s);
}

static void on_linger_timer(uv_timer_t *t) { conn_close(t->data); }

static void on_shutdown(uv_shutdown_t *req, int status) {
  td_conn_t *c = req->data;
  if (c->state == TD_CONN_CLOSING) return;
  if (status < 0 || c->eof || c->srv->draining) {
    conn_close(c);
    return;
  }
  /* Lingering close: read and drop what the client still sends, so our
   * close does not turn into a reset that destroys the answer we just sent
   * (a client still writing a too-large request, say). read_cb closes at
   * EOF; the timer bounds the wait. */
  uv_timer_start(&c->idle_timer, on_linger_timer, TD_LINGER_MS, 0);
}

static void alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  td_conn_t *c = h->data;
  td_server_t *s = c->srv;
  if (c->state == TD_CONN_SHUTDOWN || c->state == TD_CONN_CLOSING) {
    if (!s->discard && !(s->discard = malloc(TD_READ_CHUNK))) {
      *buf = uv_buf_init(NULL, 0); /* read_cb gets UV_ENOBUFS and closes */
      return;
    }
    *buf = uv_buf_init(s->discard, TD_READ_CHUNK);
    return;
  }
  if (td_buf_reserve(&c->rbuf, TD_READ_CHUNK)) {
    *buf = uv_buf_init(NULL, 0); /* read_cb gets UV_ENOBUFS */
    return;
  }
  *buf = uv_buf_init(c->rbuf.data + c->rbuf.len, TD_READ_CHUNK);
}

static void read_cb(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf) {
  td_conn_t *c = st->data;
  if (c->state == TD_CONN_CLOSING) return;
  if (c->state == TD_CONN_SHUTDOWN) {
    if (nread < 0) conn_close(c);
    return;
  }
  if (nread > 0) {
    c->rbuf.len += (size_t)nread;
    if (c->state != TD_CONN_OPEN) { /* an error ends this connection: drop input */
      td_buf_reset(&c->rbuf);
      return;
    }
    if (!c->rejecting) uv_timer_again(&c->idle_timer);
    on_data(c);
    /* A worker loop has answered this read's requests already (those it did
     * not hand to the pool): they are written now, in one write, not after
     * every other connection's requests of this iteration are classified
     * too (bench/NOTES.md, "An event loop per worker"). */
    if (c->srv->is_shard && c->flush_queued && c->state != TD_CONN_CLOSING) {
      td_conn_flush(c);
      td_conn_check(c);
    }
  } else if (nread == UV_EOF) {
    c->eof = 1;
    uv_read_stop(st);
    c->reading = 0;
    if (c->state == TD_CONN_OPEN) on_data(c);
    td_conn_check(c);
  } else if (nread < 0) {
    td_log_debug("conn %llu: read: %s", (unsigned long long)c->id, uv_strerror((int)nread));
    conn_close(c);
  }
}

static void conn_shutdown(td_conn_t *c) {
  c->state = TD_CONN_SHUTDOWN;
  uv_timer_stop(&c->header_timer);
  uv_timer_stop(&c->idle_timer);
  if (c->eof || c->srv->draining) {
    conn_close(c);
    return;
  }
  if (!c->reading) {
    uv_read_start(&c->h.stream, alloc_cb, read_cb);
    c->reading = 1;
  }
  c->sreq.data = c;
  if (uv_shutdown(&c->sreq, &c->h.stream, on_shutdown)) conn_close(c);
}

void td_conn_check(td_conn_t *c) {
  td_server_t *s = c->srv;
  const td_config_t *cfg = s->cfg;
  if (c->state == TD_CONN_CLOSING || c->state == TD_CONN_SHUTDOWN || c->in_process) return;
  if (c->state == TD_CONN_OPEN && c->paused && c->qlen < cfg->max_pending) {
    c->paused = 0;
    on_data(c);
    if (c->state == TD_CONN_CLOSING || c->state == TD_CONN_SHUTDOWN) return;
  }
  int want = c->state == TD_CONN_OPEN && !c->eof && !c->paused && c->qlen < cfg->max_pending &&
             c->out_bytes <= cfg->max_output_bytes;
  if (want && !c->reading) {
    if (uv_read_start(&c->h.stream, alloc_cb, read_cb) == 0) c->reading = 1;
  } else if (!want && c->reading) {
    uv_read_stop(&c->h.stream);
    c->reading = 0;
  }
  if (c->qhead || c->out_bytes) return;
  if (c->state == TD_CONN_FINISHING || c->eof || s->draining) conn_shutdown(c);
}

void td_conn_fail(td_conn_t *c, td_proto_t proto, td_ecode_t code, const char *msg) {
  if (c->state != TD_CONN_OPEN) return;
  td_req_t *r = td_req_new(c, TD_REQ_LOCAL, proto);
  c->state = TD_CONN_FINISHING; /* no more framing; input is dropped */
  td_buf_reset(&c->rbuf);
  c->scan = 0;
  if (!r) {
    conn_close(c);
    return;
  }
  r->close_after = 1;
  r->keepalive = 0;
  td_req_set_error(r, code, "%s", msg);
  td_server_dispatch(r);
}

/* The first byte decides the protocol (docs/protocol.md). */
static void on_data(td_conn_t *c) {
  if (c->proto == TD_PROTO_NONE) {
    if (c->rbuf.len == 0) return;
    unsigned char b = (unsigned char)c->rbuf.data[0];
    if (b == '{' || b == '[' || b == ' ' || b == '\t' || b == '\r' || b == '\n') {
      c->proto = TD_PROTO_JSONL;
    } else if (isalpha(b)) {
      c->proto = TD_PROTO_HTTP;
      if (td_http_init(c)) {
        conn_close(c);
        return;
      }
    } else {
      td_conn_fail(c, TD_PROTO_JSONL, TD_EC_INVALID_REQUEST,
                   "unrecognized protocol: send JSON Lines or HTTP/1.1");
      return;
    }
    td_log_debug("conn %llu: %s", (unsigned long long)c->id, td_proto_name(c->proto));
    if (c->rejecting) {
      char msg[128];
      uv_timer_stop(&c->header_timer);
      snprintf(msg, sizeof msg, "too many connections (limit %zu)", c->srv->cfg->max_connections);
      td_conn_fail(c, c->proto, TD_EC_TOO_MANY_CONNECTIONS, msg);
      return;
    }
  }
  c->in_process = 1;
  if (c->proto == TD_PROTO_JSONL) td_jsonl_process(c);
  else td_http_process(c);
  c->in_process = 0;
  td_conn_check(c);
}

static void on_idle_timer(uv_timer_t *t) {
  td_conn_t *c = t->data;
  if (c->state == TD_CONN_SHUTDOWN) {
    conn_close(c);
    return;
  }
  if (c->qhead || c->out_bytes) { /* busy, not idle */
    uv_timer_again(t);
    return;
  }
  td_log_debug("conn %llu: idle timeout", (unsigned long long)c->id);
  td_server_lock(c->srv);
  td_metrics_error(&c->srv->main->metrics, TD_EC_IDLE_TIMEOUT);
  td_server_unlock(c->srv);
  conn_close(c);
}

static void on_header_timer(uv_timer_t *t) {
  td_conn_t *c = t->data;
  char msg[128];
  if (c->rejecting) { /* said nothing: the error goes out as a JSON line */
    snprintf(msg, sizeof msg, "too many connections (limit %zu)", c->srv->cfg->max_connections);
    td_conn_fail(c, TD_PROTO_JSONL, TD_EC_TOO_MANY_CONNECTIONS, msg);
    return;
  }
  snprintf(msg, sizeof msg, "request headers not complete within %.3gs",
           (double)c->srv->cfg->header_timeout_ms / 1000);
  td_log_debug("conn %llu: header timeout", (unsigned long long)c->id);
  td_conn_fail(c, TD_PROTO_HTTP, TD_EC_HEADER_TIMEOUT, msg);
}

void td_conn_header_timer(td_conn_t *c, int on) {
  if (!on) uv_timer_stop(&c->header_timer);
  else if (!uv_is_active((uv_handle_t *)&c->header_timer))
    uv_timer_start(&c->header_timer, on_header_timer, c->srv->cfg->header_timeout_ms, 0);
}

/* ------------------------------------------------------------------ */
/* Out of file descriptors                                              */

static void spare_open(td_server_t *s) {
  if (s->spare_fd < 0) s->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
}

static void on_spare_timer(uv_timer_t *t) { spare_open(t->data); }

/* A connection to give up so that pending ones can be refused: one we are
 * refusing anyway, else the oldest idle one, else the oldest. */
static td_conn_t *shed_victim(td_server_t *s) {
  td_conn_t *idle = NULL, *oldest = NULL;
  for (td_conn_t *c = s->conns; c; c = c->next) { /* newest first */
    if (c->rejecting) return c;
    if (!c->qhead && !c->out_bytes) idle = c;
    oldest = c;
  }
  return idle ? idle : oldest;
}

/* Worker loop: closes one connection so the main loop can accept, and tells
 * the main loop, which waits for it (shed_sync). */
static void shard_shed(td_server_t *sh, void *arg, int cancelled) {
  (void)arg;
  td_server_t *s = sh->main;
  td_conn_t *victim = cancelled ? NULL : shed_victim(sh);
  if (victim) {
    td_log_warn("out of file descriptors: closing conn %llu to refuse new ones",
                (unsigned long long)victim->id);
    conn_close(victim); /* its fd is closed now; the handle finishes later */
  }
  uv_mutex_lock(&s->shed_mu);
  s->shed_state = victim ? TD_SHED_DONE : TD_SHED_NONE;
  uv_cond_signal(&s->shed_cond);
  uv_mutex_unlock(&s->shed_mu);
}

/* Main loop, out of descriptors, its connections all on the worker loops:
 * has the busiest one close a connection and waits (briefly) until it has,
 * so that, as without worker loops, the pending connections can be accepted
 * and refused before libuv tries again (refuse_pending). The main loop cannot
 * just post and return: libuv calls it again at once, without running the
 * loop, until accept() stops failing. Returns 1 if a descriptor was freed. */
static int shed_sync(td_server_t *s) {
  uv_mutex_lock(&s->shed_mu);
  /* Asked before and timed out: not waited for again (libuv calls back at
   * once, and the main loop must not stall 100 ms per call). */
  uint64_t wait_ns = s->shed_state == TD_SHED_ASKED ? 0 : 100 * 1000000ull; /* a big document */
  if (s->shed_state != TD_SHED_ASKED) {
    td_server_t *busiest = &s->shards[0];
    td_server_lock(s);
    for (int i = 1; i < s->nshards; i++)
      if (s->shards[i].live > busiest->live) busiest = &s->shards[i];
    size_t live = busiest->live;
    td_server_unlock(s);
    if (!live) { /* the worker loops hold no connection to close */
      uv_mutex_unlock(&s->shed_mu);
      return 0;
    }
    s->shed_state = TD_SHED_ASKED;
    if (td_server_post(busiest, shard_shed, NULL)) s->shed_state = TD_SHED_NONE;
  }
  uint64_t deadline = uv_hrtime() + wait_ns;
  for (uint64_t now; s->shed_state == TD_SHED_ASKED && (now = uv_hrtime()) < deadline;)
    uv_cond_timedwait(&s->shed_cond, &s->shed_mu, deadline - now);
  int freed = s->shed_state == TD_SHED_DONE;
  if (s->shed_state != TD_SHED_ASKED) s->shed_state = TD_SHED_NONE;
  uv_mutex_unlock(&s->shed_mu);
  return freed;
}

/*
 * accept() failed with EMFILE/ENFILE and libuv could not cope. libuv keeps a
 * spare fd for this (uv__emfile_trick: close the spare, accept and close the
 * pending connections, reopen the spare) and only calls us when its spare is
 * gone: another thread (a worker loading a model) took the fd the trick had
 * just freed. libuv then retries accept() in a loop that returns to the event
 * loop only on EAGAIN, and Linux reserves the new fd before it looks for a
 * connection, so with the table full that is EMFILE forever: 100% CPU, and
 * no timer or close can ever free an fd. So we keep a spare of our own:
 * close it, accept and close the pending connections (their clients see EOF,
 * not a hang), and leave its slot free until the next loop turn, so that
 * libuv's next accept() fails with EAGAIN and its loop ends. Without a spare
 * (its slot was taken too), one connection is closed to free a slot, which
 * becomes the spare again at once (used on libuv's next turn).
 */
static size_t refuse_pending(td_server_t *s, td_listener_t *l) {
  uv_os_fd_t lfd;
  size_t n = 0;
  int shed = 0;
  if (uv_fileno(&l->h.handle, &lfd)) return 0;
  if (s->spare_fd >= 0) {
    close(s->spare_fd);
    s->spare_fd = -1;
  } else {
    td_conn_t *victim = shed_victim(s);
    /* With worker loops the oldest connections are theirs (the main loop's
     * own are newer, served there only because no descriptor was left to
     * hand them over with): the busiest one closes one, if it has any. */
    if (s->nshards && (!victim || !victim->rejecting) && shed_sync(s)) {
      shed = 1;
    } else if (victim) {
      td_log_warn("out of file descriptors: closing conn %llu to refuse new ones",
                  (unsigned long long)victim->id);
      conn_close(victim); /* its fd is closed now; the handle finishes later */
      shed = 1;
    } else {
      return 0; /* the fds are held elsewhere (a load): freed soon */
    }
  }
  for (;;) {
    int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0 && errno == EINTR) continue;
    if (fd < 0) break;
    close(fd);
    n++;
  }
  if (shed) spare_open(s);
  if (s->spare_fd < 0) uv_timer_start(&s->spare_timer, on_spare_timer, 0, 0);
  td_server_lock(s);
  s->metrics.connections_rejected += n;
  td_server_unlock(s);
  return n;
}

/* A connection on s's loop (its handle not yet opened or accepted). */
static td_conn_t *conn_new(td_server_t *s, int is_unix, uint64_t id) {
  td_conn_t *c = calloc(1, sizeof *c);
  if (!c) return NULL;
  c->srv = s;
  c->id = id;
  c->proto = TD_PROTO_NONE;
  c->is_tcp = !is_unix;
  c->refs = 3;
  td_buf_init(&c->rbuf);
  if (is_unix) uv_pipe_init(s->loop, &c->h.pipe, 0);
  else uv_tcp_init(s->loop, &c->h.tcp);
  uv_timer_init(s->loop, &c->idle_timer);
  uv_timer_init(s->loop, &c->header_timer);
  c->h.handle.data = c->idle_timer.data = c->header_timer.data = c;
  c->next = s->conns;
  if (s->conns) s->conns->prev = c;
  s->conns = c;
  return c;
}

/* A counted connection (already in nconns_all and the metrics) starts. */
static void conn_serve(td_conn_t *c) {
  td_server_t *s = c->srv;
  s->nconns++;
  if (c->is_tcp) uv_tcp_nodelay(&c->h.tcp, 1);
  uv_timer_start(&c->idle_timer, on_idle_timer, s->cfg->idle_timeout_ms, s->cfg->idle_timeout_ms);
  if (uv_read_start(&c->h.stream, alloc_cb, read_cb) == 0) c->reading = 1;
}

/* A connection handed from the main loop to a worker loop. */
typedef struct adopt {
  int fd;
  int is_unix;
  uint64_t id;
} adopt_t;

/* Takes back the counts of a handed connection that never became one. */
static void adopt_uncount(td_server_t *sh) {
  td_server_lock(sh);
  sh->main->nconns_all--;
  sh->main->metrics.connections--;
  sh->live--;
  td_server_unlock(sh);
}

/* Worker loop: opens the descriptor the main loop accepted, on this loop. */
static void shard_adopt(td_server_t *sh, void *arg, int cancelled) {
  adopt_t *a = arg;
  td_conn_t *c = cancelled || sh->draining ? NULL : conn_new(sh, a->is_unix, a->id);
  int rc = UV_ENOMEM;
  if (c) rc = a->is_unix ? uv_pipe_open(&c->h.pipe, a->fd) : uv_tcp_open(&c->h.tcp, a->fd);
  if (rc) {
    if (c) {
      td_log_warn("conn %llu: cannot open it on worker loop %d: %s", (unsigned long long)a->id,
                  sh->shard_index, uv_strerror(rc));
      c->rejecting = 1; /* not counted here: adopt_uncount does it */
      sh->nrejecting++;
      conn_close(c);
    }
    close(a->fd);
    adopt_uncount(sh);
    free(a);
    return;
  }
  free(a);
  td_log_debug("conn %llu: served by worker loop %d", (unsigned long long)c->id, sh->shard_index);
  conn_serve(c);
}

/* The worker loop with the fewest connections (the first of them: ties go
 * to the lower index, which is as good as any). */
static td_server_t *shard_pick(td_server_t *s) {
  td_server_t *best = &s->shards[0];
  for (int i = 1; i < s->nshards; i++)
    if (s->shards[i].live < best->live) best = &s->shards[i];
  return best;
}

/* Main loop with worker loops: hands the accepted connection c (not yet
 * counted) to the worker loop with the fewest connections, as a duplicate of
 * its descriptor (c then closes, with the original). Returns 0, or -1 when
 * that cannot be done (out of descriptors, say): c stays on the main loop,
 * which serves it with the threadpool. */
static int handoff(td_server_t *s, td_conn_t *c, int is_unix) {
  uv_os_fd_t fd;
  adopt_t *a;
  if (uv_fileno(&c->h.handle, &fd) || !(a = malloc(sizeof *a))) return -1;
  int fd2 = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (fd2 < 0) {
    free(a);
    return -1;
  }
  a->fd = fd2;
  a->is_unix = is_unix;
  a->id = c->id;
  td_server_lock(s);
  td_server_t *sh = shard_pick(s);
  sh->live++;
  s->nconns_all++;
  s->metrics.connections++;
  s->metrics.connections_total++;
  td_server_unlock(s);
  if (td_server_post(sh, shard_adopt, a)) {
    close(fd2);
    adopt_uncount(sh);
    td_server_lock(s);
    s->metrics.connections_total--; /* counted again where it is served */
    td_server_unlock(s);
    free(a);
    return -1;
  }
  c->rejecting = 1; /* closes uncounted: the worker loop counts it now */
  c->handed = 1;
  s->nrejecting++;
  conn_close(c);
  return 0;
}

/*
 * A connection there is no memory for is still accepted -- into the
 * listener's own drop handle, which needs no allocation -- and closed at
 * once. Left unaccepted, libuv would keep it pending and stop watching the
 * listener until a uv_accept that never comes: one failed allocation would
 * stop the socket for good (found in review). While drop is still closing,
 * the next such connection waits for its close callback.
 */
static void drop_closed(uv_handle_t *h);

/* libuv may call the connection callback in a tight loop when accepting
 * fails: one warning a second at most. 1 when one is due now. */
static int accept_warn_due(td_server_t *s) {
  uint64_t now = uv_hrtime();
  if (s->accept_warned_ns && now - s->accept_warned_ns < 1000000000ull) return 0;
  s->accept_warned_ns = now;
  return 1;
}

static void drop_connection(td_listener_t *l) {
  td_server_t *s = l->srv;
  if (l->drop_busy) {
    l->drop_pending = 1;
    return;
  }
  l->drop_pending = 0;
  int rc = l->is_unix ? uv_pipe_init(s->loop, &l->drop.pipe, 0) : uv_tcp_init(s->loop, &l->drop.tcp);
  if (rc) {
    td_log_error("accept on %s: %s: cannot drop a connection there is no memory for", l->name,
                 uv_strerror(rc));
    return;
  }
  l->drop.handle.data = l;
  l->drop_busy = 1;
  rc = uv_accept(&l->h.stream, &l->drop.stream);
  uv_close(&l->drop.handle, drop_closed);
  td_server_lock(s);
  s->metrics.connections_rejected++;
  td_server_unlock(s);
  if (accept_warn_due(s))
    td_log_warn("accept on %s: out of memory: connection closed%s%s", l->name, rc ? ": " : "",
                rc ? uv_strerror(rc) : "");
}

static void drop_closed(uv_handle_t *h) {
  td_listener_t *l = h->data;
  l->drop_busy = 0;
  if (l->drop_pending && l->open) drop_connection(l);
}

void td_server_on_connection(uv_stream_t *ls, int status) {
  td_listener_t *l = ls->data;
  td_server_t *s = l->srv;
  if (status < 0) {
    size_t refused = 0;
    if (status == UV_EMFILE || status == UV_ENFILE) refused = refuse_pending(s, l);
    if (accept_warn_due(s))
      td_log_warn("accept on %s: %s%s", l->name, uv_strerror(status),
                  refused ? "; refusing new connections until descriptors free up" : "");
    return;
  }
  td_server_lock(s);
  size_t nall = s->nconns_all;
  td_server_unlock(s);
  td_conn_t *c = conn_new(s, l->is_unix, ++s->next_conn_id);
  if (!c) {
    drop_connection(l);
    return;
  }
  int rc = uv_accept(ls, &c->h.stream);
  if (rc) {
    td_log_warn("accept on %s: %s", l->name, uv_strerror(rc));
    c->rejecting = 1; /* not counted: undo the bookkeeping conn_close does */
    s->nrejecting++;
    conn_close(c);
    return;
  }
  if (s->draining) {
    c->rejecting = 1;
    s->nrejecting++;
    conn_close(c);
    return;
  }
  if (nall >= s->cfg->max_connections) {
    /* Over the limit: wait (briefly) for the first byte so the refusal is in
     * the client's protocol, then close. Bounded so refusing stays cheap.
     * Refused connections stay on the main loop, with worker loops too. */
    c->rejecting = 1;
    s->nrejecting++;
    td_server_lock(s);
    s->metrics.connections_rejected++;
    td_server_unlock(s);
    td_log_warn("%s: connection refused: too many connections (limit %zu)", l->name,
                s->cfg->max_connections);
    if (s->nrejecting > TD_MAX_REJECTING) {
      td_server_lock(s);
      td_metrics_error(&s->metrics, TD_EC_TOO_MANY_CONNECTIONS);
      td_server_unlock(s);
      conn_close(c);
      return;
    }
    uint64_t wait = s->cfg->header_timeout_ms < TD_REJECT_WAIT_MS ? s->cfg->header_timeout_ms
                                                                   : TD_REJECT_WAIT_MS;
    uv_timer_start(&c->header_timer, on_header_timer, wait, 0);
    if (!l->is_unix) uv_tcp_nodelay(&c->h.tcp, 1);
    if (uv_read_start(&c->h.stream, alloc_cb, read_cb) == 0) c->reading = 1;
    td_log_debug("conn %llu: accepted on %s", (unsigned long long)c->id, l->name);
    return;
  }
  td_log_debug("conn %llu: accepted on %s", (unsigned long long)c->id, l->name);
  if (s->nshards && handoff(s, c, l->is_unix) == 0) return;
  td_server_lock(s);
  s->nconns_all++;
  s->metrics.connections++;
  s->metrics.connections_total++;
  td_server_unlock(s);
  conn_serve(c);
}

/* ------------------------------------------------------------------ */
/* Model, readiness, watchdog                                           */

void td_server_set_model(td_server_t *s, td_model_t *m) {
  time_t now = time(NULL);
  struct tm tm;
  gmtime_r(&now, &tm);
  td_server_lock(s);
  td_model_t *old = s->model;
  s->model = m; /* new requests take this one; old ones keep theirs */
  td_metrics_model_loaded(&s->metrics, m);
  strftime(s->model_loaded_at, sizeof s->model_loaded_at, "%Y-%m-%dT%H:%M:%SZ", &tm);
  td_server_unlock(s);
  if (old) td_model_unref(&old);
}

void td_server_notify_ready(td_server_t *s) {
  sd_notifyf(0, "READY=1\nSTATUS=serving %s", s->model->label);
}

static void on_watchdog(uv_timer_t *t) { sd_notify(0, "WATCHDOG=1"); }

/* ------------------------------------------------------------------ */
/* Graceful stop                                                        */

/* Everything a client wrote before the stop signal is already in our socket
 * buffers; read it now so those requests are served rather than refused. */
static void sweep_read(td_conn_t *c) {
  uv_os_fd_t fd;
  if (uv_fileno(&c->h.handle, &fd)) return;
  while (c->state == TD_CONN_OPEN && !c->eof && !c->paused && c->reading) {
    if (td_buf_reserve(&c->rbuf, TD_READ_CHUNK)) return;
    ssize_t n = recv(fd, c->rbuf.data + c->rbuf.len, TD_READ_CHUNK, MSG_DONTWAIT);
    if (n > 0) {
      c->rbuf.len += (size_t)n;
      on_data(c);
    } else if (n == 0) {
      c->eof = 1;
      uv_read_stop(&c->h.stream);
      c->reading = 0;
      on_data(c);
    } else {
      return; /* EAGAIN: nothing more was sent */
    }
  }
}

static void close_all(td_server_t *s) {
  while (s->conns) conn_close(s->conns);
}

static void on_drain_timeout(uv_timer_t *t) {
  td_server_t *s = t->data;
  size_t pending = 0;
  for (td_conn_t *c = s->conns; c; c = c->next) pending += c->qlen;
  if (s->is_shard)
    td_log_warn("drain timeout: worker loop %d: closing %zu connection%s, %zu request%s unanswered",
                s->shard_index, s->nconns, td_plural(s->nconns), pending, td_plural(pending));
  else
    td_log_warn("drain timeout: closing %zu connection%s, %zu request%s unanswered", s->nconns,
                td_plural(s->nconns), pending, td_plural(pending));
  if (s->nats) td_nats_abort(s->nats);
  close_all(s);
}

static void maybe_finished(td_server_t *s) {
  if (!s->draining || s->stopped || s->conns) return;
  if (s->is_shard) {
    /* A reload request waits at the main loop: its answer comes back here. */
    if (s->remote_pending) return;
    s->stopped = 1;
    /* The loop ends once its last threadpool completion has run
     * (shard_run then tells the main loop). */
    uv_close((uv_handle_t *)&s->drain_timer, NULL);
    uv_unref((uv_handle_t *)&s->post_async);
    return;
  }
  if (td_reload_busy(s) || s->shards_running) return;
  if (s->nats && td_nats_busy(s->nats)) return;
  s->stopped = 1;
  td_log_info("drained: all connections closed");
  uv_close((uv_handle_t *)&s->drain_timer, NULL);
  /* The loop now ends as soon as the last worker completion has run. The
   * signal handlers and the watchdog stay (unreferenced) until then, so
   * another SIGTERM is still handled rather than killing the process. */
  uv_unref((uv_handle_t *)&s->watchdog);
  uv_unref((uv_handle_t *)&s->sig_term);
  uv_unref((uv_handle_t *)&s->sig_int);
  uv_unref((uv_handle_t *)&s->sig_hup);
  uv_unref((uv_handle_t *)&s->post_async);
}

/* The stop as every loop does it for its own connections: read what is
 * already in the socket buffers, refuse new work, close the idle ones, and
 * give the rest drain_timeout. */
static void drain_conns(td_server_t *s) {
  for (td_conn_t *c = s->conns, *next; c; c = next) {
    next = c->next;
    sweep_read(c);
  }
  s->draining = 1;
  size_t pending = 0;
  for (td_conn_t *c = s->conns; c; c = c->next) pending += c->qlen;
  if (s->is_shard) {
    if (s->nconns)
      td_log_info("worker loop %d: draining %zu connection%s, %zu request%s in flight",
                  s->shard_index, s->nconns, td_plural(s->nconns), pending, td_plural(pending));
  } else if (s->nshards) {
    td_server_lock(s);
    size_t all = s->nconns_all;
    td_server_unlock(s);
    td_log_info("draining %zu connection%s (timeout %.3gs; each worker loop logs its requests in "
                "flight)", all, td_plural(all), (double)s->cfg->drain_timeout_ms / 1000);
  } else {
    td_log_info("draining %zu connection%s, %zu request%s in flight (timeout %.3gs)", s->nconns,
                td_plural(s->nconns), pending, td_plural(pending), (double)s->cfg->drain_timeout_ms / 1000);
  }
  for (td_conn_t *c = s->conns, *next; c; c = next) {
    next = c->next;
    td_conn_check(c); /* idle ones close now */
  }
  uv_timer_start(&s->drain_timer, on_drain_timeout, s->cfg->drain_timeout_ms, 0);
}

/* Worker loop: the main loop's stop (a second one closes everything). */
static void shard_stop(td_server_t *sh, void *arg, int cancelled) {
  (void)arg;
  if (cancelled || sh->stopped) return;
  if (sh->draining) close_all(sh);
  else drain_conns(sh);
  maybe_finished(sh);
}

/* The first call drains the worker loops, a second closes everything. */
static void stop_shards(td_server_t *s, int second) {
  for (int i = 0; i < s->nshards; i++) {
    td_server_t *sh = &s->shards[i];
    int rc;
    sh->stop_post[second].fn = shard_stop;
    sh->stop_post[second].arg = NULL;
    post_node(sh, &sh->stop_post[second], &rc); /* fails only if it has ended */
  }
}

void td_server_stop(td_server_t *s) {
  if (s->draining) {
    td_log_warn("second stop signal: closing every connection now");
    if (s->nats) td_nats_abort(s->nats);
    close_all(s);
    stop_shards(s, 1);
    return;
  }
  sd_notify(0, "STOPPING=1\nSTATUS=draining");
  td_server_lock(s);
  s->stopping = 1;
  td_server_unlock(s);
  td_log_info("stopping: closing listeners");
  td_listeners_close(s);
  drain_conns(s);
  td_reload_cancel_queued(s);
  if (s->nats) td_nats_stop(s->nats); /* no more fetching; in-flight articles finish */
  stop_shards(s, 0);
  maybe_finished(s);
}

/* Replaces the admin token and its stale flag together, under the lock. */
static int set_admin_token(td_server_t *s, const char *token, int stale) {
  char *t = NULL;
  if (token && !(t = strdup(token))) return TD_ENOMEM;
  td_server_lock(s);
  char *old = s->admin_token;
  s->admin_token = t;
  s->admin_token_stale = stale;
  td_server_unlock(s);
  if (old) explicit_bzero(old, strlen(old));
  free(old);
  return 0;
}

int td_server_set_admin_token(td_server_t *s, const char *token) {
  return set_admin_token(s, token, 0);
}

/* SIGHUP rereads the token file, so a token can be rotated without a
 * restart. A file that became unreadable (or readable by others) fails
 * closed: no token matches until it is fixed and SIGHUP comes again. */
static void reread_admin_token(td_server_t *s) {
  char *tok = NULL;
  td_err_t err = {0};
  if (td_admin_token_read(s->cfg->admin_token_file, &tok, &err)) {
    td_log_error("%s; admin operations over TCP are refused until it is fixed (then SIGHUP)",
                 err.msg);
    set_admin_token(s, NULL, 1);
    return;
  }
  if (td_server_set_admin_token(s, tok)) td_log_error("admin token: out of memory");
  else td_log_info("admin token reread from %s", s->cfg->admin_token_file);
  explicit_bzero(tok, strlen(tok));
  free(tok);
}

static void on_signal(uv_signal_t *h, int signum) {
  td_server_t *s = h->data;
  if (signum == SIGHUP) {
    if (s->draining) return;
    if (s->cfg->admin_token_file) reread_admin_token(s);
    td_log_info("SIGHUP: reloading the model");
    td_reload_request(s, NULL, NULL);
    return;
  }
  td_log_info("%s received", signum == SIGINT ? "SIGINT" : "SIGTERM");
  td_server_stop(s);
}

/* Called by reload.c when a load finishes during the drain. */
void td_server_reload_finished(td_server_t *s) { maybe_finished(s); }
void td_server_nats_finished(td_server_t *s) { maybe_finished(s); }

/* ------------------------------------------------------------------ */
/* Init / start / free                                                  */

/* ------------------------------------------------------------------ */
/* Posting between loops                                                */

static void post_node(td_server_t *to, td_post_t *p, int *rc) {
  uv_mutex_lock(&to->post_mu);
  if (!to->post_open) {
    *rc = -1;
  } else if (p->queued) {
    *rc = 0; /* an embedded post already on its way: once is enough */
  } else {
    p->next = NULL;
    p->queued = 1;
    if (to->post_tail) to->post_tail->next = p;
    else to->post_head = p;
    to->post_tail = p;
    uv_async_send(&to->post_async); /* under the lock: the handle is not closing */
    *rc = 0;
  }
  uv_mutex_unlock(&to->post_mu);
}

int td_server_post(td_server_t *to, td_post_fn fn, void *arg) {
  td_post_t *p = malloc(sizeof *p);
  int rc;
  if (!p) return -1;
  p->fn = fn;
  p->arg = arg;
  p->heap = 1;
  p->queued = 0;
  post_node(to, p, &rc);
  if (rc) free(p);
  return rc;
}

/* Runs what was posted to s (cancelled: s's loop has stopped). */
static void run_posts(td_server_t *s, int cancelled) {
  uv_mutex_lock(&s->post_mu);
  td_post_t *p = s->post_head;
  s->post_head = s->post_tail = NULL;
  if (cancelled) s->post_open = 0;
  for (td_post_t *q = p; q; q = q->next) q->queued = 0;
  uv_mutex_unlock(&s->post_mu);
  while (p) {
    td_post_t *next = p->next;
    int heap = p->heap;
    p->fn(s, p->arg, cancelled);
    if (heap) free(p);
    p = next;
  }
}

static void on_post(uv_async_t *a) { run_posts(a->data, 0); }

/* On r's own (worker) loop: the answer of a request the main loop handled. */
static void req_done_here(td_server_t *s, void *arg, int cancelled) {
  (void)cancelled; /* answered all the same: the loop still runs its closes */
  td_req_t *r = arg;
  s->remote_pending--;
  td_req_done(r);
  maybe_finished(s); /* the connection may have gone meanwhile */
}

void td_req_done_from(td_server_t *s, td_req_t *r) {
  td_server_t *own = r->conn->srv;
  if (own == s) {
    td_req_done(r);
    return;
  }
  int rc;
  r->post.fn = req_done_here;
  r->post.arg = r;
  r->post.heap = 0;
  post_node(own, &r->post, &rc);
  /* A worker loop does not stop while one of its requests is here
   * (remote_pending), so this cannot fail. */
  if (rc) td_log_error("conn %llu: worker loop %d stopped before an answer", (unsigned long long)r->conn->id,
                       own->shard_index);
}

static int post_init(td_server_t *s) {
  if (uv_mutex_init(&s->post_mu)) return -1;
  if (uv_async_init(s->loop, &s->post_async, on_post)) {
    uv_mutex_destroy(&s->post_mu);
    return -1;
  }
  s->post_async.data = s;
  s->post_open = 1;
  return 0;
}

/* ------------------------------------------------------------------ */
/* Worker loops                                                         */

/* On the main loop: a worker loop has ended. */
static void shard_done(td_server_t *s, void *arg, int cancelled) {
  (void)arg;
  (void)cancelled;
  s->shards_running--;
  maybe_finished(s);
}

static void shard_run(void *arg) {
  td_server_t *sh = arg;
  uv_run(sh->loop, UV_RUN_DEFAULT);
  run_posts(sh, 1); /* and no more posts from here on */
  on_flush_check(&sh->flush_check);
  uv_handle_t *hs[] = {(uv_handle_t *)&sh->post_async, (uv_handle_t *)&sh->drain_timer,
                       (uv_handle_t *)&sh->flush_check, (uv_handle_t *)&sh->flush_idle};
  for (size_t i = 0; i < sizeof hs / sizeof hs[0]; i++)
    if (!uv_is_closing(hs[i])) uv_close(hs[i], NULL);
  uv_run(sh->loop, UV_RUN_DEFAULT);
  td_request_thread_cleanup(); /* this thread's classification scratch */
#ifdef TD_LATTRACE
  lt_report();
#endif
  int rc;
  sh->done_post.fn = shard_done;
  sh->done_post.arg = NULL;
  post_node(sh->main, &sh->done_post, &rc); /* the main loop runs until every shard is done */
  if (rc) td_log_error("worker loop %d: cannot tell the main loop it ended", sh->shard_index);
}

static void flush_init(td_server_t *s) {
  uv_check_init(s->loop, &s->flush_check);
  uv_idle_init(s->loop, &s->flush_idle);
  s->flush_check.data = s->flush_idle.data = s;
  uv_check_start(&s->flush_check, on_flush_check);
  uv_unref((uv_handle_t *)&s->flush_check);
  uv_unref((uv_handle_t *)&s->flush_idle);
}

static int shard_init(td_server_t *s, td_server_t *sh, int index) {
  memset(sh, 0, sizeof *sh);
  sh->cfg = s->cfg;
  sh->workers = s->workers;
  sh->main = s;
  sh->is_shard = 1;
  sh->shard_index = index;
  sh->spare_fd = -1;
  if (!(sh->loop = malloc(sizeof *sh->loop))) return -1;
  if (uv_loop_init(sh->loop)) {
    free(sh->loop);
    sh->loop = NULL;
    return -1;
  }
  flush_init(sh);
  uv_timer_init(sh->loop, &sh->drain_timer);
  sh->drain_timer.data = sh;
  if (post_init(sh)) return -1;
  return 0;
}

static void close_walk(uv_handle_t *h, void *arg) {
  (void)arg;
  if (!uv_is_closing(h)) uv_close(h, NULL);
}

/* Closes a worker loop that never ran (its thread could not start). */
static void shard_discard(td_server_t *sh) {
  if (!sh->loop) return;
  uv_walk(sh->loop, close_walk, NULL);
  uv_run(sh->loop, UV_RUN_DEFAULT);
  uv_loop_close(sh->loop);
  if (sh->post_open) uv_mutex_destroy(&sh->post_mu);
  free(sh->loop);
  sh->loop = NULL;
}

/*
 * Names worker loop i's thread (top -H, /proc/PID/task/TID/comm) and pins it
 * to its CPU when cpu_affinity says (by default when there is one loop per
 * CPU, config.c): each loop then keeps a CPU of its own
 * instead of being stacked by the scheduler beside another loop or a client
 * on the same CPU, which shows as milliseconds of tail latency on a busy
 * machine (bench/NOTES.md). A refused pin (EPERM under a seccomp filter,
 * EINVAL for a CPU gone offline) leaves the loop unpinned, and says so.
 * Returns 1 if the loop was pinned.
 */
static int shard_place(td_server_t *s, td_server_t *sh, int i) {
  char name[16]; /* the kernel's limit, NUL included; loops past 999 share a name */
  snprintf(name, sizeof name, "themed-loop-%u", (unsigned)(i + 1) % 1000u);
  (void)pthread_setname_np(sh->thread, name);
  if (!s->cfg->ncpus) return 0;
  int cpu = s->cfg->cpus[(size_t)i % s->cfg->ncpus];
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  int rc = pthread_setaffinity_np(sh->thread, sizeof set, &set);
  if (rc && s->cfg->cpus_asked)
    td_log_warn("worker loop %d: cannot pin it to CPU %d: %s", i + 1, cpu, strerror(rc));
  else if (rc) /* by default pinning is only a better placement: not worth a warning */
    td_log_info("worker loop %d: not pinned to CPU %d: %s", i + 1, cpu, strerror(rc));
  else td_log_info("worker loop %d: on CPU %d", i + 1, cpu);
  return !rc;
}

/* Starts `n` worker loops; fewer if threads cannot be had (logged). */
static void shards_start(td_server_t *s, int n) {
  if (n <= 0 || !(s->shards = calloc((size_t)n, sizeof *s->shards))) return;
  int started = 0, pinned = 0;
  for (int i = 0; i < n; i++) {
    td_server_t *sh = &s->shards[started];
    int rc = shard_init(s, sh, started + 1) ? UV_ENOMEM : uv_thread_create(&sh->thread, shard_run, sh);
    if (rc) {
      td_log_warn("worker loop %d: cannot start: %s", started + 1, uv_strerror(rc));
      shard_discard(sh);
      continue;
    }
    pinned += shard_place(s, sh, started);
    started++;
  }
  if (started)
    td_log_info("%d worker loop%s, %s", started, td_plural((unsigned)started),
                started == 1 ? (pinned ? "pinned to a CPU" : "not pinned")
                : pinned == started ? "each pinned to a CPU" : pinned ? "some pinned to a CPU" : "not pinned");
  /* Set before any post reaches a worker loop (posts synchronize on post_mu),
   * so every thread sees td_server_lock take the lock from the first. */
  s->nshards = s->shards_running = started;
  if (!started) {
    free(s->shards);
    s->shards = NULL;
    td_log_warn("no worker loop could start: serving on the main loop with the threadpool");
  }
}

/* The main server's locks and post handle; on failure, none is left. */
static int sync_init(td_server_t *s) {
  if (uv_mutex_init(&s->mu)) return -1;
  if (uv_mutex_init(&s->shed_mu)) goto mu;
  if (uv_cond_init(&s->shed_cond)) goto shed_mu;
  if (post_init(s) == 0) return 0;
  uv_cond_destroy(&s->shed_cond);
shed_mu:
  uv_mutex_destroy(&s->shed_mu);
mu:
  uv_mutex_destroy(&s->mu);
  return -1;
}

int td_server_init(td_server_t *s, uv_loop_t *loop, const td_config_t *cfg, int workers,
                   td_model_t *model, td_err_t *err) {
  memset(s, 0, sizeof *s);
  s->loop = loop;
  s->cfg = cfg;
  s->workers = workers;
  s->main = s;
  s->spare_fd = -1;
  /* What can fail comes first, before any handle is on the loop: on failure
   * the caller still owns the model and the loop is untouched. */
  if (sync_init(s))
    return td_err_set(err, TD_ENOMEM, "cannot create the server's locks and wake-up handle");
  spare_open(s); /* see refuse_pending */
  uv_timer_init(loop, &s->spare_timer);
  s->spare_timer.data = s;
  flush_init(s);
  td_metrics_init(&s->metrics);
  td_server_set_model(s, model);
  uv_timer_init(loop, &s->watchdog);
  uv_timer_init(loop, &s->drain_timer);
  uv_signal_init(loop, &s->sig_term);
  uv_signal_init(loop, &s->sig_int);
  uv_signal_init(loop, &s->sig_hup);
  s->watchdog.data = s->drain_timer.data = s;
  s->sig_term.data = s->sig_int.data = s->sig_hup.data = s;
  if (cfg->worker_loops) shards_start(s, workers);
  return 0;
}

int td_server_start(td_server_t *s) {
  uv_signal_start(&s->sig_term, on_signal, SIGTERM);
  uv_signal_start(&s->sig_int, on_signal, SIGINT);
  uv_signal_start(&s->sig_hup, on_signal, SIGHUP);
  uint64_t usec = 0;
  if (sd_watchdog_enabled(0, &usec) > 0 && usec > 0) {
    uint64_t ms = usec / 2000;
    if (ms == 0) ms = 1;
    uv_timer_start(&s->watchdog, on_watchdog, ms, ms);
    td_log_info("watchdog: pinging every %llums", (unsigned long long)ms);
  }
  td_log_info("serving %s with %d worker%s%s", s->model->label, s->workers,
              td_plural((unsigned)s->workers),
              !s->nshards ? " on the threadpool" : s->workers == 1 ? " on its own event loop"
                                                  : ", each on its own event loop");
  td_server_notify_ready(s);
  return 0;
}

void td_server_close(td_server_t *s) {
  on_flush_check(&s->flush_check); /* nothing is left unwritten (or unfreed) */
  td_listeners_close(s);
  if (s->nats) td_nats_close(s->nats);
  uv_handle_t *hs[] = {(uv_handle_t *)&s->watchdog, (uv_handle_t *)&s->drain_timer,
                       (uv_handle_t *)&s->sig_term, (uv_handle_t *)&s->sig_int,
                       (uv_handle_t *)&s->sig_hup, (uv_handle_t *)&s->spare_timer,
                       (uv_handle_t *)&s->flush_check, (uv_handle_t *)&s->flush_idle,
                       (uv_handle_t *)&s->post_async};
  for (size_t i = 0; i < sizeof hs / sizeof hs[0]; i++)
    if (!uv_is_closing(hs[i])) uv_close(hs[i], NULL);
}

void td_server_free(td_server_t *s) {
#ifdef TD_LATTRACE
  lt_report();
#endif
  td_request_thread_cleanup(); /* the loop thread's scratch, if it classified */
  for (int i = 0; i < s->nshards; i++) { /* each has ended (shard_done) */
    td_server_t *sh = &s->shards[i];
    uv_thread_join(&sh->thread);
    if (uv_loop_close(sh->loop) != 0) td_log_warn("worker loop %d closed with handles open", i + 1);
    free(sh->loop);
    free(sh->discard);
    uv_mutex_destroy(&sh->post_mu);
  }
  free(s->shards);
  s->shards = NULL;
  s->nshards = 0;
  free(s->discard);
  s->discard = NULL;
  if (s->spare_fd >= 0) close(s->spare_fd);
  s->spare_fd = -1;
  for (size_t i = 0; i < s->nlisteners; i++) free(s->listeners[i].unlink_path);
  TD_FREE(s->listeners);
  if (s->model) td_model_unref(&s->model);
  td_server_set_admin_token(s, NULL);
  if (s->nats) td_nats_free(s->nats);
  s->nats = NULL;
  td_metrics_free(&s->metrics);
  uv_mutex_destroy(&s->post_mu);
  uv_cond_destroy(&s->shed_cond);
  uv_mutex_destroy(&s->shed_mu);
  uv_mutex_destroy(&s->mu);
}

void td_server_abort(td_server_t *s) {
  td_listeners_close(s);
  td_server_lock(s);
  s->stopping = 1;
  td_server_unlock(s);
  s->draining = 1;
  if (s->nats) td_nats_stop(s->nats);
  close_all(s);
  stop_shards(s, 0);
  maybe_finished(s);
}
