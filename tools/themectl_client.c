/*
 * themectl commands that talk to a running daemon: health, stats, model,
 * reload, and classify --socket/--connect. `stream` is in themectl_stream.c,
 * the socket plumbing in themectl_net.c.
 *
 * Exit statuses: 0 success, 1 failure (unreachable, unhealthy, refused, an
 * error response for any document), 2 bad command line.
 */
#include "themectl.h"
#include "classify.h"
#include "themectl_doc.h"
#include "themectl_net.h"
#include "text.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define DEFAULT_TIMEOUT_MS 10000          /* health, stats, model */
#define DEFAULT_RELOAD_TIMEOUT_MS 120000  /* loading a bundle takes a while */
#define DEFAULT_CLASSIFY_TIMEOUT_MS 120000
#define DEFAULT_INFLIGHT 64

/* ------------------------------------------------------- shared options */

int td_parse_timeout(const char *s, int *ms) {
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (end == s || errno || v < 0 || !isfinite(v)) return -1;
  double scale = 1000;
  if (!strcmp(end, "ms")) scale = 1;
  else if (!strcmp(end, "s") || !*end) scale = 1000;
  else if (!strcmp(end, "m")) scale = 60000;
  else return -1;
  v *= scale;
  if (v > INT_MAX) return -1;
  *ms = (int)v;
  if (v > 0 && *ms == 0) *ms = 1;
  return 0;
}

int td_conn_opt(td_conn_opts_t *o, const char *name, const char *arg, td_err_t *err) {
  if (!strcmp(name, "socket") || !strcmp(name, "connect")) {
    if (o->have_ep)
      return td_err_set(err, TD_EINVAL, "give one of --socket and --connect, once");
    int rc = name[0] == 's' ? td_endpoint_unix(&o->ep, arg, err) : td_endpoint_tcp(&o->ep, arg, err);
    if (rc) return rc;
    o->have_ep = 1;
    return 1;
  }
  if (!strcmp(name, "timeout")) {
    if (td_parse_timeout(arg, &o->timeout_ms))
      return td_err_set(err, TD_EINVAL, "--timeout: expected seconds (e.g. 5, 0.5, 500ms; 0 = none), got '%s'", arg);
    return 1;
  }
  return 0;
}

int td_conn_finish(td_conn_opts_t *o, td_err_t *err) {
  if (o->have_ep) return 0;
  int rc = td_endpoint_default(&o->ep, err);
  if (!rc) o->have_ep = 1;
  return rc;
}

void td_cls_opts_init(td_cls_opts_t *o) {
  o->threshold = -1;
  o->top_k = -1;
  o->explain = o->include_text = 0;
}

int td_cls_opts_any(const td_cls_opts_t *o) {
  return o->threshold >= 0 || o->top_k >= 0 || o->explain || o->include_text;
}

int td_cls_opts_apply(const td_cls_opts_t *o, json_t *req) {
  int rc = 0;
  if (o->threshold >= 0) rc |= json_object_set_new(req, "threshold", json_real(o->threshold));
  if (o->top_k >= 0) rc |= json_object_set_new(req, "top_k", json_integer(o->top_k));
  if (o->explain) rc |= json_object_set_new(req, "explain", json_true());
  if (o->include_text) rc |= json_object_set_new(req, "include_text", json_true());
  return rc ? TD_ENOMEM : 0;
}

int td_parse_threshold(const char *s, double *out, td_err_t *err) {
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (end == s || *end || errno || !(v >= 0 && v <= 1))
    return td_err_set(err, TD_EINVAL, "--threshold: expected a number in [0,1], got '%s'", s);
  *out = v;
  return 0;
}

int td_parse_count(const char *s, const char *what, long min, long max, long *out, td_err_t *err) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (end == s || *end || errno || v < min || v > max)
    return td_err_set(err, TD_EINVAL, "%s: expected an integer in [%ld,%ld], got '%s'", what, min, max, s);
  *out = v;
  return 0;
}


