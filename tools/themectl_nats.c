/*
 * `themectl publish` and `themectl collect`: the two ends of the NATS
 * JetStream pipeline that themed --nats consumes (docs/scaling.md).
 *
 *   publish  each line of a JSON Lines file becomes one message on a subject,
 *            published with a JetStream ack; the stream is created when
 *            missing. Failed publishes are retried with the same
 *            Nats-Msg-Id, so a retry of a message the server did store is
 *            dropped as a duplicate rather than stored twice.
 *   collect  reads a subject (results, or dead letters) from the start of
 *            its stream through a pull consumer, writes each message body as
 *            one line, and reports duplicate ids (at-least-once delivery
 *            means a redelivered article may have produced two results).
 */
#include "themectl.h"

#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <jansson.h>
#include <nats/nats.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common.h"
#include "natsutil.h"

#define DEFAULT_URL "nats://127.0.0.1:4222"
#define DEFAULT_PUB_INFLIGHT 256
#define DEFAULT_PUB_WAIT_MS 5000
#define PUB_ROUNDS 5
#define DEFAULT_COLLECT_TIMEOUT_MS 60000
#define COLLECT_BATCH 256

static const char usage_publish[] =
    "usage: themectl publish --stream NAME --subject SUBJECT [options] [FILE...]\n"
    "  Publishes each line of the JSON Lines FILEs (or stdin) as one message on SUBJECT,\n"
    "  each confirmed by a JetStream publish ack. Creates the stream (file storage,\n"
    "  capturing SUBJECT) when it does not exist. Lines are sent as they are; blank lines\n"
    "  are skipped.\n"
    "  --nats URL            server(s), comma-separated (default $NATS_URL, else " DEFAULT_URL ")\n"
    "  --stream NAME         the stream that stores SUBJECT\n"
    "  --subject SUBJECT     the subject to publish on\n"
    "  --max-inflight N      publishes awaiting their ack (default 256)\n"
    "  --replicas N          replicas of the stream if it is created (default 1; 3 in a cluster)\n"
    "  --timeout D           wait for each ack at most D (default 5s); failed publishes are\n"
    "                        retried up to 4 more times\n"
    "  --quiet               no summary line\n";

static const char usage_collect[] =
    "usage: themectl collect --subject SUBJECT [options]\n"
    "  Reads the messages on SUBJECT from the start of its stream through a pull consumer\n"
    "  (ephemeral unless --durable) and writes each body as one line. Stops after --count\n"
    "  distinct ids, or, without --count, when nothing more is pending; --timeout bounds it.\n"
    "  Duplicates (one id seen twice: an article delivered twice) are reported on stderr.\n"
    "  --nats URL            server(s) (default $NATS_URL, else " DEFAULT_URL ")\n"
    "  --subject SUBJECT     results or dead-letter subject\n"
    "  --stream NAME         the stream holding SUBJECT (default: looked up by subject)\n"
    "  --durable NAME        use (or create) this durable consumer: a rerun continues\n"
    "  --count N             stop after N distinct ids; fewer by --timeout is a failure\n"
    "  --timeout D           give up after D (default 60s)\n"
    "  --out FILE            write here instead of stdout\n"
    "  --summary FILE        also write the counts as one JSON object\n"
    "  --quiet               no summary line\n";


static int parse_ms(const char *s, int64_t *ms) {
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (end == s || errno || !(v >= 0)) return -1;
  if (!strcmp(end, "ms")) v *= 1;
  else if (!*end || !strcmp(end, "s")) v *= 1000;
  else if (!strcmp(end, "m")) v *= 60000;
  else return -1;
  if (v > 1e12) return -1;
  *ms = (int64_t)v;
  return 0;
}

static int parse_pos(const char *s, long max, long *out) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || end == s || *end || v < 1 || v > max) return -1;
  *out = v;
  return 0;
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static natsStatus connect_url(const char *url, natsConnection **nc) {
  natsOptions *o = NULL;
  natsStatus s = natsOptions_Create(&o);
  if (s == NATS_OK) s = td_natsutil_set_servers(o, url);
  if (s == NATS_OK) s = natsOptions_SetName(o, "themectl");
  if (s == NATS_OK) s = natsOptions_SetMaxReconnect(o, 60);
  if (s == NATS_OK) s = natsOptions_SetReconnectWait(o, 500);
  if (s == NATS_OK) s = natsConnection_Connect(nc, o);
  natsOptions_Destroy(o);
  return s;
}

