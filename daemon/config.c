#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <libgen.h>
#include <limits.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"

enum opt_type { T_STR, T_LIST, T_INT, T_SIZE, T_DUR, T_LEVEL, T_BOOL };

/* One row per setting: flag name == key name with '-' for '_'. */
typedef struct opt_def {
  const char *key;
  int type;
  size_t off;
  const char *arg, *help;
} opt_def_t;

#define OFF(f) offsetof(td_config_t, f)
static const opt_def_t g_opts[] = {
    {"model", T_STR, OFF(model), "DIR", "model bundle directory (required)"},
    {"plugins", T_STR, OFF(plugins), "DIR", "tokenizer plugin directory"},
    {"listen", T_LIST, OFF(listen), "ADDR", "unix:PATH, tcp:HOST:PORT or tcp:[V6]:PORT (repeatable)"},
    {"workers", T_INT, OFF(workers), "N", "classification threads (default: one per CPU the daemon may run on)"},
    {"worker_loops", T_BOOL, OFF(worker_loops), NULL, "each worker serves its own connections on its own event loop (default true; false: one loop hands requests to a threadpool)"},
    {"cpu_affinity", T_STR, OFF(cpu_affinity), "CPUS", "pin worker loop i to the i-th of CPUS: auto (the CPUs the daemon may use), a list like 0,2-3, none, or match (default: auto when there are as many worker loops as CPUs, else none)"},
    {"log_level", T_LEVEL, OFF(log_level), "LEVEL", "error, warn, info (default) or debug"},
    {"log_journal", T_BOOL, OFF(log_journal), NULL, "sd-daemon <N> prefixes instead of timestamps"},
    {"admin_token_file", T_STR, OFF(admin_token_file), "FILE", "file holding the token admin ops over TCP need (mode o-rwx)"},
    {"admin_token", T_STR, OFF(admin_token), "TOKEN", "the token inline: visible in ps, prefer --admin-token-file"},
    {"models_dir", T_STR, OFF(models_dir), "DIR", "reload paths must lie inside (default: parent of --model)"},
    {"allow_any_model_path", T_BOOL, OFF(allow_any_model_path), NULL, "reload may load a bundle from any path"},
    {"allow_remote", T_BOOL, OFF(allow_remote), NULL, "TCP listeners may bind non-loopback addresses"},
    {"max_request_bytes", T_SIZE, OFF(max_request_bytes), "BYTES", "HTTP body / JSONL request (4M)"},
    {"max_line_bytes", T_SIZE, OFF(max_line_bytes), "BYTES", "JSONL line framing (= max-request-bytes)"},
    {"max_passages", T_SIZE, OFF(max_passages), "N", "passages per document (1000)"},
    {"max_documents", T_SIZE, OFF(max_documents), "N", "documents per HTTP batch (100)"},
    {"max_connections", T_SIZE, OFF(max_connections), "N", "open client connections (1024)"},
    {"max_pending", T_SIZE, OFF(max_pending), "N", "pipelined requests in flight per connection (64)"},
    {"max_output_bytes", T_SIZE, OFF(max_output_bytes), "BYTES", "unsent output per connection before reads pause (8M)"},
    {"idle_timeout", T_DUR, OFF(idle_timeout_ms), "DUR", "close a connection idle this long (60s)"},
    {"header_timeout", T_DUR, OFF(header_timeout_ms), "DUR", "HTTP headers must complete within (10s)"},
    {"drain_timeout", T_DUR, OFF(drain_timeout_ms), "DUR", "graceful stop waits at most (10s)"},
    {"nats", T_STR, OFF(nats_url), "URL", "consume articles from NATS JetStream (nats://host:4222[,...])"},
    {"nats_stream", T_STR, OFF(nats_stream), "NAME", "JetStream stream of the articles (created if missing)"},
    {"nats_subject", T_STR, OFF(nats_subject), "SUBJECT", "subject the articles are published on"},
    {"nats_durable", T_STR, OFF(nats_durable), "NAME", "durable pull consumer shared by every daemon"},
    {"nats_results", T_STR, OFF(nats_results), "SUBJECT", "subject the results are published on"},
    {"nats_dead_letter", T_STR, OFF(nats_dead_letter), "SUBJECT", "malformed articles go here (<results>.dead)"},
    {"nats_max_inflight", T_SIZE, OFF(nats_max_inflight), "N", "articles fetched and not yet acked (64)"},
    {"nats_ack_wait", T_DUR, OFF(nats_ack_wait_ms), "DUR", "redelivery delay of an unacked article, for a new consumer (30s)"},
    {"nats_replicas", T_SIZE, OFF(nats_replicas), "N", "replicas of the streams themed creates (1; 3 in a cluster)"},
    {"nats_max_deliver", T_SIZE, OFF(nats_max_deliver), "N", "an article delivered more often is dead-lettered, not classified (10; 0 = never)"},
};
#define NOPTS (sizeof g_opts / sizeof g_opts[0])

