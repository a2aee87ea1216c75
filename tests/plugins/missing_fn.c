/* tokenize is NULL: must be rejected at load time, not crash at run time. */
#include "testplug.h"

static const themed_tokenizer_api_t api = THEMED_TOKENIZER_INIT(
    .name = "missing_fn", .create = t_create, .destroy = t_destroy);
T_ENTRY(&api)
