/*
 * hello: the smallest complete themed tokenizer plugin, as a template.
 * Tokens are runs of ASCII letters and digits, lowercased; every other byte
 * separates them. One option: {"min_len": N} skips tokens shorter than N.
 * Build: see Makefile beside this file, or docs/plugins.md.
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <themed/plugin.h>

typedef struct hello {
  size_t min_len; /* read-only after create, so tokenize() is thread-safe */
} hello_t;

static int hello_create(const json_t *options, void **out, char *errbuf, size_t errlen) {
  size_t min_len = 1;
  const char *key;
  json_t *val;
  json_object_foreach((json_t *)options, key, val) {
    if (strcmp(key, "min_len") != 0 || !json_is_integer(val) || json_integer_value(val) < 1) {
      /* Reject unknown keys and bad values: a typo must not pass silently. */
      snprintf(errbuf, errlen, "bad option \"%s\" (known: min_len, an integer >= 1)", key);
      return -1;
    }
    min_len = (size_t)json_integer_value(val);
  }
  hello_t *h = malloc(sizeof *h);
  if (!h) {
    snprintf(errbuf, errlen, "out of memory");
    return -1;
  }
  h->min_len = min_len;
  *out = h;
  return 0;
}

static void hello_destroy(void *inst) { free(inst); }

static int is_word(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

static int hello_tokenize(void *inst, const char *text, size_t len, themed_emit_cb emit,
                          void *ud, char *errbuf, size_t errlen) {
  const hello_t *h = inst;
  (void)errbuf, (void)errlen; /* hello cannot fail */
  char tok[64]; /* per-call scratch on the stack: no allocation per token */
  size_t i = 0;
  while (i < len) {
    while (i < len && !is_word((unsigned char)text[i])) i++;
    size_t n = 0;
    for (; i < len && is_word((unsigned char)text[i]); i++)
      if (n < sizeof tok) tok[n++] = text[i] >= 'A' && text[i] <= 'Z' ? text[i] + 32 : text[i];
    /* Longer words are cut to 64 bytes: fine for a demo. */
    if (n >= h->min_len) {
      int rc = emit(ud, tok, n); /* tok is ours; the host copies what it needs */
      if (rc) return rc;        /* the host asked us to stop */
    }
  }
  return 0;
}

static const themed_tokenizer_api_t hello_api = THEMED_TOKENIZER_INIT(
    .name = "hello", .version = "1.0.0",
    .description = "ASCII words, lowercased (example plugin)",
    .create = hello_create, .destroy = hello_destroy, .tokenize = hello_tokenize);

/* The one exported symbol. */
THEMED_EXPORT const themed_tokenizer_api_t *themed_tokenizer_get_api(void);
const themed_tokenizer_api_t *themed_tokenizer_get_api(void) { return &hello_api; }
