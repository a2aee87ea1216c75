/*
 * The service: a main libuv loop that accepts, and a loop per worker that
 * serves the connections handed to it (or one loop and a threadpool).
 *
 * Objects and who owns them:
 *   td_server_t    the daemon: config (borrowed), current model (one
 *                  reference), metrics, listeners, connections, reload queue.
 *   td_listener_t  one listening socket (ours or inherited from systemd).
 *   td_conn_t      one client connection: read buffer, protocol state, the
 *                  FIFO of its requests, timers. Freed when its three handles
 *                  have closed and no request refers to it (refs == 0).
 *   td_req_t       one request: input bytes, the model reference it took at
 *                  dispatch, the response bytes. Lives in its connection's
 *                  queue from framing until its response is written.
 *
 * Threads: a connection and its requests belong to one loop and are touched
 * only on that loop's thread, except td_request_work(), which runs on the
 * loop thread itself (a worker loop's requests up to 16 KiB; on the main
 * loop, one small request per iteration while the pool is idle) or on a
 * libuv threadpool thread, and touches only its own td_req_t, the immutable
 * config and the model reference the request holds.
 *
 * Ordering: responses are queued in request order; a request completes out of
 * order on the workers but is written only when every earlier one on the same
 * connection has been (td_conn_flush writes the head while it is done).
 * td_req_done does not write: it puts the connection on the server's flush
 * list, written once per loop iteration (after every completion of that
 * iteration), so the answers ready together leave in one write.
 */
#ifndef TD_SERVER_H
#define TD_SERVER_H

#include <jansson.h>
#include <stdint.h>
#include <uv.h>

#include "common.h"
#include "config.h"
#include "metrics.h"
#include "model.h"
#include "wire.h"

typedef struct td_server td_server_t;
typedef struct td_conn td_conn_t;
typedef struct td_req td_req_t;
struct td_http;
struct td_nats;

typedef union td_stream {
  uv_handle_t handle;
  uv_stream_t stream;
  uv_tcp_t tcp;
  uv_pipe_t pipe;
} td_stream_t;

typedef struct td_listener {
  td_stream_t h;
  td_server_t *srv;
  int is_unix;
  int inherited;      /* from systemd: never unlink its path */
  int open;
  char name[300];     /* "unix:/run/themed.sock", "tcp:127.0.0.1:40123" */
  char *unlink_path;  /* our own unix socket, removed at exit */
  td_stream_t drop;   /* accepts a connection there was no memory to serve */
  int drop_busy;      /* drop is closing */
  int drop_pending;   /* a connection waits for drop */
} td_listener_t;

/* A function run on another loop's thread (td_server_post). cancelled: that
 * loop had stopped, so only the argument's resources are to be released. */
typedef void (*td_post_fn)(td_server_t *s, void *arg, int cancelled);
typedef struct td_post {
  struct td_post *next;
  td_post_fn fn;
  void *arg;
  int heap;            /* allocated by td_server_post: freed after it ran */
  int queued;          /* in a loop's list (under that loop's post_mu) */
} td_post_t;

enum td_conn_state {
  TD_CONN_OPEN = 0,
  TD_CONN_FINISHING, /* a response ends the connection: flush, then shut down */
  TD_CONN_SHUTDOWN,  /* FIN sent: reading and discarding until EOF or linger */
  TD_CONN_CLOSING,   /* uv_close called */
};

#define TD_PROTO_NONE (-1)

struct td_conn {
  td_server_t *srv;
  td_stream_t h;
  uv_timer_t idle_timer;   /* idle timeout; then the linger after shutdown */
  uv_timer_t header_timer; /* HTTP header timeout; sniff timeout when rejecting */
  uv_shutdown_t sreq;
  td_conn_t *prev, *next;  /* server's list */
  uint64_t id;
  int proto;               /* TD_PROTO_NONE until the first byte */
  int is_tcp;              /* admin ops need the token when one is configured */
  int rejecting;           /* over max_connections: one error, then close */
  int state;
  int reading;             /* uv_read_start in effect */
  int eof;                 /* peer finished sending */
  int paused;              /* framing stopped: max_pending requests in flight */
  int in_process;          /* inside on_data: td_conn_check must not recurse */
  int refs;                /* 3 handles + every td_req_t that points here */
  td_buf_t rbuf;           /* unconsumed input */
  size_t scan;             /* JSONL: bytes of rbuf known to hold no LF */
  td_req_t *qhead, *qtail; /* requests whose responses are not yet written */
  size_t qlen;
  size_t out_bytes;        /* handed to uv_write, not yet completed */
  uint64_t inline_iter;    /* worker loop: the iteration inline_bytes counts for */
  size_t inline_bytes;     /* request bytes classified on the loop in that iteration */
  int handed;              /* main loop: handed to a worker loop, closing here */
  int flush_queued;        /* on the server's flush list (holds a ref) */
  td_conn_t *flush_next;
  struct td_http *http;    /* HTTP parser state (proto_http.c) */
};