void td_config_init(td_config_t *c) {
  memset(c, 0, sizeof *c);
  c->log_level = TD_LOG_INFO;
  c->log_journal = -1;
  c->worker_loops = 1;
  c->max_request_bytes = TD_DEFAULT_MAX_REQUEST_BYTES;
  c->max_passages = TD_DEFAULT_MAX_PASSAGES;
  c->max_documents = TD_DEFAULT_MAX_DOCUMENTS;
  c->max_connections = TD_DEFAULT_MAX_CONNECTIONS;
  c->max_pending = TD_DEFAULT_MAX_PENDING;
  c->max_output_bytes = TD_DEFAULT_MAX_OUTPUT_BYTES;
  c->idle_timeout_ms = TD_DEFAULT_IDLE_TIMEOUT_MS;
  c->header_timeout_ms = TD_DEFAULT_HEADER_TIMEOUT_MS;
  c->drain_timeout_ms = TD_DEFAULT_DRAIN_TIMEOUT_MS;
  c->nats_max_inflight = TD_DEFAULT_NATS_MAX_INFLIGHT;
  c->nats_ack_wait_ms = TD_DEFAULT_NATS_ACK_WAIT_MS;
  c->nats_replicas = 1;
  c->nats_max_deliver = TD_DEFAULT_NATS_MAX_DELIVER;
}

static void list_clear(td_config_t *c) {
  for (size_t i = 0; i < c->nlisten; i++) free(c->listen[i]);
  TD_FREE(c->listen);
  c->nlisten = 0;
}

void td_config_free(td_config_t *c) {
  TD_FREE(c->model);
  TD_FREE(c->plugins);
  TD_FREE(c->config_file);
  TD_FREE(c->admin_token);
  TD_FREE(c->admin_token_file);
  TD_FREE(c->models_dir);
  TD_FREE(c->nats_url);
  TD_FREE(c->nats_stream);
  TD_FREE(c->nats_subject);
  TD_FREE(c->nats_durable);
  TD_FREE(c->nats_results);
  TD_FREE(c->nats_dead_letter);
  TD_FREE(c->cpu_affinity);
  TD_FREE(c->cpus);
  c->ncpus = 0;
  list_clear(c);
}

static int list_add(td_config_t *c, const char *s) {
  char **l = realloc(c->listen, (c->nlisten + 1) * sizeof *l);
  if (!l) return TD_ENOMEM;
  c->listen = l;
  if (!(l[c->nlisten] = strdup(s))) return TD_ENOMEM;
  c->nlisten++;
  return 0;
}

int td_parse_size(const char *s, size_t *out) {
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (end == s || errno || !(v >= 0)) return TD_EINVAL;
  double mul = 1;
  if (*end) {
    switch (*end) {
    case 'k': case 'K': mul = 1024.0; break;
    case 'm': case 'M': mul = 1024.0 * 1024; break;
    case 'g': case 'G': mul = 1024.0 * 1024 * 1024; break;
    case 'b': case 'B': mul = 1; break;
    default: return TD_EINVAL;
    }
    end++;
    if (!strcasecmp(end, "ib") || !strcasecmp(end, "b")) end += strlen(end);
    if (*end) return TD_EINVAL;
  }
  v *= mul;
  if (v > 1e15 || v != floor(v)) return TD_EINVAL;
  *out = (size_t)v;
  return 0;
}

int td_parse_duration_ms(const char *s, uint64_t *out) {
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (end == s || errno || !(v >= 0)) return TD_EINVAL;
  if (!*end || !strcmp(end, "s")) v *= 1000;
  else if (!strcmp(end, "m") || !strcmp(end, "min")) v *= 60000;
  else if (!strcmp(end, "h")) v *= 3600000;
  else if (strcmp(end, "ms")) return TD_EINVAL;
  if (v > 1e12) return TD_EINVAL;
  *out = (uint64_t)llround(v);
  return 0;
}

static int parse_bool(const char *s, int *out) {
  if (!strcmp(s, "1") || !strcasecmp(s, "true") || !strcasecmp(s, "yes") || !strcasecmp(s, "on"))
    *out = 1;
  else if (!strcmp(s, "0") || !strcasecmp(s, "false") || !strcasecmp(s, "no") || !strcasecmp(s, "off"))
    *out = 0;
  else
    return TD_EINVAL;
  return 0;
}

