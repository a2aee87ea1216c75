/* struct_size says the descriptor ends before tokenize: must be rejected. */
#include "testplug.h"

static const themed_tokenizer_api_t api = {
    .abi_major = THEMED_PLUGIN_ABI_MAJOR,
    .abi_minor = THEMED_PLUGIN_ABI_MINOR,
    .struct_size = offsetof(themed_tokenizer_api_t, tokenize),
    .name = "small_struct",
    T_FUNCS};
T_ENTRY(&api)
