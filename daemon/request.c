#include "request.h"

#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "classify.h"
#include "jalloc.h"
#include "log.h"
#include "nats.h"
#include "plugin.h"
#include "reload.h"

/* ------------------------------------------------------------------ */
/* Per-thread scratch                                                   */

typedef struct worker_tls {
  td_scratch_t *scratch;
  td_result_t result;
} worker_tls_t;

static pthread_key_t g_key;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static _Thread_local worker_tls_t *t_tls;

static void tls_destroy(void *p) {
  worker_tls_t *t = p;
  td_jalloc_thread_free(); /* runs on the thread itself: a key destructor, or cleanup */
  td_scratch_free(&t->scratch);
  td_result_free(&t->result);
  free(t);
}

/* The key's destructor frees a worker's buffers when libuv joins its
 * threads (uv_library_shutdown at exit). */
static void key_init(void) { pthread_key_create(&g_key, tls_destroy); }

static worker_tls_t *tls_get(void) {
  if (t_tls) return t_tls;
  pthread_once(&g_once, key_init);
  worker_tls_t *t = calloc(1, sizeof *t);
  if (!t) return NULL;
  if (!(t->scratch = td_scratch_new())) {
    free(t);
    return NULL;
  }
  td_result_init(&t->result);
  pthread_setspecific(g_key, t);
  return t_tls = t;
}

void td_request_thread_cleanup(void) {
  if (!t_tls) return;
  pthread_setspecific(g_key, NULL);
  tls_destroy(t_tls);
  t_tls = NULL;
}

/* ------------------------------------------------------------------ */
/* Decoding                                                             */

typedef struct fail {
  td_ecode_t code;
  char msg[512];
} fail_t;

static td_ecode_t failf(fail_t *f, td_ecode_t code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static td_ecode_t failf(fail_t *f, td_ecode_t code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  td_vformat(f->msg, sizeof f->msg, fmt, ap);
  va_end(ap);
  return f->code = code;
}

/* jansson validates UTF-8 while it parses, so its error code tells a bad
 * encoding apart from bad JSON. */
static json_t *parse(const char *in, size_t inlen, const char *what, fail_t *f) {
  json_error_t je;
  /* JSON_DECODE_ANY: a bare scalar ("x", 42, null) is valid JSON, just not a
   * request object; the callers answer it invalid_request as documented,
   * where jansson's default would call it invalid_json. */
  json_t *j = json_loadb(in, inlen, JSON_DECODE_ANY, &je);
  if (j) return j;
  enum json_error_code ec = json_error_code(&je);
  if (ec == json_error_invalid_utf8)
    failf(f, TD_EC_INVALID_UTF8, "%s is not valid UTF-8 (byte %d)", what, je.position);
  else if (ec == json_error_null_character)
    failf(f, TD_EC_INVALID_UTF8, "%s contains U+0000, which is not allowed in text", what);
  else if (strstr(je.text, "Unicode")) /* a lone surrogate escape such as \ud800 */
    failf(f, TD_EC_INVALID_UTF8, "%s: %s", what, je.text);
  else
    failf(f, TD_EC_INVALID_JSON, "%s is not valid JSON: %s (byte %d)", what, je.text, je.position);
  return NULL;
}

/* The request's id into r->id (a new reference), for every op alike: an id
 * the client cannot get back as sent is an error it should see, not an
 * answer without its id. 0, or 1 when it is not a JSON scalar. */
static int take_id(td_req_t *r, const json_t *j) {
  json_t *id = json_object_get(j, "id");
  if (id && !td_wire_id_ok(id)) return 1;
  if (id) r->id = json_incref(id);
  return 0;
}

/* Options from one object over what o already holds. */
static td_ecode_t read_opts(const json_t *j, td_classify_opts_t *o, fail_t *f) {
  json_t *v;
  if ((v = json_object_get(j, "threshold")) && !json_is_null(v)) {
    double t = json_number_value(v);
    if (!json_is_number(v) || !(t >= 0 && t <= 1))
      return failf(f, TD_EC_INVALID_REQUEST, "threshold: expected a number in [0,1]");
    o->threshold = t;
  }
  if ((v = json_object_get(j, "top_k")) && !json_is_null(v)) {
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > TD_MAX_TOP_K)
      return failf(f, TD_EC_INVALID_REQUEST, "top_k: expected an integer in [0,%d]", TD_MAX_TOP_K);
    o->top_k = (int)json_integer_value(v);
  }
  if ((v = json_object_get(j, "explain")) && !json_is_null(v)) {
    if (!json_is_boolean(v)) return failf(f, TD_EC_INVALID_REQUEST, "explain: expected true or false");
    o->explain = json_is_true(v);
  }
  if ((v = json_object_get(j, "include_text")) && !json_is_null(v)) {
    if (!json_is_boolean(v))
      return failf(f, TD_EC_INVALID_REQUEST, "include_text: expected true or false");
    o->include_text = json_is_true(v);
  }
  return TD_EC_NONE;
}

