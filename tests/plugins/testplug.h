/*
 * Working create/destroy/tokenize for the deliberately broken test plugins in
 * this directory: each plugin breaks exactly one thing, so a loader test that
 * fails points at one check. tokenize() emits the whole text as one token.
 */
#ifndef THEMED_TESTPLUG_H
#define THEMED_TESTPLUG_H

#include <stdio.h>
#include <stdlib.h>
#include <themed/plugin.h>

static inline int t_create(const json_t *opts, void **out, char *eb, size_t el) {
  static int inst;
  (void)opts, (void)eb, (void)el;
  *out = &inst;
  return 0;
}

static inline void t_destroy(void *inst) { (void)inst; }

static inline int t_tokenize(void *inst, const char *text, size_t len, themed_emit_cb emit,
                             void *ud, char *eb, size_t el) {
  (void)inst, (void)eb, (void)el;
  return len ? emit(ud, text, len) : 0;
}

#define T_FUNCS .create = t_create, .destroy = t_destroy, .tokenize = t_tokenize

/* The entry, exported as a real plugin does. */
#define T_ENTRY(api)                                                           \
  THEMED_EXPORT const themed_tokenizer_api_t *themed_tokenizer_get_api(void); \
  const themed_tokenizer_api_t *themed_tokenizer_get_api(void) { return (api); }

#endif
