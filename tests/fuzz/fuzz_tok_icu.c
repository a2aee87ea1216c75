/* libFuzzer target: the icu tokenizer plugin on raw bytes (see tok_common.h). */
#include "tok_common.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  static const char *const opts[] = {"{}", "{\"traditional_to_simplified\": true}"};
  tok_init("icu", opts, sizeof opts / sizeof opts[0]);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return tok_one(data, size); }