static td_ecode_t map_engine(int rc, const td_err_t *err, fail_t *f) {
  td_ecode_t c = td_ecode_of_engine(rc);
  return failf(f, c, c == TD_EC_INTERNAL ? "classification failed: %s" : "%s", err->msg);
}

/* What classifying needs besides the document: the limits, the model, and
 * where to count passages (per theme of the model, then `other`; may be
 * NULL). Requests point it at their td_req_t; the NATS consumer at its job. */
typedef struct cls_ctx {
  const td_config_t *cfg;
  const td_model_t *model;
  uint64_t passages;
  uint64_t *theme_passages;
} cls_ctx_t;

/* Adds one classified document's passages to the metrics counts. */
static void count_tags(cls_ctx_t *x, const td_classify_opts_t *o, const td_result_t *tr) {
  const td_model_t *m = x->model;
  for (size_t i = 0; i < tr->passages.count; i++) {
    int any = 0;
    for (size_t k = 0; k < m->ntheme; k++)
      if (td_result_tagged(m, o, tr, i, k)) {
        if (x->theme_passages) x->theme_passages[k]++;
        any = 1;
      }
    if (!any && x->theme_passages) x->theme_passages[m->ntheme]++;
  }
  x->passages += tr->passages.count;
}

/*
 * Classifies one document object. defaults: an object whose options apply
 * unless doc overrides them (a batch's top level), or NULL. On success the
 * passage counts are added to x and the response goes to `direct` when it
 * is not NULL -- appended, serialized by td_result_write, byte for byte
 * what dumping the object gives, without building it (the hot path:
 * bench/NOTES.md) -- else *out is the response object.
 */
