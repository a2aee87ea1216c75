#include "pool.h"

#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

typedef struct pool {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  size_t next, done, njobs;
  int failed;
  td_err_t err; /* the first failure's */
  td_pool_job_fn fn;
  void *ctx;
} pool_t;

static void *worker(void *arg) {
  pool_t *p = arg;
  for (;;) {
    pthread_mutex_lock(&p->mu);
    if (p->next >= p->njobs || p->failed) {
      pthread_mutex_unlock(&p->mu);
      return NULL;
    }
    size_t j = p->next++;
    pthread_mutex_unlock(&p->mu);
    td_err_t e;
    td_err_clear(&e);
    int rc = p->fn(p->ctx, j, &e);
    pthread_mutex_lock(&p->mu);
    if (rc && !p->failed) {
      p->failed = rc;
      p->err = e;
      if (!p->err.msg[0]) td_err_set(&p->err, rc, "a training job failed (%s)", td_strerror(rc));
    }
    p->done++;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
  }
}

int td_pool_run(size_t nthreads, size_t njobs, td_pool_job_fn fn, void *ctx,
                td_pool_progress_fn progress, void *progress_ud, td_err_t *err) {
  if (!njobs) return 0;
  size_t nth = nthreads ? nthreads : (size_t)td_cpus_allowed();
  if (nth > njobs) nth = njobs;
  pool_t p = {.njobs = njobs, .fn = fn, .ctx = ctx};
  td_err_clear(&p.err);
  pthread_t *th = calloc(nth, sizeof *th);
  if (!th) return td_err_set(err, TD_ENOMEM, "out of memory");
  pthread_mutex_init(&p.mu, NULL);
  pthread_cond_init(&p.cv, NULL);
  size_t started = 0;
  for (; started < nth; started++)
    if (pthread_create(&th[started], NULL, worker, &p)) break;
  int rc = 0;
  if (started == 0) {
    rc = td_err_set(err, TD_ENOMEM, "cannot start training threads");
    goto out;
  }
  size_t reported = (size_t)-1;
  pthread_mutex_lock(&p.mu);
  for (;;) {
    size_t done = p.done;
    int stop = done == njobs || (p.failed && p.next == p.done);
    if (done != reported && progress) {
      pthread_mutex_unlock(&p.mu);
      progress(progress_ud, done, njobs);
      reported = done;
      pthread_mutex_lock(&p.mu);
      continue;
    }
    if (stop) break;
    pthread_cond_wait(&p.cv, &p.mu);
  }
  pthread_mutex_unlock(&p.mu);
  for (size_t i = 0; i < started; i++) pthread_join(th[i], NULL);
  if (p.failed) rc = td_err_set(err, p.failed, "%s", p.err.msg);
out:
  free(th);
  pthread_mutex_destroy(&p.mu);
  pthread_cond_destroy(&p.cv);
  return rc;
}
