/*
 * Wire vocabulary shared by both protocols: error codes with their HTTP
 * statuses, operation names, and the error object
 * {"error":{"code":..,"message":..}} (docs/protocol.md).
 */
#ifndef TD_WIRE_H
#define TD_WIRE_H

#include <jansson.h>

typedef enum td_ecode {
  TD_EC_NONE = 0,
  TD_EC_INVALID_JSON,
  TD_EC_INVALID_REQUEST,
  TD_EC_INVALID_UTF8,
  TD_EC_UNKNOWN_OP,
  TD_EC_NOT_FOUND,
  TD_EC_METHOD_NOT_ALLOWED,
  TD_EC_TOO_LARGE,
  TD_EC_TOO_MANY_PASSAGES,
  TD_EC_TOO_MANY_DOCUMENTS,
  TD_EC_HEADER_TIMEOUT,
  TD_EC_IDLE_TIMEOUT,
  TD_EC_TOO_MANY_CONNECTIONS,
  TD_EC_RELOAD_FAILED,
  TD_EC_UNAUTHORIZED,
  TD_EC_SHUTTING_DOWN,
  TD_EC_INTERNAL,
  TD_EC_FORBIDDEN,     /* a reload path outside the models directory */
  TD_EC_TOO_MANY_DELIVERIES, /* NATS: an article redelivered past nats_max_deliver */
  TD_EC_COUNT
} td_ecode_t;

typedef enum td_op {
  TD_OP_UNKNOWN = 0, /* the request failed before its op was known */
  TD_OP_CLASSIFY,
  TD_OP_HEALTH,
  TD_OP_READY,
  TD_OP_MODEL,
  TD_OP_STATS,
  TD_OP_RELOAD,
  TD_OP_METRICS,
  TD_OP_COUNT
} td_op_t;

typedef enum td_proto { TD_PROTO_JSONL = 0, TD_PROTO_HTTP, TD_PROTO_COUNT } td_proto_t;

const char *td_ecode_name(td_ecode_t c);  /* "invalid_json", ... */
int td_ecode_status(td_ecode_t c);        /* 400, ... */
const char *td_http_reason(int status);   /* "Bad Request", ... */
const char *td_op_name(td_op_t op);       /* "classify", ..., "unknown" */
td_op_t td_op_parse(const char *s);       /* an op JSON Lines accepts; TD_OP_UNKNOWN if none */
/* "classify, health, ..." -- every op td_op_parse accepts, in table order --
 * into buf (snprintf-like: NUL-terminated, cut to n); returns the full length. */
size_t td_op_jsonl_names(char *buf, size_t n);
const char *td_proto_name(td_proto_t p);  /* "jsonl" | "http" */

/* The code a failure of td_classify (TD_EUTF8, TD_ELIMIT, ...) is answered
 * with: by the daemon and by offline themectl alike. */
td_ecode_t td_ecode_of_engine(int rc);
/* An id a request may carry: any JSON scalar, echoed as it came. */
int td_wire_id_ok(const json_t *id);

/* {"id":id (if id != NULL), "error":{"code":..,"message":..}}; new reference. */
json_t *td_wire_error(const json_t *id, td_ecode_t code, const char *message);

#endif
