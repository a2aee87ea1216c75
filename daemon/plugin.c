/*
 * Host side of the tokenizer plugin ABI: find the file, refuse unsafe
 * locations, dlopen it, check the descriptor, create an instance.
 *
 * Every rejection after dlopen() dlcloses the handle, and destroy() is only
 * ever called for an instance whose create() succeeded (include/themed/plugin.h).
 */
#include "plugin.h"

#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef TD_PLUGIN_DIR
#define TD_PLUGIN_DIR "/usr/local/lib/themed/plugins"
#endif

#define TD_TOKENIZER_MAGIC 0x70c3a11eu
#define TD_PLUGIN_NAME_MAX 64

/* The smallest descriptor a 1.x host can use: everything up to tokenize. */
#define TD_PLUGIN_MIN_STRUCT                                                   \
  (offsetof(themed_tokenizer_api_t, tokenize) +                                \
   sizeof(((themed_tokenizer_api_t *)0)->tokenize))

struct td_tokenizer {
  unsigned magic;
  void *dl;
  const themed_tokenizer_api_t *api;
  void *inst;
  json_t *options; /* our deep copy, never NULL */
};

/* ---- default directory ------------------------------------------------- */

static char exe_plugin_dir[PATH_MAX];
static pthread_once_t exe_plugin_once = PTHREAD_ONCE_INIT;

static void find_exe_plugin_dir(void) {
  char exe[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n <= 0) return;
  exe[n] = '\0';
  char *slash = strrchr(exe, '/');
  if (!slash) return;
  *slash = '\0';
  char dir[PATH_MAX];
  struct stat sb;
  if (snprintf(dir, sizeof dir, "%s/plugins", exe) < (int)sizeof dir &&
      stat(dir, &sb) == 0 && S_ISDIR(sb.st_mode))
    memcpy(exe_plugin_dir, dir, sizeof dir);
}

const char *td_plugin_default_dir(void) {
  /* Read every time, not cached: tests and wrappers set it at run time. */
  const char *env = getenv("THEMED_PLUGIN_DIR");
  if (env && *env) return env;
  pthread_once(&exe_plugin_once, find_exe_plugin_dir);
  return exe_plugin_dir[0] ? exe_plugin_dir : TD_PLUGIN_DIR;
}

/* ---- loading ------------------------------------------------------------ */

static int valid_name(const char *s) {
  size_t n = 0;
  for (; s[n]; n++) {
    char c = s[n];
    if (n >= TD_PLUGIN_NAME_MAX) return 0;
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-'))
      return 0;
  }
  return n > 0;
}

/*
 * A world-writable file or directory lets any local user substitute code
 * that the daemon will run. Both the directory as named and the directory
 * the file really lives in (after symlinks) are checked. This narrows, but
 * cannot close, the window between the check and dlopen(); the defence is a
 * directory nobody else can write.
 */
static int check_location(const char *path, td_err_t *err) {
  struct stat sb;
  if (stat(path, &sb) != 0) {
    if (errno == ENOENT)
      return td_err_set(err, TD_EPLUGIN, "plugin %s: file not found", path);
    return td_err_set(err, TD_EPLUGIN, "plugin %s: %s", path, strerror(errno));
  }
  if (!S_ISREG(sb.st_mode))
    return td_err_set(err, TD_EPLUGIN, "plugin %s: not a regular file", path);
  if (sb.st_mode & S_IWOTH)
    return td_err_set(err, TD_EPLUGIN,
                      "plugin %s: refusing a world-writable file (mode %03o); "
                      "expected no write permission for others",
                      path, (unsigned)(sb.st_mode & 0777));

  /* path always has a slash here (open_file adds "./"). */
  char dirs[2][PATH_MAX];
  int ndirs = 1;
  snprintf(dirs[0], sizeof dirs[0], "%s", path);
  if (realpath(path, dirs[1])) ndirs = 2;
  for (int i = 0; i < ndirs; i++) {
    char *slash = strrchr(dirs[i], '/');
    slash[slash == dirs[i]] = '\0'; /* "/x.so" -> "/", "a/x.so" -> "a" */
    if (stat(dirs[i], &sb) != 0)
      return td_err_set(err, TD_EPLUGIN, "plugin %s: cannot check directory %s: %s", path,
                        dirs[i], strerror(errno));
    if (sb.st_mode & S_IWOTH)
      return td_err_set(err, TD_EPLUGIN,
                        "plugin %s: refusing a file in world-writable directory %s "
                        "(mode %03o); expected no write permission for others",
                        path, dirs[i], (unsigned)(sb.st_mode & 0777));
  }
  return 0;
}