/* ------------------------------------------------------------ publish */

typedef struct pub_state {
  pthread_mutex_t mu;
  natsMsg **failed;   /* grown by the ack handler; the messages are owned here */
  int nfailed, capfailed;
  char lasterr[256];
  uint64_t acked, duplicates;
} pub_state_t;

static void pub_ack(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *closure) {
  pub_state_t *st = closure;
  pthread_mutex_lock(&st->mu);
  if (pa) {
    st->acked++;
    if (pa->Duplicate) st->duplicates++;
    pthread_mutex_unlock(&st->mu);
    natsMsg_Destroy(msg);
    return;
  }
  snprintf(st->lasterr, sizeof st->lasterr, "%s",
           pae && pae->ErrText ? pae->ErrText : natsStatus_GetText(pae ? pae->Err : NATS_ERR));
  if (st->nfailed == st->capfailed) {
    int cap = st->capfailed ? st->capfailed * 2 : 64;
    natsMsg **m = realloc(st->failed, (size_t)cap * sizeof *m);
    if (!m) {
      pthread_mutex_unlock(&st->mu);
      natsMsg_Destroy(msg); /* lost: reported as not acked */
      return;
    }
    st->failed = m;
    st->capfailed = cap;
  }
  st->failed[st->nfailed++] = msg; /* kept: sent again next round */
  pthread_mutex_unlock(&st->mu);
}

/* Publishes *m, waiting while the window is full. Takes the message. */
static natsStatus pub_one(jsCtx *js, natsMsg *m, jsPubOptions *po, int64_t wait_ms) {
  double deadline = now_s() + (double)wait_ms / 1000 + 5;
  natsStatus s;
  while ((s = js_PublishMsgAsync(js, &m, po)) == NATS_TIMEOUT && now_s() < deadline) {
  } /* stalled: the window is full; the ack handler frees room */
  natsMsg_Destroy(m);
  return s;
}

static int ensure_stream(jsCtx *js, const char *name, const char *subject, long replicas, int *created) {
  jsStreamInfo *si = NULL;
  jsErrCode je = 0;
  *created = 0;
  natsStatus s = js_GetStreamInfo(&si, js, name, NULL, &je);
  jsStreamInfo_Destroy(si);
  si = NULL;
  if (s == NATS_OK) return 0;
  if (s != NATS_NOT_FOUND && je != JSStreamNotFoundErr) {
    themectl_errorf("publish: stream %s: %s", name, td_natsutil_err(s));
    return -1;
  }
  jsStreamConfig sc;
  jsStreamConfig_Init(&sc);
  const char *subj[] = {subject};
  sc.Name = name;
  sc.Subjects = subj;
  sc.SubjectsLen = 1;
  sc.Storage = js_FileStorage;
  sc.Replicas = replicas;
  s = js_AddStream(&si, js, &sc, NULL, &je);
  jsStreamInfo_Destroy(si);
  if (s == NATS_OK) {
    *created = 1;
    return 0;
  }
  if (je == JSStreamNameExistErr) return 0;
  themectl_errorf("publish: creating stream %s on %s: %s", name, subject, td_natsutil_err(s));
  return -1;
}

/* What publish and collect share: where, what, how long, how loud. */
typedef struct nats_cli {
  const char *cmd, *url, *stream, *subject;
  int64_t timeout_ms;
  const char *timeout_eg; /* examples in the --timeout message */
  int quiet;
} nats_cli_t;

static void nats_cli_init(nats_cli_t *c, const char *cmd, int64_t timeout_ms, const char *eg) {
  *c = (nats_cli_t){.cmd = cmd, .url = getenv("NATS_URL"), .timeout_ms = timeout_ms, .timeout_eg = eg};
}

/* 1 when ch is one of the shared options (*rc: 0, or the usage error's exit
 * code), 0 when it is not. */
static int nats_cli_opt(nats_cli_t *c, int ch, const char *arg, int *rc) {
  *rc = 0;
  switch (ch) {
  case 'u': c->url = arg; return 1;
  case 's': c->stream = arg; return 1;
  case 'j': c->subject = arg; return 1;
  case 'q': c->quiet = 1; return 1;
  case 't':
    if (parse_ms(arg, &c->timeout_ms) || c->timeout_ms == 0)
      *rc = themectl_usage_err(c->cmd, "--timeout: expected a duration (%s), got \"%s\"", c->timeout_eg, arg);
    return 1;
  default: return 0;
  }
}