static td_ecode_t classify_doc(cls_ctx_t *x, const json_t *doc, const json_t *defaults,
                               worker_tls_t *t, td_buf_t *direct, json_t **out, fail_t *f) {
  const td_config_t *cfg = x->cfg;
  const td_model_t *m = x->model;
  json_t *id = json_object_get(doc, "id");
  json_t *text = json_object_get(doc, "text");
  json_t *ps = json_object_get(doc, "passages");
  td_classify_opts_t o;
  td_doc_t d = {0};
  td_span_t *spans = NULL;
  td_err_t err = {0};
  *out = NULL;

  if (id && !td_wire_id_ok(id)) return failf(f, TD_EC_INVALID_REQUEST, "id: expected a JSON scalar");
  td_classify_opts_default(&o);
  if ((defaults && read_opts(defaults, &o, f)) || read_opts(doc, &o, f)) return f->code;
  o.max_passages = cfg->max_passages;
  if (text && ps) return failf(f, TD_EC_INVALID_REQUEST, "give either \"text\" or \"passages\", not both");
  if (text) {
    if (!json_is_string(text)) return failf(f, TD_EC_INVALID_REQUEST, "text: expected a string");
    d.text = json_string_value(text);
    d.len = json_string_length(text);
  } else if (ps) {
    if (!json_is_array(ps))
      return failf(f, TD_EC_INVALID_REQUEST, "passages: expected an array of strings");
    size_t n = json_array_size(ps);
    if (n > cfg->max_passages)
      return failf(f, TD_EC_TOO_MANY_PASSAGES, "document has %zu passages, the limit is %zu", n, cfg->max_passages);
    if (n && !(spans = malloc(n * sizeof *spans))) return failf(f, TD_EC_INTERNAL, "out of memory");
    for (size_t i = 0; i < n; i++) {
      json_t *p = json_array_get(ps, i);
      if (!json_is_string(p)) {
        free(spans);
        return failf(f, TD_EC_INVALID_REQUEST, "passages[%zu]: expected a string", i);
      }
      spans[i].s = json_string_value(p);
      spans[i].len = json_string_length(p);
    }
    d.passages = spans;
    d.npassages = n;
  } else {
    return failf(f, TD_EC_INVALID_REQUEST,
                 "missing \"text\" (a string) or \"passages\" (an array of strings)");
  }
  /* A non-string id takes the engine's "id" slot (so it stays first) and is
   * replaced by the original JSON value below. */
  d.id = id ? (json_is_string(id) ? json_string_value(id) : "") : NULL;

  int rc = td_classify(m, &d, &o, t->scratch, &t->result, &err);
  if (rc) {
    free(spans);
    return map_engine(rc, &err, f);
  }
  json_t *res = NULL;
  if (direct) {
    /* a string id is d.id already; other scalars are dumped as given */
    td_result_id_t mode = !id ? TD_RESULT_ID_OMIT
                          : json_is_string(id) ? TD_RESULT_ID_DOC : TD_RESULT_ID_JSON;
    if (td_result_write(m, &d, &o, &t->result, t->scratch, mode, id, direct)) {
      free(spans);
      return failf(f, TD_EC_INTERNAL, "out of memory");
    }
  } else {
    res = td_result_json(m, &d, &o, &t->result, t->scratch);
    if (!res) {
      free(spans);
      return failf(f, TD_EC_INTERNAL, "out of memory");
    }
    if (id && json_object_set(res, "id", id)) { /* an answer without its id is no answer */
      json_decref(res);
      free(spans);
      return failf(f, TD_EC_INTERNAL, "out of memory");
    }
    if (!id) json_object_del(res, "id");
  }

  count_tags(x, &o, &t->result);
  free(spans);
  *out = res;
  return TD_EC_NONE;
}

static int dump_to_buf(const char *buf, size_t n, void *ud) {
  return td_buf_append(ud, buf, n) ? -1 : 0;
}

/*
 * {"id":..,"results":[...]}: each document classified by classify_doc, the
 * whole built as one jansson object and dumped once, appended to out; on
 * failure out is left as it was.
 */
