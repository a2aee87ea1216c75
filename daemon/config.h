/*
 * Configuration: defaults, the JSON config file, command-line flags.
 *
 * Every setting has one long flag and one config-file key, the flag name with
 * '-' turned into '_' (--max-request-bytes <-> "max_request_bytes"). The file
 * is read first, then flags override it (a --listen on the command line
 * replaces the file's whole "listen" list). Sizes take K/M/G (KiB...) suffixes,
 * durations ms/s/m; JSON numbers are bytes and seconds.
 */
#ifndef TD_CONFIG_H
#define TD_CONFIG_H

#include <stddef.h>
#include <stdio.h>
#include <stdint.h>

#include "common.h"

#define TD_DEFAULT_MAX_REQUEST_BYTES (4u << 20)
#define TD_DEFAULT_MAX_PASSAGES 1000
#define TD_DEFAULT_MAX_DOCUMENTS 100
#define TD_DEFAULT_MAX_CONNECTIONS 1024
#define TD_DEFAULT_IDLE_TIMEOUT_MS 60000
#define TD_DEFAULT_HEADER_TIMEOUT_MS 10000
#define TD_DEFAULT_DRAIN_TIMEOUT_MS 10000
#define TD_DEFAULT_MAX_PENDING 64
#define TD_DEFAULT_MAX_OUTPUT_BYTES (8u << 20)
#define TD_MAX_WORKERS 1024
#define TD_DEFAULT_NATS_MAX_INFLIGHT 64
#define TD_NATS_MAX_INFLIGHT 10000
#define TD_DEFAULT_NATS_ACK_WAIT_MS 30000
#define TD_DEFAULT_NATS_MAX_DELIVER 10

typedef struct td_config {
  char *model;         /* bundle directory (required) */
  char *plugins;       /* plugin directory, NULL: td_plugin_default_dir() */
  char **listen;       /* "unix:PATH" | "tcp:HOST:PORT" | "tcp:[V6]:PORT" */
  size_t nlisten;
  int workers;         /* classification threads; 0 = one per CPU the daemon
                          may run on (td_config_validate fills it in) */
  int worker_loops;    /* 1 (default): each worker runs its own event loop;
                          0: one loop, classification on libuv's threadpool */
  char *cpu_affinity;  /* NULL or "match" (default), "none", "auto", or a
                          CPU list "0,2-3" */
  int *cpus;           /* after td_config_validate: worker loop i runs on
                          cpus[i % ncpus]; NULL (ncpus 0): not pinned */
  size_t ncpus;
  int cpus_asked;      /* cpus named by "auto" or a list, not by "match":
                          a pin refused is then worth a warning */
  char *config_file;   /* --config, NULL if none */
  int log_level;       /* TD_LOG_* */
  int log_journal;     /* -1 auto, 0 off, 1 on */
  char *admin_token;   /* the token inline (visible in ps as a flag); prefer: */
  char *admin_token_file; /* file holding the token, read at start and on SIGHUP */
  char *models_dir;    /* reload paths must resolve inside it; default: the parent
                          of `model`. After td_config_validate: its realpath */
  int allow_remote;    /* TCP listeners may bind addresses other than loopback */
  int allow_any_model_path; /* lifts the models_dir rule */
  size_t max_request_bytes, max_line_bytes, max_passages, max_documents;
  size_t max_connections, max_pending, max_output_bytes;
  uint64_t idle_timeout_ms, header_timeout_ms, drain_timeout_ms;
  /* NATS JetStream consumer (nats.c); off unless nats_url is set */
  char *nats_url;          /* "nats://host:4222", comma-separated for a cluster */
  char *nats_stream, *nats_subject, *nats_durable, *nats_results;
  char *nats_dead_letter;  /* NULL: "<nats_results>.dead" (td_config_validate fills it) */
  size_t nats_max_inflight;
  uint64_t nats_ack_wait_ms; /* AckWait of the consumer when themed creates it */
  size_t nats_replicas;      /* replicas of the streams themed creates (a cluster: 3) */
  size_t nats_max_deliver;   /* deliveries before an article is dead-lettered unclassified; 0: never */
} td_config_t;

/* What main should do after parsing. */
enum td_config_action {
  TD_ACTION_RUN = 0,
  TD_ACTION_HELP,
  TD_ACTION_VERSION,
  TD_ACTION_CHECK,
};

void td_config_init(td_config_t *c);
void td_config_free(td_config_t *c);

/*
 * Parses argv (reading --config FILE first, then applying flags over it) into
 * c, which td_config_init prepared. *action tells what was asked for. Does
 * not check cross-field rules: call td_config_validate after. Returns
 * TD_EFORMAT when the config file is at fault, TD_EINVAL for the command line.
 */
int td_config_parse_args(td_config_t *c, int argc, char **argv, int *action,
                         td_err_t *err);
/* Applies one JSON config file (object with the keys above). */
int td_config_load_file(td_config_t *c, const char *path, td_err_t *err);
/* Fills derived defaults and checks ranges and listen addresses.
 * inherited_fds: sockets handed over by systemd (then --listen is optional). */
int td_config_validate(td_config_t *c, int inherited_fds, td_err_t *err);

void td_config_usage(FILE *f);

/* The longest admin token accepted (bytes). */
#define TD_ADMIN_TOKEN_MAX 1024

/*
 * Reads the admin token from path: the file's content without its trailing
 * line break and blanks, 1..TD_ADMIN_TOKEN_MAX printable ASCII bytes without
 * spaces. Refuses a file that is not a regular file or that others may read
 * or write (mode & 0006): the token would no longer be a secret. On success
 * *out is a malloc'd string owned by the caller.
 */
int td_admin_token_read(const char *path, char **out, td_err_t *err);

struct sockaddr;
/* 1 if sa is a loopback address: 127.0.0.0/8, ::1 or ::ffff:127.0.0.0/104. */
int td_sockaddr_is_loopback(const struct sockaddr *sa);

/*
 * Where a model path may be loaded from. Resolves path (realpath, or, when
 * it does not exist, lexically against the working directory) and writes the
 * resolved path into resolved (PATH_MAX bytes). Unless allow_any_model_path
 * is set it must lie inside models_dir (or be it): else TD_ESTATE and err
 * says so. A path that does not exist but would lie inside gives TD_EIO.
 */
int td_config_model_path(const td_config_t *c, const char *path, char *resolved, td_err_t *err);

/* A parsed --listen value. */
typedef struct td_listen_addr {
  int is_unix;
  char path[108];  /* unix: socket path (sun_path size) */
  char host[256];  /* tcp: numeric address or name, without brackets */
  int port;        /* tcp: 0..65535, 0 = any free port */
} td_listen_addr_t;
int td_listen_addr_parse(const char *s, td_listen_addr_t *a, td_err_t *err);

/* "4M" / "4MiB" / "512k" / "1048576" -> bytes; "1.5s" / "500ms" / "2m" / "3" -> ms. */
int td_parse_size(const char *s, size_t *out);
int td_parse_duration_ms(const char *s, uint64_t *out);

#endif
