/*
 * themed tokenizer plugin ABI.
 *
 * This is the only header a tokenizer plugin includes. It is plain C, has no
 * dependency on libuv, ICU or the daemon's internals, and forward-declares
 * jansson's json_t so a plugin that ignores its options need not link jansson.
 *
 * A plugin is a shared object that exports exactly one symbol:
 *
 *     THEMED_EXPORT const themed_tokenizer_api_t *themed_tokenizer_get_api(void);
 *
 * returning a pointer to a static, immutable descriptor. Build plugins with
 * -fvisibility=hidden so nothing else leaks; THEMED_EXPORT marks the entry.
 *
 * Versioning (the rule, after libuv's version.h and Varnish's vrt.h):
 *   - Same MAJOR means ABI compatible. The host accepts a plugin when
 *     plugin.abi_major == THEMED_PLUGIN_ABI_MAJOR and
 *     plugin.abi_minor <= THEMED_PLUGIN_ABI_MINOR.
 *   - MINOR is bumped when something is *added* (a new optional member at the
 *     end of the descriptor, taken from the reserved slots). A host reads a
 *     member only when struct_size says the plugin's descriptor has it.
 *   - MAJOR is bumped when anything is removed or changes meaning.
 *
 * Changelog:
 *   1.0 (2026-11-30) first version: create/destroy/tokenize.
 *
 * Ownership (one rule for the whole interface): nothing crosses the boundary
 * by ownership. The host owns `options` and the input text; the plugin owns
 * its instance and every byte it passes to the emit callback. Token bytes are
 * valid only for the duration of that one callback call: the host copies or
 * hashes what it needs before returning.
 *
 * Threading contract: after create() returns, the host may call tokenize() on
 * the same instance from several threads at once. tokenize() must therefore
 * not mutate shared instance state without synchronization; keep per-call
 * state on the stack or in per-thread caches the plugin manages itself.
 * create() and destroy() are never called concurrently with anything else on
 * the same instance. destroy() is called only for an instance whose create()
 * succeeded.
 */
#ifndef THEMED_PLUGIN_H
#define THEMED_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define THEMED_PLUGIN_ABI_MAJOR 1
#define THEMED_PLUGIN_ABI_MINOR 0

/* Name of the one symbol a plugin exports. */
#define THEMED_PLUGIN_ENTRY "themed_tokenizer_get_api"

#if defined(__GNUC__)
#define THEMED_EXPORT __attribute__((visibility("default")))
#else
#define THEMED_EXPORT
#endif

/* jansson's object type, forward-declared (see jansson.h). */
typedef struct json_t json_t;

/*
 * Called once per token, in text order. `tok` is UTF-8 of `len` bytes (not
 * NUL-terminated) and is only valid during the call. Return 0 to continue or
 * non-zero to stop tokenizing; tokenize() then returns that value.
 */
typedef int (*themed_emit_cb)(void *ud, const char *tok, size_t len);

typedef struct themed_tokenizer_api {
  /* Version fields first, so any host can read them from any plugin. */
  uint32_t abi_major;   /* THEMED_PLUGIN_ABI_MAJOR the plugin was built with */
  uint32_t abi_minor;   /* THEMED_PLUGIN_ABI_MINOR the plugin was built with */
  uint32_t struct_size; /* sizeof(themed_tokenizer_api_t) at build time */
  uint32_t reserved0;

  const char *name;        /* short unique name, e.g. "icu"; [a-z0-9_-]+ */
  const char *version;     /* the plugin's own version, e.g. "1.2.0" */
  const char *description; /* one line for humans */

  /*
   * Make an instance. `options` is a JSON object (never NULL; may be empty)
   * that the host owns and keeps alive only for this call. Unknown option
   * keys must be rejected so typos in a model manifest fail loudly.
   * Returns 0 and sets *out, or non-zero with a NUL-terminated message of at
   * most errlen bytes written to errbuf.
   */
  int (*create)(const json_t *options, void **out, char *errbuf, size_t errlen);

  /* Free an instance made by create(). */
  void (*destroy)(void *inst);

  /*
   * Split `text` (valid UTF-8, `len` bytes, not necessarily NUL-terminated)
   * into normalized tokens, calling emit(ud, ...) for each. Must not allocate
   * per token. Returns 0 on success, the callback's non-zero value if it
   * stopped early, or a negative value on failure with a message in errbuf.
   */
  int (*tokenize)(void *inst, const char *text, size_t len, themed_emit_cb emit,
                  void *ud, char *errbuf, size_t errlen);

  /* Spare slots for members added by later minor versions (must be NULL). */
  void *reserved[8];
} themed_tokenizer_api_t;

/* Designated-initializer helper: members not named default to zero/NULL. */
#define THEMED_TOKENIZER_INIT(...)                                             \
  {.abi_major = THEMED_PLUGIN_ABI_MAJOR,                                       \
   .abi_minor = THEMED_PLUGIN_ABI_MINOR,                                       \
   .struct_size = sizeof(themed_tokenizer_api_t),                              \
   __VA_ARGS__}

typedef const themed_tokenizer_api_t *(*themed_tokenizer_get_api_fn)(void);

#ifdef __cplusplus
}
#endif

#endif /* THEMED_PLUGIN_H */
