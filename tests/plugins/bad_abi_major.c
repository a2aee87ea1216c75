/* Built against a future major ABI: the loader must reject it. */
#include "testplug.h"

static const themed_tokenizer_api_t api = {
    .abi_major = THEMED_PLUGIN_ABI_MAJOR + 1,
    .abi_minor = 0,
    .struct_size = sizeof(themed_tokenizer_api_t),
    .name = "bad_abi_major",
    T_FUNCS};
T_ENTRY(&api)