/* Validates the descriptor; reads no member beyond what struct_size covers. */
static int check_api(const char *path, const char *expect_name,
                     const themed_tokenizer_api_t *api, td_err_t *err) {
  if (!api)
    return td_err_set(err, TD_EPLUGIN, "plugin %s: %s() returned NULL, expected a descriptor",
                      path, THEMED_PLUGIN_ENTRY);
  if (api->abi_major != THEMED_PLUGIN_ABI_MAJOR || api->abi_minor > THEMED_PLUGIN_ABI_MINOR)
    return td_err_set(err, TD_EPLUGIN,
                      "plugin %s: ABI %u.%u not supported, expected %u.0 to %u.%u "
                      "(same major, minor not newer than the host's)",
                      path, (unsigned)api->abi_major, (unsigned)api->abi_minor,
                      THEMED_PLUGIN_ABI_MAJOR, THEMED_PLUGIN_ABI_MAJOR,
                      THEMED_PLUGIN_ABI_MINOR);
  if (api->struct_size < TD_PLUGIN_MIN_STRUCT)
    return td_err_set(err, TD_EPLUGIN,
                      "plugin %s: descriptor struct_size %u is too small, expected at least %zu",
                      path, (unsigned)api->struct_size, (size_t)TD_PLUGIN_MIN_STRUCT);
  const char *missing = !api->create ? "create" : !api->destroy ? "destroy"
                        : !api->tokenize ? "tokenize" : NULL;
  if (missing)
    return td_err_set(err, TD_EPLUGIN, "plugin %s: descriptor has no %s function", path,
                      missing);
  if (!api->name || !valid_name(api->name))
    return td_err_set(err, TD_EPLUGIN,
                      "plugin %s: descriptor name %s%.*s%s is invalid, expected [a-z0-9_-]+",
                      path, api->name ? "\"" : "",
                      (int)td_utf8_prefix(api->name ? api->name : "(null)", 64),
                      api->name ? api->name : "(null)", api->name ? "\"" : "");
  if (expect_name && strcmp(api->name, expect_name) != 0)
    return td_err_set(err, TD_EPLUGIN,
                      "plugin %s: descriptor name \"%s\" does not match, expected \"%s\"",
                      path, api->name, expect_name);
  return 0;
}

static int open_file(const char *path, const char *expect_name, const json_t *options,
                     td_tokenizer_t **out, td_err_t *err) {
  *out = NULL;
  if (options && !json_is_object(options))
    return td_err_set(err, TD_EINVAL, "plugin %s: options must be a JSON object", path);

  if (strlen(path) >= PATH_MAX - 2)
    return td_err_set(err, TD_EINVAL, "plugin path too long: %.*s...",
                      (int)td_utf8_prefix(path, 200), path);
  /* dlopen() searches the library path for a name without a slash. */
  char local[PATH_MAX];
  if (!strchr(path, '/')) {
    snprintf(local, sizeof local, "./%s", path);
    path = local;
  }
  int rc = check_location(path, err);
  if (rc) return rc;

  td_tokenizer_t *t = calloc(1, sizeof *t);
  if (!t) return td_err_set(err, TD_ENOMEM, "plugin %s: out of memory", path);
  t->magic = TD_TOKENIZER_MAGIC;
  t->options = options ? json_deep_copy(options) : json_object();
  if (!t->options) {
    rc = td_err_set(err, TD_ENOMEM, "plugin %s: out of memory copying options", path);
    goto fail;
  }

  /* RTLD_NOW: an unresolved symbol fails here, not in the middle of a request. */
  dlerror();
  t->dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (!t->dl) {
    const char *e = dlerror();
    rc = td_err_set(err, TD_EPLUGIN, "plugin %s: dlopen failed: %s", path,
                    e ? e : "unknown error");
    goto fail;
  }
  dlerror();
  void *sym = dlsym(t->dl, THEMED_PLUGIN_ENTRY);
  const char *e = dlerror();
  if (e || !sym) {
    /* dlerror() would only repeat the path and the symbol name. */
    rc = td_err_set(err, TD_EPLUGIN,
                    "plugin %s: no exported symbol %s (mark the entry THEMED_EXPORT)", path,
                    THEMED_PLUGIN_ENTRY);
    goto fail;
  }
  themed_tokenizer_get_api_fn get;
  memcpy(&get, &sym, sizeof get); /* POSIX: object pointer -> function pointer */
  t->api = get();
  rc = check_api(path, expect_name, t->api, err);
  if (rc) goto fail;

  char ebuf[256] = "";
  if (t->api->create(t->options, &t->inst, ebuf, sizeof ebuf) != 0) {
    ebuf[sizeof ebuf - 1] = '\0';
    t->inst = NULL; /* destroy() is for successful creates only */
    rc = td_err_set(err, TD_EPLUGIN, "plugin %s: create() failed: %s", path,
                    ebuf[0] ? ebuf : "no message");
    goto fail;
  }
  *out = t;
  return 0;

fail:
  if (t->dl) dlclose(t->dl);
  json_decref(t->options);
  free(t);
  return rc;
}