static td_ecode_t classify_batch(cls_ctx_t *x, const json_t *id, const json_t *j, worker_tls_t *t,
                                 td_buf_t *out, fail_t *f) {
  const td_config_t *cfg = x->cfg;
  json_t *docs = json_object_get(j, "documents");
  if (!json_is_array(docs))
    return failf(f, TD_EC_INVALID_REQUEST, "documents: expected an array of objects");
  size_t n = json_array_size(docs);
  if (n > cfg->max_documents)
    return failf(f, TD_EC_TOO_MANY_DOCUMENTS, "%zu documents, the limit is %zu", n, cfg->max_documents);
  json_t *all = json_object(), *results = json_array();
  /* "id" first, as in every other response */
  if (!all || !results || (id && json_object_set(all, "id", (json_t *)id))) {
    json_decref(results);
    json_decref(all);
    return failf(f, TD_EC_INTERNAL, "out of memory");
  }
  /* takes results, even when it fails */
  if (json_object_set_new(all, "results", results)) {
    json_decref(all);
    return failf(f, TD_EC_INTERNAL, "out of memory");
  }
  for (size_t i = 0; i < n; i++) {
    json_t *d = json_array_get(docs, i), *res = NULL;
    if (!json_is_object(d)) {
      json_decref(all);
      return failf(f, TD_EC_INVALID_REQUEST, "documents[%zu]: expected an object", i);
    }
    if (classify_doc(x, d, j, t, NULL, &res, f)) {
      char pre[40];
      size_t k = (size_t)snprintf(pre, sizeof pre, "documents[%zu]: ", i);
      size_t ml = strlen(f->msg);
      if (k + ml >= sizeof f->msg) ml = sizeof f->msg - k - 1;
      memmove(f->msg + k, f->msg, ml);
      memcpy(f->msg, pre, k);
      f->msg[k + ml] = '\0';
      json_decref(all);
      return f->code;
    }
    /* takes res even when it fails: an answer must not silently lack a document */
    if (json_array_append_new(results, res)) {
      json_decref(all);
      return failf(f, TD_EC_INTERNAL, "out of memory");
    }
  }
  size_t len0 = out->len;
  int bad = json_dump_callback(all, dump_to_buf, out, TD_JSON_DUMP_FLAGS);
  json_decref(all);
  if (bad) {
    out->len = len0;
    return failf(f, TD_EC_INTERNAL, "out of memory");
  }
  return TD_EC_NONE;
}


static void request_work(td_req_t *r);

void td_request_work(uv_work_t *w) {
  td_req_t *r = w->data;
#ifdef TD_LATTRACE
  r->t_wstart = uv_hrtime();
#endif
  request_work(r);
#ifdef TD_LATTRACE
  r->t_wend = uv_hrtime();
#endif
}

static void request_work(td_req_t *r) {
  fail_t f = {0};
  json_t *j = NULL, *out = NULL;
  const char *what = r->proto == TD_PROTO_JSONL ? "line" : "body";

  if (r->kind == TD_REQ_HTTP_RELOAD) {
    /* The body is read on the loop thread once the caller is authorized
     * (reload_body): an unauthenticated client learns nothing from it. */
    r->op = TD_OP_RELOAD;
    return;
  }
  if (!(j = parse(r->in, r->inlen, what, &f))) goto fail;
  if (!json_is_object(j)) {
    failf(&f, TD_EC_INVALID_REQUEST, "request must be a JSON object");
    goto fail;
  }
  if (take_id(r, j)) {
    failf(&f, TD_EC_INVALID_REQUEST, "id: expected a JSON scalar");
    goto fail;
  }

  if (r->kind == TD_REQ_JSONL) {
    json_t *op = json_object_get(j, "op");
    r->op = TD_OP_CLASSIFY;
    if (op) {
      if (!json_is_string(op)) {
        failf(&f, TD_EC_INVALID_REQUEST, "op: expected a string");
        goto fail;
      }
      const char *name = json_string_value(op);
      r->op = td_op_parse(name);
      if (r->op == TD_OP_UNKNOWN) {
        char ops[128];
        td_op_jsonl_names(ops, sizeof ops);
        failf(&f, TD_EC_UNKNOWN_OP, "unknown op \"%.*s\" (%s)", (int)td_utf8_prefix(name, 64), name,
              ops);
        goto fail;
      }
    }
    if (r->op != TD_OP_CLASSIFY) { /* answered on the loop thread */
      r->json = j;
      return;
    }
  } else {
    r->op = TD_OP_CLASSIFY;
  }

  worker_tls_t *t = tls_get();
  if (!t || !(r->theme_passages = calloc(r->model->ntheme + 1, sizeof *r->theme_passages))) {
    failf(&f, TD_EC_INTERNAL, "out of memory");
    goto fail;
  }
  cls_ctx_t x = {r->conn->srv->cfg, r->model, 0, r->theme_passages};
  /* The response is written straight into the body (td_result_write): what
   * td_req_set_json would have dumped, without the objects. */
  td_buf_reset(&r->body);
  if (r->kind == TD_REQ_HTTP_CLASSIFY && json_object_get(j, "documents"))
    classify_batch(&x, r->id, j, t, &r->body, &f);
  else
    classify_doc(&x, j, NULL, t, &r->body, &out, &f);
  r->passages = x.passages;
  if (f.code) goto fail;
  json_decref(j);
  if (r->proto == TD_PROTO_JSONL && td_buf_append(&r->body, "\n", 1)) {
    td_buf_reset(&r->body);
    td_req_set_error(r, TD_EC_INTERNAL, "out of memory");
  }
  return;
fail:
  json_decref(j);
  r->passages = 0;
  td_req_set_error(r, f.code ? f.code : TD_EC_INTERNAL, "%s", f.msg);
}

