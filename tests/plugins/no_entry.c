/* The entry is defined but not marked THEMED_EXPORT, so -fvisibility=hidden
 * hides it: the classic mistake. The loader must say which symbol is missing. */
#include "testplug.h"

static const themed_tokenizer_api_t api = THEMED_TOKENIZER_INIT(.name = "no_entry", T_FUNCS);

const themed_tokenizer_api_t *themed_tokenizer_get_api(void);
const themed_tokenizer_api_t *themed_tokenizer_get_api(void) { return &api; }