/* Connects to c->url and opens a JetStream context with jo (may be NULL);
 * says why not on stderr. */
static int nats_cli_connect(nats_cli_t *c, jsOptions *jo, natsConnection **nc, jsCtx **js) {
  if (!c->url || !*c->url) c->url = DEFAULT_URL;
  natsStatus s = connect_url(c->url, nc);
  if (s != NATS_OK) {
    themectl_errorf("%s: cannot connect to %s: %s", c->cmd, c->url, td_natsutil_err(s));
    return -1;
  }
  if ((s = natsConnection_JetStream(js, *nc, jo)) != NATS_OK) {
    themectl_errorf("%s: %s", c->cmd, td_natsutil_err(s));
    return -1;
  }
  return 0;
}

static int cmd_publish(int argc, char **argv) {
  nats_cli_t c;
  nats_cli_init(&c, "publish", DEFAULT_PUB_WAIT_MS, "5, 500ms, 2m");
  const char *cmd = c.cmd;
  long inflight = DEFAULT_PUB_INFLIGHT, replicas = 1;
  int ch, orc;
  static const struct option lo[] = {
      {"nats", required_argument, NULL, 'u'},      {"stream", required_argument, NULL, 's'},
      {"subject", required_argument, NULL, 'j'},   {"max-inflight", required_argument, NULL, 'i'},
      {"timeout", required_argument, NULL, 't'},   {"quiet", no_argument, NULL, 'q'},
      {"replicas", required_argument, NULL, 'r'},  {"help", no_argument, NULL, 'h'},
      {0, 0, 0, 0}};
  optind = 1;
  while ((ch = getopt_long(argc, argv, ":qh", lo, NULL)) != -1) {
    if (nats_cli_opt(&c, ch, optarg, &orc)) {
      if (orc) return orc;
      continue;
    }
    switch (ch) {
    case 'i':
      if (parse_pos(optarg, 100000, &inflight))
        return themectl_usage_err(cmd, "--max-inflight: expected an integer in [1,100000], got \"%s\"", optarg);
      break;
    case 'r':
      if (parse_pos(optarg, 5, &replicas))
        return themectl_usage_err(cmd, "--replicas: expected an integer in [1,5], got \"%s\"", optarg);
      break;
    case 'h': fputs(usage_publish, stdout); return 0;
    default: return themectl_bad_option(cmd, ch, argv);
    }
  }
  if (!c.stream) return themectl_usage_err(cmd, "--stream is required");
  if (!c.subject) return themectl_usage_err(cmd, "--subject is required");
  const char *stream = c.stream, *subject = c.subject;
  int64_t wait_ms = c.timeout_ms;

  int rc = THEMECTL_EXIT_FAIL, created;
  natsConnection *nc = NULL;
  jsCtx *js = NULL;
  pub_state_t st = {0};
  uint64_t sent = 0, lineno = 0;
  char *line = NULL;
  size_t cap = 0;
  char nuid[32];
  double t0 = now_s();

  pthread_mutex_init(&st.mu, NULL);
  natsStatus s;
  jsOptions jo;
  jsOptions_Init(&jo);
  jo.PublishAsync.AckHandler = pub_ack;
  jo.PublishAsync.AckHandlerClosure = &st;
  jo.PublishAsync.MaxPending = inflight;
  jo.PublishAsync.StallWait = 200;
  if (nats_cli_connect(&c, &jo, &nc, &js)) goto out;
  if (ensure_stream(js, stream, subject, replicas, &created)) goto out;
  if (created && !c.quiet) fprintf(stderr, "themectl: publish: created stream %s on %s\n", stream, subject);
  /* A run-unique prefix: message ids never collide with another run's. */
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  snprintf(nuid, sizeof nuid, "%lx%lx%lx", (long)ts.tv_sec, (long)ts.tv_nsec, (long)getpid());

  jsPubOptions po;
  jsPubOptions_Init(&po);
  po.MaxWait = wait_ms;
  int nin = argc - optind;
  for (int f = 0; f < (nin ? nin : 1); f++) {
    const char *name = nin ? argv[optind + f] : "-";
    FILE *in = strcmp(name, "-") ? fopen(name, "rb") : stdin;
    if (!in) {
      themectl_errorf("publish: %s: %s", name, strerror(errno));
      goto out;
    }
    ssize_t n;
    while ((n = getline(&line, &cap, in)) >= 0) {
      lineno++;
      while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) n--;
      size_t k = 0;
      while (k < (size_t)n && (line[k] == ' ' || line[k] == '\t')) k++;
      if (k == (size_t)n) continue;
      natsMsg *m = NULL;
      char msgid[80];
      snprintf(msgid, sizeof msgid, "%s-%llu", nuid, (unsigned long long)lineno);
      po.MsgId = msgid;
      if ((s = natsMsg_Create(&m, subject, NULL, line, (int)n)) == NATS_OK)
        s = pub_one(js, m, &po, wait_ms);
      if (s != NATS_OK) {
        themectl_errorf("publish: %s line %llu: %s", name, (unsigned long long)lineno, td_natsutil_err(s));
        if (in != stdin) fclose(in);
        goto out;
      }
      sent++;
    }
    int bad = ferror(in);
    if (in != stdin) fclose(in);
    if (bad) {
      themectl_errorf("publish: reading %s: %s", name, strerror(errno));
      goto out;
    }
  }
  /* Wait for every ack; what failed goes again (its Nats-Msg-Id is in its
   * headers already, so the server drops it if the first copy did land). */
  po.MsgId = NULL;
  for (int round = 1;; round++) {
    jsPubOptions wo;
    jsPubOptions_Init(&wo);
    wo.MaxWait = wait_ms * 2 + 5000;
    s = js_PublishAsyncComplete(js, &wo);
    if (s != NATS_OK) {
      themectl_errorf("publish: acks still missing: %s", td_natsutil_err(s));
      goto out;
    }
    pthread_mutex_lock(&st.mu);
    natsMsg **retry = st.failed;
    int nretry = st.nfailed;
    st.failed = NULL;
    st.nfailed = st.capfailed = 0;
    pthread_mutex_unlock(&st.mu);
    if (!nretry) break;
    if (round >= PUB_ROUNDS) {
      themectl_errorf("publish: %d message%s not stored after %d attempts: %s", nretry,
                      td_plural((unsigned)nretry), round, st.lasterr);
      for (int i = 0; i < nretry; i++) natsMsg_Destroy(retry[i]);
      free(retry);
      goto out;
    }
    if (!c.quiet)
      fprintf(stderr, "themectl: publish: %d publish%s failed (%s); retrying\n", nretry,
              nretry == 1 ? "" : "es", st.lasterr);
    sleep(1);
    for (int i = 0; i < nretry; i++) {
      natsMsg *m = retry[i];
      retry[i] = NULL;
      if ((s = pub_one(js, m, &po, wait_ms)) != NATS_OK) {
        themectl_errorf("publish: %s", td_natsutil_err(s));
        for (int k = i + 1; k < nretry; k++) natsMsg_Destroy(retry[k]);
        free(retry);
        goto out;
      }
    }
    free(retry);
  }
  if (!c.quiet) {
    double dt = now_s() - t0;
    fprintf(stderr, "themectl: published %llu message%s to %s (stream %s) in %.2fs (%.0f/s)%s\n",
            (unsigned long long)sent, td_plural(sent), subject, stream, dt, dt > 0 ? (double)sent / dt : 0.0,
            st.duplicates ? ", some dropped by the server as duplicates" : "");
  }
  rc = 0;
