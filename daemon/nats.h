/*
 * The NATS JetStream consumer (--nats): articles in from a stream through a
 * durable pull consumer that every daemon shares, results out on a results
 * subject, malformed articles out on a dead-letter subject (docs/scaling.md).
 *
 * Delivery is at least once: an article is acked only after the server has
 * confirmed (JetStream publish ack) the result or dead letter it produced.
 * A result publish that fails or is not confirmed in time naks the article
 * with a growing delay; a daemon that dies leaves its unacked articles to be
 * redelivered after the consumer's AckWait. Results carry the article's id
 * (and Nats-Msg-Id "<stream>:<seq>@<model>", so a redelivered article within
 * the results stream's duplicate window is stored once).
 *
 * Threads:
 *   fetch thread  (ours) connects, creates the stream(s) and the consumer when
 *                 missing, fetches batches of at most the free in-flight slots
 *                 (--nats-max-inflight) and hands them to the loop (uv_async);
 *   loop thread   takes a model reference per article, queues it on libuv's
 *                 threadpool like a socket request, counts the outcome in the
 *                 metrics, frees the article;
 *   worker        decodes and classifies (td_request_classify_payload), then
 *                 publishes the result asynchronously (js_PublishMsgAsync);
 *   libnats       the publish ack arrives on a libnats thread: the article is
 *                 acked (or nak'ed) there and handed back to the loop.
 * Nothing libnats does blocks the loop, so socket clients are served while
 * NATS is down; /v1/ready says "nats":"disconnected" meanwhile.
 */
#ifndef TD_NATS_H
#define TD_NATS_H

#include "server.h"

typedef struct td_nats td_nats_t;

/* Loop thread, after the listeners are up: sets s->nats and starts the fetch
 * thread. Connecting happens in the background (retried forever), so only a
 * bad URL or a failure to start the thread is an error. */
int td_nats_start(td_server_t *s, td_err_t *err);
/* The graceful stop began: fetch no more; articles in flight finish (result
 * confirmed, then acked); articles fetched meanwhile are nak'ed at once so
 * another daemon takes them. td_server_nats_finished() when idle. */
void td_nats_stop(td_nats_t *n);
/* The drain timed out: give up waiting for publish acks (those articles are
 * nak'ed; their results may still land, deduplicated by Nats-Msg-Id). */
void td_nats_abort(td_nats_t *n);
/* 1 while the consumer still has work (the stop must wait). */
int td_nats_busy(const td_nats_t *n);
/* "connected" or "disconnected" (any thread). */
const char *td_nats_state(const td_nats_t *n);
/* After uv_run returns: flushes and closes the connection, waits for
 * libnats' threads, closes the uv_async handle (run the loop once more). */
void td_nats_close(td_nats_t *n);
/* Frees what is left; td_nats_close must have run and the loop finished. */
void td_nats_free(td_nats_t *n);

#endif
