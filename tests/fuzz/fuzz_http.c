/*
 * libFuzzer target: an HTTP/1.1 connection to the real server, in process
 * (server_fixture.h): http_parser with the daemon's callbacks and limits,
 * keep-alive and pipelining, chunked bodies, Expect: 100-continue, routing,
 * the body decoding and classification (request.c), the loop-side routes
 * and reload with its bearer token and path checks.
 *
 * The stream goes as it is, so the first-byte protocol sniffing is fuzzed
 * too (a non-letter gets one JSON error line). Checked: the answer bytes
 * are a sequence of complete HTTP/1.1 responses (status line, headers, a
 * Content-Length body; 100 Continue interim ones) with nothing after them;
 * JSON bodies parse, with well-formed error objects that are never
 * "internal"; Connection: close is the last response.
 */
#include "server_fixture.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  fx_init();
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 3) return 0;
  const uint8_t *s = data + 2;
  size_t n = size - 2;
  td_buf_t out;
  fx_run(s, n, data[0], data[1], &out);
  if (isalpha(s[0])) {
    fx_check_http(out.data ? out.data : "", out.len);
  } else if (memchr("{[ \t\r\n", s[0], 6)) {
    /* JSON Lines: fuzz_jsonl's business */
  } else { /* not a protocol: one JSON error line, then the end */
    fx_check_not_a_protocol(out.data, out.len);
  }
  td_buf_free(&out);
  return 0;
}