td_ecode_t td_request_classify_payload(const td_config_t *cfg, const td_model_t *m,
                                       const char *data, size_t len, json_t **out, json_t **id,
                                       uint64_t *passages, uint64_t *theme_passages) {
  fail_t f = {0};
  json_t *j = NULL, *jid = NULL, *res = NULL;
  worker_tls_t *t;
  *out = NULL;
  if (id) *id = NULL;
  if (len > cfg->max_request_bytes) {
    failf(&f, TD_EC_TOO_LARGE, "message of %zu bytes exceeds the limit of %zu bytes", len,
          cfg->max_request_bytes);
    goto fail;
  }
  if (!(j = parse(data, len, "message", &f))) goto fail;
  if (!json_is_object(j)) {
    failf(&f, TD_EC_INVALID_REQUEST, "request must be a JSON object");
    goto fail;
  }
  if ((jid = json_object_get(j, "id")) && td_wire_id_ok(jid)) json_incref(jid);
  else jid = NULL;
  json_t *op = json_object_get(j, "op");
  if (op && (!json_is_string(op) || strcmp(json_string_value(op), "classify"))) {
    failf(&f, TD_EC_INVALID_REQUEST, "op: only \"classify\" is accepted here");
    goto fail;
  }
  if (!(t = tls_get())) {
    failf(&f, TD_EC_INTERNAL, "out of memory");
    goto fail;
  }
  cls_ctx_t x = {cfg, m, 0, theme_passages};
  if (classify_doc(&x, j, NULL, t, NULL, &res, &f)) goto fail;
  if (passages) *passages += x.passages;
  json_decref(j);
  *out = res;
  if (id) *id = jid;
  else json_decref(jid);
  return TD_EC_NONE;
fail:
  json_decref(j);
  *out = td_wire_error(jid, f.code ? f.code : TD_EC_INTERNAL, f.msg);
  if (id) *id = jid;
  else json_decref(jid);
  return f.code ? f.code : TD_EC_INTERNAL;
}

/* ------------------------------------------------------------------ */
/* Loop-side operations                                                 */

static json_t *with_id(td_req_t *r) {
  json_t *o = json_object();
  if (o && r->id) json_object_set(o, "id", r->id);
  return o;
}

/* Under td_server_lock (s is the main loop's server). */
static json_t *model_json(td_server_t *s) {
  const td_model_t *m = s->model;
  json_t *themes = json_array();
  for (size_t k = 0; k < m->ntheme; k++) json_array_append_new(themes, json_string(m->themes[k].name));
  json_t *tok = json_pack("{s:s?, s:s?, s:O?}", "name", m->tok ? td_tokenizer_name(m->tok) : NULL,
                          "version", m->tok ? td_tokenizer_version(m->tok) : NULL, "options",
                          m->tok ? (json_t *)td_tokenizer_options(m->tok) : NULL);
  return json_pack("{s:s?, s:s?, s:s?, s:o, s:b, s:o?, s:s, s:f, s:s?}", "name", m->name,
                   "version", m->version, "label", m->label, "themes", themes, "multiclass",
                   m->multiclass, "tokenizer", tok, "loaded_at", s->model_loaded_at, "load_ms",
                   (double)m->load_ns / 1e6, "path", m->dir);
}

