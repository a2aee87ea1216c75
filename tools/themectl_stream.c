/*
 * `themectl stream`: feeds JSON Lines articles through the daemon with
 * bounded pipelining and writes the results as JSON Lines, in input order.
 *
 * Delivery is at-least-once: if the connection is lost, the client
 * reconnects once and sends every unanswered request again, so an article
 * the daemon had classified but whose answer was lost is classified twice
 * (the output still holds it once, because output is written per answer).
 *
 * --resume works by position, not by id: the output holds one line per
 * non-blank input line, in input order, so its K complete lines answer the
 * first K input lines and a rerun skips exactly those. Ids are not unique
 * (or present) in every input, so they cannot be the key; the output lines
 * stay the daemon's answers as they are (nothing is added to them). Where
 * both an input line and its answer carry an id, they must agree, so an
 * output that belongs to another input is refused instead of being extended.
 */
#include "themectl.h"
#include "classify.h"
#include "themectl_net.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define DEFAULT_STREAM_TIMEOUT_MS 120000
#define DEFAULT_STREAM_INFLIGHT 64

typedef struct stream_ctx {
  td_cls_opts_t o;
  const char **in;      /* inputs; "-" = stdin */
  size_t nin;
  td_inputs_t inputs;   /* their lines */
  uint64_t total;       /* sum of input sizes; 0 = unknown (a pipe) */
  FILE *resume;         /* --resume: the kept output, read back line by line */
  uint64_t resume_left; /* its lines not yet matched to an input line */
  char *rbuf;           /* getline's buffer for resume */
  size_t rcap;
  FILE *out;            /* opened at the first request (see stream_next) */
  const char *out_name;
  int append;           /* --resume: append to out_name */
  /* counts */
  uint64_t articles, passages, errors, skipped, done_bytes;
  uint64_t t0;
  int progress;         /* draw the progress line on stderr */
  int drawn;
} stream_ctx_t;

/* ------------------------------------------------------------- resume */

/* Error codes that say nothing about the article: on --resume these lines
 * are dropped from the output and the article is sent again. The code, or
 * NULL for any other line. */
static const char *transient_error(const json_t *o) {
  const char *code = json_string_value(json_object_get(json_object_get(o, "error"), "code"));
  return code && (!strcmp(code, "shutting_down") || !strcmp(code, "too_many_connections") ||
                  !strcmp(code, "internal"))
             ? code
             : NULL;
}

/*
 * Prepares a --resume run. The output's first line that is not a complete
 * answer -- a last line without '\n' (an interrupted write) or a transient
 * error (the article was not classified) -- and every line after it are cut
 * off: the output is in input order, so only a prefix can be kept. The
 * lines kept are then read back by resume_match, one per input line.
 */
static int load_resume(stream_ctx_t *s, td_err_t *err) {
  FILE *f = fopen(s->out_name, "r");
  if (!f) {
    if (errno == ENOENT) return 0;  /* nothing to resume: a fresh start */
    return td_err_set(err, TD_EIO, "%s: %s", s->out_name, strerror(errno));
  }
  uint64_t kept = 0, cut_lines = 0;
  off_t off = 0, cut = -1;
  int partial = 0;
  char code[64] = "";
  ssize_t n;
  errno = 0;
  while ((n = getline(&s->rbuf, &s->rcap, f)) > 0) {
    if (cut < 0) {
      if (s->rbuf[n - 1] != '\n') {
        partial = 1;
        cut = off;
      } else {
        /* Only an answer with an "error" member can be transient (in a JSON
         * string those quotes would be escaped): the rest are not parsed. */
        json_t *o = memmem(s->rbuf, (size_t)n - 1, "\"error\"", 7)
                        ? json_loadb(s->rbuf, (size_t)n - 1, 0, NULL)
                        : NULL;
        const char *tc = o ? transient_error(o) : NULL;
        if (tc) {
          snprintf(code, sizeof code, "%s", tc);
          cut = off;
          cut_lines = 1;
        } else {
          kept++;
        }
        json_decref(o);
      }
    } else if (s->rbuf[n - 1] == '\n') {
      cut_lines++;
    } else {
      partial = 1;
    }
    off += n;
    errno = 0;  /* so that ENOMEM below is getline's, not json_loadb's */
  }
  int e = errno, bad = ferror(f) || (n < 0 && e == ENOMEM);
  fclose(f);
  if (bad) return td_err_set(err, TD_EIO, "%s: %s", s->out_name, strerror(e));
  if (cut >= 0) {
    if (truncate(s->out_name, cut)) return td_err_set(err, TD_EIO, "%s: %s", s->out_name, strerror(errno));
    if (cut_lines)
      fprintf(stderr,
              "stream: resume: line %llu of %s is a transient error (%s): it and the %llu line%s after it "
              "removed; those articles go again\n",
              (unsigned long long)kept + 1, s->out_name, code, (unsigned long long)cut_lines - 1,
              td_plural(cut_lines - 1));
    if (partial) fprintf(stderr, "stream: resume: dropped an incomplete last line of %s\n", s->out_name);
  }
  if (!kept) return 0;
  if (!(s->resume = fopen(s->out_name, "r")))
    return td_err_set(err, TD_EIO, "%s: %s", s->out_name, strerror(errno));
  s->resume_left = kept;
  return 0;
}

