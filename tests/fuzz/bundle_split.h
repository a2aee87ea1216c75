/*
 * A model bundle packed into one fuzzer input: the files, in this order,
 * separated by a line holding "%%":
 *
 *   manifest.json \n%%\n idf.tsv \n%%\n svm/0.model \n%%\n svm/1.model ...
 *
 * (at most BUNDLE_MAX_SVM model files; missing parts are missing files).
 * tests/fuzz/make-seeds.py writes a real bundle this way, its manifest
 * pointing at svm/<k>.model. fuzz_bundle loads the unpacked directory;
 * the server targets (fuzz_jsonl, fuzz_http, fuzz_loops) unpack the seed once
 * to have a model to serve.
 */
#ifndef TD_FUZZ_BUNDLE_SPLIT_H
#define TD_FUZZ_BUNDLE_SPLIT_H

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define BUNDLE_SEP "\n%%\n"
#define BUNDLE_MAX_SVM 8

static inline int bundle_put(const char *dir, const char *name, const uint8_t *p, size_t n) {
  char path[PATH_MAX + 64];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return -1;
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      close(fd);
      return -1;
    }
    p += w;
    n -= (size_t)w;
  }
  return close(fd);
}

/* Unpacks data into dir (created if needed; files of an earlier input are
 * removed first). Returns 0, or -1 if a file cannot be written. */
static inline int bundle_write(const char *dir, const uint8_t *data, size_t size) {
  char path[PATH_MAX + 64], name[32];
  mkdir(dir, 0755);
  snprintf(path, sizeof path, "%s/svm", dir);
  mkdir(path, 0755);
  static const char *const fixed[] = {"manifest.json", "idf.tsv"};
  for (int i = 0; i < 2 + BUNDLE_MAX_SVM; i++) {
    if (i < 2) snprintf(name, sizeof name, "%s", fixed[i]);
    else snprintf(name, sizeof name, "svm/%d.model", i - 2);
    snprintf(path, sizeof path, "%s/%s", dir, name);
    unlink(path);
  }
  const uint8_t *p = data, *end = data + size;
  for (int i = 0; i < 2 + BUNDLE_MAX_SVM && p <= end; i++) {
    const uint8_t *sep = memmem(p, (size_t)(end - p), BUNDLE_SEP, sizeof BUNDLE_SEP - 1);
    const uint8_t *stop = sep ? sep : end;
    if (i < 2) snprintf(name, sizeof name, "%s", fixed[i]);
    else snprintf(name, sizeof name, "svm/%d.model", i - 2);
    if (bundle_put(dir, name, p, (size_t)(stop - p))) return -1;
    if (!sep) break;
    p = sep + sizeof BUNDLE_SEP - 1;
  }
  return 0;
}

/* Reads a whole file (the packed seed bundle). */
static inline uint8_t *bundle_read(const char *path, size_t *size) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  uint8_t *buf = NULL;
  size_t cap = 0, n = 0, r;
  do {
    if (n == cap) {
      uint8_t *nb = realloc(buf, cap = cap ? cap * 2 : 65536);
      if (!nb) {
        free(buf);
        fclose(f);
        return NULL;
      }
      buf = nb;
    }
    r = fread(buf + n, 1, cap - n, f);
    n += r;
  } while (r > 0);
  fclose(f);
  *size = n;
  return buf;
}

/* Keeps every tokenizer plugin in plugin_dir mapped for the whole process:
 * the loader dlopen()s and dlclose()s them per model, and an instrumented
 * .so must not be unmapped while libFuzzer holds its coverage counters. */
static inline void bundle_pin_plugins(const char *plugin_dir) {
  DIR *d = opendir(plugin_dir);
  if (!d) {
    fprintf(stderr, "fuzz: cannot open plugin directory %s\n", plugin_dir);
    return;
  }
  char path[PATH_MAX + 64];
  for (struct dirent *e; (e = readdir(d));) {
    size_t n = strlen(e->d_name);
    if (n < 4 || strcmp(e->d_name + n - 3, ".so")) continue;
    snprintf(path, sizeof path, "%s/%s", plugin_dir, e->d_name);
    if (!dlopen(path, RTLD_NOW | RTLD_NODELETE))
      fprintf(stderr, "fuzz: cannot preload %s: %s\n", path, dlerror());
  }
  closedir(d);
}

#endif
