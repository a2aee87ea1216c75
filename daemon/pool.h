/*
 * A run of independent jobs on a few threads, for training: cross-validation
 * folds, C values and themes are all separate fits. Jobs write their results
 * into slots the caller preallocated, so the outcome does not depend on the
 * number of threads or on their timing.
 */
#ifndef TD_POOL_H
#define TD_POOL_H

#include <stddef.h>

#include "common.h"

/* One job: 0, or a negative TD_E* code with err set. The first failure
 * stops the run (jobs already running finish; no new one starts). Called
 * concurrently: a job touches only its own slots, or locks. */
typedef int (*td_pool_job_fn)(void *ctx, size_t job, td_err_t *err);
/* Progress, on the calling thread only: done of total jobs finished. */
typedef void (*td_pool_progress_fn)(void *ud, size_t done, size_t total);

/* Runs jobs 0..njobs-1 on nthreads threads (0: the CPUs it may run on; never more
 * than njobs). Returns 0, or the first failing job's code and message. */
int td_pool_run(size_t nthreads, size_t njobs, td_pool_job_fn fn, void *ctx,
                td_pool_progress_fn progress, void *progress_ud, td_err_t *err);

#endif
