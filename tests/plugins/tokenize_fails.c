/* Loads fine; tokenize() emits the first byte as a token, then fails with a
 * message (or returns the callback's value if the host stops it first). */
#include "testplug.h"

static int f_tokenize(void *inst, const char *text, size_t len, themed_emit_cb emit, void *ud,
                      char *eb, size_t el) {
  (void)inst;
  int rc = len ? emit(ud, text, 1) : 0;
  if (rc) return rc;
  snprintf(eb, el, "segmenter failed at byte 1");
  return -3;
}

static const themed_tokenizer_api_t api = THEMED_TOKENIZER_INIT(
    .name = "tokenize_fails", .create = t_create, .destroy = t_destroy, .tokenize = f_tokenize);
T_ENTRY(&api)
