/* create() fails with a message, which the host must pass on; destroy() must
 * then never be called (it aborts to prove it). */
#include "testplug.h"

static int f_create(const json_t *opts, void **out, char *eb, size_t el) {
  (void)opts, (void)out;
  snprintf(eb, el, "cannot open dictionary \"zh.dict\"");
  return -1;
}

static void f_destroy(void *inst) {
  (void)inst;
  abort();
}

static const themed_tokenizer_api_t api = THEMED_TOKENIZER_INIT(
    .name = "create_fails", .create = f_create, .destroy = f_destroy, .tokenize = t_tokenize);
T_ENTRY(&api)
