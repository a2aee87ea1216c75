#include "proto_http.h"

#include <http_parser.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define TD_HTTP_MAX_URL 8192
#define TD_HTTP_MAX_HEADER_VALUE 4096

enum { H_OTHER = 0, H_AUTH, H_EXPECT };

typedef struct td_http {
  http_parser parser;
  td_conn_t *conn;
  td_buf_t url, body, field, auth, expect;
  int header;        /* which header the value bytes belong to */
  int in_value;
  int stop;          /* Connection: close seen: parse nothing after it */
  td_ecode_t err;    /* set by a callback that fails the parse */
  char errmsg[160];
} td_http_t;

static int cb_error(td_http_t *h, td_ecode_t code, const char *msg) {
  h->err = code;
  snprintf(h->errmsg, sizeof h->errmsg, "%s", msg);
  return -1;
}

static int on_message_begin(http_parser *p) {
  td_http_t *h = p->data;
  td_buf_reset(&h->url);
  td_buf_reset(&h->body);
  td_buf_reset(&h->field);
  td_buf_reset(&h->auth);
  td_buf_reset(&h->expect);
  h->header = H_OTHER;
  h->in_value = 0;
  td_conn_header_timer(h->conn, 1); /* slowloris: headers must complete in time */
  return 0;
}

static int on_url(http_parser *p, const char *at, size_t n) {
  td_http_t *h = p->data;
  if (h->url.len + n > TD_HTTP_MAX_URL) return cb_error(h, TD_EC_TOO_LARGE, "URL too long");
  return td_buf_append(&h->url, at, n) ? cb_error(h, TD_EC_INTERNAL, "out of memory") : 0;
}

static int on_header_field(http_parser *p, const char *at, size_t n) {
  td_http_t *h = p->data;
  if (h->in_value) {
    td_buf_reset(&h->field);
    h->in_value = 0;
  }
  if (h->field.len + n > 64) return 0; /* not one we read */
  return td_buf_append(&h->field, at, n) ? cb_error(h, TD_EC_INTERNAL, "out of memory") : 0;
}

static int on_header_value(http_parser *p, const char *at, size_t n) {
  td_http_t *h = p->data;
  if (!h->in_value) {
    h->in_value = 1;
    const char *f = h->field.data ? h->field.data : "";
    h->header = !strcasecmp(f, "authorization") ? H_AUTH : !strcasecmp(f, "expect") ? H_EXPECT : H_OTHER;
  }
  td_buf_t *b = h->header == H_AUTH ? &h->auth : h->header == H_EXPECT ? &h->expect : NULL;
  if (!b) return 0;
  if (b->len + n > TD_HTTP_MAX_HEADER_VALUE) return cb_error(h, TD_EC_TOO_LARGE, "header too long");
  return td_buf_append(b, at, n) ? cb_error(h, TD_EC_INTERNAL, "out of memory") : 0;
}

static int on_headers_complete(http_parser *p) {
  td_http_t *h = p->data;
  td_conn_t *c = h->conn;
  size_t max = c->srv->cfg->max_request_bytes;
  td_conn_header_timer(c, 0);
  if ((p->flags & F_CONTENTLENGTH) && p->content_length > max) {
    char msg[160];
    snprintf(msg, sizeof msg, "body of %llu bytes exceeds the limit of %zu bytes",
             (unsigned long long)p->content_length, max);
    return cb_error(h, TD_EC_TOO_LARGE, msg);
  }
  /* curl waits a second for this before sending a large body. Only when
   * nothing is queued before it, so it cannot overtake a response. */
  if (h->expect.len && !strncasecmp(h->expect.data, "100-continue", 12) && !c->qhead && !c->out_bytes) {
    static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
    uv_buf_t b = uv_buf_init((char *)cont, sizeof cont - 1);
    uv_try_write(&c->h.stream, &b, 1);
  }
  return 0;
}

static int on_body(http_parser *p, const char *at, size_t n) {
  td_http_t *h = p->data;
  size_t max = h->conn->srv->cfg->max_request_bytes;
  if (h->body.len + n > max) {
    char msg[160];
    snprintf(msg, sizeof msg, "body exceeds the limit of %zu bytes", max);
    return cb_error(h, TD_EC_TOO_LARGE, msg);
  }
  return td_buf_append(&h->body, at, n) ? cb_error(h, TD_EC_INTERNAL, "out of memory") : 0;
}

