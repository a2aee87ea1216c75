/*
 * libFuzzer target: a connection to the real server in its production mode,
 * with worker loops (loops_fixture.h): the main loop accepts and hands the
 * descriptor to a worker loop on another thread, which sniffs the protocol,
 * frames (JSON Lines or HTTP/1.1), classifies inline or on the threadpool,
 * answers the loop-side ops (reload goes to the main loop and its answer
 * comes back), applies backpressure, and closes; the fuzz thread is an
 * ordinary client over a unix socket or TCP.
 *
 * Input: byte 0 the limits (and unix or TCP), byte 1 the write chunking
 * (server_common.h), then the stream. Byte 1, bits 3-4: the stream is sent
 * 1, 2, 4 or 16 times over, so that within libFuzzer's 16 KiB a line can
 * outgrow what a worker loop classifies itself (16 KiB) and a connection
 * what it classifies in one iteration (64 KiB): those go to the threadpool
 * and come back to the worker loop. The chunks grow as many times (the
 * same number of writes: 1-byte writes of 256 KiB would make those inputs
 * some 20 times slower than the rest). Checked, by the stream's first byte
 * as the daemon sniffs it: JSON Lines answers are one JSON object a line,
 * no more than the lines sent; HTTP answers are complete responses with
 * nothing after Connection: close; anything else gets one error line.
 * Error objects are well formed, with a known code, never "internal". Every
 * loop lets go of the connection and its requests (else a FUZZ_CHECK after
 * a few seconds), and the connection count returns to 0.
 */
#include "loops_fixture.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  lx_init();
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 3) return 0;
  static const size_t times[] = {1, 2, 4, 16};
  size_t k = times[(data[1] >> 3) & 3], n = (size - 2) * k;
  uint8_t *s = malloc(n);
  if (!s) return 0;
  for (size_t i = 0; i < k; i++) memcpy(s + i * (size - 2), data + 2, size - 2);
  td_buf_t out;
  lx_run(s, n, data[0], fx_chunks[data[1] & 7] * k, &out);
  const char *d = out.data ? out.data : "";
  if (isalpha(s[0])) {
    fx_check_http(d, out.len);
  } else if (memchr("{[ \t\r\n", s[0], 6)) {
    size_t lines = 1;
    for (size_t i = 0; i < n; i++) lines += s[i] == '\n';
    fx_check_jsonl(d, out.len, lines);
  } else {
    fx_check_not_a_protocol(d, out.len);
  }
  td_buf_free(&out);
  free(s);
  return 0;
}