int td_tokenizer_open(const char *dir, const char *name, const json_t *options,
                      td_tokenizer_t **out, td_err_t *err) {
  if (out) *out = NULL;
  if (!out || !name)
    return td_err_set(err, TD_EINVAL, "td_tokenizer_open: name and out are required");
  if (!valid_name(name))
    return td_err_set(err, TD_EINVAL,
                      "invalid tokenizer name \"%.*s\": expected [a-z0-9_-]+, at most %d characters",
                      (int)td_utf8_prefix(name, 80), name, TD_PLUGIN_NAME_MAX);
  if (!dir) dir = td_plugin_default_dir();
  char path[PATH_MAX];
  if (snprintf(path, sizeof path, "%s/%s.so", dir, name) >= (int)sizeof path)
    return td_err_set(err, TD_EINVAL, "plugin directory path too long: %.*s",
                      (int)td_utf8_prefix(dir, 200), dir);
  return open_file(path, name, options, out, err);
}

int td_tokenizer_open_path(const char *path, const json_t *options, td_tokenizer_t **out,
                           td_err_t *err) {
  if (out) *out = NULL;
  if (!out || !path || !*path)
    return td_err_set(err, TD_EINVAL, "td_tokenizer_open_path: path and out are required");
  return open_file(path, NULL, options, out, err);
}

void td_tokenizer_free(td_tokenizer_t **tp) {
  if (!tp || !*tp) return;
  td_tokenizer_t *t = *tp;
  t->api->destroy(t->inst);
  json_decref(t->options);
  dlclose(t->dl);
  t->magic = 0;
  free(t);
  *tp = NULL;
}

/* ---- running ------------------------------------------------------------ */

/*
 * The callback goes through this shim so the host can tell its own early
 * stop (any non-zero value, possibly a negative TD_E* code) from a plugin
 * failure, and so a plugin that keeps emitting after a stop is ignored.
 */
typedef struct run_shim {
  themed_emit_cb emit;
  void *ud;
  int stop;
} run_shim_t;

static int shim_emit(void *ud, const char *tok, size_t len) {
  run_shim_t *s = ud;
  if (s->stop) return s->stop;
  s->stop = s->emit(s->ud, tok, len);
  return s->stop;
}

int td_tokenizer_run(const td_tokenizer_t *t, const char *text, size_t len,
                     themed_emit_cb emit, void *ud, td_err_t *err) {
  if (!t || t->magic != TD_TOKENIZER_MAGIC || !emit || (!text && len))
    return td_err_set(err, TD_EINVAL, "td_tokenizer_run: bad arguments");
  run_shim_t shim = {emit, ud, 0};
  char ebuf[256] = "";
  int rc = t->api->tokenize(t->inst, text ? text : "", len, shim_emit, &shim, ebuf,
                            sizeof ebuf);
  if (shim.stop) return shim.stop;
  if (rc == 0) return 0;
  ebuf[sizeof ebuf - 1] = '\0';
  return td_err_set(err, TD_EPLUGIN, "tokenizer %s: tokenize() failed (%d): %s",
                    t->api->name, rc, ebuf[0] ? ebuf : "no message");
}

const char *td_tokenizer_name(const td_tokenizer_t *t) { return t->api->name; }

const char *td_tokenizer_version(const td_tokenizer_t *t) {
  return t->api->version ? t->api->version : "";
}

const json_t *td_tokenizer_options(const td_tokenizer_t *t) { return t->options; }
