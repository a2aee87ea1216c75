#include "reload.h"

#include <limits.h>
#include <string.h>
#include <systemd/sd-daemon.h>
#include <time.h>

#include "log.h"

static void start_next(td_server_t *s);

int td_reload_busy(const td_server_t *s) { return s->reload_running != NULL; }

static void job_free(td_reload_job_t *j) {
  free(j->path);
  free(j);
}

/* Threadpool thread: the whole load and validation happens here, off the
 * loop, so serving goes on while a big bundle is read. */
static void load_work(uv_work_t *w) {
  td_server_t *s = w->data;
  td_err_t *err = &s->reload_err;
  td_err_clear(err);
  s->reload_result = NULL;
  /* Loaded from where the path resolves now, and only inside the models
   * directory (--models-dir) unless --allow-any-model-path: SIGHUP and
   * path-less reloads are checked too, so a bundle directory swapped for a
   * symlink to elsewhere is not followed. */
  char where[PATH_MAX];
  if (td_config_model_path(s->cfg, s->reload_running->path, where, err)) return;
  if (td_model_load_flags(where, s->cfg->plugins, TD_MODEL_LOAD_SERVE, &s->reload_result, err)) {
    if (!err->msg[0]) td_err_set(err, TD_EMODEL, "%s: load failed", s->reload_running->path);
    return;
  }
}

static void load_done(uv_work_t *w, int status) {
  td_server_t *s = w->data;
  td_reload_job_t *j = s->reload_running;
  td_model_t *m = s->reload_result;
  double secs = (double)(td_now_ns() - s->reload_t0) / 1e9;
  s->reload_running = NULL;
  s->reload_result = NULL;
  if (status == 0 && m) {
    char old[256];
    snprintf(old, sizeof old, "%s", s->model->label);
    td_server_set_model(s, m);
    td_server_lock(s);
    s->metrics.reloads_ok++;
    td_server_unlock(s);
    td_log_info("reload: now serving %s from %s (was %s; loaded in %.3fs)", m->label, m->dir, old,
                secs);
    if (j->req) {
      td_req_t *r = j->req;
      json_t *o = json_object();
      if (r->id) json_object_set(o, "id", r->id);
      json_object_set_new(o, "reloaded", json_true());
      json_object_set_new(o, "model", json_string(m->label));
      if (td_req_set_json(r, o)) td_req_set_error(r, TD_EC_INTERNAL, "out of memory");
    }
  } else {
    td_server_lock(s);
    s->metrics.reloads_failed++;
    td_server_unlock(s);
    const char *why = status ? uv_strerror(status) : s->reload_err.msg;
    td_log_error("reload of %s failed, still serving %s: %s", j->path, s->model->label, why);
    if (j->req) td_req_set_error(j->req, TD_EC_RELOAD_FAILED, "%s", why);
  }
  if (!s->draining) td_server_notify_ready(s);
  if (j->req) td_req_done_from(s, j->req);
  job_free(j);
  start_next(s);
  if (!s->reload_running) td_server_reload_finished(s);
}

/* A job that failed before its load could start: logged, counted and
 * answered as a failed load is. Nothing was started (reload_running stays
 * NULL), so there is no reload to finish and the next job may go. */
static void fail_unstarted(td_server_t *s, td_reload_job_t *j, const char *why) {
  td_server_lock(s);
  s->metrics.reloads_failed++;
  td_server_unlock(s);
  td_log_error("reload of %s failed, still serving %s: %s", j->path ? j->path : s->model->dir,
               s->model->label, why);
  if (j->req) {
    td_req_set_error(j->req, TD_EC_INTERNAL, "%s", why);
    td_req_done_from(s, j->req);
  }
  job_free(j);
}

static void start_next(td_server_t *s) {
  td_reload_job_t *j = NULL;
  while (!s->reload_running && s->reload_head && !s->draining) {
    j = s->reload_head;
    s->reload_head = j->next;
    if (!s->reload_head) s->reload_tail = NULL;
    s->reload_queued--;
    j->next = NULL;
    if (j->path || (j->path = strdup(s->model->dir))) break;
    fail_unstarted(s, j, "out of memory");
    j = NULL;
  }
  if (!j) return;
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=reloading %s",
             (unsigned long long)ts.tv_sec * 1000000ull + (unsigned long long)ts.tv_nsec / 1000,
             j->path);
  td_log_info("reload: loading %s", j->path);
  s->reload_running = j;
  s->reload_t0 = td_now_ns();
  s->reload_work.data = s;
  int rc = uv_queue_work(s->loop, &s->reload_work, load_work, load_done);
  if (rc) {
    s->reload_result = NULL;
    load_done(&s->reload_work, rc);
  }
}

/* A reload asked on a worker loop, on its way to the main loop. */
typedef struct forward {
  char *path;
  td_req_t *req;
} forward_t;

static void forward_run(td_server_t *s, void *arg, int cancelled) {
  forward_t *f = arg;
  (void)cancelled; /* the main loop runs until every worker loop has ended */
  td_reload_request(s, f->path, f->req);
  free(f->path);
  free(f);
}

void td_reload_request(td_server_t *s, const char *path, td_req_t *req) {
  if (s->is_shard) { /* reloads run on the main loop; the answer comes back */
    forward_t *f = calloc(1, sizeof *f);
    if (f && (!path || (f->path = strdup(path)))) {
      f->req = req;
      s->remote_pending++;
      if (td_server_post(s->main, forward_run, f) == 0) return;
      s->remote_pending--;
    }
    if (f) free(f->path);
    free(f);
    td_req_set_error(req, TD_EC_INTERNAL, "out of memory");
    td_req_done(req);
    return;
  }
  if (s->draining) { /* nothing new starts during the stop */
    if (req) {
      td_req_set_error(req, TD_EC_SHUTTING_DOWN, "server is shutting down");
      td_req_done_from(s, req);
    }
    return;
  }
  if (!req) {
    /* SIGHUP: one queued reload of the current path is as good as two. */
    for (td_reload_job_t *j = s->reload_head; j; j = j->next)
      if (!j->req && !j->path) return;
  }
  if (s->reload_queued >= TD_RELOAD_MAX_QUEUED) {
    td_log_warn("reload refused: %zu reloads already waiting", s->reload_queued);
    if (req) {
      td_req_set_error(req, TD_EC_RELOAD_FAILED, "reload in progress and %zu more queued; try again later",
                       s->reload_queued);
      td_req_done_from(s, req);
    }
    return;
  }
  td_reload_job_t *j = calloc(1, sizeof *j);
  if (!j || (path && !(j->path = strdup(path)))) {
    free(j);
    if (req) {
      td_req_set_error(req, TD_EC_INTERNAL, "out of memory");
      td_req_done_from(s, req);
    }
    return;
  }
  j->req = req;
  if (s->reload_tail) s->reload_tail->next = j;
  else s->reload_head = j;
  s->reload_tail = j;
  s->reload_queued++;
  start_next(s);
}

void td_reload_cancel_queued(td_server_t *s) {
  while (s->reload_head) {
    td_reload_job_t *j = s->reload_head;
    s->reload_head = j->next;
    s->reload_queued--;
    if (j->req) {
      td_req_set_error(j->req, TD_EC_SHUTTING_DOWN, "server is shutting down");
      td_req_done_from(s, j->req);
    }
    job_free(j);
  }
  s->reload_tail = NULL;
}
