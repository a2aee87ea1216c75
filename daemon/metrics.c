#include "metrics.h"

#include <string.h>
#include <time.h>

static const double g_buckets[TD_METRICS_NBUCKETS] = {0.0005, 0.001, 0.0025, 0.005, 0.01,
                                                      0.025,  0.05,  0.1,    0.25,  0.5,
                                                      1,      2.5,   5};

double td_metrics_wallclock(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void td_metrics_init(td_metrics_t *m) {
  memset(m, 0, sizeof *m);
  m->started_at = td_metrics_wallclock();
  m->start_ns = td_now_ns();
}

void td_metrics_free(td_metrics_t *m) {
  for (size_t i = 0; i < m->nthemes; i++) free(m->themes[i].name);
  TD_FREE(m->themes);
  m->nthemes = 0;
}

void td_metrics_request(td_metrics_t *m, td_proto_t proto, td_op_t op, td_ecode_t ecode,
                        double seconds) {
  if (proto >= 0 && proto < TD_PROTO_COUNT && op >= 0 && op < TD_OP_COUNT) m->requests[proto][op]++;
  if (ecode != TD_EC_NONE) td_metrics_error(m, ecode);
  size_t b = 0;
  while (b < TD_METRICS_NBUCKETS && seconds > g_buckets[b]) b++;
  m->hist[b]++;
  m->hist_sum += seconds;
  m->hist_count++;
}

void td_metrics_error(td_metrics_t *m, td_ecode_t ecode) {
  if (ecode > TD_EC_NONE && ecode < TD_EC_COUNT) m->errors[ecode]++;
}

int td_metrics_theme_at(td_metrics_t *m, size_t hint, const char *name, uint64_t passages) {
  if (hint < m->nthemes && !strcmp(m->themes[hint].name, name)) {
    m->themes[hint].passages += passages;
    return 0;
  }
  return td_metrics_theme(m, name, passages);
}

int td_metrics_theme(td_metrics_t *m, const char *name, uint64_t passages) {
  for (size_t i = 0; i < m->nthemes; i++)
    if (!strcmp(m->themes[i].name, name)) {
      m->themes[i].passages += passages;
      return 0;
    }
  td_theme_count_t *t = realloc(m->themes, (m->nthemes + 1) * sizeof *t);
  if (!t) return TD_ENOMEM;
  m->themes = t;
  if (!(t[m->nthemes].name = strdup(name))) return TD_ENOMEM;
  t[m->nthemes++].passages = passages;
  return 0;
}

void td_metrics_model_loaded(td_metrics_t *m, const td_model_t *model) {
  m->model_load_seconds = (double)model->load_ns / 1e9;
  m->model_loaded_at = td_metrics_wallclock();
  /* Every theme of the live model shows up, at 0 until it is seen. */
  for (size_t k = 0; k < model->ntheme; k++) td_metrics_theme(m, model->themes[k].name, 0);
  td_metrics_theme(m, "other", 0);
}

/* Label values: backslash, double quote and line feed are escaped (0.0.4). */
static int label(td_buf_t *b, const char *s) {
  int rc = 0;
  for (; *s && !rc; s++) {
    if (*s == '\\') rc = td_buf_append(b, "\\\\", 2);
    else if (*s == '"') rc = td_buf_append(b, "\\\"", 2);
    else if (*s == '\n') rc = td_buf_append(b, "\\n", 2);
    else rc = td_buf_append(b, s, 1);
  }
  return rc;
}

#define P(...) do { if (td_buf_printf(b, __VA_ARGS__)) return TD_ENOMEM; } while (0)

int td_metrics_render(const td_metrics_t *m, const td_model_t *model, td_buf_t *b) {
  P("# HELP themed_requests_total Requests answered, by protocol and operation.\n"
    "# TYPE themed_requests_total counter\n");
  for (int p = 0; p < TD_PROTO_COUNT; p++)
    for (int o = 0; o < TD_OP_COUNT; o++)
      if (m->requests[p][o] || o == TD_OP_CLASSIFY)
        P("themed_requests_total{proto=\"%s\",op=\"%s\"} %llu\n", td_proto_name((td_proto_t)p),
          td_op_name((td_op_t)o), (unsigned long long)m->requests[p][o]);
  P("# HELP themed_passages_total Passages classified.\n# TYPE themed_passages_total counter\n"
    "themed_passages_total %llu\n", (unsigned long long)m->passages);
  P("# HELP themed_errors_total Error responses, connection errors and NATS dead letters, by code.\n"
    "# TYPE themed_errors_total counter\n");
  for (int c = 1; c < TD_EC_COUNT; c++)
    P("themed_errors_total{code=\"%s\"} %llu\n", td_ecode_name((td_ecode_t)c),
      (unsigned long long)m->errors[c]);
  P("# HELP themed_request_duration_seconds Time from a request being read to its response being ready.\n"
    "# TYPE themed_request_duration_seconds histogram\n");
  uint64_t cum = 0;
  for (int i = 0; i < TD_METRICS_NBUCKETS; i++) {
    cum += m->hist[i];
    P("themed_request_duration_seconds_bucket{le=\"%g\"} %llu\n", g_buckets[i], (unsigned long long)cum);
  }
  cum += m->hist[TD_METRICS_NBUCKETS];
  P("themed_request_duration_seconds_bucket{le=\"+Inf\"} %llu\n"
    "themed_request_duration_seconds_sum %.9g\nthemed_request_duration_seconds_count %llu\n",
    (unsigned long long)cum, m->hist_sum, (unsigned long long)m->hist_count);
  if (model) {
    P("# HELP themed_model_info The model being served.\n# TYPE themed_model_info gauge\n"
      "themed_model_info{name=\"");
    if (label(b, model->name ? model->name : "")) return TD_ENOMEM;
    P("\",version=\"");
    if (label(b, model->version ? model->version : "")) return TD_ENOMEM;
    P("\"} 1\n");
  }
  P("# HELP themed_model_load_seconds How long loading the current model took.\n"
    "# TYPE themed_model_load_seconds gauge\nthemed_model_load_seconds %.6f\n"
    "# HELP themed_model_loaded_timestamp_seconds When the current model went live (Unix time).\n"
    "# TYPE themed_model_loaded_timestamp_seconds gauge\nthemed_model_loaded_timestamp_seconds %.3f\n",
    m->model_load_seconds, m->model_loaded_at);
  P("# HELP themed_theme_passages_total Passages tagged with each theme (other: none).\n"
    "# TYPE themed_theme_passages_total counter\n");
  for (size_t i = 0; i < m->nthemes; i++) {
    P("themed_theme_passages_total{theme=\"");
    if (label(b, m->themes[i].name)) return TD_ENOMEM;
    P("\"} %llu\n", (unsigned long long)m->themes[i].passages);
  }
  P("# HELP themed_connections Open client connections.\n# TYPE themed_connections gauge\n"
    "themed_connections %llu\n"
    "# HELP themed_connections_total Client connections accepted.\n"
    "# TYPE themed_connections_total counter\nthemed_connections_total %llu\n",
    (unsigned long long)m->connections, (unsigned long long)m->connections_total);
  P("# HELP themed_reloads_total Model reloads, by result.\n# TYPE themed_reloads_total counter\n"
    "themed_reloads_total{result=\"ok\"} %llu\nthemed_reloads_total{result=\"failed\"} %llu\n",
    (unsigned long long)m->reloads_ok, (unsigned long long)m->reloads_failed);
  if (m->nats_enabled) {
    static const char *const res[TD_NATS_RESULT_COUNT] = {"ok", "dead", "nak"};
    P("# HELP themed_nats_connected 1 while the NATS connection is up.\n"
      "# TYPE themed_nats_connected gauge\nthemed_nats_connected %d\n"
      "# HELP themed_nats_inflight Articles fetched from NATS and not yet acked or nak'ed.\n"
      "# TYPE themed_nats_inflight gauge\nthemed_nats_inflight %llu\n"
      "# HELP themed_nats_messages_total Articles consumed from NATS, by outcome.\n"
      "# TYPE themed_nats_messages_total counter\n",
      m->nats_connected, (unsigned long long)m->nats_inflight);
    for (int i = 0; i < TD_NATS_RESULT_COUNT; i++)
      P("themed_nats_messages_total{result=\"%s\"} %llu\n", res[i],
        (unsigned long long)m->nats_messages[i]);
  }
  return 0;
}

json_t *td_metrics_stats_json(const td_metrics_t *m, const td_model_t *model, int workers) {
  uint64_t requests = 0;
  json_t *byop = json_object(), *errors = json_object(), *themes = json_object();
  for (int p = 0; p < TD_PROTO_COUNT; p++)
    for (int o = 0; o < TD_OP_COUNT; o++) {
      requests += m->requests[p][o];
      if (!m->requests[p][o]) continue;
      json_t *cur = json_object_get(byop, td_op_name((td_op_t)o));
      json_int_t n = (json_int_t)m->requests[p][o] + (cur ? json_integer_value(cur) : 0);
      json_object_set_new(byop, td_op_name((td_op_t)o), json_integer(n));
    }
  for (int c = 1; c < TD_EC_COUNT; c++)
    if (m->errors[c]) json_object_set_new(errors, td_ecode_name((td_ecode_t)c), json_integer((json_int_t)m->errors[c]));
  for (size_t i = 0; i < m->nthemes; i++)
    json_object_set_new(themes, m->themes[i].name, json_integer((json_int_t)m->themes[i].passages));
  /* uptime_s in whole seconds, an integer: as a real it went out at the
   * responses' 6 significant digits (TD_JSON_DUMP_FLAGS), which is noise
   * in the first seconds (5.05616, and 5.0561600000000002 once themectl
   * re-prints it) and exponent notation after 11.6 days (1.23457e+06,
   * seconds lost). Nobody needs an uptime finer than a second. */
  json_int_t uptime_s = (json_int_t)((td_now_ns() - m->start_ns) / 1000000000ull);
  json_t *s = json_pack("{s:I, s:o, s:I, s:o, s:o, s:I, s:I, s:I, s:{s:I, s:I}, s:I, s:i, s:s?}",
      "requests", (json_int_t)requests, "requests_by_op", byop,
      "passages", (json_int_t)m->passages, "errors", errors, "themes", themes,
      "connections", (json_int_t)m->connections,
      "connections_total", (json_int_t)m->connections_total,
      "connections_rejected", (json_int_t)m->connections_rejected,
      "reloads", "ok", (json_int_t)m->reloads_ok, "failed", (json_int_t)m->reloads_failed,
      "uptime_s", uptime_s, "workers", workers,
      "model", model ? model->label : NULL);
  if (s && m->nats_enabled)
    json_object_set_new(s, "nats", json_pack("{s:b, s:I, s:{s:I, s:I, s:I}}", "connected",
        m->nats_connected, "inflight", (json_int_t)m->nats_inflight, "messages",
        "ok", (json_int_t)m->nats_messages[TD_NATS_OK], "dead", (json_int_t)m->nats_messages[TD_NATS_DEAD],
        "nak", (json_int_t)m->nats_messages[TD_NATS_NAK]));
  return s ? json_pack("{s:o}", "stats", s) : NULL;
}
