/* test_outcomes.c -- the outcome log's lines: valid JSON whatever the key
 * or body holds, one line each, and a file that cannot be written. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "outcomes.h"

static char *slurp(const char *path)
{
    FILE *fp = fopen(path, "rb");
    char *out = calloc(1, 1 << 20);
    size_t n;

    assert_non_null(fp);
    assert_non_null(out);
    n = fread(out, 1, (1 << 20) - 1, fp);
    out[n] = '\0';
    fclose(fp);
    return out;
}

/* Writes lines to a fresh file; returns its text (free it). */
static char *written(const struct outcome *lines, size_t n, int bodies)
{
    char path[] = "/tmp/test_outcomes.XXXXXX";
    int fd = mkstemp(path);
    struct sl_error err;
    outcomes_t *o;
    char *text;

    assert_true(fd >= 0);
    close(fd);
    o = outcomes_open(path, bodies, &err);
    assert_non_null(o);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(outcomes_write(o, &lines[i]), 0);
    }
    assert_int_equal(outcomes_flush(o, &err), 0);
    assert_int_equal(outcomes_written(o), n);
    outcomes_close(o);
    text = slurp(path);
    unlink(path);
    return text;
}

static json_t *line_at(const char *text, size_t index)
{
    const char *at = text;
    json_error_t jerr;

    for (size_t i = 0; i < index; i++) {
        at = strchr(at, '\n');
        assert_non_null(at);
        at++;
    }
    const char *end = strchr(at, '\n');
    assert_non_null(end);
    json_t *v = json_loadb(at, (size_t)(end - at), JSON_ALLOW_NUL, &jerr);
    if (v == NULL) {
        fail_msg("line %zu is not JSON: %s: %.*s", index, jerr.text,
                 (int)(end - at), at);
    }
    return v;
}

static void test_every_field(void **state)
{
    (void)state;
    const char body[] = "{\"order_id\": \"o-1\",\n \"total\": 42}";
    struct outcome l = {
        .wall_ms = 1764936000123ULL, .pipeline = "orders", .sink = "crm",
        .key = "o-1", .key_len = 3, .kind = OUTCOME_DELIVERED,
        .method = "POST", .path = "/orders?v=1", .status = 200,
        .attempts = 2, .body = body, .body_len = sizeof(body) - 1,
        .topic = "orders", .partition = 3, .offset = 1234,
    };
    char *text = written(&l, 1, 1);
    json_t *v = line_at(text, 0);
    char hex[65];

    outcomes_sha256_hex(body, sizeof(body) - 1, hex);
    assert_int_equal(json_integer_value(json_object_get(v, "v")), 1);
    assert_string_equal(json_string_value(json_object_get(v, "ts")),
                        "2025-12-05T12:00:00.123Z");
    assert_string_equal(json_string_value(json_object_get(v, "sink")), "crm");
    assert_string_equal(json_string_value(json_object_get(v, "key")), "o-1");
    assert_string_equal(json_string_value(json_object_get(v, "outcome")),
                        "delivered");
    assert_string_equal(json_string_value(json_object_get(v, "path")),
                        "/orders?v=1");
    assert_int_equal(json_integer_value(json_object_get(v, "status")), 200);
    assert_int_equal(json_integer_value(json_object_get(v, "attempts")), 2);
    assert_string_equal(json_string_value(json_object_get(v, "body_sha256")),
                        hex);
    /* The body as sent, its line break a space: one line per outcome. */
    json_t *b = json_object_get(v, "body");
    assert_int_equal(json_integer_value(json_object_get(b, "total")), 42);
    json_t *src = json_object_get(v, "source");
    assert_int_equal(json_integer_value(json_object_get(src, "offset")),
                     1234);
    assert_int_equal(json_integer_value(json_object_get(src, "partition")),
                     3);
    assert_null(json_object_get(v, "error"));
    assert_int_equal((int)strlen(text), (int)(strchr(text, '\n') - text + 1));
    json_decref(v);
    free(text);
}