/* The shared connection options; the --timeout line carries the command's
 * own default (DEFAULT_*_TIMEOUT_MS), so each caller passes it. */
static void conn_usage(FILE *f, int default_ms) {
  fputs("  -s, --socket PATH      the daemon's unix socket (default: $THEMED_SOCKET, else\n"
        "                         ./run/themed.sock if it exists, else /run/themed/themed.sock)\n"
        "  -c, --connect HOST:PORT  the daemon's TCP listener instead ([ADDR]:PORT for IPv6)\n",
        f);
  fprintf(f, "  -t, --timeout S        give up after S seconds without an answer (default %g,\n"
             "                         0 = never)\n",
          default_ms / 1000.0);
}

/* --------------------------------------------------- one-shot commands */

typedef struct simple_cmd {
  const char *name;  /* subcommand */
  const char *op;    /* wire op */
  const char *summary;
  int admin;         /* takes --token-file (and, for reload, --path) */
  int timeout_ms;    /* the default --timeout (the help says it too) */
} simple_cmd_t;

static const simple_cmd_t simple_cmds[] = {
    {"health", "health", "print the daemon's health; exit 0 only if it is ok", 0, DEFAULT_TIMEOUT_MS},
    {"stats", "stats", "print the daemon's counters (requests, passages, errors, ...)", 0,
     DEFAULT_TIMEOUT_MS},
    {"model", "model", "print the model the daemon serves", 0, DEFAULT_TIMEOUT_MS},
    {"reload", "reload", "load the model bundle again (or another one) without a restart", 1,
     DEFAULT_RELOAD_TIMEOUT_MS},
};

static void simple_usage(FILE *f, const simple_cmd_t *c) {
  fprintf(f, "Usage: themectl %s [options]\n  %s\n\nOptions:\n", c->name, c->summary);
  conn_usage(f, c->timeout_ms);
  if (!strcmp(c->name, "reload"))
    fputs("  -p, --path DIR         load this bundle instead of the current one's directory\n"
          "                         (a relative DIR is made absolute here when it exists)\n",
          f);
  if (c->admin)
    fputs("  -T, --token-file F     send the admin token read from F (needed over TCP when\n"
          "                         the daemon has an admin token)\n",
          f);
  fputs("      --pretty           indent the JSON\n"
        "  -h, --help             this text\n",
        f);
}

/* The token file holds one line; trailing white space is not part of it. */
static char *read_token(const char *path, td_err_t *err) {
  char *data = NULL;
  size_t len = 0;
  if (td_read_file(path, &data, &len, err)) return NULL;
  while (len && (data[len - 1] == '\n' || data[len - 1] == '\r' || data[len - 1] == ' ' ||
                 data[len - 1] == '\t'))
    data[--len] = '\0';
  if (!len || memchr(data, '\0', len)) {
    free(data);
    td_err_set(err, TD_EINVAL, "%s: no token in the file", path);
    return NULL;
  }
  return data;
}

static void print_json(const char *line, json_t *resp, int pretty) {
  if (pretty && resp) {
    json_dumpf(resp, stdout, JSON_INDENT(2));
    fputc('\n', stdout);
  } else {
    fputs(line, stdout);
    fputc('\n', stdout);
  }
  fflush(stdout);
}

