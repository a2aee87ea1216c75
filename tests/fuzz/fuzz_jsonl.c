/*
 * libFuzzer target: a JSON Lines connection to the real server, in process
 * (server_fixture.h): framing (proto_jsonl.c), request decoding, validation
 * and classification (request.c), the loop-side ops (health, ready, model,
 * stats, reload with its token and path checks), ordering and backpressure.
 *
 * A stream that does not start like JSON Lines gets a leading LF (a blank
 * line), so every input exercises this protocol. Checked: every answer is
 * one line holding one JSON object; error objects are well formed with a
 * known code and never "internal"; no more answers than lines.
 */
#include "server_fixture.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  fx_init();
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 2) return 0;
  const uint8_t *s = data + 2;
  size_t n = size - 2;
  uint8_t *buf = malloc(n + 1);
  if (!buf) return 0;
  size_t off = 0;
  if (n == 0 || !(s[0] == '{' || s[0] == '[' || s[0] == ' ' || s[0] == '\t' || s[0] == '\r' ||
                  s[0] == '\n'))
    buf[off++] = '\n';
  memcpy(buf + off, s, n);
  n += off;
  size_t lines = 1;
  for (size_t i = 0; i < n; i++) lines += buf[i] == '\n';

  td_buf_t out;
  fx_run(buf, n, data[0], data[1], &out);

  fx_check_jsonl(out.data, out.len, lines);
  td_buf_free(&out);
  free(buf);
  return 0;
}
