/*
 * themectl vectorize: a bundle's own feature vectors in libsvm's text
 * format, so that other tools (svm-predict, liblinear-train/-predict) can be
 * run on exactly the vectors the bundle classifies (bench/run.sh compares
 * them side by side with themectl).
 *
 *   themectl vectorize --model DIR --data FILE.jsonl --out FILE.svm [--theme NAME]
 *
 * The rows are featurized article by article as `themectl eval` and
 * td_classify featurize them: passages given as they are, headings marked
 * and linked (so the heading-context block is there), tf-idf with the
 * bundle's idf, L2-normalized. Indexes are written 1-based, as libsvm
 * wants (index i is bucket i - 1). Labels: with --theme NAME, +1 for rows
 * carrying the theme and -1 for the others (a binary problem, as each SVM
 * in the bundle); without it, 1 + the position of the row's first theme in
 * the bundle's theme list, or 0 for `other`.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "common.h"
#include "corpus.h"
#include "features.h"
#include "model.h"
#include "text.h"
#include "themectl.h"

int themectl_vectorize_main(int argc, char **argv);

static const char usage[] =
    "usage: themectl vectorize --model DIR --data FILE.jsonl --out FILE.svm [options]\n"
    "  Writes the bundle's feature vectors of labelled passages in libsvm's format\n"
    "  (\"label index:value ...\", indexes 1-based), one line per passage, in file order.\n"
    "  --model DIR           model bundle\n"
    "  --data FILE           labelled passages {\"id\",\"doc\",\"text\",\"themes\"}\n"
    "  --out FILE            output file (\"-\": stdout)\n"
    "  --theme NAME          labels +1/-1 for NAME; default: 1 + index of the first theme,\n"
    "                        0 for other\n"
    "  --plugins DIR         plugin directory\n";

int themectl_vectorize_main(int argc, char **argv) {
  enum { O_MODEL = 256, O_DATA, O_OUT, O_THEME, O_PLUGINS };
  static const struct option lo[] = {{"model", required_argument, 0, O_MODEL},
                                     {"data", required_argument, 0, O_DATA},
                                     {"out", required_argument, 0, O_OUT},
                                     {"theme", required_argument, 0, O_THEME},
                                     {"plugins", required_argument, 0, O_PLUGINS},
                                     {"help", no_argument, 0, 'h'},
                                     {0, 0, 0, 0}};
  const char *model = NULL, *data = NULL, *outp = NULL, *theme = NULL, *plugins = NULL;
  int ch;
  while ((ch = getopt_long(argc, argv, ":h", lo, NULL)) != -1) {
    switch (ch) {
    case 'h': fputs(usage, stdout); return 0;
    case O_MODEL: model = optarg; break;
    case O_DATA: data = optarg; break;
    case O_OUT: outp = optarg; break;
    case O_THEME: theme = optarg; break;
    case O_PLUGINS: plugins = optarg; break;
    default:
      themectl_errorf("vectorize: %s (see 'themectl vectorize --help')",
                      ch == ':' ? "an option needs a value" : "unknown option");
      return THEMECTL_EXIT_USAGE;
    }
  }
  if (optind < argc || !model || !data || !outp) {
    themectl_errorf("vectorize: --model, --data and --out are required (see 'themectl vectorize "
                    "--help')");
    return THEMECTL_EXIT_USAGE;
  }
  int rc = THEMECTL_EXIT_FAIL;
  td_err_t err;
  td_err_clear(&err);
  td_model_t *m = NULL;
  td_corpus_t c;
  td_corpus_init(&c);
  td_fscratch_t *fs = NULL;
  td_span_t *spans = NULL;
  td_passage_t *ps = NULL;
  td_fvec_t *vecs = NULL;
  size_t maxd = 0;
  FILE *out = NULL;
  if (td_model_load(model, plugins, &m, &err)) {
    themectl_errorf("%s", err.msg);
    goto done;
  }
  long tk = -1;
  if (theme && (tk = td_model_theme_index(m, theme)) < 0) {
    themectl_errorf("vectorize: --theme %s: the bundle has no such theme", theme);
    rc = THEMECTL_EXIT_USAGE;
    goto done;
  }
  /* The bundle's theme list is the corpus's: an unknown label is an error. */
  if (!(c.themes = calloc(m->ntheme, sizeof *c.themes))) goto oom;
  for (c.ntheme = 0; c.ntheme < m->ntheme; c.ntheme++)
    if (!(c.themes[c.ntheme] = strdup(m->themes[c.ntheme].name))) goto oom;
  if (td_corpus_load(&c, data, m->multiclass, 1, &err) || td_corpus_finish(&c, &err)) {
    themectl_errorf("%s", err.msg);
    goto done;
  }
  for (size_t d = 0; d < c.ndocs; d++)
    if (c.doc_start[d + 1] - c.doc_start[d] > maxd) maxd = c.doc_start[d + 1] - c.doc_start[d];
  spans = calloc(maxd ? maxd : 1, sizeof *spans);
  ps = calloc(maxd ? maxd : 1, sizeof *ps);
  vecs = calloc(maxd ? maxd : 1, sizeof *vecs);
  if (!spans || !ps || !vecs || !(fs = td_fscratch_new())) goto oom;
  out = strcmp(outp, "-") ? fopen(outp, "w") : stdout;
  if (!out) {
    themectl_errorf("%s: %s", outp, strerror(errno));
    goto done;
  }
  long other = m->multiclass ? td_model_theme_index(m, "other") : -1;
  for (size_t d = 0; d < c.ndocs; d++) {
    size_t b = c.doc_start[d], n = c.doc_start[d + 1] - b;
    /* as td_classify does with passages given one by one */
    for (size_t j = 0; j < n; j++) {
      spans[j].s = c.items[b + j].text;
      spans[j].len = c.items[b + j].len;
      memset(&ps[j], 0, sizeof ps[j]);
      ps[j].is_heading = td_text_is_heading(spans[j].s, spans[j].len, m->split.heading_chars);
      ps[j].context = -1;
    }
    td_text_link_headings(ps, n);
    if (td_features_doc(&m->feat, m->tok, m->feat.use_idf ? m->idf : NULL, spans, ps, n, fs, vecs,
                        &err)) {
      themectl_errorf("%s: doc \"%s\": %s", data, c.items[b].doc, err.msg);
      goto done;
    }
    for (size_t j = 0; j < n; j++) {
      uint64_t lab = c.items[b + j].labels;
      long y;
      if (tk >= 0) {
        y = (lab >> tk) & 1 ? 1 : -1;
      } else {
        y = 0;
        for (size_t k = 0; k < m->ntheme; k++)
          if ((lab >> k) & 1) {
            y = (long)k + 1;
            break;
          }
        if ((long)y - 1 == other) y = 0;
      }
      fprintf(out, "%ld", y);
      for (size_t q = 0; q < vecs[j].count; q++)
        fprintf(out, " %u:%.8g", vecs[j].items[q].index + 1, vecs[j].items[q].value);
      fputc('\n', out);
    }
  }
  if (ferror(out) || (out != stdout ? fclose(out) : fflush(out))) {
    out = NULL;
    themectl_errorf("%s: write failed", outp);
    goto done;
  }
  out = NULL;
  rc = 0;
  goto done;
oom:
  themectl_errorf("vectorize: out of memory");
done:
  if (out && out != stdout) fclose(out);
  for (size_t j = 0; vecs && j < maxd; j++) td_fvec_free(&vecs[j]);
  free(vecs);
  free(spans);
  free(ps);
  td_fscratch_free(&fs);
  td_corpus_free(&c);
  td_model_unref(&m);
  return rc;
}
