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
#include <ctype.h>

#include "server_fixture.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  fx_init();
  return 0;
}

static void check_json_body(const char *p, size_t n) {
  json_error_t je;
  json_t *o = json_loadb(p, n, 0, &je);
  FUZZ_CHECK(o && json_is_object(o), "a JSON body does not parse as an object");
  fx_check_error_obj(o);
  json_decref(o);
}

static void check_http(const char *d, size_t n) {
  size_t p = 0;
  int closed = 0;
  while (p < n) {
    FUZZ_CHECK(!closed, "bytes after a Connection: close response");
    const char *end = memmem(d + p, n - p, "\r\n\r\n", 4);
    FUZZ_CHECK(end, "incomplete response head");
    size_t hl = (size_t)(end - (d + p)) + 4;
    FUZZ_CHECK(hl > 13 && !memcmp(d + p, "HTTP/1.1 ", 9) && isdigit((unsigned char)d[p + 9]) &&
                   isdigit((unsigned char)d[p + 10]) && isdigit((unsigned char)d[p + 11]) &&
                   d[p + 12] == ' ',
               "bad status line");
    int status = atoi(d + p + 9);
    if (status == 100) {
      p += hl;
      continue;
    }
    long clen = -1;
    int json = 0;
    for (const char *h = memchr(d + p, '\n', hl) + 1; h < end;) {
      const char *e = memmem(h, (size_t)(end + 2 - h), "\r\n", 2);
      size_t l = (size_t)(e - h);
      if (l > 16 && !strncasecmp(h, "Content-Length: ", 16)) clen = strtol(h + 16, NULL, 10);
      if (l >= 30 && !strncasecmp(h, "Content-Type: application/json", 30)) json = 1;
      if (l == 17 && !strncasecmp(h, "Connection: close", 17)) closed = 1;
      h = e + 2;
    }
    FUZZ_CHECK(clen >= 0 && (size_t)clen <= n - p - hl, "missing or wrong Content-Length");
    if (json) check_json_body(d + p + hl, (size_t)clen);
    p += hl + (size_t)clen;
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 3) return 0;
  const uint8_t *s = data + 2;
  size_t n = size - 2;
  td_buf_t out;
  fx_run(s, n, data[0], data[1], &out);
  if (isalpha(s[0])) {
    check_http(out.data ? out.data : "", out.len);
  } else if (memchr("{[ \t\r\n", s[0], 6)) {
    /* JSON Lines: fuzz_jsonl's business */
  } else { /* not a protocol: one JSON error line, then the end */
    FUZZ_CHECK(out.len > 0 && out.data[out.len - 1] == '\n' &&
                   memchr(out.data, '\n', out.len) == out.data + out.len - 1,
               "an unknown protocol did not get one error line");
    check_json_body(out.data, out.len - 1);
  }
  td_buf_free(&out);
  return 0;
}