/* The id of a JSON Lines line as compact JSON, NULL when it has none (or is
 * not an object). */
static char *line_id_key(const char *line, size_t n) {
  json_t *o = json_loadb(line, n, 0, NULL);
  char *key = td_json_id_key(o);
  json_decref(o);
  return key;
}

/* --resume: the input line is answered by the next kept output line. 0 =
 * skip it; an error when the two name different ids (the output is not this
 * input's) or the output cannot be read back. */
static int resume_match(stream_ctx_t *s, const char *line, size_t n, td_err_t *err) {
  errno = 0;
  ssize_t got = getline(&s->rbuf, &s->rcap, s->resume);
  if (got <= 0 || s->rbuf[got - 1] != '\n')
    return td_err_set(err, TD_EIO, "%s: %s while resuming (changed by another process?)", s->out_name,
                      errno ? strerror(errno) : "shorter than it was");
  s->resume_left--;
  char *in_key = line_id_key(line, n), *out_key = line_id_key(s->rbuf, (size_t)got - 1);
  int same = in_key && out_key ? !strcmp(in_key, out_key) : in_key == out_key;
  int rc = same ? 0
                : td_err_set(err, TD_EINVAL,
                             "resume: %s:%llu has id %s but line %llu of %s answers id %s: --out is "
                             "not the output of this input (or the input changed)",
                             s->inputs.name, (unsigned long long)s->inputs.lines.lineno,
                             in_key ? in_key : "(none)", (unsigned long long)s->skipped + 1, s->out_name,
                             out_key ? out_key : "(none)");
  free(in_key);
  free(out_key);
  if (!rc && !s->resume_left) {
    fclose(s->resume);
    s->resume = NULL;
  }
  return rc;
}

/* ------------------------------------------------------------- input */

/* The request for one input line: the line itself (an article object is a
 * classify request as is), or re-encoded when options are to be added. */
static int make_request(stream_ctx_t *s, const char *line, size_t n, td_req_t *r, td_err_t *err) {
  json_error_t je;
  json_t *o = json_loadb(line, n, 0, &je);
  char msg[600];
  int rc = 1;
  if (!o || !json_is_object(o)) {
    /* Never sent: a first byte that is not '{' would even switch the
     * daemon's connection to HTTP. The error takes the line's place. */
    snprintf(msg, sizeof msg, "%s:%llu: %s", s->inputs.name, (unsigned long long)s->inputs.lines.lineno,
             o ? "not a JSON object" : je.text);
    json_decref(o);
    return td_req_local_error(r, NULL, "invalid_json", msg) ? td_err_set(err, TD_ENOMEM, "out of memory") : 1;
  }
  r->key = td_json_id_key(o);
  if (td_cls_opts_any(&s->o)) {
    char *d = NULL;
    int bad = td_cls_opts_apply(&s->o, o) || !(d = json_dumps(o, JSON_COMPACT)) || td_req_take_line(r, d);
    json_decref(o);
    return bad ? td_err_set(err, TD_ENOMEM, "out of memory") : rc;
  }
  r->data = malloc(n + 2);
  if (!r->data) {
    json_decref(o);
    return td_err_set(err, TD_ENOMEM, "out of memory");
  }
  memcpy(r->data, line, n);
  r->data[n] = '\n';
  r->data[n + 1] = '\0';
  r->len = n + 1;
  json_decref(o);
  return rc;
}

