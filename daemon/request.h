/*
 * Requests: decoding, validation and classification (on a worker thread),
 * and the small operations answered on the loop thread (health, ready,
 * model, stats, metrics, reload).
 *
 * Each worker thread keeps one td_scratch_t and one td_result_t for its
 * lifetime: created on its first request, freed when the thread exits
 * (a pthread key destructor), so the hot path does not allocate per passage.
 */
#ifndef TD_REQUEST_H
#define TD_REQUEST_H

#include "server.h"

/* uv_work_cb: runs on a threadpool thread; touches only its td_req_t, the
 * immutable config and the model reference the request holds. Leaves
 * r->body empty when the op must be finished on the loop thread. */
void td_request_work(uv_work_t *w);
/* Loop thread: answers health/ready/model/stats/metrics, starts reloads. */
void td_request_local(td_req_t *r);
/* Frees the calling thread's scratch now (it is also freed at thread exit). */
void td_request_thread_cleanup(void);

#endif