/* Sets one option from a string (flags; string values in the file). */
static int set_str(td_config_t *c, const opt_def_t *o, const char *v, td_err_t *err) {
  char *base = (char *)c;
  switch (o->type) {
  case T_STR: {
    char **p = (char **)(base + o->off);
    free(*p);
    if (!(*p = strdup(v))) return td_err_set(err, TD_ENOMEM, "out of memory");
    return 0;
  }
  case T_LIST:
    if (list_add(c, v)) return td_err_set(err, TD_ENOMEM, "out of memory");
    return 0;
  case T_INT: {
    char *end;
    errno = 0;
    long n = strtol(v, &end, 10);
    if (end == v || *end || errno || n < 0 || n > TD_MAX_WORKERS)
      return td_err_set(err, TD_EINVAL, "%s: expected an integer in [0,%d], got \"%s\"", o->key,
                        TD_MAX_WORKERS, v);
    *(int *)(base + o->off) = (int)n;
    return 0;
  }
  case T_SIZE:
    if (td_parse_size(v, (size_t *)(base + o->off)))
      return td_err_set(err, TD_EINVAL, "%s: expected a size (e.g. 4M, 65536), got \"%s\"", o->key, v);
    return 0;
  case T_DUR:
    if (td_parse_duration_ms(v, (uint64_t *)(base + o->off)))
      return td_err_set(err, TD_EINVAL, "%s: expected a duration (e.g. 10s, 500ms), got \"%s\"", o->key, v);
    return 0;
  case T_LEVEL: {
    int l = td_log_level_parse(v);
    if (l < 0) return td_err_set(err, TD_EINVAL, "%s: expected error|warn|info|debug, got \"%s\"", o->key, v);
    *(int *)(base + o->off) = l;
    return 0;
  }
  case T_BOOL:
    if (parse_bool(v, (int *)(base + o->off)))
      return td_err_set(err, TD_EINVAL, "%s: expected true or false, got \"%s\"", o->key, v);
    return 0;
  }
  return td_err_set(err, TD_EINVAL, "%s: bad option type", o->key);
}

/* What a JSON value is, for "expected X, got Y". */
static const char *json_kind(const json_t *v) {
  switch (json_typeof(v)) {
  case JSON_OBJECT: return "an object";
  case JSON_ARRAY: return "an array";
  case JSON_STRING: return "a string";
  case JSON_INTEGER: return "an integer";
  case JSON_REAL: return "a number";
  case JSON_TRUE:
  case JSON_FALSE: return "a boolean";
  case JSON_NULL: return "null";
  }
  return "a value";
}

/* What a key of each type takes in the file (set_json accepts these). */
static const char *type_expected(enum opt_type t) {
  switch (t) {
  case T_STR: return "a string";
  case T_LIST: return "a string or an array of strings";
  case T_INT: return "an integer";
  case T_SIZE: return "a size (a number of bytes or a string such as \"4M\")";
  case T_DUR: return "a duration (a number of seconds or a string such as \"500ms\")";
  case T_LEVEL: return "a string (error, warn, info or debug)";
  case T_BOOL: return "true or false";
  }
  return "another type";
}

static int set_json(td_config_t *c, const opt_def_t *o, json_t *v, td_err_t *err) {
  char num[64];
  if (json_is_string(v)) return set_str(c, o, json_string_value(v), err);
  if (o->type == T_LIST && json_is_array(v)) {
    size_t i;
    json_t *e;
    list_clear(c);
    json_array_foreach(v, i, e) {
      if (!json_is_string(e))
        return td_err_set(err, TD_EINVAL, "%s[%zu]: expected a string, got %s", o->key, i,
                          json_kind(e));
      if (set_str(c, o, json_string_value(e), err)) return err->code;
    }
    return 0;
  }
  if (o->type == T_BOOL && json_is_boolean(v)) {
    *(int *)((char *)c + o->off) = json_is_true(v);
    return 0;
  }
  if (json_is_number(v) && o->type != T_STR && o->type != T_LIST && o->type != T_LEVEL) {
    snprintf(num, sizeof num, "%.17g", json_number_value(v));
    return set_str(c, o, num, err);
  }
  return td_err_set(err, TD_EINVAL, "%s: expected %s, got %s", o->key, type_expected(o->type),
                    json_kind(v));
}

int td_config_load_file(td_config_t *c, const char *path, td_err_t *err) {
  /* Opened here, not by json_load_file: its message for a file it cannot
   * open is "path:-1:-1: unable to open ...", and a directory opens fine
   * and then reads as a JSON error. */
  FILE *f = fopen(path, "r");
  if (!f) return td_err_set(err, TD_EIO, "cannot read config file %s: %s", path, strerror(errno));
  struct stat st;
  if (fstat(fileno(f), &st) == 0 && S_ISDIR(st.st_mode)) {
    fclose(f);
    return td_err_set(err, TD_EIO, "cannot read config file %s: it is a directory", path);
  }
  json_error_t je;
  json_t *root = json_loadf(f, JSON_REJECT_DUPLICATES, &je);
  int e = errno, bad = ferror(f);
  fclose(f);
  if (!root && bad)
    return td_err_set(err, TD_EIO, "cannot read config file %s: %s", path, strerror(e));
  if (!root)
    return td_err_set(err, TD_EFORMAT, "%s:%d:%d: %s", path, je.line, je.column, je.text);
  int rc = 0;
  if (!json_is_object(root)) {
    rc = td_err_set(err, TD_EFORMAT, "%s: expected a JSON object", path);
    goto out;
  }
  const char *k;
  json_t *v;
  json_object_foreach(root, k, v) {
    const opt_def_t *o = NULL;
    for (size_t i = 0; i < NOPTS; i++)
      if (!strcmp(g_opts[i].key, k)) o = &g_opts[i];
    if (!o) {
      rc = td_err_set(err, TD_EINVAL, "%s: unknown key \"%s\"", path, k);
      goto out;
    }
    if (o->type == T_LIST && json_is_string(v)) list_clear(c);
    if ((rc = set_json(c, o, v, err))) {
      td_err_prefix(err, "%s", path);
      goto out;
    }
  }
out:
  json_decref(root);
  return rc;
}

