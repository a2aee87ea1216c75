/*
 * JSON Lines framing: one request per LF-terminated line (CRLF accepted),
 * responses in request order. A line longer than max_line_bytes loses the
 * framing: too_large, then the connection closes. A line over
 * max_request_bytes (when the line limit is larger) gets too_large and the
 * connection survives. Blank lines are skipped. At EOF a last unterminated
 * line is still a request.
 */
#ifndef TD_PROTO_JSONL_H
#define TD_PROTO_JSONL_H

#include "server.h"

/* Frames and dispatches the complete lines in c->rbuf; stops (c->paused)
 * when max_pending requests are in flight. */
void td_jsonl_process(td_conn_t *c);

#endif
