/* The answer arena (daemon/jalloc.c): within a scope jansson's allocations
 * come from the thread's arena and go back with the scope; outside it, and
 * past the arena's size, they are malloc's; values made outside a scope can
 * be freed inside one; each thread has its own arena; and an answer dumped
 * from an arena tree is the same text as from a malloc'd one. Under ASan
 * (make test runs this under it too) freed and escaped arena values are
 * poisoned, so their use is reported. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <jansson.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "classify.h"
#include "jalloc.h"

#if defined(__SANITIZE_ADDRESS__)
#define TD_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TD_ASAN 1
#endif
#endif
#ifdef TD_ASAN
#include <sanitizer/asan_interface.h>
#endif

/* A tree shaped like an answer: objects, arrays, strings, integers, reals. */
static json_t *answer(int passages) {
  json_t *ps = json_array();
  for (int i = 0; i < passages; i++)
    json_array_append_new(ps, json_pack("{s:i, s:i, s:b, s:[{s:s, s:f}]}", "index", i, "end", 10 * i,
                                        "heading", i % 2, "themes", "theme", "industry", "score",
                                        0.25 * i));
  return json_pack("{s:s, s:o, s:{s:i}}", "model", "m@1", "passages", ps, "summary", "passages",
                   passages);
}

static char *dump(json_t *j) {
  char *s = json_dumps(j, TD_JSON_DUMP_FLAGS);
  assert_non_null(s);
  return s;
}

/* Runs first: until td_jalloc_install nothing changes. */
static void test_scope_is_a_no_op_until_installed(void **st) {
  (void)st;
  assert_int_equal(td_jalloc_scope_begin(), 0);
  size_t n0 = td_jalloc_thread_count();
  json_t *j = answer(3);
  json_decref(j);
  assert_int_equal(td_jalloc_thread_count(), n0);
  td_jalloc_scope_end(0);
  td_jalloc_install();
}

static void test_scope_serves_the_tree_and_the_dump_is_the_same(void **st) {
  (void)st;
  json_t *plain = answer(5);
  char *want = dump(plain);
  json_decref(plain);

  size_t n0 = td_jalloc_thread_count();
  int scope = td_jalloc_scope_begin();
  assert_int_equal(scope, 1);
  json_t *j = answer(5);
  assert_true(td_jalloc_thread_count() - n0 > 20); /* objects, keys, strings, numbers */
  char *got = dump(j); /* the dump's buffer too: freed below, before the scope ends */
  assert_string_equal(got, want);
  free(want);
  json_free_t f;
  json_get_alloc_funcs(NULL, &f);
  f(got);
  json_decref(j);
  td_jalloc_scope_end(scope);

  /* After the scope: plain malloc again, and the arena is reused from its start. */
  size_t n1 = td_jalloc_thread_count();
  json_decref(answer(2));
  assert_int_equal(td_jalloc_thread_count(), n1);
  scope = td_jalloc_scope_begin();
  json_decref(answer(2));
  assert_true(td_jalloc_thread_count() > n1);
  td_jalloc_scope_end(scope);
}

static void test_values_from_outside_live_through_a_scope(void **st) {
  (void)st;
  json_t *id = json_string("outside");
  json_t *gone = json_pack("{s:s}", "k", "freed inside the scope");
  int scope = td_jalloc_scope_begin();
  json_t *res = json_object();
  json_object_set(res, "id", id); /* an outside value held by an arena tree */
  json_decref(gone);              /* an outside value freed inside: malloc's free */
  json_decref(res);
  td_jalloc_scope_end(scope);
  assert_string_equal(json_string_value(id), "outside");
  json_decref(id);
}

static void test_large_values_spill_to_malloc(void **st) {
  (void)st;
  size_t big = 200 * 1024; /* past the 64 KiB arena */
  char *text = malloc(big + 1);
  assert_non_null(text);
  memset(text, 'x', big);
  text[big] = '\0';
  int scope = td_jalloc_scope_begin();
  json_t *arr = json_array();
  for (int i = 0; i < 3; i++) json_array_append_new(arr, json_string(text));
  for (int i = 0; i < 2000; i++) json_array_append_new(arr, json_integer(i)); /* fills the arena */
  assert_int_equal(json_array_size(arr), 2003);
  assert_int_equal(strlen(json_string_value(json_array_get(arr, 2))), big);
  assert_int_equal(json_integer_value(json_array_get(arr, 2002)), 1999);
  json_decref(arr);
  td_jalloc_scope_end(scope);
  free(text);
}

static void test_a_scope_inside_a_scope_does_not_close_it(void **st) {
  (void)st;
  int outer = td_jalloc_scope_begin();
  assert_int_equal(outer, 1);
  int inner = td_jalloc_scope_begin();
  assert_int_equal(inner, 0);
  td_jalloc_scope_end(inner);
  size_t n = td_jalloc_thread_count();
  json_decref(json_string("still in the outer scope"));
  assert_true(td_jalloc_thread_count() > n);
  td_jalloc_scope_end(outer);
}

/* Under ASan a freed arena value, and any left at the scope's end, are
 * poisoned: a use of either is reported like a use after free. */
static void test_freed_and_escaped_values_are_poisoned_under_asan(void **st) {
  (void)st;
#ifdef TD_ASAN
  int scope = td_jalloc_scope_begin();
  json_t *freed = json_integer(5), *kept = json_string("escapes the scope");
  assert_false(__asan_address_is_poisoned(freed));
  json_decref(freed);
  assert_true(__asan_address_is_poisoned(freed));
  assert_false(__asan_address_is_poisoned(kept));
  td_jalloc_scope_end(scope);
  assert_true(__asan_address_is_poisoned(kept));
#else
  skip();
#endif
}

static void *other_thread(void *arg) {
  char **out = arg;
  int scope = td_jalloc_scope_begin();
  json_t *j = answer(4);
  /* Into a buffer of its own, as td_result_write does: json_dumps' string
   * would be made in the scope, and must not outlive it. */
  *out = calloc(1, 4096);
  if (*out) json_dumpb(j, *out, 4095, TD_JSON_DUMP_FLAGS);
  json_decref(j);
  td_jalloc_scope_end(scope);
  size_t served = td_jalloc_thread_count();
  td_jalloc_thread_free();
  return (void *)served;
}

static void test_each_thread_has_its_own_arena(void **st) {
  (void)st;
  size_t here = td_jalloc_thread_count();
  char *text = NULL;
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, other_thread, &text), 0);
  void *served;
  assert_int_equal(pthread_join(t, &served), 0);
  assert_true((size_t)served > 20);
  assert_int_equal(td_jalloc_thread_count(), here); /* none of it counted here */
  assert_non_null(text);
  json_t *plain = answer(4);
  char *want = dump(plain);
  assert_string_equal(text, want);
  json_decref(plain);
  free(want);
  free(text);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_scope_is_a_no_op_until_installed),
      cmocka_unit_test(test_scope_serves_the_tree_and_the_dump_is_the_same),
      cmocka_unit_test(test_values_from_outside_live_through_a_scope),
      cmocka_unit_test(test_large_values_spill_to_malloc),
      cmocka_unit_test(test_a_scope_inside_a_scope_does_not_close_it),
      cmocka_unit_test(test_freed_and_escaped_values_are_poisoned_under_asan),
      cmocka_unit_test(test_each_thread_has_its_own_arena),
  };
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  td_jalloc_thread_free();
  return rc;
}
