/*
 * HTTP/1.1 on http_parser: keep-alive, pipelining (answered in order),
 * Content-Length and chunked bodies, header timeout, routing.
 *
 *   POST /v1/classify   one document, or {"documents":[...]}
 *   GET  /v1/health  /v1/ready  /v1/model  /v1/stats  /metrics
 *   POST /v1/reload     optional body {"path":...}
 */
#ifndef TD_PROTO_HTTP_H
#define TD_PROTO_HTTP_H

#include "server.h"

int td_http_init(td_conn_t *c);
void td_http_free(td_conn_t *c);
/* Parses what is buffered in c->rbuf; pauses at max_pending. */
void td_http_process(td_conn_t *c);
/* Builds r->head (status line and headers for r->body) before writing. */
int td_http_head(td_req_t *r);

#endif
