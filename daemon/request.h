/*
 * Requests: decoding, validation and classification (on a worker thread),
 * and the small operations answered on the loop thread (health, ready,
 * model, stats, metrics, reload).
 *
 * Each worker thread keeps one td_scratch_t and one td_result_t for its
 * lifetime: created on its first request, freed when the thread exits
 * (a pthread key destructor), so the hot path does not allocate per passage.
 * The loop thread gets its own the first time it classifies a request, freed
 * by td_server_free (td_request_thread_cleanup).
 */
#ifndef TD_REQUEST_H
#define TD_REQUEST_H

#include "server.h"

/* uv_work_cb: runs on a threadpool thread (td_server_dispatch also calls it
 * on the loop thread for a small request while the pool is idle); touches
 * only its td_req_t, the immutable config, the model reference the request
 * holds and the calling thread's scratch. Leaves r->body empty when the op
 * must be finished on the loop thread. */
void td_request_work(uv_work_t *w);
/* Loop thread: answers health/ready/model/stats/metrics, starts reloads. */
void td_request_local(td_req_t *r);
/*
 * Classifies one payload on the calling thread exactly as a JSON Lines line
 * is classified ({"id","text"} or {"id","passages"} with options; "op", if
 * present, must be "classify"), for callers that are not connections (the
 * NATS consumer). Runs on a worker thread, with that thread's scratch.
 * Returns TD_EC_NONE and *out = the result object, or the error code and
 * *out = the error object {"id"?,"error":{"code","message"}} (*out is NULL
 * only when memory ran out). *id (id may be NULL): the document's id, a new
 * reference, or NULL. On success, *passages and theme_passages (m->ntheme
 * themes, then `other`) are incremented; both may be NULL.
 */
td_ecode_t td_request_classify_payload(const td_config_t *cfg, const td_model_t *m,
                                       const char *data, size_t len, json_t **out, json_t **id,
                                       uint64_t *passages, uint64_t *theme_passages);
/* Frees the calling thread's scratch now (it is also freed at thread exit). */
void td_request_thread_cleanup(void);

#endif