static int run_simple(const simple_cmd_t *c, int argc, char **argv) {
  static const struct option lopts[] = {
      {"socket", required_argument, NULL, 's'}, {"connect", required_argument, NULL, 'c'},
      {"timeout", required_argument, NULL, 't'}, {"path", required_argument, NULL, 'p'},
      {"token-file", required_argument, NULL, 'T'}, {"pretty", no_argument, NULL, 'P'},
      {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
  td_conn_opts_t co = {.timeout_ms = c->timeout_ms};
  const char *path = NULL, *token_file = NULL;
  int pretty = 0, opt, li;
  td_err_t err = {0};
  optind = 0;  /* themectl.c may have run getopt already: start over */
  opterr = 0;  /* themectl_bad_option() says it, once */
  while ((opt = getopt_long(argc, argv, ":s:c:t:p:T:h", lopts, &li)) != -1) {
    int rc = 0;
    switch (opt) {
    case 's': rc = td_conn_opt(&co, "socket", optarg, &err); break;
    case 'c': rc = td_conn_opt(&co, "connect", optarg, &err); break;
    case 't': rc = td_conn_opt(&co, "timeout", optarg, &err); break;
    case 'p':
      if (strcmp(c->name, "reload")) return themectl_usage_err(c->name, "%s", "--path applies to reload only");
      path = optarg;
      break;
    case 'T':
      if (!c->admin) return themectl_usage_err(c->name, "%s", "--token-file applies to reload only");
      token_file = optarg;
      break;
    case 'P': pretty = 1; break;
    case 'h': simple_usage(stdout, c); return TD_EXIT_OK;
    default: return themectl_bad_option(c->name, opt, argv);
    }
    if (rc < 0) return themectl_usage_err(c->name, "%s", err.msg);
  }
  if (optind < argc) return themectl_usage_err(c->name, "%s", "unexpected argument");
  if (td_conn_finish(&co, &err)) return themectl_usage_err(c->name, "%s", err.msg);

  json_t *req = json_pack("{s:s, s:i}", "op", c->op, "id", 1);
  char *abspath = NULL, *token = NULL;
  if (!req) goto oom;
  if (path) {
    /* The daemon resolves paths from its own working directory; a path the
     * user can see here means what it says here (unix socket: same host). */
    if (co.ep.is_unix && path[0] != '/' && (abspath = realpath(path, NULL))) path = abspath;
    if (json_object_set_new(req, "path", json_string(path))) goto oom;
  }
  if (token_file) {
    if (!(token = read_token(token_file, &err))) {
      themectl_errorf("%s: %s", c->name, err.msg);
      json_decref(req);
      free(abspath);
      return TD_EXIT_FAIL;
    }
    if (json_object_set_new(req, "token", json_string(token))) goto oom;
  }
  char *reqline = json_dumps(req, JSON_COMPACT);
  json_decref(req);
  req = NULL;
  free(abspath);
  abspath = NULL;
  if (token) {
    explicit_bzero(token, strlen(token));
    TD_FREE(token);
  }
  if (!reqline) goto oom;

  char *line = NULL;
  json_t *resp = NULL;
  int rc = td_client_call(&co.ep, co.timeout_ms, reqline, &line, &resp, &err);
  free(reqline);
  if (rc) {
    themectl_errorf("%s", err.msg);
    return TD_EXIT_FAIL;
  }
  int status = TD_EXIT_OK;
  json_t *e = json_object_get(resp, "error");
  if (e) {
    const char *code = json_string_value(json_object_get(e, "code"));
    const char *msg = json_string_value(json_object_get(e, "message"));
    /* The daemon's own words: for reload they carry the reason (a missing
     * file, a bad manifest) and the old model keeps serving. */
    if (!strcmp(c->name, "reload"))
      themectl_errorf("reload failed: %s%s%s%s", msg ? msg : "", msg ? " (" : "", code ? code : "error",
                      msg ? ")" : "");
    else
      themectl_errorf("%s: %s: %s", c->name, code ? code : "error", msg ? msg : "");
    status = TD_EXIT_FAIL;
  } else if (!strcmp(c->name, "health")) {
    const char *st = json_string_value(json_object_get(resp, "status"));
    print_json(line, resp, pretty);
    if (!st || strcmp(st, "ok")) {
      themectl_errorf("%s is not healthy (status %s)", co.ep.name, st ? st : "missing");
      status = TD_EXIT_FAIL;
    }
  } else if (!strcmp(c->name, "reload") && !json_is_true(json_object_get(resp, "reloaded"))) {
    print_json(line, resp, pretty);
    themectl_errorf("reload failed: the daemon did not confirm it");
    status = TD_EXIT_FAIL;
  } else {
    print_json(line, resp, pretty);
  }
  free(line);
  json_decref(resp);
  return status;
oom:
  json_decref(req);
  free(abspath);
  free(token);
  themectl_errorf("out of memory");
  return TD_EXIT_FAIL;
}

/* ------------------------------------------------- classify --socket */

typedef struct cls_ctx {
  td_cls_opts_t o;
  int jsonl;
  char **files;      /* none: stdin */
  int nfiles, fi;
  td_inputs_t in;    /* --jsonl: the lines of files */
  unsigned errors;
} cls_ctx_t;

/* A classify request for one document: text (len bytes) or passages. Input
 * that cannot become a JSON string (bad UTF-8) gets the engine's message
 * as a local error response, in its place in the output order. */
static int make_classify(const td_cls_opts_t *o, const json_t *id, const char *text, size_t len,
                         const json_t *passages, td_req_t *r, td_err_t *err) {
  if (text) {
    size_t bad = 0;
    td_err_t uerr = {0};
    if (td_text_check_utf8(text, len, &bad, &uerr))
      return td_req_local_error(r, id, "invalid_utf8", uerr.msg)
                 ? td_err_set(err, TD_ENOMEM, "out of memory") : 1;
  }
  json_t *req = json_object();
  if (!req) return td_err_set(err, TD_ENOMEM, "out of memory");
  int bad = json_object_set_new(req, "op", json_string("classify"));
  if (id) bad |= json_object_set(req, "id", (json_t *)id);
  if (text) bad |= json_object_set_new(req, "text", json_stringn(text, len));
  else bad |= json_object_set(req, "passages", (json_t *)passages);
  bad |= td_cls_opts_apply(o, req);
  char *s = bad ? NULL : json_dumps(req, JSON_COMPACT);
  json_decref(req);
  if (!s || td_req_take_line(r, s)) return td_err_set(err, TD_ENOMEM, "out of memory");
  r->key = id ? json_dumps(id, JSON_ENCODE_ANY | JSON_COMPACT) : NULL;
  r->ibytes = len;
  return 1;
}

/* Whole documents: each FILE is one article, its id the file's base name;
 * without FILEs (or for '-'), standard input is one article, id "stdin". */
static int cls_next_doc(cls_ctx_t *c, td_req_t *r, td_err_t *err) {
  if (c->fi >= (c->nfiles ? c->nfiles : 1)) return -1;
  const char *name = c->nfiles ? c->files[c->fi] : "-";
  c->fi++;
  char *data = NULL;
  size_t len = 0;
  int rc;
  if (!strcmp(name, "-")) {
    td_buf_t b;
    td_buf_init(&b);
    for (;;) {
      if (td_buf_reserve(&b, 65536)) { td_buf_free(&b); return td_err_set(err, TD_ENOMEM, "out of memory"); }
      ssize_t n = read(0, b.data + b.len, 65536);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) { td_buf_free(&b); return td_err_set(err, TD_EIO, "standard input: %s", strerror(errno)); }
      if (n == 0) break;
      b.len += (size_t)n;
    }
    data = b.data ? b.data : strdup("");
    len = b.len;
  } else if ((rc = td_read_file(name, &data, &len, err))) {
    return rc < -1 ? rc : TD_EIO;
  }
  if (!data) return td_err_set(err, TD_ENOMEM, "out of memory");
  /* The offline command's ids: the file's base name, "stdin" for standard input. */
  const char *slash = strrchr(name, '/');
  json_t *id = json_string(!strcmp(name, "-") ? "stdin" : slash ? slash + 1 : name);
  rc = make_classify(&c->o, id, data, len, NULL, r, err);
  json_decref(id);
  free(data);
  return rc;
}

/* --jsonl: one {"id","text"} (or {"id","passages"}) object per line, read
 * as the offline command reads it (themectl_doc.c). */
static int cls_next_line(cls_ctx_t *c, td_req_t *r, int *wait_fd, td_err_t *err) {
  char *line;
  size_t n;
  int rc = td_inputs_next(&c->in, &line, &n, wait_fd, err);
  if (rc <= 0) return rc;
  themectl_jdoc_t d;
  if (themectl_jdoc_parse(&d, c->in.name, c->in.lines.lineno, line, n))
    rc = td_req_local_error(r, d.id, d.code, d.msg) ? td_err_set(err, TD_ENOMEM, "out of memory") : 1;
  else
    rc = make_classify(&c->o, d.id, d.text, d.len, d.passages, r, err);
  themectl_jdoc_free(&d);
  r->ibytes = n + 1;
  return rc;
}

static int cls_next(void *ctx, td_req_t *r, int *wait_fd, td_err_t *err) {
  cls_ctx_t *c = ctx;
  return c->jsonl ? cls_next_line(c, r, wait_fd, err) : cls_next_doc(c, r, err);
}

/* Results go to stdout exactly as the daemon wrote them (the same
 * td_result_json() dump the offline command prints); errors to stderr. */
static int cls_done(void *ctx, const td_req_t *r, const char *line, size_t len, json_t *resp,
                    td_err_t *err) {
  cls_ctx_t *c = ctx;
  json_t *e = json_object_get(resp, "error");
  if (e) {
    c->errors++;
    /* The daemon leaves out an id it rejects (not a scalar): the request's. */
    json_t *id = json_object_get(resp, "id");
    json_t *kid = !id && r->key ? json_loads(r->key, JSON_DECODE_ANY, NULL) : NULL;
    themectl_doc_error(id ? id : kid, json_string_value(json_object_get(e, "code")),
                       json_string_value(json_object_get(e, "message")));
    json_decref(kid);
    return 0;
  }
  if (fwrite(line, 1, len, stdout) != len || fputc('\n', stdout) == EOF)
    return td_err_set(err, TD_EIO, "standard output: %s", strerror(errno));
  return 0;
}

static void cls_usage(FILE *f) {
  fputs("Usage: themectl classify --socket PATH|--connect HOST:PORT [options] [FILE...]\n"
        "  Classify articles with a running daemon; the same inputs and output lines as the\n"
        "  offline `themectl classify`. Each FILE is one article (its id is the file name);\n"
        "  no FILE or '-': standard input.\n\nOptions:\n",
        f);
  conn_usage(f, DEFAULT_CLASSIFY_TIMEOUT_MS);
  fputs("      --jsonl            each input line is {\"id\",\"text\"} (or {\"id\",\"passages\"})\n"
        "      --threshold X      one threshold in [0,1] for every theme (default: the tuned ones)\n"
        "      --top-k K          at most K themes per passage (0 = all over threshold)\n"
        "      --explain          add the tokens that contributed most to each tag\n"
        "      --text             echo each passage's text\n"
        "      --inflight N       requests in flight at once (default 64)\n"
        "  -h, --help             this text\n",
        f);
}

static int run_classify(int argc, char **argv) {
  enum { O_JSONL = 256, O_THRESHOLD, O_TOPK, O_EXPLAIN, O_TEXT, O_INFLIGHT, O_OFFLINE, O_LOCAL };
  static const struct option lopts[] = {
      {"socket", required_argument, NULL, 's'}, {"connect", required_argument, NULL, 'c'},
      {"timeout", required_argument, NULL, 't'}, {"jsonl", no_argument, NULL, O_JSONL},
      {"threshold", required_argument, NULL, O_THRESHOLD}, {"top-k", required_argument, NULL, O_TOPK},
      {"explain", no_argument, NULL, O_EXPLAIN}, {"text", no_argument, NULL, O_TEXT},
      {"inflight", required_argument, NULL, O_INFLIGHT}, {"model", required_argument, NULL, O_OFFLINE},
      {"plugins", required_argument, NULL, O_OFFLINE}, {"lines", no_argument, NULL, O_LOCAL},
      {"blocks", no_argument, NULL, O_LOCAL}, {"format", required_argument, NULL, O_LOCAL},
      {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0}};
  td_conn_opts_t co = {.timeout_ms = DEFAULT_CLASSIFY_TIMEOUT_MS};
  cls_ctx_t c;
  memset(&c, 0, sizeof c);
  td_cls_opts_init(&c.o);
  long inflight = DEFAULT_INFLIGHT, v;
  int opt, li;
  td_err_t err = {0};
  optind = 0;
  opterr = 0;
  while ((opt = getopt_long(argc, argv, ":s:c:t:h", lopts, &li)) != -1) {
    int rc = 0;
    switch (opt) {
    case 's': rc = td_conn_opt(&co, "socket", optarg, &err); break;
    case 'c': rc = td_conn_opt(&co, "connect", optarg, &err); break;
    case 't': rc = td_conn_opt(&co, "timeout", optarg, &err); break;
    case O_JSONL: c.jsonl = 1; break;
    case O_THRESHOLD: rc = td_parse_threshold(optarg, &c.o.threshold, &err); break;
    case O_TOPK:
      rc = td_parse_count(optarg, "--top-k", 0, TD_MAX_TOP_K, &v, &err);
      c.o.top_k = (int)v;
      break;
    case O_EXPLAIN: c.o.explain = 1; break;
    case O_TEXT: c.o.include_text = 1; break;
    case O_INFLIGHT:
      rc = td_parse_count(optarg, "--inflight", 1, 4096, &inflight, &err);
      break;
    case O_OFFLINE:
      return themectl_usage_err("classify", "%s", "--model and --plugins do not apply with --socket/--connect: "
                                     "the daemon classifies with the model it serves");
    case O_LOCAL:
      return themectl_usage_err("classify", "%s", "--lines, --blocks and --format are for offline use (--model DIR): "
                                     "the daemon answers in JSON");
    case 'h': cls_usage(stdout); return TD_EXIT_OK;
    default: return themectl_bad_option("classify", opt, argv);
    }
    if (rc < 0) return themectl_usage_err("classify", "%s", err.msg);
  }
  if (td_conn_finish(&co, &err)) return themectl_usage_err("classify", "%s", err.msg);
  c.files = argv + optind;
  c.nfiles = argc - optind;
  td_inputs_init(&c.in, (const char *const *)c.files, (size_t)c.nfiles);

  td_pipe_cfg_t cfg = {.ep = &co.ep, .inflight = (int)inflight, .timeout_ms = co.timeout_ms,
                       .reconnect = 1};
  td_pipe_ops_t ops = {.next = cls_next, .done = cls_done};
  int rc = td_pipe_run(&cfg, &ops, &c, NULL, &err);
  td_inputs_free(&c.in);
  if (fflush(stdout) && !rc) rc = td_err_set(&err, TD_EIO, "standard output: %s", strerror(errno));
  if (rc) {
    themectl_errorf("%s", err.msg);
    return TD_EXIT_FAIL;
  }
  return c.errors ? TD_EXIT_FAIL : TD_EXIT_OK;
}

/* ------------------------------------------------------------ dispatch */

int themectl_client_main(int argc, char **argv) {
  const char *cmd = argc > 0 ? argv[0] : "";
  for (size_t i = 0; i < sizeof simple_cmds / sizeof simple_cmds[0]; i++)
    if (!strcmp(cmd, simple_cmds[i].name)) return run_simple(&simple_cmds[i], argc, argv);
  if (!strcmp(cmd, "classify")) return run_classify(argc, argv);
  if (!strcmp(cmd, "stream")) return td_stream_main(argc, argv);
  themectl_errorf("unknown client command '%s'", cmd);
  return TD_EXIT_USAGE;
}
