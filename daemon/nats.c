#include "nats.h"

#include <nats/nats.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "classify.h"
#include "log.h"
#include "natsutil.h"
#include "request.h"

#define FETCH_WAIT_MS 500         /* one Fetch waits at most this long: bounds the stop */
#define FETCH_MAX_BATCH 1024
#define API_WAIT_MS 3000          /* JetStream API requests (stream/consumer info, create) */
#define PUBLISH_WAIT_MAX_MS 5000  /* a publish not confirmed within this has failed */
#define RECONNECT_WAIT_MS 500
#define PING_INTERVAL_MS 5000     /* a silent dead server is noticed in ~15 s */
#define NAK_DELAY_MS 1000         /* first redelivery delay after a transient failure */
#define NAK_DELAY_MAX_MS 60000    /* doubles per delivery up to this */
#define SETUP_RETRY_MAX_MS 10000
#define CONSUMER_MAX_ACK_PENDING 10000
#define CONSUMER_CHECK_NS 5000000000ull /* idle this long: check the consumer still exists */
#define ID_HEADER_MAX 256         /* Themed-Id is cut here; the body has the whole id */
#define HEADER_ROOM 2048          /* kept free of the max payload for headers */

enum job_kind { JOB_RESULT, JOB_DEAD };

typedef struct job {
  struct job *next;        /* inbox/done queues */
  struct job *hnext;       /* awaiting table chain */
  td_nats_t *n;
  natsMsg *msg;            /* the article, owned */
  natsMsg *pub;            /* identifies the publish awaiting its ack (libnats owns it) */
  uv_work_t work;
  td_model_t *model;       /* reference taken at dispatch */
  int kind;                /* what was published */
  td_ecode_t ecode;        /* JOB_DEAD: the dead letter's error code */
  int outcome;             /* TD_NATS_OK / DEAD / NAK */
  int linked;              /* in the awaiting table (under n->mu) */
  int awaiting;            /* worker: the publish was accepted, an answer will come */
  int worked;              /* loop: after_work ran */
  int answered;            /* loop: the publish answer (or the abort) came */
  uint64_t delivered;      /* JetStream delivery count, for the nak backoff */
  uint64_t passages;
  uint64_t *theme_passages; /* per theme of model, then other */
} job_t;

struct td_nats {
  td_server_t *srv;
  const td_config_t *cfg;
  uv_async_t async;
  uv_thread_t thread;
  int thread_started, thread_joined;
  int lib_alive; /* nats_CloseAndWait timed out: libnats threads may still call in */
  int64_t publish_wait_ms;
  uv_mutex_t mu;
  uv_cond_t cond;          /* the fetch thread waits here for slots (or the stop) */
  /* under mu */
  int stop;
  int fetch_exited;
  size_t inflight;         /* fetched, not yet finished on the loop */
  job_t *inbox_head, *inbox_tail; /* fetched, for the loop to dispatch */
  job_t *done_head, *done_tail;   /* publish answered, for the loop to finish */
  job_t **awaiting;        /* publishes waiting for their ack, by published message */
  size_t nbuckets;         /* a power of two */
  /* loop thread only */
  int stopping, finished, closed;
  /* libnats objects: opts from td_nats_start; nc, js, sub made by the fetch
   * thread before the first article exists, so workers and handlers that
   * see an article also see them. */
  natsOptions *opts;
  natsConnection *nc;
  jsCtx *js;
  natsSubscription *sub;
  atomic_int connected;
  atomic_int closing;      /* td_nats_close: disconnects are expected */
  atomic_llong warned_ns;  /* rate limit of per-article warnings */
  char instance[300];      /* Themed-Instance: "host/pid" */
  char url[512];           /* --nats for logs, passwords and tokens blanked */
  char results_stream[300];
  /* fetch thread: the streams that store results and dead letters (setup) */
  char results_owner[300], dead_owner[300];
};

/* ------------------------------------------------------------------ */
/* Helpers                                                              */

/* The awaiting table, under n->mu: the ack handler is given the message
 * that was published and finds its article here. */
static size_t bucket(const td_nats_t *n, const natsMsg *m) {
  uint64_t h = (uint64_t)(uintptr_t)m * 0x9e3779b97f4a7c15ull;
  return (size_t)(h >> 32) & (n->nbuckets - 1);
}

static void await_add(td_nats_t *n, job_t *j) {
  size_t b = bucket(n, j->pub);
  j->hnext = n->awaiting[b];
  n->awaiting[b] = j;
  j->linked = 1;
}

static job_t *await_take(td_nats_t *n, const natsMsg *m) {
  for (job_t **p = &n->awaiting[bucket(n, m)]; *p; p = &(*p)->hnext)
    if ((*p)->pub == m) {
      job_t *j = *p;
      *p = j->hnext;
      j->hnext = NULL;
      j->linked = 0;
      j->pub = NULL;
      return j;
    }
  return NULL;
}

/* At most one such warning a second: a NATS outage fails every article in
 * flight, and one line says it as well as sixty-four. */