static int stream_next(void *ctx, td_req_t *r, int *wait_fd, td_err_t *err) {
  stream_ctx_t *s = ctx;
  if (!s->out) {
    /* Opened once the daemon is reached: an unreachable daemon must not
     * truncate the output of an earlier run. */
    s->out = fopen(s->out_name, s->append ? "a" : "w");
    if (!s->out) return td_err_set(err, TD_EIO, "%s: %s", s->out_name, strerror(errno));
  }
  for (;;) {
    char *line;
    size_t n;
    int rc = td_inputs_next(&s->inputs, &line, &n, wait_fd, err);
    if (rc < 0 && !err->code && s->resume_left)
      return td_err_set(err, TD_EINVAL,
                        "resume: %s has %llu more line%s than the input has lines: --out is not the "
                        "output of this input (or the input changed)",
                        s->out_name, (unsigned long long)s->resume_left, td_plural(s->resume_left));
    if (rc <= 0) return rc;
    if (s->resume_left) {
      if ((rc = resume_match(s, line, n, err))) return rc;
      s->skipped++;  /* already answered in the output */
      continue;
    }
    memset(r, 0, sizeof *r);
    rc = make_request(s, line, n, r, err);
    r->ibytes = n + 1;
    return rc;
  }
}

/* ------------------------------------------------------------ output */

static double elapsed_s(const stream_ctx_t *s) { return (double)(td_now_ns() - s->t0) / 1e9; }

static void draw_progress(void *ctx) {
  stream_ctx_t *s = ctx;
  if (s->out) fflush(s->out);  /* what is answered is on disk for --resume */
  if (!s->progress) return;
  double t = elapsed_s(s);
  double aps = t > 0 ? s->articles / t : 0, pps = t > 0 ? s->passages / t : 0;
  char eta[64] = "";
  uint64_t got = td_inputs_consumed(&s->inputs);
  if (s->total && s->done_bytes && t > 0.5) {
    double left = got < s->total ? (double)(s->total - got) : 0;
    /* Bytes of answered articles per second: skipped (--resume) input is read
     * at disk speed and would make the estimate far too short. */
    double secs = left / ((double)s->done_bytes / t);
    snprintf(eta, sizeof eta, ", %.0f%%, ETA %d:%02d", 100.0 * (double)got / (double)s->total,
             (int)(secs / 60), (int)secs % 60);
  }
  fprintf(stderr, "\r\033[Kstream: %llu article%s, %llu passage%s, %llu error%s, %.0f articles/s, %.0f passages/s%s",
          (unsigned long long)s->articles, td_plural(s->articles), (unsigned long long)s->passages,
          td_plural(s->passages), (unsigned long long)s->errors, td_plural(s->errors), aps, pps, eta);
  fflush(stderr);
  s->drawn = 1;
}

static int stream_done(void *ctx, const td_req_t *r, const char *line, size_t len, json_t *resp,
                       td_err_t *err) {
  stream_ctx_t *s = ctx;
  s->articles++;
  s->done_bytes += r->ibytes;
  json_t *e = json_object_get(resp, "error");
  char *fixed = NULL;
  if (e) {
    s->errors++;
    /* An error the daemon could not tie to an id (an oversized line) still
     * names the article in the output, for the reader and for --resume's
     * check that the output belongs to the input. */
    if (!json_object_get(resp, "id") && r->key) {
      json_t *id = json_loads(r->key, JSON_DECODE_ANY, NULL);
      json_t *o = json_object();
      if (id && o && !json_object_set_new(o, "id", id)) {
        id = NULL;
        json_object_update(o, resp);
        fixed = json_dumps(o, JSON_COMPACT);
      }
      json_decref(id);
      json_decref(o);
      if (fixed) {
        line = fixed;
        len = strlen(fixed);
      }
    }
  } else {
    json_t *sum = json_object_get(json_object_get(resp, "summary"), "passages");
    json_t *ps = json_object_get(resp, "passages");
    if (json_is_integer(sum)) s->passages += (uint64_t)json_integer_value(sum);
    else if (json_is_array(ps)) s->passages += json_array_size(ps);
  }
  int bad = fwrite(line, 1, len, s->out) != len || fputc('\n', s->out) == EOF;
  free(fixed);
  if (bad) return td_err_set(err, TD_EIO, "%s: %s", s->out_name, strerror(errno));
  return 0;
}

/* ------------------------------------------------------------- main */


static void stream_free(stream_ctx_t *s) {
  if (s->resume) fclose(s->resume);
  free(s->rbuf);
  free(s->in);
}

