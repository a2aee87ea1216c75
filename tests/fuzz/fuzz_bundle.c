/*
 * libFuzzer target: the model bundle loader (td_model_load_flags, both the
 * full load and the daemon's TD_MODEL_LOAD_SERVE).
 *
 * The input is unpacked into manifest.json, idf.tsv and svm/<k>.model in a
 * temp directory (bundle_split.h); the seed is a real bundle trained from
 * tests/fixtures, so mutations reach every validation step, the libsvm
 * pre-check, the collapse into primal weights and the tokenizer options.
 * A bundle the loader accepts must then classify a fixed document: every
 * score a number in [0,1], and the response object serializable.
 */
#include <dlfcn.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bundle_split.h"
#include "classify.h"
#include "fuzz_common.h"
#include "model.h"

static char g_dir[PATH_MAX];
static const char *g_plugins;
static td_scratch_t *g_scratch;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  char tmpl[] = "/tmp/themed-fuzz-bundle-XXXXXX";
  if (!mkdtemp(tmpl)) {
    perror("mkdtemp");
    exit(1);
  }
  fuzz_remove_at_exit(tmpl);
  snprintf(g_dir, sizeof g_dir, "%s/b", tmpl);
  g_plugins = fuzz_path("THEMED_PLUGIN_DIR", "build/fuzz/plugins");
  bundle_pin_plugins(g_plugins);
  g_scratch = td_scratch_new();
  return 0;
}

static void classify_with(const td_model_t *m) {
  static const char text[] = "抓队伍建设\n发展集体经济，壮大村级产业。\n  \nHello world 123。";
  td_doc_t d = {.id = "x", .text = text, .len = sizeof text - 1};
  td_classify_opts_t o;
  td_classify_opts_default(&o);
  o.explain = 1;
  o.include_text = 1;
  td_result_t r;
  td_result_init(&r);
  td_err_t err = {0};
  int rc = td_classify(m, &d, &o, g_scratch, &r, &err);
  if (rc) fprintf(stderr, "classify: %s\n", err.msg);
  FUZZ_CHECK(rc == 0 || rc == TD_ENOMEM, "an accepted bundle cannot classify");
  if (rc == 0) {
    for (size_t i = 0; i < r.passages.count * m->ntheme; i++) {
      if (!(r.scores[i] >= 0 && r.scores[i] <= 1))
        fprintf(stderr, "passage %zu theme %zu: decision %g, score %g\n", i / m->ntheme,
                i % m->ntheme, r.dec[i], r.scores[i]);
      FUZZ_CHECK(r.scores[i] >= 0 && r.scores[i] <= 1, "score outside [0,1] (or NaN)");
    }
    json_t *j = td_result_json(m, &d, &o, &r, g_scratch);
    FUZZ_CHECK(j != NULL, "td_result_json failed");
    char *s = json_dumps(j, TD_JSON_DUMP_FLAGS);
    FUZZ_CHECK(s != NULL, "result does not serialize");
    free(s);
    json_decref(j);
  }
  td_result_free(&r);
}

/* Loads the bundle one way; returns whether it was accepted (and classifies
 * with it if so). */
static int load_and_classify(int flags) {
  td_model_t *m = NULL;
  td_err_t err = {0};
  int rc = td_model_load_flags(g_dir, g_plugins, flags, &m, &err);
  if (rc) {
    FUZZ_CHECK(m == NULL, "a failed load returned a model");
    FUZZ_CHECK(err.msg[0] != '\0', "a failed load gave no reason");
    return 0;
  }
  FUZZ_CHECK(m && m->ntheme > 0 && m->label && m->tok, "an accepted model is incomplete");
  classify_with(m);
  td_model_unref(&m);
  return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (bundle_write(g_dir, data, size)) return 0;
  /* The full load (themectl, training) and the daemon's (support vectors
   * collapsed and freed as each file is parsed) must agree on what they
   * accept, and both must then classify. */
  int full = load_and_classify(0);
  int serve = load_and_classify(TD_MODEL_LOAD_SERVE);
  FUZZ_CHECK(full == serve, "the serving load and the full load disagree on a bundle");
  return 0;
}