typedef struct route {
  const char *path;
  int method;    /* the one allowed */
  int kind;
  td_op_t op;
} route_t;

static const route_t g_routes[] = {
    {"/v1/classify", HTTP_POST, TD_REQ_HTTP_CLASSIFY, TD_OP_CLASSIFY},
    {"/v1/health", HTTP_GET, TD_REQ_LOCAL, TD_OP_HEALTH},
    {"/v1/ready", HTTP_GET, TD_REQ_LOCAL, TD_OP_READY},
    {"/v1/model", HTTP_GET, TD_REQ_LOCAL, TD_OP_MODEL},
    {"/v1/stats", HTTP_GET, TD_REQ_LOCAL, TD_OP_STATS},
    {"/metrics", HTTP_GET, TD_REQ_LOCAL, TD_OP_METRICS},
    {"/v1/reload", HTTP_POST, TD_REQ_HTTP_RELOAD, TD_OP_RELOAD},
};

/*
 * The path a request target routes by, into *path and *plen. Origin-form
 * ("/v1/health?x") is the usual one. Absolute-form ("http://x/v1/health")
 * is what a client sends through a proxy, and RFC 7230 section 5.3.2 says a
 * server must accept it: http_parser_parse_url splits it, and an http or
 * https target routes by its path ("/" if it has none). Anything else
 * (asterisk-form, another scheme) is routed as it stands, to a 404.
 */
static void target_path(const char *url, size_t ulen, const char **path, size_t *plen) {
  *path = url;
  *plen = strcspn(url, "?#");
  if (url[0] == '/') return;
  struct http_parser_url u;
  http_parser_url_init(&u);
  if (http_parser_parse_url(url, ulen, 0, &u) || !(u.field_set & (1 << UF_SCHEMA))) return;
  const char *scheme = url + u.field_data[UF_SCHEMA].off;
  size_t slen = u.field_data[UF_SCHEMA].len;
  if (!((slen == 4 && !strncasecmp(scheme, "http", 4)) || (slen == 5 && !strncasecmp(scheme, "https", 5))))
    return;
  if (u.field_set & (1 << UF_PATH)) {
    *path = url + u.field_data[UF_PATH].off;
    *plen = u.field_data[UF_PATH].len;
  } else {
    *path = "/";
    *plen = 1;
  }
}

static int on_message_complete(http_parser *p) {
  td_http_t *h = p->data;
  td_conn_t *c = h->conn;
  const char *url;
  size_t plen;
  target_path(h->url.data ? h->url.data : "", h->url.len, &url, &plen);
  const route_t *rt = NULL;
  for (size_t i = 0; i < sizeof g_routes / sizeof g_routes[0]; i++)
    if (strlen(g_routes[i].path) == plen && !strncmp(g_routes[i].path, url, plen)) rt = &g_routes[i];

  int keepalive = http_should_keep_alive(p);
  int kind = rt && (int)p->method == rt->method ? rt->kind : TD_REQ_LOCAL;
  td_req_t *r = td_req_new(c, kind, TD_PROTO_HTTP);
  if (!r) return cb_error(h, TD_EC_INTERNAL, "out of memory");
  r->keepalive = keepalive;
  r->close_after = !keepalive;
  if (!rt) {
    td_req_set_error(r, TD_EC_NOT_FOUND, "no such path: %.*s",
                     (int)td_utf8_prefix(url, plen > 200 ? 200 : plen), url);
  } else if ((int)p->method != rt->method) {
    r->op = rt->op;
    r->allow = rt->method == HTTP_GET ? "GET" : "POST";
    td_req_set_error(r, TD_EC_METHOD_NOT_ALLOWED, "%s %s: use %s", http_method_str(p->method),
                     rt->path, r->allow);
  } else {
    r->op = rt->op;
    if (kind != TD_REQ_LOCAL) { /* the body moves to the request */
      r->in = h->body.data ? h->body.data : NULL;
      r->inlen = h->body.len;
      td_buf_init(&h->body);
      if (kind == TD_REQ_HTTP_CLASSIFY && r->inlen == 0)
        td_req_set_error(r, TD_EC_INVALID_REQUEST, "empty body: send a JSON document");
    }
    if (h->auth.len > 7 && !strncasecmp(h->auth.data, "Bearer ", 7)) r->auth = strdup(h->auth.data + 7);
  }
  td_server_dispatch(r);
  if (!keepalive) {
    h->stop = 1;
    http_parser_pause(p, 1);
  } else if (c->qlen >= c->srv->cfg->max_pending) {
    c->paused = 1; /* resumed by td_conn_check as responses go out */
    http_parser_pause(p, 1);
  }
  return 0;
}

