/*
 * Shared by the libFuzzer targets in tests/fuzz/.
 *
 * FUZZ_CHECK turns a broken promise into a crash, so libFuzzer records the
 * input exactly as it does for a sanitizer report.
 */
#ifndef TD_FUZZ_COMMON_H
#define TD_FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

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

#endif
