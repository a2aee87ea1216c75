/*
 * The two tokenizer targets (fuzz_tok_icu.c, fuzz_tok_bigram.c): load the
 * plugin .so through the host's own loader (td_tokenizer_open_path), one
 * instance per option set, and tokenize arbitrary bytes.
 *
 * The host validates UTF-8 before a plugin sees text, but a plugin must not
 * crash on anything: the targets feed raw bytes. Byte 0 picks the instance
 * (and an early-stop point); the rest is the text, copied into a buffer of
 * exactly its length so any read past it is caught. Checked besides the
 * sanitizers:
 *   - tokenize() succeeds and every token is non-empty, valid UTF-8 without
 *     NUL, and lies in memory that stays readable for the callback;
 *   - the same text gives the same tokens twice in a row (the per-instance
 *     state pool must hand back clean state);
 *   - a callback that stops after k tokens ends the run with its value and
 *     sees exactly k tokens.
 */
#ifndef TD_FUZZ_TOK_COMMON_H
#define TD_FUZZ_TOK_COMMON_H

#include <dlfcn.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "fuzz_common.h"
#include "plugin.h"
#include "text.h"

#define TOK_MAX_INSTANCES 8

static td_tokenizer_t *g_tok[TOK_MAX_INSTANCES];
static size_t g_ntok;

typedef struct tok_run {
  uint64_t hash;
  size_t count, stop_after;
} tok_run_t;

static int tok_emit(void *ud, const char *tok, size_t len) {
  tok_run_t *r = ud;
  FUZZ_CHECK(len > 0, "empty token");
  FUZZ_CHECK(td_text_check_utf8(tok, len, NULL, NULL) == 0, "token is not valid UTF-8 (or has NUL)");
  for (size_t i = 0; i < len; i++) r->hash = (r->hash ^ (unsigned char)tok[i]) * 0x100000001b3ull;
  r->hash = (r->hash ^ 0xff) * 0x100000001b3ull; /* token boundary */
  r->count++;
  return r->stop_after && r->count == r->stop_after ? 7 : 0;
}

/* Loads `name` from $THEMED_PLUGIN_DIR (default build/fuzz/plugins) once per
 * option set. The .so stays mapped for the process (RTLD_NODELETE): its
 * coverage counters must outlive any dlclose. */
static void tok_init(const char *name, const char *const *options, size_t n) {
  char path[PATH_MAX];
  snprintf(path, sizeof path, "%s/%s.so", fuzz_path("THEMED_PLUGIN_DIR", "build/fuzz/plugins"), name);
  if (!dlopen(path, RTLD_NOW | RTLD_NODELETE)) {
    fprintf(stderr, "fuzz: cannot load %s: %s\n", path, dlerror());
    exit(1);
  }
  for (size_t i = 0; i < n && i < TOK_MAX_INSTANCES; i++) {
    json_error_t je;
    json_t *o = json_loads(options[i], 0, &je);
    td_err_t err = {0};
    if (!o || td_tokenizer_open_path(path, o, &g_tok[i], &err)) {
      fprintf(stderr, "fuzz: %s %s: %s\n", path, options[i], o ? err.msg : je.text);
      exit(1);
    }
    json_decref(o);
    g_ntok++;
  }
}

static int tok_one(const uint8_t *data, size_t size) {
  if (size < 1 || g_ntok == 0) return 0;
  const td_tokenizer_t *t = g_tok[data[0] % g_ntok];
  size_t len = size - 1;
  char *text = malloc(len ? len : 1);
  if (!text) return 0;
  memcpy(text, data + 1, len);
  td_err_t err = {0};
  tok_run_t a = {0xcbf29ce484222325ull, 0, 0}, b = a;
  int rc = td_tokenizer_run(t, text, len, tok_emit, &a, &err);
  if (rc) fprintf(stderr, "tokenize failed (%d): %s\n", rc, err.msg);
  FUZZ_CHECK(rc == 0, "tokenize() failed on raw bytes");
  rc = td_tokenizer_run(t, text, len, tok_emit, &b, &err);
  FUZZ_CHECK(rc == 0 && a.hash == b.hash && a.count == b.count, "tokens differ on a second run");
  if (a.count > 1) {
    tok_run_t c = {0xcbf29ce484222325ull, 0, 1 + (data[0] >> 3) % a.count};
    rc = td_tokenizer_run(t, text, len, tok_emit, &c, &err);
    FUZZ_CHECK(rc == 7 && c.count == c.stop_after, "an early stop was not honoured");
  }
  free(text);
  return 0;
}

#endif