static void warn_limited(td_nats_t *n, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void warn_limited(td_nats_t *n, const char *fmt, ...) {
  long long now = (long long)td_now_ns(), last = atomic_load(&n->warned_ns);
  if (last && now - last < 1000000000LL) return;
  if (!atomic_compare_exchange_strong(&n->warned_ns, &last, now)) return;
  char msg[700];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  td_log_warn("%s", msg);
}

/* Blanks the credentials of every URL in a comma-separated list (the
 * user:secret or token before '@' becomes ***): the URL goes to the log,
 * its password or token must not. */
static void redact_url(const char *in, char *out, size_t cap) {
  size_t o = 0;
  while (*in && o + 1 < cap) {
    const char *end = strchr(in, ','), *at, *sl = strstr(in, "://");
    size_t len = end ? (size_t)(end - in) : strlen(in);
    const char *host = sl && (size_t)(sl - in) < len ? sl + 3 : in;
    /* The last '@', as libnats splits user info from the host: a password
     * may hold an '@' of its own (found in review: its tail was logged). */
    at = memrchr(host, '@', len - (size_t)(host - in));
    int n = at ? snprintf(out + o, cap - o, "%.*s***%.*s", (int)(host - in), in,
                          (int)(len - (size_t)(at - in)), at)
               : snprintf(out + o, cap - o, "%.*s", (int)len, in);
    if (n < 0) break;
    o += (size_t)n < cap - o ? (size_t)n : cap - o - 1;
    if (!end) break;
    if (o + 1 < cap) out[o++] = ',';
    in = end + 1;
  }
  out[o < cap ? o : cap - 1] = '\0';
}

/* Header values are one line: anything but printable bytes is replaced. */
static void header_clean(char *s) {
  for (unsigned char *p = (unsigned char *)s; *p; p++)
    if (*p < 0x20 || *p == 0x7f) *p = '?';
}

static int64_t nak_delay_ms(uint64_t delivered) {
  int64_t d = NAK_DELAY_MS;
  for (uint64_t i = 1; i < delivered && d < NAK_DELAY_MAX_MS; i++) d *= 2;
  return d > NAK_DELAY_MAX_MS ? NAK_DELAY_MAX_MS : d;
}

static void nak(job_t *j) {
  natsStatus s = natsMsg_NakWithDelay(j->msg, nak_delay_ms(j->delivered), NULL);
  if (s != NATS_OK) /* the article comes back after AckWait anyway */
    td_log_debug("nats: nak failed: %s", natsStatus_GetText(s));
  j->outcome = TD_NATS_NAK;
}

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static char *base64(const unsigned char *p, size_t n) {
  char *o = malloc((n + 2) / 3 * 4 + 1), *q = o;
  if (!o) return NULL;
  for (size_t i = 0; i < n; i += 3) {
    unsigned v = (unsigned)p[i] << 16 | (i + 1 < n ? (unsigned)p[i + 1] << 8 : 0) |
                 (i + 2 < n ? p[i + 2] : 0);
    *q++ = b64[v >> 18 & 63];
    *q++ = b64[v >> 12 & 63];
    *q++ = i + 1 < n ? b64[v >> 6 & 63] : '=';
    *q++ = i + 2 < n ? b64[v & 63] : '=';
  }
  *q = '\0';
  return o;
}

/* ------------------------------------------------------------------ */
/* Loop thread: dispatch and finish                                    */

static void check_finished(td_nats_t *n, int notify);
static void job_work(uv_work_t *w);
static void job_after(uv_work_t *w, int status);

static void job_finish(td_nats_t *n, job_t *j) {
  td_metrics_t *m = &n->srv->metrics;
  td_server_lock(n->srv); /* worker loops read and add to them too */
  m->nats_messages[j->outcome]++;
  /* A stored dead letter is an error answered, as a socket client's would
   * be: it counts under its code (once, however often it was published). */
  if (j->outcome == TD_NATS_DEAD) td_metrics_error(m, j->ecode);
  if (j->outcome == TD_NATS_OK && j->passages && j->theme_passages && j->model) {
    m->passages += j->passages;
    for (size_t k = 0; k < j->model->ntheme; k++)
      if (j->theme_passages[k]) td_metrics_theme(m, j->model->themes[k].name, j->theme_passages[k]);
    td_metrics_theme(m, "other", j->theme_passages[j->model->ntheme]);
  }
  td_server_unlock(n->srv);
  if (j->model) td_model_unref(&j->model);
  natsMsg_Destroy(j->msg);
  free(j->theme_passages);
  free(j);
  uv_mutex_lock(&n->mu);
  n->inflight--;
  uint64_t inflight = n->inflight;
  uv_cond_signal(&n->cond);
  uv_mutex_unlock(&n->mu);
  td_server_lock(n->srv);
  m->nats_inflight = inflight;
  td_server_unlock(n->srv);
  check_finished(n, 1);
}

static void job_dispatch(td_nats_t *n, job_t *j) {
  td_server_t *s = n->srv;
  if (n->stopping) { /* hand it back now: another daemon takes it */
    natsMsg_Nak(j->msg, NULL);
    j->outcome = TD_NATS_NAK;
    job_finish(n, j);
    return;
  }
  j->model = td_model_ref(s->model);
  int rc = uv_queue_work(s->loop, &j->work, job_work, job_after);
  if (rc) {
    warn_limited(n, "nats: cannot queue work: %s", uv_strerror(rc));
    nak(j);
    job_finish(n, j);
  }
}

static void job_after(uv_work_t *w, int status) {
  job_t *j = w->data;
  j->worked = 1;
  if (!j->awaiting || j->answered) job_finish(j->n, j);
}

static void on_async(uv_async_t *a) {
  td_nats_t *n = a->data;
  uv_mutex_lock(&n->mu);
  job_t *in = n->inbox_head, *done = n->done_head;
  n->inbox_head = n->inbox_tail = n->done_head = n->done_tail = NULL;
  uint64_t inflight = n->inflight;
  uv_mutex_unlock(&n->mu);
  td_server_lock(n->srv);
  n->srv->metrics.nats_inflight = inflight;
  n->srv->metrics.nats_connected = atomic_load(&n->connected);
  td_server_unlock(n->srv);
  while (in) {
    job_t *j = in;
    in = j->next;
    j->next = NULL;
    job_dispatch(n, j);
  }
  while (done) {
    job_t *j = done;
    done = j->next;
    j->next = NULL;
    j->answered = 1;
    if (j->worked) job_finish(n, j);
  }
  check_finished(n, 1);
}

/* Once stopping and idle: finished. notify: tell the server (not from
 * td_nats_stop, whose caller checks by itself once its stop is set up). */
static void check_finished(td_nats_t *n, int notify) {
  if (!n->stopping || n->finished) return;
  uv_mutex_lock(&n->mu);
  int busy = (n->thread_started && !n->fetch_exited) || n->inflight > 0 || n->inbox_head;
  uv_mutex_unlock(&n->mu);
  if (busy) return;
  if (n->thread_started && !n->thread_joined) {
    uv_thread_join(&n->thread);
    n->thread_joined = 1;
  }
  n->finished = 1;
  td_log_info("nats: consumer stopped");
  /* Libnats may still signal connection changes until td_nats_close; the
   * handle stays open for that but no longer keeps the loop alive. */
  uv_unref((uv_handle_t *)&n->async);
  if (notify) td_server_nats_finished(n->srv);
}

/* ------------------------------------------------------------------ */
/* Worker: classify, publish                                            */

/* The id for the Themed-Id header: a string as it is, anything else as JSON. */
static void id_header(const json_t *id, char *out, size_t cap) {
  out[0] = '\0';
  if (json_is_string(id)) {
    snprintf(out, cap, "%s", json_string_value(id));
  } else if (id) {
    char *s = json_dumps(id, JSON_ENCODE_ANY | JSON_COMPACT);
    if (s) snprintf(out, cap, "%s", s);
    free(s);
  }
  header_clean(out);
}

static natsStatus set_headers(td_nats_t *n, job_t *j, natsMsg *m, const json_t *id, uint64_t seq) {
  char buf[ID_HEADER_MAX + 1];
  natsStatus s = NATS_OK;
  if (id) {
    id_header(id, buf, sizeof buf);
    s = natsMsgHeader_Set(m, "Themed-Id", buf);
  }
  snprintf(buf, sizeof buf, "%s", j->model->label);
  header_clean(buf);
  if (s == NATS_OK) s = natsMsgHeader_Set(m, "Themed-Model", buf);
  if (seq && s == NATS_OK) {
    snprintf(buf, sizeof buf, "%llu", (unsigned long long)seq);
    s = natsMsgHeader_Set(m, "Themed-Seq", buf);
  }
  if (s == NATS_OK) s = natsMsgHeader_Set(m, "Themed-Instance", n->instance);
  return s;
}

/*
 * The dead letter: the error object ({"id"?,"error":{"code","message"}})
 * plus where the article came from and the article itself: "payload" as
 * text when it is UTF-8, else "payload_base64"; cut (base64, with
 * "payload_truncated") when the whole would not fit the max payload.
 */
static char *dead_letter(json_t *err, const char *data, size_t len, const char *subject,
                         const jsMsgMetaData *meta, int64_t max_payload, size_t *outlen) {
  json_t *o = json_deep_copy(err);
  if (!o) return NULL;
  json_object_set_new(o, "subject", json_string(subject ? subject : ""));
  if (meta) {
    json_object_set_new(o, "stream", json_string(meta->Stream ? meta->Stream : ""));
    json_object_set_new(o, "seq", json_integer((json_int_t)meta->Sequence.Stream));
    json_object_set_new(o, "delivered", json_integer((json_int_t)meta->NumDelivered));
  }
  json_object_set_new(o, "payload_bytes", json_integer((json_int_t)len));
  char *s = NULL;
  json_t *text = json_stringn(data, len); /* NULL if not UTF-8 */
  if (text) {
    json_object_set_new(o, "payload", text);
    s = json_dumps(o, TD_JSON_DUMP_FLAGS);
    if (s && (int64_t)strlen(s) + HEADER_ROOM > max_payload) TD_FREE(s);
    if (!s) json_object_del(o, "payload");
  }
  if (!s) {
    char *probe = json_dumps(o, TD_JSON_DUMP_FLAGS);
    int64_t room = max_payload - HEADER_ROOM - (probe ? (int64_t)strlen(probe) : 0) - 64;
    free(probe);
    size_t keep = len;
    if (room < 0) room = 0;
    if ((int64_t)((len + 2) / 3 * 4) > room) {
      keep = (size_t)(room / 4 * 3);
      json_object_set_new(o, "payload_truncated", json_true());
    }
    char *b = base64((const unsigned char *)data, keep);
    if (b) json_object_set_new(o, "payload_base64", json_string(b));
    free(b);
    s = json_dumps(o, TD_JSON_DUMP_FLAGS);
  }
  json_decref(o);
  if (s) *outlen = strlen(s);
  return s;
}

/* The article's id (a new reference), or NULL when it has none: what a
 * classification would have taken as its id (an object's scalar "id"), read
 * without classifying, for a dead letter of an article that is not
 * classified. An article over max_request_bytes is not parsed (it would be
 * refused as too_large, without an id). */
static json_t *article_id(const td_config_t *cfg, const char *data, size_t len) {
  if (!data || len > cfg->max_request_bytes) return NULL;
  json_t *j = json_loadb(data, len, 0, NULL), *id = json_object_get(j, "id");
  if (td_wire_id_ok(id)) json_incref(id); /* the id rule of every request */
  else id = NULL;
  json_decref(j);
  return id;
}

/* Links j to the awaiting list and publishes m; on failure the article is
 * nak'ed here. j is not touched after an accepted publish: the ack handler
 * owns the outcome from then on. */
static void publish(td_nats_t *n, job_t *j, natsMsg *m, const char *msgid) {
  jsPubOptions po;
  jsPubOptions_Init(&po);
  po.MaxWait = n->publish_wait_ms;
  po.MsgId = msgid;
  const char *subject = natsMsg_GetSubject(m);
  char subj[300];
  snprintf(subj, sizeof subj, "%s", subject ? subject : "?");
  natsMsg *key = m;
  uv_mutex_lock(&n->mu);
  j->pub = m;
  j->awaiting = 1;
  await_add(n, j);
  uv_mutex_unlock(&n->mu);
  natsStatus s = js_PublishMsgAsync(n->js, &m, &po);
  if (s == NATS_OK) return;
  uv_mutex_lock(&n->mu);
  int mine = await_take(n, key) == j;
  if (mine) j->awaiting = 0;
  uv_mutex_unlock(&n->mu);
  natsMsg_Destroy(m);
  if (!mine) return; /* td_nats_abort took it */
  warn_limited(n, "nats: publishing to %s failed: %s; the article is redelivered in %lldms", subj,
               td_natsutil_err(s), (long long)nak_delay_ms(j->delivered));
  nak(j);
}

static void job_work(uv_work_t *w) {
  job_t *j = w->data;
  td_nats_t *n = j->n;
  const td_config_t *cfg = n->cfg;
  const char *data = natsMsg_GetData(j->msg);
  size_t len = (size_t)natsMsg_GetDataLength(j->msg);
  jsMsgMetaData *meta = NULL;
  json_t *out = NULL, *id = NULL;
  natsMsg *m = NULL;
  char *body = NULL, msgid[400];
  size_t blen = 0;

  if (natsMsg_GetMetaData(&meta, j->msg) != NATS_OK) meta = NULL;
  j->delivered = meta ? meta->NumDelivered : 1;
  uint64_t seq = meta ? meta->Sequence.Stream : 0;
  int64_t max_payload = natsConnection_GetMaxPayload(n->nc);
  if (max_payload <= 0) max_payload = 1 << 20;

  if (!(j->theme_passages = calloc(j->model->ntheme + 1, sizeof *j->theme_passages))) goto transient;
  td_ecode_t ec;
  if (cfg->nats_max_deliver && j->delivered > cfg->nats_max_deliver) {
    /* Delivered this often without an outcome: the daemons that took it
     * may have died on it. Classifying it again could take the next one
     * down too, so it goes to the dead letters as it is (nothing lost). */
    char msg[240];
    snprintf(msg, sizeof msg,
             "delivered %llu times without an outcome (nats_max_deliver %zu): not classified "
             "again; a daemon may have stopped while classifying it",
             (unsigned long long)j->delivered, cfg->nats_max_deliver);
    warn_limited(n, "nats: article seq %llu %s", (unsigned long long)seq, msg);
    id = article_id(cfg, data, len);
    if (!(out = td_wire_error(id, TD_EC_TOO_MANY_DELIVERIES, msg))) goto transient;
    ec = TD_EC_TOO_MANY_DELIVERIES;
  } else {
    ec = td_request_classify_payload(cfg, j->model, data ? data : "", data ? len : 0, &out, &id,
                                     &j->passages, j->theme_passages);
  }
  if (!out) goto transient;
  if (ec == TD_EC_NONE) {
    if (!(body = json_dumps(out, TD_JSON_DUMP_FLAGS))) goto transient;
    blen = strlen(body);
    if ((int64_t)blen + HEADER_ROOM > max_payload) {
      /* A result NATS cannot carry would fail forever: dead-letter it. */
      char msg[200];
      snprintf(msg, sizeof msg, "result of %zu bytes exceeds the NATS max payload of %lld bytes",
               blen, (long long)max_payload);
      TD_FREE(body);
      json_decref(out);
      if (!(out = td_wire_error(id, TD_EC_TOO_LARGE, msg))) goto transient;
      ec = TD_EC_TOO_LARGE;
      j->passages = 0;
    }
  } else if (ec == TD_EC_INTERNAL || ec == TD_EC_SHUTTING_DOWN) {
    json_t *e = json_object_get(json_object_get(out, "error"), "message");
    warn_limited(n, "nats: article seq %llu not classified (%s): %s", (unsigned long long)seq,
                 td_ecode_name(ec), json_string_value(e) ? json_string_value(e) : "");
    goto transient;
  }
  if (ec == TD_EC_NONE) {
    j->kind = JOB_RESULT;
    if (natsMsg_Create(&m, cfg->nats_results, NULL, body, (int)blen) != NATS_OK) goto transient;
  } else {
    j->kind = JOB_DEAD;
    j->ecode = ec;
    j->passages = 0;
    if (!(body = dead_letter(out, data ? data : "", data ? len : 0, natsMsg_GetSubject(j->msg), meta,
                             max_payload, &blen)))
      goto transient;
    if (natsMsg_Create(&m, cfg->nats_dead_letter, NULL, body, (int)blen) != NATS_OK) goto transient;
    if (natsMsgHeader_Set(m, "Themed-Error", td_ecode_name(ec)) != NATS_OK) goto transient;
    td_log_debug("nats: article seq %llu is malformed (%s): dead-lettered", (unsigned long long)seq,
                 td_ecode_name(ec));
  }
  if (set_headers(n, j, m, id, seq) != NATS_OK) goto transient;
  /* Redelivered articles publish the same id: JetStream keeps one within
   * the results stream's duplicate window. The model is part of it, so a
   * deliberate re-run with another model is not mistaken for a duplicate. */
  msgid[0] = '\0';
  if (meta && meta->Stream)
    snprintf(msgid, sizeof msgid, "%s:%llu@%s%s", meta->Stream, (unsigned long long)seq,
             j->model->label, j->kind == JOB_DEAD ? ":dead" : "");
  header_clean(msgid);
  publish(n, j, m, msgid[0] ? msgid : NULL);
  m = NULL;
  goto out;
transient:
  j->passages = 0;
  nak(j);
out:
  natsMsg_Destroy(m);
  free(body);
  json_decref(out);
  json_decref(id);
  jsMsgMetaData_Destroy(meta);
}

/* ------------------------------------------------------------------ */
/* libnats threads: publish acks, connection events                     */

static void on_pub_ack(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *closure) {
  td_nats_t *n = closure;
  uv_mutex_lock(&n->mu);
  job_t *j = await_take(n, msg);
  uv_mutex_unlock(&n->mu);
  if (!j) { /* abandoned by td_nats_abort */
    natsMsg_Destroy(msg);
    return;
  }
  if (pa) {
    /* Confirmed: now, and only now, the article is done. If this ack is
     * lost the article comes back and its result is deduplicated. */
    natsStatus s = natsMsg_Ack(j->msg, NULL);
    if (s != NATS_OK) td_log_debug("nats: ack failed: %s (the article will be redelivered)", natsStatus_GetText(s));
    j->outcome = j->kind == JOB_RESULT ? TD_NATS_OK : TD_NATS_DEAD;
  } else {
    const char *subject = natsMsg_GetSubject(msg);
    warn_limited(n, "nats: publish to %s not confirmed: %s; the article is redelivered in %lldms",
                 subject ? subject : "?",
                 pae && pae->ErrText && *pae->ErrText ? pae->ErrText
                                                     : natsStatus_GetText(pae ? pae->Err : NATS_ERR),
                 (long long)nak_delay_ms(j->delivered));
    nak(j);
  }
  natsMsg_Destroy(msg);
  uv_mutex_lock(&n->mu);
  if (n->done_tail) n->done_tail->next = j;
  else n->done_head = j;
  n->done_tail = j;
  uv_mutex_unlock(&n->mu);
  uv_async_send(&n->async);
}

static void conn_url(natsConnection *nc, char *buf, size_t cap) {
  char raw[512];
  if (natsConnection_GetConnectedUrl(nc, raw, sizeof raw) != NATS_OK || !*raw) snprintf(raw, sizeof raw, "?");
  redact_url(raw, buf, cap);
}

static void on_connected(natsConnection *nc, void *closure) {
  td_nats_t *n = closure;
  char url[256];
  conn_url(nc, url, sizeof url);
  atomic_store(&n->connected, 1);
  td_log_info("nats: connected to %s", url);
  uv_async_send(&n->async);
}

static void on_reconnected(natsConnection *nc, void *closure) {
  td_nats_t *n = closure;
  char url[256];
  conn_url(nc, url, sizeof url);
  atomic_store(&n->connected, 1);
  td_log_info("nats: reconnected to %s", url);
  uv_async_send(&n->async);
}

static void on_disconnected(natsConnection *nc, void *closure) {
  td_nats_t *n = closure;
  atomic_store(&n->connected, 0);
  if (!atomic_load(&n->closing))
    td_log_warn("nats: disconnected; reconnecting every %dms (socket clients are still served)",
                RECONNECT_WAIT_MS);
  uv_async_send(&n->async);
}

static void on_closed(natsConnection *nc, void *closure) {
  td_nats_t *n = closure;
  atomic_store(&n->connected, 0);
  uv_async_send(&n->async);
}

static void on_error(natsConnection *nc, natsSubscription *sub, natsStatus err, void *closure) {
  td_nats_t *n = closure;
  warn_limited(n, "nats: %s", natsStatus_GetText(err));
}

/* ------------------------------------------------------------------ */
/* Fetch thread                                                         */

static int stopped(td_nats_t *n) {
  uv_mutex_lock(&n->mu);
  int s = n->stop;
  uv_mutex_unlock(&n->mu);
  return s;
}

/* Sleeps ms, or less when the stop comes. */
static void nap(td_nats_t *n, uint64_t ms) {
  uv_mutex_lock(&n->mu);
  uint64_t until = uv_hrtime() + ms * 1000000ull;
  while (!n->stop) {
    uint64_t now = uv_hrtime();
    if (now >= until || uv_cond_timedwait(&n->cond, &n->mu, until - now) == UV_ETIMEDOUT) break;
  }
  uv_mutex_unlock(&n->mu);
}

/* Creates the stream `name` on `subjects` unless a stream of that name
 * exists. *created tells whether it did. */
/* Creates the stream `name` on the subjects, with themed's settings (file
 * storage, nats_replicas). */
static natsStatus add_stream(td_nats_t *n, const char *name, const char **subjects, int nsubj,
                             jsErrCode *je) {
  jsStreamConfig sc;
  jsStreamInfo *si = NULL;
  jsStreamConfig_Init(&sc);
  sc.Name = name;
  sc.Subjects = subjects;
  sc.SubjectsLen = nsubj;
  sc.Storage = js_FileStorage;
  sc.Replicas = (int64_t)n->cfg->nats_replicas;
  natsStatus s = js_AddStream(&si, n->js, &sc, NULL, je);
  jsStreamInfo_Destroy(si);
  return s;
}

static natsStatus ensure_stream(td_nats_t *n, const char *name, const char **subjects, int nsubj,
                                int *created, jsErrCode *je, char *why, size_t cap) {
  jsStreamInfo *si = NULL;
  *created = 0;
  natsStatus s = js_GetStreamInfo(&si, n->js, name, NULL, je);
  jsStreamInfo_Destroy(si);
  si = NULL;
  if (s == NATS_OK) return s;
  if (s != NATS_NOT_FOUND && *je != JSStreamNotFoundErr) {
    snprintf(why, cap, "stream %s: %s", name, td_natsutil_err(s));
    return s;
  }
  s = add_stream(n, name, subjects, nsubj, je);
  if (s == NATS_OK) *created = 1;
  else if (*je == JSStreamNameExistErr) s = NATS_OK; /* another daemon was quicker */
  else snprintf(why, cap, "creating stream %s: %s", name, td_natsutil_err(s));
  return s;
}

/*
 * Results and dead letters each need a stream that stores them: a JetStream
 * publish is acked by that stream, and without one every result is refused
 * and every article redelivered, forever. So each subject is looked up on
 * its own; the ones no stream captures go into <stream>_RESULTS, created
 * for them. A <stream>_RESULTS that exists but captures neither is a name
 * clash: refused (its settings are not ours to change), so no article is
 * fetched while its result could not be stored. On success the owners are
 * in n->results_owner and n->dead_owner.
 */
static int ensure_results(td_nats_t *n, char *why, size_t cap) {
  const td_config_t *cfg = n->cfg;
  const char *subj[2] = {cfg->nats_results, cfg->nats_dead_letter}, *missing[2];
  char *owner[2] = {n->results_owner, n->dead_owner};
  size_t ocap = sizeof n->results_owner;
  int nmissing;
  jsErrCode je;
  natsStatus s;
  for (int attempt = 0;; attempt++) {
    nmissing = 0;
    for (int i = 0; i < 2; i++) {
      je = 0;
      s = td_natsutil_stream_of(n->js, subj[i], owner[i], ocap, &je);
      if (s == NATS_NOT_FOUND) {
        owner[i][0] = '\0';
        missing[nmissing++] = subj[i];
      } else if (s != NATS_OK) {
        snprintf(why, cap, "looking up the stream that stores %s: %s", subj[i], td_natsutil_err(s));
        return -1;
      }
    }
    if (!nmissing) return 0;
    je = 0;
    s = add_stream(n, n->results_stream, missing, nmissing, &je);
    /* "a" or "a and b", for the messages */
    const char *and = nmissing > 1 ? " and " : "", *second = nmissing > 1 ? missing[1] : "";
    if (s == NATS_OK) {
      int k = owner[0][0] ? 0 : 1; /* with one missing: the subject another stream stores */
      if (nmissing == 1)
        td_log_info("nats: created stream %s on %s (%s is stored by stream %s)", n->results_stream,
                    missing[0], subj[k], owner[k]);
      else
        td_log_info("nats: created stream %s on %s%s%s", n->results_stream, missing[0], and, second);
      for (int i = 0; i < 2; i++)
        if (!owner[i][0]) snprintf(owner[i], ocap, "%s", n->results_stream);
      return 0;
    }
    /* Another daemon may have created it (or a stream on the subjects)
     * just now: look again, once. */
    if ((je == JSStreamNameExistErr || je == JSStreamSubjectOverlapErr) && attempt == 0) continue;
    if (je == JSStreamNameExistErr)
      snprintf(why, cap,
               "stream %s exists but does not store %s%s%s, and no other stream does (a name "
               "clash): add %s to a stream (nats stream edit), or choose other --nats-results/"
               "--nats-dead-letter, or another --nats-stream",
               n->results_stream, missing[0], and, second, nmissing > 1 ? "them" : "it");
    else
      snprintf(why, cap, "creating stream %s on %s%s%s: %s", n->results_stream, missing[0], and, second,
               td_natsutil_err(s));
    return -1;
  }
}

/* The article stream, the streams for results and dead letters, the
 * durable consumer, and the pull subscription bound to it. */
static int setup(td_nats_t *n, char *why, size_t cap) {
  const td_config_t *cfg = n->cfg;
  jsErrCode je = 0;
  int created;
  const char *in[] = {cfg->nats_subject};
  natsStatus s = ensure_stream(n, cfg->nats_stream, in, 1, &created, &je, why, cap);
  if (s == NATS_OK && created)
    td_log_info("nats: created stream %s on %s", cfg->nats_stream, cfg->nats_subject);
  if (s != NATS_OK) {
    if (je == JSStreamSubjectOverlapErr)
      snprintf(why, cap, "subject %s belongs to another stream: give its name with --nats-stream",
               cfg->nats_subject);
    return -1;
  }
  if (ensure_results(n, why, cap)) return -1;

  jsConsumerInfo *ci = NULL;
  je = 0;
  s = js_GetConsumerInfo(&ci, n->js, cfg->nats_stream, cfg->nats_durable, NULL, &je);
  jsConsumerInfo_Destroy(ci);
  ci = NULL;
  if (s == NATS_NOT_FOUND || je == JSConsumerNotFoundErr) {
    jsConsumerConfig cc;
    jsConsumerConfig_Init(&cc);
    cc.Durable = cfg->nats_durable;
    cc.Description = "themed: articles to classify";
    cc.AckPolicy = js_AckExplicit;
    cc.AckWait = (int64_t)cfg->nats_ack_wait_ms * 1000000;
    cc.DeliverPolicy = js_DeliverAll;
    cc.FilterSubject = cfg->nats_subject;
    cc.MaxDeliver = -1;
    cc.MaxAckPending = CONSUMER_MAX_ACK_PENDING;
    je = 0;
    s = js_AddConsumer(&ci, n->js, cfg->nats_stream, &cc, NULL, &je);
    jsConsumerInfo_Destroy(ci);
    if (s == NATS_OK)
      td_log_info("nats: created durable consumer %s on stream %s (ack wait %.3gs)", cfg->nats_durable,
                  cfg->nats_stream, (double)cfg->nats_ack_wait_ms / 1000);
    else if (je == JSConsumerNameExistErr || je == JSConsumerExistingActiveErr)
      s = NATS_OK;
  }
  if (s != NATS_OK) {
    snprintf(why, cap, "consumer %s on stream %s: %s", cfg->nats_durable, cfg->nats_stream, td_natsutil_err(s));
    return -1;
  }
  jsSubOptions so;
  jsSubOptions_Init(&so);
  so.Stream = cfg->nats_stream;
  so.Consumer = cfg->nats_durable;
  je = 0;
  s = js_PullSubscribe(&n->sub, n->js, cfg->nats_subject, cfg->nats_durable, NULL, &so, &je);
  if (s != NATS_OK) {
    n->sub = NULL;
    snprintf(why, cap, "pull subscription to %s on %s/%s: %s", cfg->nats_subject, cfg->nats_stream,
             cfg->nats_durable, td_natsutil_err(s));
    return -1;
  }
  return 0;
}

/* One fetch of at most the free slots; the articles go to the loop. */
static natsStatus fetch_once(td_nats_t *n) {
  size_t max = n->cfg->nats_max_inflight, low = max / 4 ? max / 4 : 1;
  uv_mutex_lock(&n->mu);
  /* Wait for a quarter of the slots, so fetches come in batches rather
   * than one article per round trip. */
  while (!n->stop && n->inflight > 0 && max - (n->inflight < max ? n->inflight : max) < low)
    uv_cond_wait(&n->cond, &n->mu);
  size_t batch = n->inflight < max ? max - n->inflight : 0;
  int stop = n->stop;
  uv_mutex_unlock(&n->mu);
  if (stop || batch == 0) return NATS_OK;
  if (batch > FETCH_MAX_BATCH) batch = FETCH_MAX_BATCH;

  natsMsgList list = {0};
  jsErrCode je = 0;
  natsStatus s = natsSubscription_Fetch(&list, n->sub, (int)batch, FETCH_WAIT_MS, &je);
  job_t *head = NULL, *tail = NULL;
  size_t count = 0;
  for (int i = 0; i < list.Count; i++) {
    if (!list.Msgs[i]) continue;
    job_t *j = calloc(1, sizeof *j);
    if (!j) { /* left in the list: destroyed unacked, redelivered later */
      warn_limited(n, "nats: out of memory");
      continue;
    }
    j->n = n;
    j->msg = list.Msgs[i];
    list.Msgs[i] = NULL;
    j->work.data = j;
    if (tail) tail->next = j;
    else head = j;
    tail = j;
    count++;
  }
  natsMsgList_Destroy(&list);
  if (count) {
    uv_mutex_lock(&n->mu);
    n->inflight += count;
    if (n->inbox_tail) n->inbox_tail->next = head;
    else n->inbox_head = head;
    n->inbox_tail = tail;
    uv_mutex_unlock(&n->mu);
    uv_async_send(&n->async);
    return NATS_OK;
  }
  return s == NATS_OK ? NATS_TIMEOUT : s;
}

static void fetch_main(void *arg) {
  td_nats_t *n = arg;
  const td_config_t *cfg = n->cfg;
  char why[700] = "", last[700] = "";
  uint64_t retry = 250, quiet_since = 0, checked = 0;
  int errors = 0;

  natsStatus s = natsConnection_Connect(&n->nc, n->opts);
  if (s == NATS_OK) {
    atomic_store(&n->connected, 1);
    char url[256];
    conn_url(n->nc, url, sizeof url);
    td_log_info("nats: connected to %s", url);
    uv_async_send(&n->async);
  } else if (s == NATS_NOT_YET_CONNECTED) {
    td_log_warn("nats: cannot connect to %s yet: retrying every %dms (socket clients are served meanwhile)",
                n->url, RECONNECT_WAIT_MS);
  } else {
    td_log_error("nats: cannot connect to %s: %s", n->url, td_natsutil_err(s));
    n->nc = NULL;
    goto out;
  }
  jsOptions jo;
  jsOptions_Init(&jo);
  jo.Wait = API_WAIT_MS;
  jo.PublishAsync.AckHandler = on_pub_ack;
  jo.PublishAsync.AckHandlerClosure = n;
  jo.PublishAsync.MaxPending = (int64_t)cfg->nats_max_inflight + 16; /* never stalls a worker */
  if ((s = natsConnection_JetStream(&n->js, n->nc, &jo)) != NATS_OK) {
    td_log_error("nats: JetStream context: %s", td_natsutil_err(s));
    n->js = NULL;
    goto out;
  }
  while (!stopped(n)) {
    if (!n->sub) {
      if (!atomic_load(&n->connected)) { /* API requests would only time out */
        nap(n, 100);
        continue;
      }
      why[0] = '\0';
      if (setup(n, why, sizeof why)) {
        if (strcmp(why, last)) { /* each new reason once, not every retry */
          td_log_warn("nats: not consuming yet: %s (retrying)", why);
          snprintf(last, sizeof last, "%s", why);
        }
        nap(n, retry);
        retry = retry * 2 > SETUP_RETRY_MAX_MS ? SETUP_RETRY_MAX_MS : retry * 2;
        continue;
      }
      retry = 250;
      last[0] = '\0';
      errors = 0;
      td_log_info("nats: consuming %s from stream %s as %s; results to %s (stream %s), dead letters "
                  "to %s (stream %s); at most %zu in flight", cfg->nats_subject, cfg->nats_stream,
                  cfg->nats_durable, cfg->nats_results, n->results_owner, cfg->nats_dead_letter,
                  n->dead_owner, cfg->nats_max_inflight);
    }
    s = fetch_once(n);
    if (s == NATS_OK) {
      errors = 0;
      quiet_since = 0;
      continue;
    }
    if (s == NATS_TIMEOUT) {
      /* Nothing to fetch. A deleted consumer looks just like this (its
       * pull requests go unanswered), so when it lasts, look. */
      errors = 0;
      uint64_t now = uv_hrtime();
      if (!quiet_since) quiet_since = now;
      if (now - quiet_since < CONSUMER_CHECK_NS || now - checked < CONSUMER_CHECK_NS ||
          !atomic_load(&n->connected))
        continue;
      checked = now;
      jsConsumerInfo *ci = NULL;
      jsErrCode je = 0;
      s = js_GetConsumerInfo(&ci, n->js, cfg->nats_stream, cfg->nats_durable, NULL, &je);
      jsConsumerInfo_Destroy(ci);
      if (s != NATS_NOT_FOUND && je != JSConsumerNotFoundErr && je != JSStreamNotFoundErr) continue;
      td_log_warn("nats: consumer %s on stream %s is gone: creating it again (it starts from the "
                  "beginning of the stream)", cfg->nats_durable, cfg->nats_stream);
      errors = 3;
    } else if (!atomic_load(&n->connected)) { /* the library reconnects; wait for it */
      nap(n, 250);
      continue;
    } else {
      warn_limited(n, "nats: fetch from %s/%s: %s", cfg->nats_stream, cfg->nats_durable, td_natsutil_err(s));
      errors++;
    }
    if (errors >= 3) {
      /* The consumer (or stream) may be gone: subscribe again, creating
       * what is missing. Articles in flight still ack through this
       * subscription, so they finish first. */
      quiet_since = checked = 0;
      uv_mutex_lock(&n->mu);
      while (!n->stop && n->inflight > 0) uv_cond_wait(&n->cond, &n->mu);
      uv_mutex_unlock(&n->mu);
      if (stopped(n)) break;
      natsSubscription_Destroy(n->sub);
      n->sub = NULL;
      errors = 0;
    }
    nap(n, 250);
  }
out:
  uv_mutex_lock(&n->mu);
  n->fetch_exited = 1;
  uv_mutex_unlock(&n->mu);
  uv_async_send(&n->async);
}

/* ------------------------------------------------------------------ */
/* Lifecycle                                                            */

int td_nats_start(td_server_t *s, td_err_t *err) {
  const td_config_t *cfg = s->cfg;
  td_nats_t *n = calloc(1, sizeof *n);
  if (!n) return td_err_set(err, TD_ENOMEM, "out of memory");
  n->srv = s;
  n->cfg = cfg;
  uv_mutex_init(&n->mu);
  uv_cond_init(&n->cond);
  uv_async_init(s->loop, &n->async, on_async);
  n->async.data = n;
  s->nats = n; /* from here on, td_server_close/free release it */
  for (n->nbuckets = 16; n->nbuckets < 2 * cfg->nats_max_inflight;) n->nbuckets *= 2;
  if (!(n->awaiting = calloc(n->nbuckets, sizeof *n->awaiting))) {
    n->nbuckets = 0;
    return td_err_set(err, TD_ENOMEM, "out of memory");
  }
  td_server_lock(s);
  s->metrics.nats_enabled = 1;
  td_server_unlock(s);
  n->publish_wait_ms = (int64_t)cfg->nats_ack_wait_ms / 2;
  if (n->publish_wait_ms > PUBLISH_WAIT_MAX_MS) n->publish_wait_ms = PUBLISH_WAIT_MAX_MS;
  snprintf(n->results_stream, sizeof n->results_stream, "%s_RESULTS", cfg->nats_stream);
  char host[256] = "";
  if (gethostname(host, sizeof host - 1)) snprintf(host, sizeof host, "localhost");
  snprintf(n->instance, sizeof n->instance, "%s/%ld", host, (long)getpid());
  header_clean(n->instance);

  redact_url(cfg->nats_url, n->url, sizeof n->url);
  natsStatus st = natsOptions_Create(&n->opts);
  if (st == NATS_OK) st = td_natsutil_set_servers(n->opts, cfg->nats_url);
  if (st != NATS_OK)
    return td_err_set(err, TD_EINVAL, "nats: bad URL \"%s\": %s", n->url, td_natsutil_err(st));
  char name[400];
  snprintf(name, sizeof name, "themed %s", n->instance);
  natsOptions_SetName(n->opts, name);
  /* Each publish goes out at once: libnats otherwise holds it ~1 ms to
   * batch writes, and an article crosses that three times (fetch, result,
   * ack), which made throughput proportional to the in-flight window. */
  natsOptions_SetSendAsap(n->opts, true);
  natsOptions_SetMaxReconnect(n->opts, -1);
  natsOptions_SetReconnectWait(n->opts, RECONNECT_WAIT_MS);
  natsOptions_SetPingInterval(n->opts, PING_INTERVAL_MS);
  natsOptions_SetMaxPingsOut(n->opts, 3);
  natsOptions_SetTimeout(n->opts, 2000);
  natsOptions_SetRetryOnFailedConnect(n->opts, true, on_connected, n);
  natsOptions_SetDisconnectedCB(n->opts, on_disconnected, n);
  natsOptions_SetReconnectedCB(n->opts, on_reconnected, n);
  natsOptions_SetClosedCB(n->opts, on_closed, n);
  natsOptions_SetErrorHandler(n->opts, on_error, n);

  int rc = uv_thread_create(&n->thread, fetch_main, n);
  if (rc) return td_err_set(err, TD_EIO, "nats: cannot start the fetch thread: %s", uv_strerror(rc));
  n->thread_started = 1;
  td_log_info("nats: consumer starting: %s, stream %s, subject %s, durable %s", n->url,
              cfg->nats_stream, cfg->nats_subject, cfg->nats_durable);
  return 0;
}

void td_nats_stop(td_nats_t *n) {
  if (n->stopping) return;
  n->stopping = 1;
  uv_mutex_lock(&n->mu);
  n->stop = 1;
  uv_cond_broadcast(&n->cond);
  size_t inflight = n->inflight;
  uv_mutex_unlock(&n->mu);
  td_log_info("nats: stopping the consumer, %zu articles in flight", inflight);
  check_finished(n, 0);
}

void td_nats_abort(td_nats_t *n) {
  job_t *list = NULL;
  size_t k = 0;
  uv_mutex_lock(&n->mu);
  for (size_t b = 0; b < n->nbuckets; b++)
    while (n->awaiting[b]) {
      job_t *j = await_take(n, n->awaiting[b]->pub);
      j->next = list;
      list = j;
      k++;
    }
  uv_mutex_unlock(&n->mu);
  if (k) td_log_warn("nats: %zu articles still waiting for their publish ack: nak'ed", k);
  while (list) {
    job_t *j = list;
    list = j->next;
    j->next = NULL;
    natsMsg_Nak(j->msg, NULL);
    j->outcome = TD_NATS_NAK;
    j->answered = 1;
    if (j->worked) job_finish(n, j);
  }
}

int td_nats_busy(const td_nats_t *n) { return !n->finished; }

const char *td_nats_state(const td_nats_t *n) {
  return atomic_load(&((td_nats_t *)n)->connected) ? "connected" : "disconnected";
}

static void free_queue(job_t *j) {
  while (j) {
    job_t *next = j->next;
    natsMsg_Destroy(j->msg);
    if (j->model) td_model_unref(&j->model);
    free(j->theme_passages);
    free(j);
    j = next;
  }
}

void td_nats_close(td_nats_t *n) {
  if (n->closed) return;
  n->closed = 1;
  uv_mutex_lock(&n->mu);
  n->stop = 1;
  uv_cond_broadcast(&n->cond);
  uv_mutex_unlock(&n->mu);
  if (n->thread_started && !n->thread_joined) {
    uv_thread_join(&n->thread);
    n->thread_joined = 1;
  }
  /* Only a failed start leaves articles here (the stop waits for them
   * otherwise); unacked, they are redelivered. */
  uv_mutex_lock(&n->mu);
  job_t *in = n->inbox_head, *done = n->done_head;
  n->inbox_head = n->inbox_tail = n->done_head = n->done_tail = NULL;
  uv_mutex_unlock(&n->mu);
  free_queue(in);
  free_queue(done);
  atomic_store(&n->closing, 1);
  /* The last acks are still in the connection's buffer: send them. */
  if (n->nc && atomic_load(&n->connected)) natsConnection_FlushTimeout(n->nc, 1000);
  natsSubscription_Destroy(n->sub);
  n->sub = NULL;
  jsCtx_Destroy(n->js);
  n->js = NULL;
  natsConnection_Destroy(n->nc);
  n->nc = NULL;
  natsOptions_Destroy(n->opts);
  n->opts = NULL;
  /* Every libnats thread (and so every callback into n) ends here. */
  if (nats_CloseAndWait(5000) != NATS_OK) {
    /* A libnats thread still running may yet call a callback, which touches
     * n and sends on n->async: both are kept (and leaked) rather than freed
     * under it. The handle is unref'd so the loop can end; the process is
     * exiting (found in review). */
    td_log_warn("nats: library threads did not end within 5s; leaving them their state");
    n->lib_alive = 1;
    uv_unref((uv_handle_t *)&n->async);
    return;
  }
  uv_close((uv_handle_t *)&n->async, NULL);
}

void td_nats_free(td_nats_t *n) {
  if (!n || n->lib_alive) return;
  uv_mutex_destroy(&n->mu);
  uv_cond_destroy(&n->cond);
  free(n->awaiting);
  free(n);
}