/*
 * Admin operations: over a unix socket the socket file's mode (0660) is the
 * guard; over TCP the request must carry the admin token (HTTP
 * "Authorization: Bearer <token>", JSON Lines "token"), compared in constant
 * time (td_secret_equal). Without a configured token they are refused over
 * TCP. Returns 1 if allowed, else sets the 401 answer and returns 0.
 */
/* The optional body of POST /v1/reload ({"path": ...}), into r->json.
 * Returns 1, or sets the error answer and returns 0. */
static int reload_body(td_req_t *r) {
  if (r->kind != TD_REQ_HTTP_RELOAD || r->inlen == 0) return 1; /* no body: the current path */
  fail_t f = {0};
  json_t *j = parse(r->in, r->inlen, "body", &f);
  if (j && !json_is_object(j)) failf(&f, TD_EC_INVALID_REQUEST, "request must be a JSON object");
  if (!j || f.code) {
    json_decref(j);
    td_req_set_error(r, f.code ? f.code : TD_EC_INTERNAL, "%s", f.msg);
    return 0;
  }
  if (take_id(r, j)) { /* as request_work answers every other op */
    json_decref(j);
    td_req_set_error(r, TD_EC_INVALID_REQUEST, "id: expected a JSON scalar");
    return 0;
  }
  r->json = j;
  return 1;
}

/* Under td_server_lock (s is the main loop's server). */
static int authorized_locked(td_req_t *r, td_server_t *s) {
  if (!s->admin_token) {
    td_req_set_error(r, TD_EC_UNAUTHORIZED,
                     s->admin_token_stale
                         ? "%s over TCP is refused: the admin token file could not be reread "
                           "(see the daemon's log)"
                         : "%s over TCP needs an admin token, and none is configured "
                           "(themed --admin-token-file FILE)",
                     td_op_name(r->op));
    return 0;
  }
  const char *given = NULL;
  size_t glen = 0;
  if (r->proto == TD_PROTO_HTTP) {
    given = r->auth;
    glen = given ? strlen(given) : 0;
    while (glen > 0 && (given[glen - 1] == ' ' || given[glen - 1] == '\t')) glen--;
  } else {
    json_t *t = json_object_get(r->json, "token");
    given = json_string_value(t);
    glen = given ? json_string_length(t) : 0;
  }
  if (given && td_secret_equal(given, glen, s->admin_token, strlen(s->admin_token))) return 1;
  td_req_set_error(r, TD_EC_UNAUTHORIZED,
                   given ? "%s over TCP: wrong admin token"
                         : r->proto == TD_PROTO_HTTP
                               ? "%s over TCP needs the admin token (Authorization: Bearer TOKEN)"
                               : "%s over TCP needs the admin token (\"token\": TOKEN)",
                   td_op_name(r->op));
  return 0;
}

static int authorized(td_req_t *r) {
  if (!r->conn->is_tcp) return 1;
  td_server_t *s = r->conn->srv->main;
  td_server_lock(s);
  int ok = authorized_locked(r, s);
  td_server_unlock(s);
  return ok;
}

