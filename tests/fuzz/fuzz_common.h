/*
 * Shared by the libFuzzer targets in tests/fuzz/.
 *
 * FUZZ_CHECK turns a broken promise into a crash, so libFuzzer records the
 * input exactly as it does for a sanitizer report.
 */
#ifndef TD_FUZZ_COMMON_H
#define TD_FUZZ_COMMON_H

#include <ftw.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#define FUZZ_CHECK(cond, what)                                                                     \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      fprintf(stderr, "FUZZ_CHECK failed at %s:%d: %s (%s)\n", __FILE__, __LINE__, what, #cond);   \
      abort();                                                                                     \
    }                                                                                              \
  } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* A file or directory given by environment variable, else a path relative
 * to the top of the tree (make runs the targets from there). */
static inline const char *fuzz_path(const char *env, const char *dflt) {
  const char *v = getenv(env);
  return v && *v ? v : dflt;
}

/* Removes dir (a temp dir the target made) when the process exits. */
static char fuzz_tmpdir_[4096];
static inline int fuzz_rm_one_(const char *path, const struct stat *sb, int type, struct FTW *f) {
  (void)remove(path); /* best effort: keep walking */
  return 0;
}
static inline void fuzz_rm_tmpdir_(void) {
  if (fuzz_tmpdir_[0]) nftw(fuzz_tmpdir_, fuzz_rm_one_, 16, FTW_DEPTH | FTW_PHYS);
}
static inline void fuzz_remove_at_exit(const char *dir) {
  snprintf(fuzz_tmpdir_, sizeof fuzz_tmpdir_, "%s", dir);
  atexit(fuzz_rm_tmpdir_);
}

#endif
