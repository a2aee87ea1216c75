#include "jalloc.h"

#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>

/* Under ASan each arena value carries its size in a 16-byte header, so that
 * its free can poison all of it: a use after a free inside the scope is
 * then reported as it would be with malloc, and the scope's end poisons the
 * whole arena for values that escaped it. */
#if defined(__SANITIZE_ADDRESS__) /* gcc */
#define TD_ASAN 1
#elif defined(__has_feature) /* clang, which builds the fuzzers */
#if __has_feature(address_sanitizer)
#define TD_ASAN 1
#endif
#endif
#ifdef TD_ASAN
#include <sanitizer/asan_interface.h>
#define POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#define HDR 16u
#else
#define POISON(p, n) ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#define HDR 0u
#endif

/* 64 KiB holds the tree of an answer of ~50 passages; a larger one spills
 * to malloc for the rest, which is what it cost before. */
#define ARENA_BYTES (64u * 1024u)

typedef struct arena {
  char *base; /* ARENA_BYTES, 16-byte aligned; owned by the thread */
  size_t top;
  int open;
  size_t count; /* allocations served, for tests */
} arena_t;

static int g_installed; /* set before any other thread starts */
static _Thread_local arena_t t_arena;

static void *ja_malloc(size_t n) {
  arena_t *a = &t_arena;
  if (a->open) {
    size_t need = ((n + 15) & ~(size_t)15) + HDR;
    if (need > n && need <= ARENA_BYTES - a->top) {
      char *p = a->base + a->top + HDR;
      a->top += need;
      a->count++;
#if HDR
      UNPOISON(p - HDR, sizeof n);
      *(size_t *)(void *)(p - HDR) = n;
      POISON(p - HDR, sizeof n);
#endif
      UNPOISON(p, n);
      return p;
    }
  }
  return malloc(n);
}

/* A pointer into this thread's arena is taken back by the scope's end; any
 * other came from malloc (outside a scope, or spilled). */
static void ja_free(void *p) {
  arena_t *a = &t_arena;
  uintptr_t u = (uintptr_t)p, b = (uintptr_t)a->base;
  if (a->base && u >= b && u < b + ARENA_BYTES) {
#if HDR
    char *q = p;
    size_t n;
    UNPOISON(q - HDR, sizeof n);
    n = *(size_t *)(void *)(q - HDR);
    POISON(q - HDR, sizeof n);
    POISON(q, n);
#endif
    return;
  }
  free(p);
}

void td_jalloc_install(void) {
  json_set_alloc_funcs(ja_malloc, ja_free);
  g_installed = 1;
}

int td_jalloc_scope_begin(void) {
  arena_t *a = &t_arena;
  if (!g_installed || a->open) return 0;
  if (!a->base) {
    if (!(a->base = aligned_alloc(16, ARENA_BYTES))) return 0;
    POISON(a->base, ARENA_BYTES);
  }
  a->top = 0;
  a->open = 1;
  return 1;
}

void td_jalloc_scope_end(int opened) {
  arena_t *a = &t_arena;
  if (!opened) return;
  a->open = 0;
  POISON(a->base, a->top);
  a->top = 0;
}

void td_jalloc_thread_free(void) {
  arena_t *a = &t_arena;
  if (!a->base) return;
  UNPOISON(a->base, ARENA_BYTES);
  free(a->base);
  a->base = NULL;
  a->top = 0;
  a->open = 0;
}

size_t td_jalloc_thread_count(void) { return t_arena.count; }
