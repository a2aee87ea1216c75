#include "wire.h"

#include "common.h"

#include <stdio.h>
#include <string.h>

static const struct {
  const char *name;
  int status;
} g_codes[TD_EC_COUNT] = {
    [TD_EC_NONE] = {"none", 200},
    [TD_EC_INVALID_JSON] = {"invalid_json", 400},
    [TD_EC_INVALID_REQUEST] = {"invalid_request", 400},
    [TD_EC_INVALID_UTF8] = {"invalid_utf8", 400},
    [TD_EC_UNKNOWN_OP] = {"unknown_op", 400},
    [TD_EC_NOT_FOUND] = {"not_found", 404},
    [TD_EC_METHOD_NOT_ALLOWED] = {"method_not_allowed", 405},
    [TD_EC_TOO_LARGE] = {"too_large", 413},
    [TD_EC_TOO_MANY_PASSAGES] = {"too_many_passages", 413},
    [TD_EC_TOO_MANY_DOCUMENTS] = {"too_many_documents", 413},
    [TD_EC_HEADER_TIMEOUT] = {"header_timeout", 408},
    [TD_EC_IDLE_TIMEOUT] = {"idle_timeout", 408},
    [TD_EC_TOO_MANY_CONNECTIONS] = {"too_many_connections", 503},
    [TD_EC_RELOAD_FAILED] = {"reload_failed", 500},
    [TD_EC_UNAUTHORIZED] = {"unauthorized", 401},
    [TD_EC_SHUTTING_DOWN] = {"shutting_down", 503},
    [TD_EC_INTERNAL] = {"internal", 500},
    [TD_EC_FORBIDDEN] = {"forbidden", 403},
    [TD_EC_TOO_MANY_DELIVERIES] = {"too_many_deliveries", 500},
};

const char *td_ecode_name(td_ecode_t c) {
  return c >= 0 && c < TD_EC_COUNT ? g_codes[c].name : "internal";
}

int td_ecode_status(td_ecode_t c) { return c >= 0 && c < TD_EC_COUNT ? g_codes[c].status : 500; }

const char *td_http_reason(int status) {
  switch (status) {
  case 100: return "Continue";
  case 200: return "OK";
  case 400: return "Bad Request";
  case 401: return "Unauthorized";
  case 403: return "Forbidden";
  case 404: return "Not Found";
  case 405: return "Method Not Allowed";
  case 408: return "Request Timeout";
  case 413: return "Payload Too Large";
  case 500: return "Internal Server Error";
  case 503: return "Service Unavailable";
  default: return "Unknown";
  }
}

/* The one list of operations: their names, and which of them a JSON Lines
 * "op" may name (metrics is HTTP only: GET /metrics). The dispatcher
 * (td_op_parse) and the unknown_op message (td_op_jsonl_names) both read it,
 * so the message cannot drift from what is accepted. */
static const struct {
  const char *name;
  int jsonl;
} g_ops[TD_OP_COUNT] = {
    [TD_OP_UNKNOWN] = {"unknown", 0}, [TD_OP_CLASSIFY] = {"classify", 1},
    [TD_OP_HEALTH] = {"health", 1},   [TD_OP_READY] = {"ready", 1},
    [TD_OP_MODEL] = {"model", 1},     [TD_OP_STATS] = {"stats", 1},
    [TD_OP_RELOAD] = {"reload", 1},   [TD_OP_METRICS] = {"metrics", 0},
};

const char *td_op_name(td_op_t op) {
  return op >= 0 && op < TD_OP_COUNT ? g_ops[op].name : "unknown";
}

td_op_t td_op_parse(const char *s) {
  for (int i = TD_OP_CLASSIFY; i < TD_OP_COUNT; i++)
    if (g_ops[i].jsonl && !strcmp(s, g_ops[i].name)) return (td_op_t)i;
  return TD_OP_UNKNOWN;
}

size_t td_op_jsonl_names(char *buf, size_t n) {
  size_t len = 0;
  if (n) buf[0] = '\0';
  for (int i = TD_OP_CLASSIFY; i < TD_OP_COUNT; i++) {
    if (!g_ops[i].jsonl) continue;
    int k = snprintf(len < n ? buf + len : NULL, len < n ? n - len : 0, "%s%s", len ? ", " : "",
                     g_ops[i].name);
    len += k > 0 ? (size_t)k : 0;
  }
  return len;
}

const char *td_proto_name(td_proto_t p) { return p == TD_PROTO_HTTP ? "http" : "jsonl"; }

json_t *td_wire_error(const json_t *id, td_ecode_t code, const char *message) {
  json_t *o = json_object();
  json_t *e = json_object();
  if (!o || !e) {
    json_decref(o);
    json_decref(e);
    return NULL;
  }
  /* A message that is not valid UTF-8 must not cost the client its error.
   * The daemon's own fixed buffers cut before a character (td_vformat);
   * this is for a message cut elsewhere: without that tail, it is worth
   * sending. */
  json_t *msg = json_string(message ? message : "");
  if (!msg) msg = json_stringn(message, td_utf8_whole(message, strlen(message)));
  if (!msg) msg = json_string("(message not valid UTF-8)");
  int bad = (id && json_object_set(o, "id", (json_t *)id)) ||
            json_object_set_new(e, "code", json_string(td_ecode_name(code))) ||
            json_object_set_new(e, "message", msg);
  if (json_object_set_new(o, "error", e) || bad) { /* set_new took e either way */
    json_decref(o);
    return NULL;
  }
  return o;
}

td_ecode_t td_ecode_of_engine(int rc) {
  switch (rc) {
  case TD_EUTF8: return TD_EC_INVALID_UTF8;
  case TD_ELIMIT: return TD_EC_TOO_MANY_PASSAGES;
  case TD_EINVAL:
  case TD_EFORMAT: return TD_EC_INVALID_REQUEST;
  default: return TD_EC_INTERNAL;
  }
}

int td_wire_id_ok(const json_t *id) {
  return json_is_string(id) || json_is_number(id) || json_is_boolean(id) || json_is_null(id);
}