enum { O_HELP = 1000, O_VERSION, O_CONFIG, O_CHECK, O_FIRST };

int td_config_parse_args(td_config_t *c, int argc, char **argv, int *action, td_err_t *err) {
  struct option lo[NOPTS + 5];
  char names[NOPTS][32];
  size_t n = 0;
  for (size_t i = 0; i < NOPTS; i++) {
    snprintf(names[i], sizeof names[i], "%s", g_opts[i].key);
    for (char *p = names[i]; *p; p++)
      if (*p == '_') *p = '-';
    lo[n++] = (struct option){names[i], g_opts[i].type == T_BOOL ? optional_argument : required_argument,
                              NULL, O_FIRST + (int)i};
  }
  lo[n++] = (struct option){"help", no_argument, NULL, O_HELP};
  lo[n++] = (struct option){"version", no_argument, NULL, O_VERSION};
  lo[n++] = (struct option){"config", required_argument, NULL, O_CONFIG};
  lo[n++] = (struct option){"check-config", no_argument, NULL, O_CHECK};
  lo[n] = (struct option){0, 0, 0, 0};
  *action = TD_ACTION_RUN;

  /* Pass 1: --config, --help, --version (the file goes under the flags). */
  opterr = 0;
  optind = 0;
  int ch;
  while ((ch = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
    if (ch == O_HELP || ch == 'h') *action = TD_ACTION_HELP;
    else if (ch == O_VERSION && *action != TD_ACTION_HELP) *action = TD_ACTION_VERSION;
    else if (ch == O_CONFIG) {
      free(c->config_file);
      if (!(c->config_file = strdup(optarg))) return td_err_set(err, TD_ENOMEM, "out of memory");
    } else if (ch == '?') {
      if (optopt) return td_err_set(err, TD_EINVAL, "option -%c: unknown or missing argument", optopt);
      return td_err_set(err, TD_EINVAL, "unknown option or missing argument: %s", argv[optind - 1]);
    }
  }
  if (optind < argc) {
    /* "--worker-loops false": getopt takes an optional value only when it is
     * joined by '=', so the value is left over (and moved to the end: getopt
     * permutes). If it reads as a boolean and a boolean flag was given
     * bare, say how to give the value. */
    int b;
    for (int a = 1; a < optind && !parse_bool(argv[optind], &b); a++)
      for (size_t i = 0; i < NOPTS; i++)
        if (g_opts[i].type == T_BOOL && !strncmp(argv[a], "--", 2) && !strcmp(argv[a] + 2, names[i]))
          return td_err_set(err, TD_EINVAL,
                            "unexpected argument: %s (a boolean flag takes its value after '=': "
                            "%s=%s)", argv[optind], argv[a], argv[optind]);
    return td_err_set(err, TD_EINVAL, "unexpected argument: %s", argv[optind]);
  }
  if (*action == TD_ACTION_HELP || *action == TD_ACTION_VERSION) return 0;
  /* TD_EFORMAT tells the caller the file, not the command line, was wrong. */
  if (c->config_file && td_config_load_file(c, c->config_file, err)) return err->code = TD_EFORMAT;

  /* Pass 2: every other flag, over the file. */
  int cli_listen = 0;
  optind = 0;
  while ((ch = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
    if (ch == O_CHECK) *action = TD_ACTION_CHECK;
    if (ch < O_FIRST) continue;
    const opt_def_t *o = &g_opts[ch - O_FIRST];
    if (o->type == T_LIST && !cli_listen++) list_clear(c);
    if (set_str(c, o, optarg ? optarg : "true", err)) return err->code;
  }
  return 0;
}

int td_listen_addr_parse(const char *s, td_listen_addr_t *a, td_err_t *err) {
  memset(a, 0, sizeof *a);
  if (!strncmp(s, "unix:", 5)) {
    const char *p = s + 5;
    if (!*p) return td_err_set(err, TD_EINVAL, "listen %s: empty socket path", s);
    if (strlen(p) >= sizeof a->path)
      return td_err_set(err, TD_EINVAL, "listen %s: socket path longer than %zu bytes", s,
                        sizeof a->path - 1);
    a->is_unix = 1;
    strcpy(a->path, p);
    return 0;
  }
  if (strncmp(s, "tcp:", 4))
    return td_err_set(err, TD_EINVAL, "listen %s: expected unix:PATH or tcp:HOST:PORT", s);
  const char *h = s + 4, *colon;
  size_t hl;
  if (*h == '[') {
    const char *rb = strchr(h, ']');
    if (!rb || rb[1] != ':')
      return td_err_set(err, TD_EINVAL, "listen %s: expected tcp:[ADDRESS]:PORT", s);
    hl = (size_t)(rb - h - 1);
    h++;
    colon = rb + 1;
  } else {
    colon = strrchr(h, ':');
    if (!colon) return td_err_set(err, TD_EINVAL, "listen %s: missing :PORT", s);
    hl = (size_t)(colon - h);
    if (memchr(h, ':', hl))
      return td_err_set(err, TD_EINVAL, "listen %s: IPv6 addresses go in brackets: tcp:[::1]:PORT", s);
  }
  if (hl == 0 || hl >= sizeof a->host) return td_err_set(err, TD_EINVAL, "listen %s: bad host", s);
  memcpy(a->host, h, hl);
  char *end;
  errno = 0;
  long port = strtol(colon + 1, &end, 10);
  if (end == colon + 1 || *end || errno || port < 0 || port > 65535)
    return td_err_set(err, TD_EINVAL, "listen %s: port must be 0..65535", s);
  a->port = (int)port;
  return 0;
}

/* JetStream names: no whitespace, '.', '*', '>' (or path separators); subjects:
 * no whitespace, no empty tokens. Wildcards are refused in the subjects we
 * publish on; the article subject may hold them (a consumer filter). */
static int bad_name(const char *s) {
  if (!*s) return 1;
  for (const unsigned char *p = (const unsigned char *)s; *p; p++)
    if (*p <= ' ' || *p == '.' || *p == '*' || *p == '>' || *p == '/' || *p == '\\' || *p == 0x7f)
      return 1;
  return 0;
}

static int bad_subject(const char *s, int wildcards) {
  if (!*s || *s == '.' || s[strlen(s) - 1] == '.' || strstr(s, "..")) return 1;
  for (const unsigned char *p = (const unsigned char *)s; *p; p++)
    if (*p <= ' ' || *p == 0x7f || (!wildcards && (*p == '*' || *p == '>'))) return 1;
  return 0;
}

/* 1 if the subject filter `pat` (tokens, '*' = one token, '>' = the rest)
 * matches the literal subject `s`. */
static int subject_matches(const char *pat, const char *s) {
  while (*pat && *s) {
    const char *pe = strchr(pat, '.'), *se = strchr(s, '.');
    size_t pl = pe ? (size_t)(pe - pat) : strlen(pat), sl = se ? (size_t)(se - s) : strlen(s);
    if (pl == 1 && *pat == '>') return 1;
    if (!(pl == 1 && *pat == '*') && (pl != sl || memcmp(pat, s, pl))) return 0;
    if (!pe || !se) return !pe && !se;
    pat = pe + 1;
    s = se + 1;
  }
  return 0;
}

static int validate_nats(td_config_t *c, td_err_t *err) {
  if (c->nats_url && !*c->nats_url) TD_FREE(c->nats_url);
  if (!c->nats_url) {
    if (c->nats_stream || c->nats_subject || c->nats_durable || c->nats_results || c->nats_dead_letter)
      return td_err_set(err, TD_EINVAL, "nats-stream/-subject/-durable/-results/-dead-letter need --nats URL");
    return 0;
  }
  static const char *const need[] = {"nats-stream", "nats-subject", "nats-durable", "nats-results"};
  const char *vals[] = {c->nats_stream, c->nats_subject, c->nats_durable, c->nats_results};
  for (size_t i = 0; i < 4; i++)
    if (!vals[i] || !*vals[i]) return td_err_set(err, TD_EINVAL, "--nats needs --%s", need[i]);
  if (bad_name(c->nats_stream))
    return td_err_set(err, TD_EINVAL, "nats-stream \"%s\": a name without spaces, '.', '*', '>', '/'", c->nats_stream);
  if (bad_name(c->nats_durable))
    return td_err_set(err, TD_EINVAL, "nats-durable \"%s\": a name without spaces, '.', '*', '>', '/'", c->nats_durable);
  if (bad_subject(c->nats_subject, 1))
    return td_err_set(err, TD_EINVAL, "nats-subject \"%s\": not a valid subject", c->nats_subject);
  if (bad_subject(c->nats_results, 0))
    return td_err_set(err, TD_EINVAL, "nats-results \"%s\": not a valid subject (no wildcards)", c->nats_results);
  if (!c->nats_dead_letter || !*c->nats_dead_letter) {
    size_t n = strlen(c->nats_results) + sizeof ".dead";
    char *d = realloc(c->nats_dead_letter, n);
    if (!d) return td_err_set(err, TD_ENOMEM, "out of memory");
    snprintf(d, n, "%s.dead", c->nats_results);
    c->nats_dead_letter = d;
  }
  if (bad_subject(c->nats_dead_letter, 0))
    return td_err_set(err, TD_EINVAL, "nats-dead-letter \"%s\": not a valid subject (no wildcards)",
                      c->nats_dead_letter);
  if (!strcmp(c->nats_dead_letter, c->nats_results))
    return td_err_set(err, TD_EINVAL, "nats: results and dead letters need two different subjects");
  /* A daemon that consumed its own output would loop forever. */
  if (subject_matches(c->nats_subject, c->nats_results) ||
      subject_matches(c->nats_subject, c->nats_dead_letter))
    return td_err_set(err, TD_EINVAL, "nats: the article subject %s also matches the results (%s) or "
                      "dead letters (%s)", c->nats_subject, c->nats_results, c->nats_dead_letter);
  if (c->nats_max_inflight == 0 || c->nats_max_inflight > TD_NATS_MAX_INFLIGHT)
    return td_err_set(err, TD_EINVAL, "nats_max_inflight: 1..%d", TD_NATS_MAX_INFLIGHT);
  if (c->nats_ack_wait_ms < 1000) return td_err_set(err, TD_EINVAL, "nats_ack_wait: at least 1s");
  if (c->nats_replicas < 1 || c->nats_replicas > 5) return td_err_set(err, TD_EINVAL, "nats_replicas: 1..5");
  return 0;
}

int td_sockaddr_is_loopback(const struct sockaddr *sa) {
  if (sa->sa_family == AF_INET)
    return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
  if (sa->sa_family == AF_INET6) {
    const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
    if (IN6_IS_ADDR_LOOPBACK(a)) return 1;
    if (IN6_IS_ADDR_V4MAPPED(a)) return a->s6_addr[12] == 127;
  }
  return 0;
}

/* A TCP listener reachable from other hosts is an explicit decision. A name
 * must resolve to loopback addresses only; one that does not resolve is
 * left for the bind to report. listener.c checks the bound address again. */
static int listen_loopback(const td_listen_addr_t *a, const char *spec, td_err_t *err) {
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
  struct addrinfo *ai = NULL;
  if (getaddrinfo(a->host, NULL, &hints, &ai) != 0) return 0;
  int ok = 1;
  for (struct addrinfo *p = ai; p; p = p->ai_next)
    if (!td_sockaddr_is_loopback(p->ai_addr)) ok = 0;
  freeaddrinfo(ai);
  if (ok) return 0;
  return td_err_set(err, TD_EINVAL,
                    "listen %s: %s is not a loopback address; themed listens on other addresses "
                    "only with --allow-remote (config \"allow_remote\": true)",
                    spec, a->host);
}

int td_admin_token_read(const char *path, char **out, td_err_t *err) {
  *out = NULL;
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) return td_err_set(err, TD_EIO, "admin token file %s: %s", path, strerror(errno));
  struct stat st;
  /* fstat on what we opened: no window between the check and the read. */
  if (fstat(fd, &st) != 0) {
    int e = errno;
    close(fd);
    return td_err_set(err, TD_EIO, "admin token file %s: %s", path, strerror(e));
  }
  if (!S_ISREG(st.st_mode)) {
    close(fd);
    return td_err_set(err, TD_EINVAL, "admin token file %s: not a regular file", path);
  }
  if (st.st_mode & (S_IROTH | S_IWOTH)) {
    close(fd);
    return td_err_set(err, TD_EINVAL,
                      "admin token file %s is %s by others (mode %04o); refusing it: "
                      "chmod o-rwx %s (and use a new token)",
                      path, st.st_mode & S_IROTH ? "readable" : "writable",
                      (unsigned)(st.st_mode & 07777), path);
  }
  char buf[TD_ADMIN_TOKEN_MAX + 64];
  size_t n = 0;
  for (;;) {
    ssize_t r = read(fd, buf + n, sizeof buf - n);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      int e = errno;
      close(fd);
      return td_err_set(err, TD_EIO, "admin token file %s: %s", path, strerror(e));
    }
    if (r == 0 || (n += (size_t)r) == sizeof buf) break;
  }
  close(fd);
  while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' ' || buf[n - 1] == '\t'))
    n--;
  int rc = 0;
  if (n == 0)
    rc = td_err_set(err, TD_EINVAL, "admin token file %s is empty", path);
  else if (n > TD_ADMIN_TOKEN_MAX)
    rc = td_err_set(err, TD_EINVAL, "admin token file %s: token longer than %d bytes", path,
                    TD_ADMIN_TOKEN_MAX);
  for (size_t i = 0; i < n && !rc; i++)
    if (buf[i] < 0x21 || buf[i] > 0x7e)
      rc = td_err_set(err, TD_EINVAL,
                      "admin token file %s: byte %zu is not printable ASCII; the token must be "
                      "one line of printable ASCII without spaces",
                      path, i);
  if (!rc && !(*out = strndup(buf, n))) rc = td_err_set(err, TD_ENOMEM, "out of memory");
  explicit_bzero(buf, sizeof buf);
  return rc;
}