enum td_req_kind {
  TD_REQ_LOCAL = 0,    /* answered on the loop thread */
  TD_REQ_JSONL,        /* a JSON line: parsed (and classified) on a worker */
  TD_REQ_HTTP_CLASSIFY,
  TD_REQ_HTTP_RELOAD,  /* body parsed on a worker, reload started on the loop */
};

struct td_req {
  td_conn_t *conn;
  td_req_t *next;
  uv_work_t work;
  uv_write_t wr;
  td_post_t post;      /* carries it back to its own loop (td_req_done_from) */
  int kind;
  td_proto_t proto;
  td_op_t op;
  int done;            /* response complete (may still wait for earlier ones) */
  int close_after;     /* the connection ends after this response */
  int keepalive;       /* HTTP */
  int pooled;          /* handed to the threadpool (counted in pool_inflight) */
  uint64_t t0;         /* uv_hrtime at framing */
  char *in;            /* request bytes (line or body), owned */
  size_t inlen;
  char *auth;          /* HTTP Authorization bearer token, owned */
  td_model_t *model;   /* reference taken at dispatch (classify only) */
  json_t *json;        /* parsed request kept for loop-side ops */
  json_t *id;          /* echoed id, or NULL */
  td_ecode_t ecode;
  int status;          /* HTTP status */
  const char *ctype;   /* HTTP Content-Type */
  const char *allow;   /* HTTP Allow header on 405 */
  td_buf_t head, body; /* response bytes: HTTP head + body, or a JSON line */
  size_t wlen;         /* bytes handed to uv_write with r->wr (a batch: all of it) */
  uint64_t passages;   /* classified, for metrics */
  uint64_t *theme_passages; /* per theme of req->model, then `other` */
#ifdef TD_LATTRACE
  /* uv_hrtime stamps: queued to the pool, work started and ended (on the
   * worker), completion seen on the loop (bench/NOTES.md, "Serving latency") */
  uint64_t t_queued, t_wstart, t_wend, t_after;
#endif
};

enum { TD_SHED_NONE = 0, TD_SHED_ASKED, TD_SHED_DONE };

typedef struct td_reload_job {
  struct td_reload_job *next;
  char *path;          /* NULL: the current model's directory */
  td_req_t *req;       /* the request waiting for the result; NULL for SIGHUP */
} td_reload_job_t;

/*
 * One td_server_t per event loop. The main one (main == itself) owns the
 * listeners, signals, reloads, NATS and everything shared: the model, the
 * metrics and the admin token. With worker loops (--worker-loops, the
 * default) each worker thread runs a loop of its own, a "shard" (is_shard),
 * that serves the connections the main loop accepted and handed to it and
 * classifies their requests itself; without, the main loop serves every
 * connection and classifies on libuv's threadpool. Shared fields are read
 * and written through s->main, under s->main->mu (td_server_lock) whenever
 * another loop may touch them; the main loop, their only writer, reads the
 * model and the admin token without it.
 */
struct td_server {
  uv_loop_t *loop;
  const td_config_t *cfg;
  int workers;
  td_server_t *main;        /* the main loop's server (itself, there) */
  int is_shard;
  int shard_index;          /* 1.. for shards, 0 for the main loop */
  /* Shared (main only; under mu when shards run) */
  uv_mutex_t mu;
  td_model_t *model;        /* current; one reference owned here */
  char model_loaded_at[32]; /* ISO 8601 UTC */
  td_metrics_t metrics;
  /* Main only: the worker loops and the connections over every loop. */
  td_server_t *shards;
  int nshards, shards_running;
  int stopping;             /* the stop has begun (under mu: `ready` on every loop) */
  size_t nconns_all;        /* accepted, not yet closed, over every loop (under mu) */
  /* Every loop: functions posted from other threads (td_server_post). */
  uv_async_t post_async;
  uv_mutex_t post_mu;
  td_post_t *post_head, *post_tail;
  int post_open;            /* post_async accepts posts (under post_mu) */
  uv_thread_t thread;       /* shards */
  size_t live;              /* shard: its connections (main reads it under mu to balance) */
  size_t remote_pending;    /* shard: reload requests at the main loop, not yet back */
  /* Posts that must not fail for want of memory: the stop (twice: a second
   * stop closes everything) and, from a shard to the main loop, its end. */
  td_post_t stop_post[2], done_post;
  uint64_t iter;            /* loop iterations (the check phase counts them) */
  /* main: out of descriptors, a worker loop is asked to close a connection
   * and the main loop waits for it (server.c, shed_sync) */
  uv_mutex_t shed_mu;
  uv_cond_t shed_cond;
  int shed_state;           /* TD_SHED_* */
  char *discard;            /* reads of a connection that is ending land here */
  td_listener_t *listeners;
  size_t nlisteners;
  td_conn_t *conns;
  size_t nconns, nrejecting;
  /* Connections with answers to write. Written once per loop iteration, after
   * every completion of that iteration has run (the check phase), so the
   * answers of one connection leave in one write; the idle handle keeps the
   * poll from blocking while the list is not empty. */
  td_conn_t *flush_head, *flush_tail;
  uv_check_t flush_check;
  uv_idle_t flush_idle;
  /* Work items queued to the threadpool and not yet completed; while there
   * are none, one small request per loop iteration is classified on the
   * loop thread instead (td_server_dispatch). */
  size_t pool_inflight;
  int inline_used;          /* this iteration's one is taken */
  uint64_t next_conn_id;
  uv_signal_t sig_term, sig_int, sig_hup;
  int spare_fd;             /* reserve fd for accept() at EMFILE (server.c) */
  uv_timer_t spare_timer;   /* reopens it on the next loop turn */
  uint64_t accept_warned_ns; /* last accept failure logged (rate limit) */
  uv_timer_t watchdog, drain_timer;
  int draining;             /* SIGTERM seen: no new work, closing when idle */
  int stopped;              /* every handle closed or closing */
  /* reload.c: one load at a time, the rest wait in FIFO order */
  uv_work_t reload_work;
  td_reload_job_t *reload_head, *reload_tail, *reload_running;
  size_t reload_queued;
  td_model_t *reload_result;
  td_err_t reload_err;
  uint64_t reload_t0;
  struct td_nats *nats;     /* the JetStream consumer (nats.c), NULL without --nats */
  /* Admin operations over TCP need this token (docs/operations.md). NULL:
   * none configured, and then they are refused over TCP. */
  char *admin_token;
  int admin_token_stale;    /* the token file could not be reread on SIGHUP */
};

