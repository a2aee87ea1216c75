/*
 * The client side of themectl: endpoints, connecting, and a pipelined JSON
 * Lines request loop shared by `themectl classify --socket`, `stream`,
 * `health`, `stats`, `model` and `reload`.
 *
 * Plain blocking-free POSIX sockets driven by poll(): a CLI has one
 * connection, so an event library would add nothing. The loop writes
 * requests and reads responses in the same poll() round, so a slow reader
 * never deadlocks against a daemon that stops reading until its responses
 * are consumed (the daemon's backpressure).
 *
 * Errors follow the engine convention (daemon/common.h): 0 or a negative
 * TD_E* code, the message for humans in a caller-provided td_err_t.
 */
#ifndef TD_THEMECTL_NET_H
#define TD_THEMECTL_NET_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "common.h"

/* Where the daemon listens. `name` is what error messages show:
 * "unix:/run/themed/themed.sock" or "tcp:127.0.0.1:7700". */
typedef struct td_endpoint {
  int is_unix;
  char path[108];  /* sun_path for unix sockets */
  char host[256];  /* tcp: host name or address (brackets stripped) */
  char port[32];
  char name[400];
} td_endpoint_t;

/* A path, or "unix:PATH", or "tcp:HOST:PORT" (so $THEMED_SOCKET may name either). */
int td_endpoint_unix(td_endpoint_t *ep, const char *spec, td_err_t *err);
/* "HOST:PORT", "[v6addr]:PORT", optionally prefixed "tcp:"; "unix:PATH" also accepted. */
int td_endpoint_tcp(td_endpoint_t *ep, const char *spec, td_err_t *err);
/* $THEMED_SOCKET, else ./run/themed.sock if it exists, else /run/themed/themed.sock. */
int td_endpoint_default(td_endpoint_t *ep, td_err_t *err);

/* Connects within timeout_ms (<= 0: no limit). Returns a non-blocking fd, or a
 * negative code with "cannot connect to NAME: REASON" in err. */
int td_client_connect(const td_endpoint_t *ep, int timeout_ms, td_err_t *err);

/*
 * One request of the pipeline. The producer fills it; the loop owns it until
 * the response is handed to `done`, then frees `data`, `key` and `local`.
 */
typedef struct td_req {
  char *data;      /* request bytes including the final '\n' (malloc'd) */
  size_t len;
  char *key;       /* the request id encoded as compact JSON ("\"a1\"", "7"), or NULL */
  char *local;     /* set instead of data: a response made locally (malloc'd line
                    * without '\n'), e.g. for an input line that is not JSON; it is
                    * delivered in order and never sent */
  uint64_t ibytes; /* input bytes this request stands for (progress/ETA) */
  uint64_t seq;    /* position in the input, filled by the loop */
} td_req_t;

/* r answered locally, never sent: {"id"?,"error":{"code","message"}}.
 * 0, or TD_ENOMEM. */
int td_req_local_error(td_req_t *r, const json_t *id, const char *code, const char *msg);
/* r->data = s (a malloc'd JSON text without newline, taken) + "\n".
 * 0, or TD_ENOMEM (s freed). */
int td_req_take_line(td_req_t *r, char *s);

typedef struct td_pipe_ops {
  /* The next request: 1 = *r filled; 0 = none available now (set *wait_fd to
   * an fd to poll for input, or -1); -1 with err->code 0 = end of input;
   * any other negative value (TD_ENOMEM is -1) = fatal (err). */
  int (*next)(void *ctx, td_req_t *r, int *wait_fd, td_err_t *err);
  /* The response to r, in request order: the raw line (no '\n') and its parse
   * (NULL if the line was not JSON). Returns 0, or a negative code to stop. */
  int (*done)(void *ctx, const td_req_t *r, const char *line, size_t len,
              json_t *resp, td_err_t *err);
  /* Called about every 200 ms while the loop runs (progress display); may be NULL. */
  void (*tick)(void *ctx);
} td_pipe_ops_t;

typedef struct td_pipe_cfg {
  const td_endpoint_t *ep;
  int inflight;       /* at most this many requests sent and unanswered (>= 1) */
  int timeout_ms;     /* connect, and longest wait for a response while requests
                       * are outstanding; <= 0: no limit */
  int reconnect;      /* 1: on connection loss, reconnect once and resend the
                       * unanswered requests (at-least-once); 0: fail */
  int quiet;          /* 1: no "reconnecting" notice on stderr */
} td_pipe_cfg_t;

typedef struct td_pipe_stats {
  uint64_t sent;        /* requests written (resends included) */
  uint64_t answered;    /* responses delivered to done (local ones included) */
  uint64_t resent;      /* requests sent again after a reconnect */
  unsigned reconnects;
} td_pipe_stats_t;

/* Runs until the producer reports end of input and every response has been
 * delivered. 0, or a negative code with the reason in err. */
