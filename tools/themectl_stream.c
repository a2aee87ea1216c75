/*
 * `themectl stream`: feeds JSON Lines articles through the daemon with
 * bounded pipelining and writes the results as JSON Lines, in input order.
 *
 * Delivery is at-least-once: if the connection is lost, the client
 * reconnects once and sends every unanswered request again, so an article
 * the daemon had classified but whose answer was lost is classified twice
 * (the output still holds it once, because output is written per answer).
 * --resume makes a rerun skip every id already in the output file.
 */
#include "themectl.h"
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
  json_t *skip;         /* --resume: ids already in the output (keys of an object) */
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
 * are dropped from the output and the article is sent again. */
static int transient_error(json_t *o) {
  const char *code = json_string_value(json_object_get(json_object_get(o, "error"), "code"));
  return code && (!strcmp(code, "shutting_down") || !strcmp(code, "too_many_connections") ||
                  !strcmp(code, "internal"));
}

/*
 * Reads the existing output: every id in it goes into s->skip. A last line
 * without '\n' (an interrupted run) is cut off, and lines holding transient
 * errors are removed, so the file can be appended to and ends up holding
 * each id once.
 */
static int load_resume(stream_ctx_t *s, td_err_t *err) {
  char *data = NULL;
  size_t len = 0;
  s->skip = json_object();
  if (!s->skip) return td_err_set(err, TD_ENOMEM, "out of memory");
  if (access(s->out_name, F_OK) != 0) return 0;  /* nothing to resume: a fresh start */
  int rc = td_read_file(s->out_name, &data, &len, err);
  if (rc) return rc;
  td_buf_t keep;
  td_buf_init(&keep);
  size_t off = 0, dropped = 0, complete = 0;
  while (off < len) {
    char *nl = memchr(data + off, '\n', len - off);
    if (!nl) break;  /* the partial line of an interrupted write */
    size_t n = (size_t)(nl - (data + off));
    complete = (size_t)(nl - data) + 1;
    json_t *o = json_loadb(data + off, n, 0, NULL);
    if (o && transient_error(o)) {
      dropped++;
    } else {
      char *key = td_json_id_key(o);
      if (key) json_object_set_new(s->skip, key, json_true());
      free(key);
      if (td_buf_append(&keep, data + off, n + 1)) rc = td_err_set(err, TD_ENOMEM, "out of memory");
    }
    json_decref(o);
    if (rc) break;
    off = complete;
  }
  if (!rc && (dropped || complete < len)) {
    /* Rewrite through a temporary file so an interruption leaves the old one. */
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.resume-tmp", s->out_name);
    FILE *f = fopen(tmp, "w");
    if (!f || (keep.len && fwrite(keep.data, 1, keep.len, f) != keep.len) || fflush(f) ||
        fsync(fileno(f))) {
      rc = td_err_set(err, TD_EIO, "%s: %s", tmp, strerror(errno));
      if (f) fclose(f);
      unlink(tmp);
    } else if (fclose(f) || rename(tmp, s->out_name)) {
      rc = td_err_set(err, TD_EIO, "%s: %s", s->out_name, strerror(errno));
      unlink(tmp);
    }
    if (!rc && complete < len)
      fprintf(stderr, "stream: resume: dropped an incomplete last line of %s\n", s->out_name);
    if (!rc && dropped)
      fprintf(stderr, "stream: resume: %zu transient error line%s removed from %s; those articles go again\n",
              dropped, dropped == 1 ? "" : "s", s->out_name);
  }
  td_buf_free(&keep);
  free(data);
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
  if (r->key && s->skip && json_object_get(s->skip, r->key)) {
    json_decref(o);
    return 0;  /* already in the output */
  }
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
    if (rc <= 0) return rc;
    memset(r, 0, sizeof *r);
    rc = make_request(s, line, n, r, err);
    if (rc == 0) {
      free(r->key);
      memset(r, 0, sizeof *r);
      s->skipped++;
      continue;
    }
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
  fprintf(stderr, "\r\033[Kstream: %llu articles, %llu passages, %llu errors, %.0f articles/s, %.0f passages/s%s",
          (unsigned long long)s->articles, (unsigned long long)s->passages,
          (unsigned long long)s->errors, aps, pps, eta);
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
     * names the article in the output, for the reader and for --resume. */
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
        "  -r, --resume           skip input ids already in --out, append the rest (an\n"
        "                         incomplete last line and transient errors are removed first)\n"
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
      rc = td_parse_count(optarg, "--top-k", 0, 1000, &v, &err);
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
    json_decref(s.skip);
    free(s.in);
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
  fprintf(stderr, "stream: %llu articles, %llu passages, %llu errors, %.1f s (%.0f articles/s)\n",
          (unsigned long long)s.articles, (unsigned long long)s.passages, (unsigned long long)s.errors, t,
          t > 0 ? s.articles / t : 0.0);
  if (!rc) status = s.errors ? TD_EXIT_PARTIAL : TD_EXIT_OK;
  json_decref(s.skip);
  free(s.in);
  return status;
}