/* The sha256 of "abc" (FIPS 180-2's example). */
static void test_sha256(void **state)
{
    (void)state;
    char hex[65];

    outcomes_sha256_hex("abc", 3, hex);
    assert_string_equal(
        hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

/* Keys are bytes: quotes, control characters, invalid UTF-8 and NUL
 * still make valid JSON, and two different keys stay different. */
static void test_hostile_keys_and_bodies(void **state)
{
    (void)state;
    static const char k1[] = "a\"b\\c\n\x01\xff\xc3(\0z";
    static const char k2[] = "a\"b\\c\n\x01\xfe\xc3(\0z";
    static const char text_body[] = "not json \n \0 \xff";
    struct outcome l[3] = {
        {.wall_ms = 1, .sink = "s", .key = k1, .key_len = sizeof(k1) - 1,
         .kind = OUTCOME_DEAD_LETTERED, .status = -1, .error = "bad\n\"x\""},
        {.wall_ms = 1, .sink = "s", .key = k2, .key_len = sizeof(k2) - 1,
         .kind = OUTCOME_SHADOW, .status = -1, .method = "PUT",
         .path = "/\x01", .body = text_body,
         .body_len = sizeof(text_body) - 1},
        {.wall_ms = 1, .sink = "s", .key = "", .key_len = 0,
         .kind = OUTCOME_DELIVERED, .status = -1, .body = "",
         .body_len = 0},
    };
    char *text = written(l, 3, 1);
    json_t *a = line_at(text, 0), *b = line_at(text, 1), *c = line_at(text, 2);

    assert_string_not_equal(json_string_value(json_object_get(a, "key")),
                            json_string_value(json_object_get(b, "key")));
    assert_null(json_object_get(a, "status"));
    assert_null(json_object_get(a, "body_sha256"));
    assert_string_equal(json_string_value(json_object_get(a, "error")),
                        "bad\n\"x\"");
    assert_null(json_object_get(b, "body"));
    assert_non_null(json_object_get(b, "body_base64"));
    assert_null(json_object_get(c, "body")); /* "" is not JSON */
    assert_string_equal(json_string_value(json_object_get(c, "body_base64")),
                        "");
    json_decref(a);
    json_decref(b);
    json_decref(c);
    free(text);
}

static void test_large_body_by_hash_alone(void **state)
{
    (void)state;
    size_t len = OUTCOMES_BODY_MAX + 1;
    char *body = malloc(len);
    assert_non_null(body);
    memset(body, '7', len); /* a (huge) JSON number */
    struct outcome l = {.wall_ms = 1, .sink = "s", .key = "k", .key_len = 1,
                        .kind = OUTCOME_DELIVERED, .status = 200,
                        .body = body, .body_len = len};
    char *text = written(&l, 1, 1);
    json_t *v = line_at(text, 0);

    assert_null(json_object_get(v, "body"));
    assert_null(json_object_get(v, "body_base64"));
    assert_int_equal(strlen(json_string_value(json_object_get(v,
                                                              "body_sha256"))),
                     64);
    json_decref(v);
    free(text);
    free(body);
}

/* A file that cannot be written: lines wait in the buffer up to its
 * bound, then are dropped and counted; never unbounded memory. */
static void test_unwritable_file_drops_past_the_bound(void **state)
{
    (void)state;
    struct sl_error err;
    outcomes_t *o = outcomes_open("/dev/full", 1, &err);
    char body[1000];
    size_t dropped_at = 0;

    assert_non_null(o);
    memset(body, 'x', sizeof(body));
    struct outcome l = {.wall_ms = 1, .sink = "s", .key = "k", .key_len = 1,
                        .kind = OUTCOME_DELIVERED, .status = 200,
                        .body = body, .body_len = sizeof(body)};
    for (size_t i = 0; i < 20000 && dropped_at == 0; i++) {
        if (outcomes_write(o, &l) != 0) {
            dropped_at = i;
        }
    }
    assert_true(dropped_at > 1000);
    assert_int_equal(outcomes_dropped(o), 1);
    assert_int_equal(outcomes_flush(o, &err), -1);
    assert_non_null(strstr(err.msg, "/dev/full"));
    assert_int_equal(outcomes_written(o), 0);
    outcomes_close(o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_field),
        cmocka_unit_test(test_sha256),
        cmocka_unit_test(test_hostile_keys_and_bodies),
        cmocka_unit_test(test_large_body_by_hash_alone),
        cmocka_unit_test(test_unwritable_file_drops_past_the_bound),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
