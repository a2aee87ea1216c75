/* SHA-256 against the FIPS 180-4 / NIST CAVS example vectors, plus block
 * boundary lengths (reference digests from Python's hashlib) and streaming
 * splits: any split of the input into updates must give the same digest. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "sha256.h"

static void hex_of(const void *p, size_t n, char hex[TD_SHA256_HEX_LEN + 1]) {
  td_sha256_t c;
  td_sha256_init(&c);
  td_sha256_update(&c, p, n);
  td_sha256_final_hex(&c, hex);
}

static void expect_digest(const char *msg, const char *want) {
  char hex[TD_SHA256_HEX_LEN + 1];
  hex_of(msg, strlen(msg), hex);
  assert_string_equal(hex, want);
}

static void test_fips_vectors(void **st) {
  (void)st;
  expect_digest("", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  expect_digest("abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  expect_digest("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
                "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  expect_digest("abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklm"
                "nopqklmnopqrlmnopqrsmnopqrstnopqrstu",
                "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
}

/* One million 'a', fed in uneven pieces. */
static void test_million_a(void **st) {
  (void)st;
  char chunk[997];
  memset(chunk, 'a', sizeof chunk);
  td_sha256_t c;
  td_sha256_init(&c);
  size_t left = 1000000;
  while (left) {
    size_t n = left < sizeof chunk ? left : sizeof chunk;
    td_sha256_update(&c, chunk, n);
    left -= n;
  }
  char hex[TD_SHA256_HEX_LEN + 1];
  td_sha256_final_hex(&c, hex);
  assert_string_equal(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

/* Padding edge cases: 55 bytes fit the length in one block, 56 do not. */
static void test_block_boundaries(void **st) {
  (void)st;
  static const struct {
    size_t n;
    const char *hex;
  } v[] = {
      {55, "9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318"},
      {56, "b35439a4ac6f0948b6d6f9e3c6af0f5f590ce20f1bde7090ef7970686ec6738a"},
      {57, "f13b2d724659eb3bf47f2dd6af1accc87b81f09f59f2b75e5c0bed6589dfe8c6"},
      {63, "7d3e74a05d7db15bce4ad9ec0658ea98e3f06eeecf16b4c6fff2da457ddc2f34"},
      {64, "ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb"},
      {65, "635361c48bb9eab14198e76ea8ab7f1a41685d6ad62aa9146d301d4f17eb0ae0"},
      {119, "31eba51c313a5c08226adf18d4a359cfdfd8d2e816b13f4af952f7ea6584dcfb"},
      {120, "2f3d335432c70b580af0e8e1b3674a7c020d683aa5f73aaaedfdc55af904c21c"},
      {128, "6836cf13bac400e9105071cd6af47084dfacad4e5e302c94bfed24e013afb73e"},
  };
  char buf[128], hex[TD_SHA256_HEX_LEN + 1];
  memset(buf, 'a', sizeof buf);
  for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
    hex_of(buf, v[i].n, hex);
    assert_string_equal(hex, v[i].hex);
  }
}

/* Every two-way split, byte-at-a-time, and the one-shot helper agree. */
static void test_streaming_splits(void **st) {
  (void)st;
  unsigned char data[1024];
  for (size_t i = 0; i < sizeof data; i++) data[i] = (unsigned char)i;
  const char *want = "785b0751fc2c53dc14a4ce3d800e69ef9ce1009eb327ccf458afe09c242c26c9";
  unsigned char d[TD_SHA256_LEN];
  char hex[TD_SHA256_HEX_LEN + 1];
  td_sha256(data, sizeof data, d);
  td_sha256_hex(d, hex);
  assert_string_equal(hex, want);
  for (size_t cut = 0; cut <= sizeof data; cut += 7) {
    td_sha256_t c;
    td_sha256_init(&c);
    td_sha256_update(&c, data, cut);
    td_sha256_update(&c, NULL, 0);
    td_sha256_update(&c, data + cut, sizeof data - cut);
    td_sha256_final_hex(&c, hex);
    assert_string_equal(hex, want);
  }
  td_sha256_t c;
  td_sha256_init(&c);
  for (size_t i = 0; i < sizeof data; i++) td_sha256_update(&c, data + i, 1);
  td_sha256_final_hex(&c, hex);
  assert_string_equal(hex, want);
  /* Re-initialized state is reusable. */
  td_sha256_init(&c);
  td_sha256_update(&c, "abc", 3);
  td_sha256_final_hex(&c, hex);
  assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_fips_vectors),
      cmocka_unit_test(test_million_a),
      cmocka_unit_test(test_block_boundaries),
      cmocka_unit_test(test_streaming_splits),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
