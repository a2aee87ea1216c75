/*
 * Host side of the tokenizer plugin ABI (include/themed/plugin.h): dlopen,
 * version checks, and a tokenizer handle that owns its plugin instance.
 */
#ifndef TD_PLUGIN_H
#define TD_PLUGIN_H

#include <jansson.h>
#include <themed/plugin.h>

#include "common.h"

typedef struct td_tokenizer td_tokenizer_t;

/*
 * Directory to load plugins from when the caller gives none: $THEMED_PLUGIN_DIR
 * if set, else <dir of the running executable>/plugins if it exists (the build
 * tree: build/themed -> build/plugins), else the compiled-in TD_PLUGIN_DIR.
 * Returns a pointer to static storage.
 */
const char *td_plugin_default_dir(void);

/*
 * Loads plugin `name` from `dir` (file dir/name.so; NULL dir = default dir),
 * checks the ABI, and creates an instance with `options` (a JSON object or
 * NULL for {}). The plugin's descriptor name must equal `name`. Refuses a
 * file or directory that is world-writable. Every failure names the file:
 * missing file, dlopen error, missing entry symbol, NULL descriptor, ABI
 * mismatch (expected vs found), bad struct_size, missing function, name
 * mismatch, create() failure. On success *out is owned by the caller.
 */
int td_tokenizer_open(const char *dir, const char *name, const json_t *options,
                      td_tokenizer_t **out, td_err_t *err);

/* Same, from an explicit .so path (used by tests and --plugin-file). The
 * descriptor name is checked for [a-z0-9_-]+ only, not against the file name. */
int td_tokenizer_open_path(const char *path, const json_t *options,
                           td_tokenizer_t **out, td_err_t *err);

/* Destroys the instance and dlcloses the plugin; NULLs *t. */
void td_tokenizer_free(td_tokenizer_t **t);

/* Calls the plugin's tokenize(). Thread-safe per the ABI contract. Returns 0,
 * the callback's own non-zero value if it stopped early (passed through
 * untouched, even a negative TD_E* code), or TD_EPLUGIN with err set if the
 * plugin failed. */
int td_tokenizer_run(const td_tokenizer_t *t, const char *text, size_t len,
                     themed_emit_cb emit, void *ud, td_err_t *err);

const char *td_tokenizer_name(const td_tokenizer_t *t);
const char *td_tokenizer_version(const td_tokenizer_t *t);
/* The options the instance was created with (borrowed; never NULL). */
const json_t *td_tokenizer_options(const td_tokenizer_t *t);

#endif
