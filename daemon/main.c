/*
 * themed: serves the passage theme classifier.
 *
 *   themed --model DIR [--plugins DIR] --listen unix:PATH [--listen tcp:HOST:PORT ...]
 *
 * Startup order matters: parse the configuration, adopt systemd's sockets,
 * size libuv's threadpool (UV_THREADPOOL_SIZE is read once, when the first
 * work item is queued), load the model, bind, then READY=1.
 */
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>
#include <uv.h>

#include "config.h"
#include "jalloc.h"
#include "log.h"
#include "model.h"
#include "nats.h"
#include "plugin.h"
#include "server.h"

int main(int argc, char **argv) {
  td_config_t cfg;
  td_err_t err = {0};
  int action, rc = 1, nfds = 0;
  td_model_t *model = NULL;
  char *token = NULL; /* the admin token, until the server has its copy */

  td_jalloc_install(); /* before any jansson value exists */
  signal(SIGPIPE, SIG_IGN); /* a client that hangs up is an EPIPE, not a death */
  td_config_init(&cfg);
  if ((rc = td_config_parse_args(&cfg, argc, argv, &action, &err))) {
    fprintf(stderr, "themed: %s%s\n", err.msg, rc == TD_EFORMAT ? "" : " (see themed --help)");
    td_config_free(&cfg);
    return rc == TD_EFORMAT ? 1 : 2; /* 2: usage error, as getopt tools do */
  }
  rc = 1;
  if (action == TD_ACTION_HELP) {
    td_config_usage(stdout);
    td_config_free(&cfg);
    return 0;
  }
  if (action == TD_ACTION_VERSION) {
    printf("themed %s (libuv %s, jansson %s)\n", TD_VERSION, uv_version_string(), JANSSON_VERSION);
    td_config_free(&cfg);
    return 0;
  }
  td_log_init(cfg.log_level, cfg.log_journal);
  if (action != TD_ACTION_CHECK && (nfds = sd_listen_fds(1)) < 0) {
    td_log_error("socket activation: %s", strerror(-nfds));
    goto out;
  }
  if (td_config_validate(&cfg, action == TD_ACTION_CHECK ? 1 : nfds, &err)) {
    td_log_error("config: %s", err.msg);
    goto out;
  }
  if (cfg.admin_token_file && td_admin_token_read(cfg.admin_token_file, &token, &err)) {
    td_log_error("config: %s", err.msg);
    goto out;
  }
  if (cfg.admin_token) {
    td_log_warn("the admin token is given inline (--admin-token or \"admin_token\"): as a flag, "
                "every local user can read it with ps; use --admin-token-file instead");
    if (!(token = strdup(cfg.admin_token))) goto out;
  }
  int workers = cfg.workers; /* td_config_validate set the default */
  char nbuf[16];
  snprintf(nbuf, sizeof nbuf, "%d", workers);
  setenv("UV_THREADPOOL_SIZE", nbuf, 1);
  json_object_seed(0); /* before any thread creates a hashtable */

  /* Serving needs only the collapsed weights: the support vectors are
   * freed theme by theme as they are parsed. */
  if (td_model_load_flags(cfg.model, cfg.plugins, TD_MODEL_LOAD_SERVE, &model, &err)) {
    td_log_error("cannot load model %s: %s", cfg.model, err.msg);
    goto out;
  }
  if (action == TD_ACTION_CHECK) {
    /* What would make the daemon fail at start, short of binding: a socket
     * in a directory that is not there, a host name that does not resolve. */
    for (size_t i = 0; i < cfg.nlisten; i++) {
      td_listen_addr_t a;
      if (td_listen_addr_parse(cfg.listen[i], &a, &err) || td_listen_addr_check(&a, &err)) {
        td_log_error("config: %s", err.msg);
        goto out;
      }
    }
    /* Without --listen the sockets can only come from systemd: checked
     * outside the unit, that would be a daemon that exits at start. */
    printf("config ok: model %s from %s, plugins %s, %d worker%s, %zu listener%s%s\n", model->label,
           cfg.model, cfg.plugins ? cfg.plugins : td_plugin_default_dir(), workers,
           td_plural((unsigned)workers), cfg.nlisten, td_plural(cfg.nlisten),
           cfg.nlisten ? "" : " (the sockets must come from systemd's socket activation)");
    rc = 0;
    goto out;
  }
  td_log_info("themed %s starting: model %s (%s, loaded in %.3fs), %d worker%s", TD_VERSION,
              model->label, cfg.model, (double)model->load_ns / 1e9, workers,
              td_plural((unsigned)workers));

  uv_loop_t loop;
  td_server_t srv;
  uv_loop_init(&loop);
  if (td_server_init(&srv, &loop, &cfg, workers, model, &err)) {
    td_log_error("%s", err.msg);
    uv_loop_close(&loop);
    goto out;
  }
  model = NULL; /* the server owns it now */
  td_server_set_admin_token(&srv, token);
  if (td_server_listen(&srv, nfds, &err) || (cfg.nats_url && td_nats_start(&srv, &err))) {
    td_log_error("%s", err.msg);
    td_server_abort(&srv);
  } else {
    td_server_start(&srv);
    rc = 0;
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  td_server_close(&srv);
  uv_run(&loop, UV_RUN_DEFAULT); /* the close callbacks */
  td_server_free(&srv);
  if (uv_loop_close(&loop) != 0) td_log_warn("event loop closed with handles still open");
  if (rc == 0) td_log_info("stopped");
out:
  if (model) td_model_unref(&model);
  if (token) explicit_bzero(token, strlen(token));
  free(token);
  td_config_free(&cfg);
  /* Joins libuv's threadpool: each worker's scratch is freed as it exits. */
  uv_library_shutdown();
  return rc;
}
