/*
 * Counters, gauges and the request-duration histogram behind GET /metrics
 * (Prometheus text format 0.0.4) and the "stats" op.
 *
 * Threading: one td_metrics_t, in the main server, changed and read under
 * td_server_lock when worker loops run (server.h); whoever classified writes
 * what it did into its request, and the request's loop adds it up when it is
 * answered.
 */
#ifndef TD_METRICS_H
#define TD_METRICS_H

#include <jansson.h>
#include <stdint.h>

#include "common.h"
#include "model.h"
#include "wire.h"

#define TD_METRICS_NBUCKETS 13

/* What became of an article consumed from NATS (nats.c). */
enum td_nats_result { TD_NATS_OK = 0, TD_NATS_DEAD, TD_NATS_NAK, TD_NATS_RESULT_COUNT };

typedef struct td_theme_count {
  char *name;
  uint64_t passages;
} td_theme_count_t;

typedef struct td_metrics {
  uint64_t requests[TD_PROTO_COUNT][TD_OP_COUNT];
  uint64_t passages;
  uint64_t errors[TD_EC_COUNT];
  uint64_t hist[TD_METRICS_NBUCKETS + 1]; /* last: +Inf */
  double hist_sum;
  uint64_t hist_count;
  td_theme_count_t *themes; /* grows when a reload brings new theme names */
  size_t nthemes;
  uint64_t connections, connections_total, connections_rejected;
  uint64_t reloads_ok, reloads_failed;
  double model_load_seconds, model_loaded_at; /* Unix time of the last swap */
  double started_at;                          /* Unix time */
  uint64_t start_ns;                          /* monotonic */
  /* The NATS consumer, when --nats is set (nats.c updates these on the loop thread). */
  int nats_enabled, nats_connected;
  uint64_t nats_inflight;
  uint64_t nats_messages[TD_NATS_RESULT_COUNT];
} td_metrics_t;

void td_metrics_init(td_metrics_t *m);
void td_metrics_free(td_metrics_t *m);

/* One finished request: ecode TD_EC_NONE on success; seconds from framing to
 * response. */
void td_metrics_request(td_metrics_t *m, td_proto_t proto, td_op_t op, td_ecode_t ecode,
                        double seconds);
/* An error that is not a request (timeouts, refused connections). */
void td_metrics_error(td_metrics_t *m, td_ecode_t ecode);
/* Adds passages tagged with theme `name` (`other`: no theme). */
int td_metrics_theme(td_metrics_t *m, const char *name, uint64_t passages);
/* The same, trying slot `hint` first (a model's theme k is usually slot k:
 * td_metrics_model_loaded adds them in order), so the lock is held for one
 * string comparison rather than a search. */
int td_metrics_theme_at(td_metrics_t *m, size_t hint, const char *name, uint64_t passages);
/* A model went live (startup or reload). */
void td_metrics_model_loaded(td_metrics_t *m, const td_model_t *model);

/* Appends the Prometheus exposition to b. model may be NULL. */
int td_metrics_render(const td_metrics_t *m, const td_model_t *model, td_buf_t *b);
/* The "stats" object (new reference). */
json_t *td_metrics_stats_json(const td_metrics_t *m, const td_model_t *model, int workers);

/* Wall clock as a double. */
double td_metrics_wallclock(void);

#endif