/* "/a/./b//../c" against the working directory, without touching the file
 * system: for paths that do not exist (yet). */
static int lexical_path(const char *path, char *out, size_t n) {
  char buf[PATH_MAX * 2], cwd[PATH_MAX];
  if (path[0] == '/') {
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) return -1;
  } else {
    if (!getcwd(cwd, sizeof cwd)) return -1;
    if (snprintf(buf, sizeof buf, "%s/%s", cwd, path) >= (int)sizeof buf) return -1;
  }
  size_t len = 0;
  out[0] = '\0';
  for (char *save = NULL, *comp = strtok_r(buf, "/", &save); comp; comp = strtok_r(NULL, "/", &save)) {
    if (!strcmp(comp, ".")) continue;
    if (!strcmp(comp, "..")) {
      while (len > 0 && out[len - 1] != '/') len--;
      if (len > 0) len--;
      out[len] = '\0';
      continue;
    }
    size_t cl = strlen(comp);
    if (len + 1 + cl + 1 > n) return -1;
    out[len++] = '/';
    memcpy(out + len, comp, cl + 1);
    len += cl;
  }
  if (len == 0) snprintf(out, n, "/");
  return 0;
}

static int path_inside(const char *p, const char *root) {
  size_t n = strlen(root);
  if (n == 1 && root[0] == '/') return 1;
  return !strncmp(p, root, n) && (p[n] == '\0' || p[n] == '/');
}