static void stream_usage(FILE *f) {
  fputs("Usage: themectl stream [options] [--in FILE ...] [--out FILE]\n"
        "  Feed JSON Lines articles (each line a classify request; {\"id\",\"text\"} as is)\n"
        "  through the daemon with up to N requests in flight; write the results as JSON\n"
        "  Lines in input order. A line that fails is written as its error object.\n\nOptions:\n",
        f);
  fputs("  -s, --socket PATH      the daemon's unix socket (default: $THEMED_SOCKET, else\n"
        "                         ./run/themed.sock if it exists, else /run/themed/themed.sock)\n"
        "  -c, --connect HOST:PORT  the daemon's TCP listener instead\n"
        "  -t, --timeout S        fail when no answer comes for S seconds (default 120, 0 = never)\n"
        "  -i, --in FILE          input (repeatable; '-' = stdin; default stdin); FILE\n"
        "                         operands are inputs too\n"
        "  -o, --out FILE         output (default stdout)\n"
        "  -n, --inflight N       requests in flight at most (default 64)\n"
        "  -r, --resume           continue an interrupted run (same inputs, same order):\n"
        "                         --out holds one line per non-blank input line, in input\n"
        "                         order, so its K complete lines answer the first K input\n"
        "                         lines; those are skipped and the rest appended. Removed\n"
        "                         first: an incomplete last line, and the first transient\n"
        "                         error (shutting_down, too_many_connections, internal) with\n"
        "                         every line after it. Ids are not the key (they may repeat\n"
        "                         or be missing) but are checked: a line's id and its\n"
        "                         answer's must agree, else --out is refused\n"
        "      --threshold X, --top-k K, --explain, --text\n"
        "                         classification options added to every request\n"
        "  -q, --quiet            no progress line (drawn only when stderr is a terminal)\n"
        "  -h, --help             this text\n\n"
        "Delivery is at-least-once: on connection loss themectl reconnects once and resends\n"
        "the unanswered requests (the daemon may classify those twice; the output holds each\n"
        "once). Exit status: 0 done, 1 failed (rerun with --resume), 2 usage, 3 done but\n"
        "some lines got error responses.\n",
        f);
}