void td_request_local(td_req_t *r) {
  td_server_t *s = r->conn->srv; /* this loop's */
  td_server_t *m = s->main;      /* the shared model and metrics, under td_server_lock */
  json_t *o = NULL;
  switch (r->op) {
  case TD_OP_HEALTH:
    if ((o = with_id(r))) {
      json_object_set_new(o, "status", json_string("ok"));
      td_server_lock(s);
      json_object_set_new(o, "model", json_string(m->model->label));
      td_server_unlock(s);
    }
    break;
  case TD_OP_READY: {
    /* m->stopping, not this loop's draining: it is set before the stop
     * reaches the worker loops */
    td_server_lock(s);
    int stopping = m->stopping;
    json_t *label = stopping ? NULL : json_string(m->model->label);
    td_server_unlock(s);
    if (stopping) {
      td_req_set_error(r, TD_EC_SHUTTING_DOWN, "server is shutting down");
      td_req_done(r);
      return;
    }
    if ((o = with_id(r))) {
      json_object_set_new(o, "status", json_string("ready"));
      json_object_set_new(o, "model", label);
      /* Socket service is ready either way; the body says how NATS is. */
      if (m->nats) json_object_set_new(o, "nats", json_string(td_nats_state(m->nats)));
    } else {
      json_decref(label);
    }
    break;
  }
  case TD_OP_MODEL:
    if ((o = with_id(r))) {
      td_server_lock(s);
      json_object_set_new(o, "model", model_json(m));
      td_server_unlock(s);
    }
    break;
  case TD_OP_STATS: {
    td_server_lock(s);
    json_t *st = td_metrics_stats_json(&m->metrics, m->model, m->workers);
    json_t *loops = m->nshards && st ? json_array() : NULL;
    for (int i = 0; loops && i < m->nshards; i++)
      json_array_append_new(loops, json_integer((json_int_t)m->shards[i].live));
    td_server_unlock(s);
    /* connections on each worker loop: how evenly they are spread */
    if (loops) json_object_set_new(json_object_get(st, "stats"), "worker_loop_connections", loops);
    if ((o = with_id(r)) && st) json_object_update(o, st);
    json_decref(st);
    break;
  }
  case TD_OP_METRICS: {
    r->ctype = "text/plain; version=0.0.4; charset=utf-8";
    td_server_lock(s);
    int rc = td_metrics_render(&m->metrics, m->model, &r->body);
    if (!rc && m->nshards)
      rc = td_buf_printf(&r->body,
                          "# HELP themed_worker_loop_connections Open connections on each "
                          "worker loop.\n# TYPE themed_worker_loop_connections gauge\n");
    for (int i = 0; !rc && i < m->nshards; i++)
      rc = td_buf_printf(&r->body, "themed_worker_loop_connections{loop=\"%d\"} %zu\n", i + 1,
                          m->shards[i].live);
    td_server_unlock(s);
    if (rc) td_req_set_error(r, TD_EC_INTERNAL, "out of memory");
    td_req_done(r);
    return;
  }
  case TD_OP_RELOAD: {
    if (!authorized(r) || !reload_body(r)) break;
    json_t *p = r->json ? json_object_get(r->json, "path") : NULL;
    if (p && !json_is_null(p) && (!json_is_string(p) || !*json_string_value(p))) {
      td_req_set_error(r, TD_EC_INVALID_REQUEST, "path: expected a non-empty string");
      break;
    }
    /* Refused here, before anything is queued; reload.c checks again when
     * it loads (the path resolves then to what it is then). */
    if (p && json_is_string(p)) {
      char where[PATH_MAX];
      td_err_t err = {0};
      if (td_config_model_path(s->cfg, json_string_value(p), where, &err) == TD_ESTATE) {
        td_log_warn("reload refused: %s", err.msg);
        td_req_set_error(r, TD_EC_FORBIDDEN, "%s", err.msg);
        break;
      }
    }
    td_reload_request(s, p && json_is_string(p) ? json_string_value(p) : NULL, r);
    return; /* answered when the load finishes */
  }
  default:
    if (!r->body.len) td_req_set_error(r, TD_EC_INTERNAL, "no handler for op %s", td_op_name(r->op));
    break;
  }
  if (o && td_req_set_json(r, o)) td_req_set_error(r, TD_EC_INTERNAL, "out of memory");
  else if (!o && !r->body.len) td_req_set_error(r, TD_EC_INTERNAL, "out of memory");
  td_req_done(r);
}