int td_config_model_path(const td_config_t *c, const char *path, char *resolved, td_err_t *err) {
  int missing = 0;
  if (!realpath(path, resolved)) {
    missing = errno ? errno : ENOENT;
    if (lexical_path(path, resolved, PATH_MAX))
      return td_err_set(err, TD_EINVAL, "%.*s: path too long", (int)td_utf8_prefix(path, 200),
                        path);
  }
  if (!c->allow_any_model_path && (!c->models_dir || !path_inside(resolved, c->models_dir)))
    return td_err_set(err, TD_ESTATE,
                      "%.*s is outside the models directory %s (--models-dir; "
                      "--allow-any-model-path lifts this)",
                      (int)td_utf8_prefix(path, 300), path, c->models_dir ? c->models_dir : "(none)");
  if (missing)
    return td_err_set(err, TD_EIO, "%.*s: %s", (int)td_utf8_prefix(path, 300), path,
                      strerror(missing));
  return 0;
}

/* models_dir: given, or the directory --model is in; kept as its realpath
 * so reload paths compare against what they really are. */
static int resolve_models_dir(td_config_t *c, td_err_t *err) {
  char real[PATH_MAX];
  if (c->models_dir && *c->models_dir) {
    if (!realpath(c->models_dir, real))
      return td_err_set(err, TD_EINVAL, "models_dir %s: %s", c->models_dir, strerror(errno));
  } else {
    char *copy = strdup(c->model);
    if (!copy) return td_err_set(err, TD_ENOMEM, "out of memory");
    size_t n = strlen(copy);
    while (n > 1 && copy[n - 1] == '/') copy[--n] = '\0';
    int ok = realpath(dirname(copy), real) != NULL;
    free(copy);
    TD_FREE(c->models_dir);
    if (!ok) return 0; /* the model cannot load either: main reports that */
  }
  char *dup = strdup(real);
  if (!dup) return td_err_set(err, TD_ENOMEM, "out of memory");
  free(c->models_dir);
  c->models_dir = dup;
  if (c->allow_any_model_path) return 0;
  char where[PATH_MAX];
  td_err_t e2 = {0};
  if (td_config_model_path(c, c->model, where, &e2) == TD_ESTATE)
    return td_err_set(err, TD_EINVAL, "model %s", e2.msg);
  return 0;
}