/* server.c */
int td_server_init(td_server_t *s, uv_loop_t *loop, const td_config_t *cfg, int workers,
                   td_model_t *model, td_err_t *err);
/* Binds --listen addresses and adopts systemd's sockets (n_inherited from
 * sd_listen_fds), then starts listening. */
int td_server_listen(td_server_t *s, int n_inherited, td_err_t *err);
/* Signals, watchdog, READY=1. Then run the loop. */
int td_server_start(td_server_t *s);
/* listener.c, for --check-config: what binding a would find wrong before
 * bind(2) is tried: a unix socket's directory missing (or not a directory),
 * a TCP host that does not resolve. 0 or TD_EIO with err set; binding can
 * still fail (permissions, a port in use). */
int td_listen_addr_check(const td_listen_addr_t *a, td_err_t *err);
/* listener.c: closes every listener (and removes our own unix socket files). */
void td_listeners_close(td_server_t *s);
/* uv_connection_cb of every listener. */
void td_server_on_connection(uv_stream_t *ls, int status);
/* Closes everything at once (a failed start); run the loop after it. */
void td_server_abort(td_server_t *s);
/* After uv_run returns: closes the server's own handles (run the loop once
 * more to finish the closes), then td_server_free frees the rest. */
void td_server_close(td_server_t *s);
/* Frees everything left; every handle must have closed. */
void td_server_free(td_server_t *s);
/* Begins the graceful stop (SIGTERM/SIGINT). */
void td_server_stop(td_server_t *s);
void td_server_set_model(td_server_t *s, td_model_t *m); /* takes the reference */
void td_server_notify_ready(td_server_t *s);
/* Sets (a copy of) the admin token; NULL: none. */
int td_server_set_admin_token(td_server_t *s, const char *token);
/* reload.c tells the server a load finished (the stop may be waiting). */
void td_server_reload_finished(td_server_t *s);
/* nats.c tells the server its consumer went idle during the stop. */
void td_server_nats_finished(td_server_t *s);

/* Runs fn(to, arg, 0) on to's loop thread, soon. Callable from any thread.
 * Returns 0, or -1 if that loop has stopped (fn was not queued). */
int td_server_post(td_server_t *to, td_post_fn fn, void *arg);
/* The shared state's lock (s->main->mu). */
void td_server_lock(td_server_t *s);
void td_server_unlock(td_server_t *s);
/* td_req_done on r's own loop: at once if that is s's, else posted there. */
void td_req_done_from(td_server_t *s, td_req_t *r);

/* Requests: create, queue on the connection, hand to a worker or answer. */
td_req_t *td_req_new(td_conn_t *c, int kind, td_proto_t proto);
void td_req_free(td_req_t *r);
/* Appends r to its connection's queue and starts it. */
void td_server_dispatch(td_req_t *r);
/* Marks r answered (ecode/body set), records metrics, writes what is ready. */
void td_req_done(td_req_t *r);
/* Response body from a JSON value (stolen); JSONL gets its trailing LF. */
int td_req_set_json(td_req_t *r, json_t *v);
/* Error response with r->id. */
void td_req_set_error(td_req_t *r, td_ecode_t code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Connections. */
void td_conn_flush(td_conn_t *c);
/* Rechecks backpressure, resumes framing, closes when finished. */
void td_conn_check(td_conn_t *c);
/* Starts (on != 0, unless running) or stops the HTTP header timer. */
void td_conn_header_timer(td_conn_t *c, int on);
/* Queues an error that ends the connection (after earlier responses). */
void td_conn_fail(td_conn_t *c, td_proto_t proto, td_ecode_t code, const char *msg);

#endif
