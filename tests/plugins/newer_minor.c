/* Built against a newer minor ABI than the host's: it may rely on members the
 * host does not know, so the loader must reject it. */
#include "testplug.h"

static const themed_tokenizer_api_t api = {
    .abi_major = THEMED_PLUGIN_ABI_MAJOR,
    .abi_minor = THEMED_PLUGIN_ABI_MINOR + 1,
    .struct_size = sizeof(themed_tokenizer_api_t),
    .name = "newer_minor",
    T_FUNCS};
T_ENTRY(&api)