int td_pipe_run(const td_pipe_cfg_t *cfg, const td_pipe_ops_t *ops, void *ctx,
                td_pipe_stats_t *stats, td_err_t *err);

/* One request, one response: used by health/stats/model/reload. On success
 * *line is the malloc'd response line and *resp its parse (both owned by the
 * caller; *resp NULL if the line is not JSON). */
int td_client_call(const td_endpoint_t *ep, int timeout_ms, const char *reqline,
                   char **line, json_t **resp, td_err_t *err);

/* The id of a request/response object encoded as compact JSON, or NULL if
 * absent. malloc'd. */
char *td_json_id_key(const json_t *obj);

/*
 * Line reader over a file descriptor (a file or a pipe). Lines are returned
 * without '\n' (and without a trailing '\r'); a last line without '\n' is
 * returned at end of file. Reads never block once poll() reported input, so
 * the pipeline keeps draining responses while a slow producer writes stdin.
 */
typedef struct td_lines {
  int fd;
  int regular;       /* a regular file: always readable */
  int eof;
  char *buf;
  size_t len, off, cap;
  size_t scanned;    /* bytes after off already searched for '\n' */
  size_t max_line;   /* longer lines are an error (TD_ELIMIT) */
  uint64_t consumed; /* bytes handed out as lines, newlines included */
  uint64_t lineno;   /* 1-based number of the last line handed out */
} td_lines_t;

void td_lines_init(td_lines_t *l, int fd);
void td_lines_free(td_lines_t *l);
/* 1: *line and *n set (valid until the next call); 0: would block (poll l->fd);
 * -1 with err->code 0: end of input; else an error (err; TD_ENOMEM is -1 too). */
int td_lines_next(td_lines_t *l, char **line, size_t *n, td_err_t *err);

/* The lines of several inputs in turn ("-" is stdin; no names: stdin),
 * blank lines (spaces and tabs only) skipped. Borrows names. */
typedef struct td_inputs {
  const char *const *names;
  size_t n, next;
  int fd;            /* the input being read, -1 between inputs */
  const char *name;  /* its name for messages ("stdin" for "-") */
  td_lines_t lines;
  uint64_t consumed; /* bytes of the finished inputs */
} td_inputs_t;

void td_inputs_init(td_inputs_t *in, const char *const *names, size_t n);
void td_inputs_free(td_inputs_t *in);
/* As td_lines_next, over all inputs: 1 a line; 0 would block (poll
 * *wait_fd); -1 with err->code 0 after the last input; else an error
 * naming the input. */
int td_inputs_next(td_inputs_t *in, char **line, size_t *len, int *wait_fd, td_err_t *err);
/* Bytes handed out so far, newlines included, over all inputs. */
uint64_t td_inputs_consumed(const td_inputs_t *in);

/* ------------------------------------------------------ the commands */

/* themectl_client_main (tools/themectl.h) dispatches health, reload, stats,
 * model, classify --socket/--connect itself and `stream` to: */
/* `themectl stream` (tools/themectl_stream.c). */
int td_stream_main(int argc, char **argv);

/* Exit statuses of the client commands. */
#define TD_EXIT_OK 0
#define TD_EXIT_FAIL 1     /* unreachable, unhealthy, refused, fatal I/O (THEMECTL_EXIT_FAIL) */
#define TD_EXIT_USAGE 2    /* bad command line (THEMECTL_EXIT_USAGE) */
#define TD_EXIT_PARTIAL 3  /* stream finished, some articles got error responses */

/* Options every client command takes: --socket, --connect, --timeout. */
typedef struct td_conn_opts {
  td_endpoint_t ep;
  int have_ep;
  int timeout_ms;  /* <= 0: none */
} td_conn_opts_t;
/* Handles one of the shared options; 1 = handled, 0 = not ours, < 0 = bad value (err). */
int td_conn_opt(td_conn_opts_t *o, const char *name, const char *arg, td_err_t *err);
/* Fills the default endpoint if none was given. */
int td_conn_finish(td_conn_opts_t *o, td_err_t *err);
/* Classification options a client adds to each request (unset: the daemon's defaults). */
typedef struct td_cls_opts {
  double threshold;  /* < 0: unset */
  int top_k;         /* < 0: unset */
  int explain, include_text;
} td_cls_opts_t;
void td_cls_opts_init(td_cls_opts_t *o);
int td_cls_opts_any(const td_cls_opts_t *o);
/* Sets "threshold", "top_k", "explain", "include_text" on a request object. */
int td_cls_opts_apply(const td_cls_opts_t *o, json_t *req);
/* Parses --threshold/--top-k values; < 0 with a message on bad input. */
int td_parse_threshold(const char *s, double *out, td_err_t *err);
int td_parse_count(const char *s, const char *what, long min, long max, long *out, td_err_t *err);

/* "12", "1.5", "500ms", "2s", "1m" -> ms (0 = no limit). */
int td_parse_timeout(const char *s, int *ms);

#endif