int td_stream_main(int argc, char **argv) {
  enum { O_THRESHOLD = 256, O_TOPK, O_EXPLAIN, O_TEXT };
  static const struct option lopts[] = {
      {"socket", required_argument, NULL, 's'}, {"connect", required_argument, NULL, 'c'},
      {"timeout", required_argument, NULL, 't'}, {"in", required_argument, NULL, 'i'},
      {"out", required_argument, NULL, 'o'}, {"inflight", required_argument, NULL, 'n'},
      {"resume", no_argument, NULL, 'r'}, {"quiet", no_argument, NULL, 'q'},
      {"threshold", required_argument, NULL, O_THRESHOLD}, {"top-k", required_argument, NULL, O_TOPK},
      {"explain", no_argument, NULL, O_EXPLAIN}, {"text", no_argument, NULL, O_TEXT},
      {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
  td_conn_opts_t co = {.timeout_ms = DEFAULT_STREAM_TIMEOUT_MS};
  stream_ctx_t s;
  memset(&s, 0, sizeof s);
  td_cls_opts_init(&s.o);
  long inflight = DEFAULT_STREAM_INFLIGHT, v;
  int resume = 0, quiet = 0, opt, li, status = TD_EXIT_FAIL;
  const char *out_name = NULL;
  td_err_t err = {0};
  s.in = calloc((size_t)argc + 1, sizeof *s.in);
  if (!s.in) {
    themectl_errorf("out of memory");
    return TD_EXIT_FAIL;
  }
  optind = 0;
  opterr = 0;
  while ((opt = getopt_long(argc, argv, ":s:c:t:i:o:n:rqh", lopts, &li)) != -1) {
    int rc = 0;
    switch (opt) {
    case 's': rc = td_conn_opt(&co, "socket", optarg, &err); break;
    case 'c': rc = td_conn_opt(&co, "connect", optarg, &err); break;
    case 't': rc = td_conn_opt(&co, "timeout", optarg, &err); break;
    case 'i': s.in[s.nin++] = optarg; break;
    case 'o': out_name = optarg; break;
    case 'n': rc = td_parse_count(optarg, "--inflight", 1, 4096, &inflight, &err); break;
    case 'r': resume = 1; break;
    case 'q': quiet = 1; break;
    case O_THRESHOLD: rc = td_parse_threshold(optarg, &s.o.threshold, &err); break;
    case O_TOPK:
      rc = td_parse_count(optarg, "--top-k", 0, TD_MAX_TOP_K, &v, &err);
      s.o.top_k = (int)v;
      break;
    case O_EXPLAIN: s.o.explain = 1; break;
    case O_TEXT: s.o.include_text = 1; break;
    case 'h': stream_usage(stdout); free(s.in); return TD_EXIT_OK;
    default: {
      char msg[300];
      const char *arg = argv[optind - 1];
      if (opt == ':') snprintf(msg, sizeof msg, "option %s needs a value", arg);
      else if (optopt) snprintf(msg, sizeof msg, "unknown option -%c", optopt);
      else snprintf(msg, sizeof msg, "unknown option %s", arg);
      free(s.in);
      return themectl_usage_err("stream", "%s", msg);
    }
    }
    if (rc < 0) {
      free(s.in);
      return themectl_usage_err("stream", "%s", err.msg);
    }
  }
  while (optind < argc) s.in[s.nin++] = argv[optind++];
  if (!s.nin) s.in[s.nin++] = "-";
  td_inputs_init(&s.inputs, s.in, s.nin);
  if (resume && (!out_name || !strcmp(out_name, "-"))) {
    free(s.in);
    return themectl_usage_err("stream", "%s", "--resume needs --out FILE (the output it continues)");
  }
  if (td_conn_finish(&co, &err)) {
    free(s.in);
    return themectl_usage_err("stream", "%s", err.msg);
  }

  /* The ETA needs the whole input size: known only when every input is a file. */
  for (size_t i = 0; i < s.nin; i++) {
    struct stat st;
    int ok = strcmp(s.in[i], "-") ? stat(s.in[i], &st) == 0 : fstat(0, &st) == 0;
    if (!ok || !S_ISREG(st.st_mode)) {
      s.total = 0;
      break;
    }
    s.total += (uint64_t)st.st_size;
  }

  s.out_name = out_name && strcmp(out_name, "-") ? out_name : "standard output";
  int rc = 0;
  if (resume) rc = load_resume(&s, &err);
  s.append = resume;
  if (s.out_name != out_name) s.out = stdout;
  s.progress = !quiet && isatty(2);
  s.t0 = td_now_ns();
  td_pipe_stats_t ps;
  memset(&ps, 0, sizeof ps);
  if (!rc) {
    td_pipe_cfg_t cfg = {.ep = &co.ep, .inflight = (int)inflight, .timeout_ms = co.timeout_ms,
                         .reconnect = 1, .quiet = 0};
    td_pipe_ops_t ops = {.next = stream_next, .done = stream_done, .tick = draw_progress};
    if (s.progress) draw_progress(&s);
    rc = td_pipe_run(&cfg, &ops, &s, &ps, &err);
  }
  if (s.out && fflush(s.out) && !rc) rc = td_err_set(&err, TD_EIO, "%s: %s", s.out_name, strerror(errno));
  if (s.out && s.out != stdout && fclose(s.out) && !rc)
    rc = td_err_set(&err, TD_EIO, "%s: %s", s.out_name, strerror(errno));
  td_inputs_free(&s.inputs);
  if (s.drawn) fputs("\r\033[K", stderr);
  if (rc) themectl_errorf("stream: %s", err.msg);
  /* Nothing happened (the daemon was unreachable): the one error line says it all. */
  if (rc && !s.articles && !ps.sent && !s.skipped) {
    stream_free(&s);
    return TD_EXIT_FAIL;
  }
  if (s.skipped)
    fprintf(stderr, "stream: resume: skipped %llu article%s already in %s\n", (unsigned long long)s.skipped,
            s.skipped == 1 ? "" : "s", s.out_name);
  if (ps.reconnects)
    fprintf(stderr, "stream: reconnected %u time%s, %llu request%s resent (at-least-once: the daemon may "
                    "have classified those twice)\n",
            ps.reconnects, ps.reconnects == 1 ? "" : "s", (unsigned long long)ps.resent,
            ps.resent == 1 ? "" : "s");
  double t = elapsed_s(&s);
  fprintf(stderr, "stream: %llu article%s, %llu passage%s, %llu error%s, %.1f s (%.0f articles/s)\n",
          (unsigned long long)s.articles, td_plural(s.articles), (unsigned long long)s.passages,
          td_plural(s.passages), (unsigned long long)s.errors, td_plural(s.errors), t,
          t > 0 ? s.articles / t : 0.0);
  if (!rc) status = s.errors ? TD_EXIT_PARTIAL : TD_EXIT_OK;
  stream_free(&s);
  return status;
}
