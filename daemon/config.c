#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

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
    {"workers", T_INT, OFF(workers), "N", "classification threads (default: online CPUs)"},
    {"log_level", T_LEVEL, OFF(log_level), "LEVEL", "error, warn, info (default) or debug"},
    {"log_journal", T_BOOL, OFF(log_journal), NULL, "sd-daemon <N> prefixes instead of timestamps"},
    {"admin_token", T_STR, OFF(admin_token), "TOKEN", "required for reload over TCP when set"},
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
};
#define NOPTS (sizeof g_opts / sizeof g_opts[0])

void td_config_init(td_config_t *c) {
  memset(c, 0, sizeof *c);
  c->log_level = TD_LOG_INFO;
  c->log_journal = -1;
  c->max_request_bytes = TD_DEFAULT_MAX_REQUEST_BYTES;
  c->max_passages = TD_DEFAULT_MAX_PASSAGES;
  c->max_documents = TD_DEFAULT_MAX_DOCUMENTS;
  c->max_connections = TD_DEFAULT_MAX_CONNECTIONS;
  c->max_pending = TD_DEFAULT_MAX_PENDING;
  c->max_output_bytes = TD_DEFAULT_MAX_OUTPUT_BYTES;
  c->idle_timeout_ms = TD_DEFAULT_IDLE_TIMEOUT_MS;
  c->header_timeout_ms = TD_DEFAULT_HEADER_TIMEOUT_MS;
  c->drain_timeout_ms = TD_DEFAULT_DRAIN_TIMEOUT_MS;
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

static int set_json(td_config_t *c, const opt_def_t *o, json_t *v, td_err_t *err) {
  char num[64];
  if (json_is_string(v)) return set_str(c, o, json_string_value(v), err);
  if (o->type == T_LIST && json_is_array(v)) {
    size_t i;
    json_t *e;
    list_clear(c);
    json_array_foreach(v, i, e) {
      if (!json_is_string(e))
        return td_err_set(err, TD_EINVAL, "listen[%zu]: expected a string", i);
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
  return td_err_set(err, TD_EINVAL, "%s: wrong type", o->key);
}

int td_config_load_file(td_config_t *c, const char *path, td_err_t *err) {
  json_error_t je;
  json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
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
  if (optind < argc) return td_err_set(err, TD_EINVAL, "unexpected argument: %s", argv[optind]);
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
  return 0;
}

void td_config_usage(FILE *f) {
  fprintf(f,
          "usage: themed --model DIR [--plugins DIR] --listen unix:PATH [--listen tcp:HOST:PORT ...]\n"
          "              [--config FILE] [--check-config] [options]\n\n"
          "Serves the passage theme classifier over JSON Lines and HTTP/1.1 on every listener.\n\n"
          "  --config FILE        JSON object with the keys below (flag name, '-' -> '_');\n"
          "                       flags given on the command line override it\n"
          "  --check-config       validate the configuration, load the model, print \"config ok\"\n"
          "  --help, --version\n");
  for (size_t i = 0; i < NOPTS; i++) {
    char flag[64];
    snprintf(flag, sizeof flag, "--%s%s%s", g_opts[i].key, g_opts[i].arg ? " " : "",
             g_opts[i].arg ? g_opts[i].arg : "");
    for (char *p = flag; *p && *p != ' '; p++)
      if (*p == '_') *p = '-';
    fprintf(f, "  %-28s %s\n", flag, g_opts[i].help);
  }
  fprintf(f, "\nSignals: SIGHUP reloads the model; SIGTERM/SIGINT drain and stop.\n"
             "See docs/operations.md and docs/protocol.md.\n");
}