/* workers 0 -> one per CPU the daemon may use (in a container limited to 2
 * of 64 CPUs, 2, not 64), at most TD_MAX_WORKERS. */
static void default_workers(td_config_t *c) {
  if (c->workers > 0) return;
  int n = td_cpus_allowed();
  c->workers = n > TD_MAX_WORKERS ? TD_MAX_WORKERS : n;
}

/*
 * cpu_affinity -> cpus. "match", the default, pins only when there is one
 * worker loop per CPU the daemon may use: each CPU then has exactly one loop,
 * and a second daemon on the same machine pins the same way, so nothing is
 * crowded onto a few CPUs while others idle, which "auto" with fewer loops
 * than CPUs would do to every instance alike. Every CPU named must be one
 * the daemon may run on.
 */
static int resolve_cpus(td_config_t *c, td_err_t *err) {
  TD_FREE(c->cpus);
  c->ncpus = 0;
  c->cpus_asked = 0;
  const char *spec = c->cpu_affinity;
  int match = !spec || !*spec || !strcmp(spec, "match");
  if (spec && !strcmp(spec, "none")) return 0;
  if (!c->worker_loops) {
    if (match) return 0;
    return td_err_set(err, TD_EINVAL, "cpu_affinity pins worker loops: it needs worker_loops");
  }
  cpu_set_t allowed;
  if (td_cpu_set_allowed(&allowed)) {
    if (match) return 0;
    return td_err_set(err, TD_EINVAL, "cpu_affinity: cannot read the CPUs allowed: %s", strerror(errno));
  }
  if (match && CPU_COUNT(&allowed) != c->workers) return 0;
  if (!(c->cpus = calloc(CPU_SETSIZE, sizeof *c->cpus))) return td_err_set(err, TD_ENOMEM, "out of memory");
  c->cpus_asked = !match;
  if (match || !strcmp(spec, "auto")) {
    for (int k = 0; k < CPU_SETSIZE; k++)
      if (CPU_ISSET(k, &allowed)) c->cpus[c->ncpus++] = k;
    return 0;
  }
  for (const char *p = spec;;) {
    char *end;
    errno = 0;
    long lo = strtol(p, &end, 10), hi = lo;
    if (end == p || errno || lo < 0) goto bad;
    if (*end == '-') {
      p = end + 1;
      hi = strtol(p, &end, 10);
      if (end == p || errno || hi < lo) goto bad;
    }
    for (long k = lo; k <= hi; k++) {
      if (k >= CPU_SETSIZE || !CPU_ISSET((int)k, &allowed))
        return td_err_set(err, TD_EINVAL, "cpu_affinity: CPU %ld is not one this process may run on", k);
      if (c->ncpus == CPU_SETSIZE) goto bad;
      c->cpus[c->ncpus++] = (int)k;
    }
    if (!*end) return 0;
    if (*end != ',') goto bad;
    p = end + 1;
  }
bad:
  return td_err_set(err, TD_EINVAL,
                    "cpu_affinity: expected match, auto, none or a CPU list such as 0,2-3, got \"%s\"", spec);
}