out:
  free(line);
  /* One round trip before tearing down: every reply has been handled
   * (libnats 3.4 can leak a reply that races with jsCtx_Destroy). */
  if (nc) natsConnection_FlushTimeout(nc, 2000);
  jsCtx_Destroy(js);
  natsConnection_Destroy(nc);
  pthread_mutex_lock(&st.mu);
  for (int i = 0; i < st.nfailed; i++) natsMsg_Destroy(st.failed[i]);
  free(st.failed);
  pthread_mutex_unlock(&st.mu);
  pthread_mutex_destroy(&st.mu);
  nats_CloseAndWait(5000);
  return rc;
}

/* ------------------------------------------------------------ collect */

/* The key duplicates are counted by: the body's "id" as JSON (exact), else
 * the Themed-Id header, else the article's stream sequence, else nothing. */
static char *msg_key(natsMsg *m) {
  const char *h = NULL;
  json_t *j = json_loadb(natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m), 0, NULL);
  json_t *id = json_object_get(j, "id");
  char *k = id ? json_dumps(id, JSON_ENCODE_ANY | JSON_COMPACT) : NULL;
  json_decref(j);
  if (k) return k;
  if (natsMsgHeader_Get(m, "Themed-Id", &h) == NATS_OK && h) return strdup(h);
  if (natsMsgHeader_Get(m, "Themed-Seq", &h) == NATS_OK && h) {
    size_t n = strlen(h) + 5;
    if ((k = malloc(n))) snprintf(k, n, "seq:%s", h);
    return k;
  }
  return NULL;
}

