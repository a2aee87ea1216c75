/*
 * Answers without a malloc per passage: jansson's allocations for the tree
 * of one answer come from a per-thread arena while it is built, dumped and
 * dropped (td_result_write), instead of 64 malloc/free pairs per
 * one-passage answer (bench/NOTES.md, "An arena for the answer's tree").
 *
 * td_jalloc_install() routes all of jansson's allocations through here,
 * process-wide; outside a scope they are plain malloc/free. Within a scope
 * (this thread, between td_jalloc_scope_begin and _end) they are bump
 * allocations from the thread's arena, and freeing them is a no-op: the
 * scope's end takes them all back at once. So every jansson value made in a
 * scope must be gone by its end, and none may cross to another thread; nor
 * may memory jansson hands out (json_dumps' string): dump into a buffer of
 * one's own (json_dumpb). Values made outside a scope may be used, kept and
 * freed inside one.
 */
#ifndef TD_JALLOC_H
#define TD_JALLOC_H

#include <stddef.h>

/* Call once, before any thread uses jansson (first thing in main). */
void td_jalloc_install(void);

/* Opens this thread's scope; returns 1, or 0 when nothing changes (not
 * installed, a scope already open, or no memory for the arena): pass that
 * to td_jalloc_scope_end. */
int td_jalloc_scope_begin(void);
void td_jalloc_scope_end(int opened);

/* Frees this thread's arena (at thread exit; no scope may be open). */
void td_jalloc_thread_free(void);

/* For tests: how many allocations this thread's arena has served. */
size_t td_jalloc_thread_count(void);

#endif