int td_config_validate(td_config_t *c, int inherited_fds, td_err_t *err) {
  if (!c->model || !*c->model)
    return td_err_set(err, TD_EINVAL, "no model: give --model DIR (or \"model\" in the config file)");
  if (c->nlisten == 0 && inherited_fds <= 0)
    return td_err_set(err, TD_EINVAL,
                      "nothing to listen on: give at least one --listen unix:PATH or "
                      "--listen tcp:HOST:PORT (or start from a systemd socket unit)");
  for (size_t i = 0; i < c->nlisten; i++) {
    td_listen_addr_t a;
    if (td_listen_addr_parse(c->listen[i], &a, err)) return err->code;
    if (!a.is_unix && !c->allow_remote && listen_loopback(&a, c->listen[i], err)) return err->code;
  }
  if (c->max_request_bytes < 64) return td_err_set(err, TD_EINVAL, "max_request_bytes: at least 64");
  if (c->max_line_bytes == 0) c->max_line_bytes = c->max_request_bytes;
  if (c->max_line_bytes < 64) return td_err_set(err, TD_EINVAL, "max_line_bytes: at least 64");
  if (c->max_passages == 0) return td_err_set(err, TD_EINVAL, "max_passages: at least 1");
  if (c->max_documents == 0) return td_err_set(err, TD_EINVAL, "max_documents: at least 1");
  if (c->max_connections == 0) return td_err_set(err, TD_EINVAL, "max_connections: at least 1");
  if (c->max_pending == 0) return td_err_set(err, TD_EINVAL, "max_pending: at least 1");
  if (c->max_output_bytes == 0) return td_err_set(err, TD_EINVAL, "max_output_bytes: at least 1");
  if (c->idle_timeout_ms == 0 || c->header_timeout_ms == 0)
    return td_err_set(err, TD_EINVAL, "timeouts must be greater than zero");
  if (c->admin_token && !*c->admin_token) TD_FREE(c->admin_token);
  if (c->admin_token_file && !*c->admin_token_file) TD_FREE(c->admin_token_file);
  if (c->admin_token && c->admin_token_file)
    return td_err_set(err, TD_EINVAL, "give admin_token_file or admin_token, not both");
  if (resolve_models_dir(c, err)) return err->code;
  default_workers(c);
  if (resolve_cpus(c, err)) return err->code;
  return validate_nats(c, err);
}

void td_config_usage(FILE *f) {
  fprintf(f,
          "usage: themed --model DIR [--plugins DIR] --listen unix:PATH [--listen tcp:HOST:PORT ...]\n"
          "              [--config FILE] [--check-config] [options]\n\n"
          "Serves the passage theme classifier over JSON Lines and HTTP/1.1 on every listener.\n\n"
          "  --config FILE        JSON object with the keys below (flag name, '-' -> '_');\n"
          "                       flags given on the command line override it\n"
          "  --check-config       validate the configuration, load the model, print \"config ok\"\n"
          "  --help, --version\n"
          "  BOOL: true, false, yes, no, on, off, 1 or 0, joined by '=' (--worker-loops=false);\n"
          "        the flag alone means true\n");
  for (size_t i = 0; i < NOPTS; i++) {
    /* A boolean's value is optional (getopt's optional_argument), and getopt
     * takes an optional value only when it is joined by '=': "--flag false"
     * would leave "false" as a stray argument. The help shows the one
     * spelling that works. */
    char flag[64];
    if (g_opts[i].type == T_BOOL)
      snprintf(flag, sizeof flag, "--%s[=BOOL]", g_opts[i].key);
    else
      snprintf(flag, sizeof flag, "--%s%s%s", g_opts[i].key, g_opts[i].arg ? " " : "",
               g_opts[i].arg ? g_opts[i].arg : "");
    for (char *p = flag; *p && *p != ' ' && *p != '['; p++)
      if (*p == '_') *p = '-';
    fprintf(f, "  %-30s %s\n", flag, g_opts[i].help);
  }
  fprintf(f, "\nSignals: SIGHUP reloads the model; SIGTERM/SIGINT drain and stop.\n"
             "See docs/operations.md and docs/protocol.md.\n");
}
