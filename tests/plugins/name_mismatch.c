/* Descriptor name differs from the file name (name_mismatch.so): rejected
 * when loaded by name, so a manifest's tokenizer name means one plugin. */
#include "testplug.h"

static const themed_tokenizer_api_t api = THEMED_TOKENIZER_INIT(.name = "other_name", T_FUNCS);
T_ENTRY(&api)