static const http_parser_settings g_settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

int td_http_init(td_conn_t *c) {
  td_http_t *h = calloc(1, sizeof *h);
  if (!h) return TD_ENOMEM;
  http_parser_init(&h->parser, HTTP_REQUEST);
  h->parser.data = h;
  h->conn = c;
  td_buf_init(&h->url);
  td_buf_init(&h->body);
  td_buf_init(&h->field);
  td_buf_init(&h->auth);
  td_buf_init(&h->expect);
  c->http = h;
  return 0;
}

void td_http_free(td_conn_t *c) {
  td_http_t *h = c->http;
  if (!h) return;
  td_buf_free(&h->url);
  td_buf_free(&h->body);
  td_buf_free(&h->field);
  td_buf_free(&h->auth);
  td_buf_free(&h->expect);
  free(h);
  c->http = NULL;
}

static void parse_failed(td_conn_t *c, enum http_errno e) {
  td_http_t *h = c->http;
  char msg[200];
  if (h->err) {
    td_conn_fail(c, TD_PROTO_HTTP, h->err, h->errmsg);
    return;
  }
  if (e == HPE_HEADER_OVERFLOW) {
    td_conn_fail(c, TD_PROTO_HTTP, TD_EC_TOO_LARGE, "request headers too large");
    return;
  }
  if (e == HPE_INVALID_EOF_STATE) {
    td_conn_fail(c, TD_PROTO_HTTP, TD_EC_INVALID_REQUEST,
                 "incomplete HTTP request: the client closed its side before the request ended");
    return;
  }
  snprintf(msg, sizeof msg, "malformed HTTP request: %s", http_errno_description(e));
  td_conn_fail(c, TD_PROTO_HTTP, TD_EC_INVALID_REQUEST, msg);
}

void td_http_process(td_conn_t *c) {
  td_http_t *h = c->http;
  if (h->stop) {
    td_buf_reset(&c->rbuf);
    return;
  }
  if (c->paused) return;
  if (HTTP_PARSER_ERRNO(&h->parser) == HPE_PAUSED) http_parser_pause(&h->parser, 0);
  size_t off = 0;
  while (c->state == TD_CONN_OPEN && off < c->rbuf.len) {
    size_t n = http_parser_execute(&h->parser, &g_settings, c->rbuf.data + off, c->rbuf.len - off);
    off += n;
    enum http_errno e = HTTP_PARSER_ERRNO(&h->parser);
    if (e == HPE_PAUSED) break;
    if (e != HPE_OK) {
      parse_failed(c, e);
      return;
    }
    if (n == 0) break;
  }
  if (c->state != TD_CONN_OPEN) return;
  if (h->stop) off = c->rbuf.len;
  if (off) {
    memmove(c->rbuf.data, c->rbuf.data + off, c->rbuf.len - off);
    c->rbuf.len -= off;
  }
  /* The client half-closed: if that cut a request short (headers not
   * ended, a body shorter than its Content-Length, a chunked body without
   * its last chunk), say so before closing rather than close in silence.
   * A zero-length execute is http_parser's way to be told of EOF: it fails
   * with HPE_INVALID_EOF_STATE in the middle of a message, and does nothing
   * between messages. */
  if (c->eof && !c->paused && HTTP_PARSER_ERRNO(&h->parser) == HPE_OK) {
    td_buf_reset(&c->rbuf);
    http_parser_execute(&h->parser, &g_settings, NULL, 0);
    enum http_errno e = HTTP_PARSER_ERRNO(&h->parser);
    if (e != HPE_OK) parse_failed(c, e);
  }
}

int td_http_head(td_req_t *r) {
  td_buf_reset(&r->head);
  int rc = td_buf_printf(&r->head, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s%s%s%s\r\n",
                         r->status, td_http_reason(r->status), r->ctype, r->body.len,
                         r->allow ? "Allow: " : "", r->allow ? r->allow : "", r->allow ? "\r\n" : "",
                         r->close_after ? "Connection: close\r\n" : "Connection: keep-alive\r\n");
  return rc;
}
