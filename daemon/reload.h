/*
 * Hot reload: SIGHUP, POST /v1/reload and {"op":"reload"}.
 *
 * The bundle is loaded and fully validated (td_model_load) on a threadpool
 * thread, then swapped in on the loop thread. Requests in flight keep the
 * model reference they took at dispatch; the old model is freed with its last
 * reference. A bad bundle is refused with its reason and the old model keeps
 * serving. Reloads are serialized: one load at a time, later requests wait
 * in FIFO order (each gets its own answer); SIGHUPs arriving while one is
 * already queued are merged into it.
 */
#ifndef TD_RELOAD_H
#define TD_RELOAD_H

#include "server.h"

#define TD_RELOAD_MAX_QUEUED 16

/* Queues a reload of path (NULL: the current model's directory). req, if
 * not NULL, is answered when the load finishes. */
void td_reload_request(td_server_t *s, const char *path, td_req_t *req);
/* Answers every queued, not yet started reload with shutting_down. */
void td_reload_cancel_queued(td_server_t *s);
int td_reload_busy(const td_server_t *s);

#endif
