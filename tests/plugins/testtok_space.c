/*
 * testtok_space: a trivial tokenizer for the feature tests, so they do not
 * depend on the real plugins. Tokens are the runs of bytes between ASCII
 * spaces, emitted as they are (no normalization).
 *
 * Options (all optional; unknown keys are rejected as the ABI requires):
 *   "lower": true     ASCII-lowercase each token (tokens over 255 bytes are
 *                     emitted unchanged); exercises "normalized by the tokenizer"
 *   "fail_on": "tok"  tokenize() fails with a message on this token;
 *                     exercises error propagation
 *   "bad_utf8": true  each token gets a 0xFF byte appended, as a plugin that
 *                     breaks the ABI's UTF-8 promise would emit
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <themed/plugin.h>

typedef struct inst {
  int lower, bad_utf8;
  char *fail_on;
} inst_t;

static int sp_create(const json_t *opts, void **out, char *eb, size_t el) {
  inst_t *t = calloc(1, sizeof *t);
  if (!t) {
    snprintf(eb, el, "out of memory");
    return -1;
  }
  const char *k;
  json_t *v;
  json_object_foreach((json_t *)opts, k, v) {
    if (strcmp(k, "lower") == 0 && json_is_boolean(v)) {
      t->lower = json_is_true(v);
    } else if (strcmp(k, "bad_utf8") == 0 && json_is_boolean(v)) {
      t->bad_utf8 = json_is_true(v);
    } else if (strcmp(k, "fail_on") == 0 && json_is_string(v)) {
      free(t->fail_on);
      if (!(t->fail_on = strdup(json_string_value(v)))) {
        snprintf(eb, el, "out of memory");
        free(t);
        return -1;
      }
    } else {
      snprintf(eb, el, "unknown or invalid option \"%s\"", k);
      free(t->fail_on);
      free(t);
      return -1;
    }
  }
  *out = t;
  return 0;
}

static void sp_destroy(void *p) {
  inst_t *t = p;
  free(t->fail_on);
  free(t);
}

static int sp_tokenize(void *p, const char *text, size_t len, themed_emit_cb emit, void *ud,
                       char *eb, size_t el) {
  const inst_t *t = p;
  size_t i = 0;
  while (i < len) {
    while (i < len && text[i] == ' ') i++;
    size_t b = i;
    while (i < len && text[i] != ' ') i++;
    if (i == b) break;
    const char *tok = text + b;
    size_t n = i - b;
    if (t->fail_on && strlen(t->fail_on) == n && memcmp(t->fail_on, tok, n) == 0) {
      snprintf(eb, el, "refusing token \"%s\"", t->fail_on);
      return -1;
    }
    char low[256];
    if (t->lower && n < sizeof low) {
      for (size_t q = 0; q < n; q++)
        low[q] = tok[q] >= 'A' && tok[q] <= 'Z' ? (char)(tok[q] - 'A' + 'a') : tok[q];
      tok = low;
    }
    char bad[257];
    if (t->bad_utf8 && n < sizeof bad - 1) {
      memcpy(bad, tok, n);
      bad[n++] = (char)0xff;
      tok = bad;
    }
    int rc = emit(ud, tok, n);
    if (rc) return rc;
  }
  return 0;
}

static const themed_tokenizer_api_t api = THEMED_TOKENIZER_INIT(
    .name = "testtok_space", .version = "1.0.0",
    .description = "test tokenizer: splits on ASCII spaces", .create = sp_create,
    .destroy = sp_destroy, .tokenize = sp_tokenize);

THEMED_EXPORT const themed_tokenizer_api_t *themed_tokenizer_get_api(void);
const themed_tokenizer_api_t *themed_tokenizer_get_api(void) { return &api; }
