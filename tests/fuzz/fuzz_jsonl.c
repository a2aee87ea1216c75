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

  FUZZ_CHECK(out.len == 0 || out.data[out.len - 1] == '\n', "answer does not end with LF");
  size_t answers = 0;
  for (size_t p = 0; p < out.len;) {
    const char *nl = memchr(out.data + p, '\n', out.len - p);
    size_t len = (size_t)(nl - (out.data + p));
    json_error_t je;
    json_t *o = json_loadb(out.data + p, len, 0, &je);
    if (!o) fprintf(stderr, "bad answer line: %.*s\n", (int)(len > 300 ? 300 : len), out.data + p);
    FUZZ_CHECK(o && json_is_object(o), "an answer line is not one JSON object");
    fx_check_error_obj(o);
    json_decref(o);
    answers++;
    p += len + 1;
  }
  FUZZ_CHECK(answers <= lines, "more answers than request lines");
  td_buf_free(&out);
  free(buf);
  return 0;
}
