#include "proto_jsonl.h"

#include <stdio.h>
#include <string.h>

static int blank(const char *s, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r') return 0;
  return 1;
}

static void too_long(td_conn_t *c, size_t n) {
  char msg[160];
  snprintf(msg, sizeof msg, "line of %s%zu bytes exceeds the line limit of %zu bytes; closing",
           c->eof ? "" : "at least ", n, c->srv->cfg->max_line_bytes);
  td_conn_fail(c, TD_PROTO_JSONL, TD_EC_TOO_LARGE, msg);
}

void td_jsonl_process(td_conn_t *c) {
  const td_config_t *cfg = c->srv->cfg;
  size_t pos = 0;
  while (c->state == TD_CONN_OPEN) {
    if (c->qlen >= cfg->max_pending) { /* backpressure: resume as answers drain */
      c->paused = 1;
      break;
    }
    char *base = c->rbuf.data + pos;
    size_t avail = c->rbuf.len - pos, linelen, next;
    char *nl = avail > c->scan ? memchr(base + c->scan, '\n', avail - c->scan) : NULL;
    if (!nl) {
      if (avail > cfg->max_line_bytes) {
        too_long(c, avail);
        return;
      }
      c->scan = avail;
      if (!c->eof || avail == 0) break;
      linelen = next = avail; /* the last line may lack its LF */
    } else {
      linelen = (size_t)(nl - base);
      next = linelen + 1;
    }
    c->scan = 0;
    size_t len = linelen;
    if (len && base[len - 1] == '\r') len--;
    if (len > cfg->max_line_bytes) {
      too_long(c, len);
      return;
    }
    pos += next;
    if (blank(base, len)) continue;
    td_req_t *r = td_req_new(c, TD_REQ_JSONL, TD_PROTO_JSONL);
    if (!r) {
      td_conn_fail(c, TD_PROTO_JSONL, TD_EC_INTERNAL, "out of memory");
      return;
    }
    if (len > cfg->max_request_bytes) {
      td_req_set_error(r, TD_EC_TOO_LARGE, "request of %zu bytes exceeds the limit of %zu bytes", len,
                       cfg->max_request_bytes);
    } else if (!(r->in = malloc(len + 1))) {
      td_req_set_error(r, TD_EC_INTERNAL, "out of memory");
    } else {
      memcpy(r->in, base, len);
      r->in[len] = '\0';
      r->inlen = len;
    }
    td_server_dispatch(r);
  }
  if (c->state != TD_CONN_OPEN) return; /* td_conn_fail dropped the buffer */
  if (pos) {
    memmove(c->rbuf.data, c->rbuf.data + pos, c->rbuf.len - pos);
    c->rbuf.len -= pos;
  }
}