static int cmd_collect(int argc, char **argv) {
  nats_cli_t c;
  nats_cli_init(&c, "collect", DEFAULT_COLLECT_TIMEOUT_MS, "60, 500ms, 2m");
  const char *cmd = c.cmd, *durable = NULL, *out_name = NULL, *summary = NULL;
  long count = 0;
  int ch, orc;
  static const struct option lo[] = {
      {"nats", required_argument, NULL, 'u'},    {"stream", required_argument, NULL, 's'},
      {"subject", required_argument, NULL, 'j'}, {"durable", required_argument, NULL, 'd'},
      {"count", required_argument, NULL, 'n'},   {"timeout", required_argument, NULL, 't'},
      {"out", required_argument, NULL, 'o'},     {"summary", required_argument, NULL, 'S'},
      {"quiet", no_argument, NULL, 'q'},         {"help", no_argument, NULL, 'h'},
      {0, 0, 0, 0}};
  optind = 1;
  while ((ch = getopt_long(argc, argv, ":qh", lo, NULL)) != -1) {
    if (nats_cli_opt(&c, ch, optarg, &orc)) {
      if (orc) return orc;
      continue;
    }
    switch (ch) {
    case 'd': durable = optarg; break;
    case 'n':
      if (parse_pos(optarg, 1L << 40, &count))
        return themectl_usage_err(cmd, "--count: expected an integer >= 1, got \"%s\"", optarg);
      break;
    case 'o': out_name = optarg; break;
    case 'S': summary = optarg; break;
    case 'h': fputs(usage_collect, stdout); return 0;
    default: return themectl_bad_option(cmd, ch, argv);
    }
  }
  if (optind < argc) return themectl_usage_err(cmd, "unexpected argument \"%s\"", argv[optind]);
  if (!c.subject) return themectl_usage_err(cmd, "--subject is required");
  const char *stream = c.stream, *subject = c.subject;
  int64_t timeout_ms = c.timeout_ms;

  int rc = THEMECTL_EXIT_FAIL, ephemeral = !durable;
  natsConnection *nc = NULL;
  jsCtx *js = NULL;
  natsSubscription *sub = NULL;
  FILE *out = stdout;
  json_t *seen = json_object(), *dups = json_array(), *instances = json_object();
  uint64_t messages = 0, duplicates = 0;
  double t0 = now_s(), deadline = t0 + (double)timeout_ms / 1000;

  if (out_name && !(out = fopen(out_name, "wb"))) {
    themectl_errorf("collect: %s: %s", out_name, strerror(errno));
    out = NULL;
    goto out;
  }
  natsStatus s;
  if (nats_cli_connect(&c, NULL, &nc, &js)) goto out;
  jsSubOptions so;
  jsSubOptions_Init(&so);
  so.Stream = stream;
  so.Config.AckPolicy = js_AckExplicit;
  so.Config.DeliverPolicy = js_DeliverAll;
  so.Config.Durable = durable;
  so.Config.Description = "themectl collect";
  jsErrCode je = 0;
  /* The stream may not exist yet (the daemon creates it when it starts):
   * keep trying until the deadline. */
  while ((s = js_PullSubscribe(&sub, js, subject, durable, NULL, &so, &je)) != NATS_OK) {
    sub = NULL;
    if (now_s() + 0.2 >= deadline) {
      themectl_errorf("collect: pull consumer on %s: %s", subject, td_natsutil_err(s));
      goto out;
    }
    usleep(200000);
  }
  for (;;) {
    if (count && (long)json_object_size(seen) >= count) break;
    double left = deadline - now_s();
    if (left <= 0) break;
    natsMsgList list = {0};
    int64_t wait = (int64_t)(left * 1000);
    if (wait > 1000) wait = 1000;
    if (wait < 1) wait = 1;
    /* With --count, fetch no more than still needed: a durable consumer
     * keeps the rest for the next run. */
    long batch = COLLECT_BATCH;
    if (count && count - (long)json_object_size(seen) < batch) batch = count - (long)json_object_size(seen);
    s = natsSubscription_Fetch(&list, sub, (int)batch, wait, &je);
    uint64_t pending = 1;
    for (int i = 0; i < list.Count; i++) {
      natsMsg *m = list.Msgs[i];
      const char *inst = NULL;
      fwrite(natsMsg_GetData(m), 1, (size_t)natsMsg_GetDataLength(m), out);
      fputc('\n', out);
      messages++;
      char *k = msg_key(m);
      if (k) {
        if (json_object_get(seen, k)) {
          duplicates++;
          if (json_array_size(dups) < 1000) json_array_append_new(dups, json_string(k));
        } else {
          json_object_set_new(seen, k, json_true());
        }
        free(k);
      }
      if (natsMsgHeader_Get(m, "Themed-Instance", &inst) == NATS_OK && inst) {
        json_t *c = json_object_get(instances, inst);
        json_object_set_new(instances, inst, json_integer(c ? json_integer_value(c) + 1 : 1));
      }
      jsMsgMetaData *meta = NULL;
      if (natsMsg_GetMetaData(&meta, m) == NATS_OK) pending = meta->NumPending;
      jsMsgMetaData_Destroy(meta);
      natsMsg_Ack(m, NULL);
    }
    natsMsgList_Destroy(&list);
    if (s != NATS_OK && s != NATS_TIMEOUT && !list.Count) {
      /* e.g. the server restarting: keep trying until the deadline */
      usleep(200000);
      continue;
    }
    if (!count && (pending == 0 || s == NATS_TIMEOUT)) break; /* nothing more now */
  }
  if (fflush(out) || ferror(out)) {
    themectl_errorf("collect: writing %s: %s", out_name ? out_name : "stdout", strerror(errno));
    goto out;
  }
  size_t distinct = json_object_size(seen);
  if (!c.quiet) {
    fprintf(stderr, "themectl: collected %llu message%s from %s in %.2fs: %zu distinct id%s, %llu duplicate%s",
            (unsigned long long)messages, td_plural(messages), subject, now_s() - t0, distinct,
            td_plural(distinct), (unsigned long long)duplicates, td_plural(duplicates));
    const char *k;
    json_t *v;
    int first = 1;
    json_object_foreach(instances, k, v) {
      fprintf(stderr, "%s%s %lld", first ? "; by instance: " : ", ", k, (long long)json_integer_value(v));
      first = 0;
    }
    fputc('\n', stderr);
    for (size_t i = 0; i < json_array_size(dups) && i < 20; i++)
      fprintf(stderr, "themectl: duplicate id %s\n", json_string_value(json_array_get(dups, i)));
  }
  if (summary) {
    json_t *o = json_pack("{s:I, s:I, s:I, s:O, s:O, s:f}", "messages", (json_int_t)messages,
                          "distinct", (json_int_t)distinct, "duplicates", (json_int_t)duplicates,
                          "duplicate_ids", dups, "instances", instances, "seconds", now_s() - t0);
    int bad = !o || json_dump_file(o, summary, JSON_COMPACT);
    json_decref(o);
    if (bad) {
      themectl_errorf("collect: cannot write %s", summary);
      goto out;
    }
  }
  if (count && (long)distinct < count) {
    themectl_errorf("collect: %zu of %ld ids within %.3gs", distinct, count, (double)timeout_ms / 1000);
    goto out;
  }
  rc = 0;
out:
  /* The acks are still in the connection's buffer: a durable consumer
   * must get them, or a rerun sees these messages again. */
  if (nc) natsConnection_FlushTimeout(nc, 2000);
  if (sub) {
    /* An ephemeral consumer is ours to delete; a durable one stays. */
    if (ephemeral) natsSubscription_Unsubscribe(sub);
    natsSubscription_Destroy(sub);
  }
  jsCtx_Destroy(js);
  natsConnection_Destroy(nc);
  nats_CloseAndWait(5000);
  if (out && out != stdout) fclose(out);
  json_decref(seen);
  json_decref(dups);
  json_decref(instances);
  return rc;
}

int themectl_nats_main(int argc, char **argv) {
  if (!strcmp(argv[0], "publish")) return cmd_publish(argc, argv);
  return cmd_collect(argc, argv);
}
