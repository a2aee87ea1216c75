/* wire: the operation table (what JSON Lines accepts, and the list the
 * unknown_op error prints from it) and error objects whose message a
 * fixed-size buffer cut inside a UTF-8 character.
 *
 * wire.c belongs to the service, not the engine library the unit tests
 * link, so it is compiled into this test directly. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "../../daemon/wire.c"

/* Every op the list names is one td_op_parse accepts, and the other way
 * round: the message is built from the dispatcher's own table. */
static void test_jsonl_names_match_parse(void **st) {
  (void)st;
  char buf[256];
  size_t n = td_op_jsonl_names(buf, sizeof buf);
  assert_int_equal(n, strlen(buf));
  assert_string_equal(buf, "classify, health, ready, model, stats, reload");
  int listed = 0;
  for (char *save = NULL, *t = strtok_r(buf, ", ", &save); t; t = strtok_r(NULL, ", ", &save)) {
    assert_int_not_equal(td_op_parse(t), TD_OP_UNKNOWN);
    listed++;
  }
  int accepted = 0;
  for (int i = 0; i < TD_OP_COUNT; i++)
    if (td_op_parse(td_op_name((td_op_t)i)) != TD_OP_UNKNOWN) accepted++;
  assert_int_equal(listed, accepted);
}

static void test_parse(void **st) {
  (void)st;
  assert_int_equal(td_op_parse("ready"), TD_OP_READY);
  assert_int_equal(td_op_parse("reload"), TD_OP_RELOAD);
  assert_int_equal(td_op_parse("metrics"), TD_OP_UNKNOWN); /* HTTP only */
  assert_int_equal(td_op_parse("unknown"), TD_OP_UNKNOWN);
  assert_int_equal(td_op_parse("Health"), TD_OP_UNKNOWN);
  assert_string_equal(td_op_name(TD_OP_METRICS), "metrics");
}

/* snprintf-like: cut to the buffer, NUL-terminated, the full length back. */
static void test_jsonl_names_small_buffer(void **st) {
  (void)st;
  char full[256], small[10];
  size_t n = td_op_jsonl_names(full, sizeof full);
  assert_int_equal(td_op_jsonl_names(small, sizeof small), n);
  assert_int_equal(strlen(small), sizeof small - 1);
  assert_memory_equal(small, full, sizeof small - 1);
  assert_int_equal(td_op_jsonl_names(NULL, 0), n);
}

static const char *message_of(json_t *e) {
  return json_string_value(json_object_get(json_object_get(e, "error"), "message"));
}

static void test_error_message_cut_inside_a_character(void **st) {
  (void)st;
  /* "ab中" cut one and two bytes into 中: the whole characters are kept */
  json_t *e = td_wire_error(NULL, TD_EC_FORBIDDEN, "ab\xe4\xb8");
  assert_string_equal(message_of(e), "ab");
  json_decref(e);
  e = td_wire_error(NULL, TD_EC_FORBIDDEN, "ab\xe4");
  assert_string_equal(message_of(e), "ab");
  json_decref(e);
  e = td_wire_error(NULL, TD_EC_FORBIDDEN, "ab\xf0\x9f\x98");
  assert_string_equal(message_of(e), "ab");
  json_decref(e);
  e = td_wire_error(NULL, TD_EC_FORBIDDEN, "ab中");
  assert_string_equal(message_of(e), "ab中");
  json_decref(e);
  /* not a cut, invalid inside: the placeholder, the error still goes out */
  e = td_wire_error(NULL, TD_EC_FORBIDDEN, "a\xff" "bc");
  assert_string_equal(message_of(e), "(message not valid UTF-8)");
  json_decref(e);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_jsonl_names_match_parse),
      cmocka_unit_test(test_parse),
      cmocka_unit_test(test_jsonl_names_small_buffer),
      cmocka_unit_test(test_error_message_cut_inside_a_character),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
