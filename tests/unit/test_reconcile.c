/* test_reconcile.c -- `sluice reconcile`'s pieces: the outcome line parser
 * on good and hostile lines (and against jansson on mutated lines), body
 * canonicalisation with ignored fields, first differences, days. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "reconcile.h"

#define SHA "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

static const char good[] =
    "{\"v\":1,\"ts\":\"2026-12-05T12:00:00.123Z\",\"pipeline\":\"orders\","
    "\"sink\":\"crm\",\"key\":\"order-123\",\"outcome\":\"delivered\","
    "\"method\":\"POST\",\"path\":\"/orders\",\"status\":200,\"attempts\":1,"
    "\"body_sha256\":\"" SHA "\",\"body\":{\"order_id\":\"order-123\","
    "\"total\":42,\"meta\":{\"sent_at\":\"2026-12-05T12:00:00Z\"}},"
    "\"source\":{\"topic\":\"orders\",\"partition\":3,\"offset\":1234}}";

static int32_t day_of(const char *ts)
{
    int32_t d = -99999;

    assert_int_equal(reconcile_parse_day(ts, strlen(ts), &d), 0);
    return d;
}

static int parse(reconcile_parser_t *p, const char *line,
                 struct reconcile_line *out, struct sl_error *err)
{
    return reconcile_parse_line(p, line, strlen(line), out, err);
}

static void test_good_line(void **state)
{
    reconcile_parser_t *p = reconcile_parser_new(NULL, 0, NULL);
    struct reconcile_line l;
    struct sl_error err = {{0}};

    (void)state;
    assert_non_null(p);
    assert_int_equal(parse(p, good, &l, &err), 1);
    assert_int_equal(l.outcome, RECONCILE_DELIVERED);
    assert_true(l.effect);
    assert_int_equal(l.sink_len, 3);
    assert_memory_equal(l.sink, "crm", 3);
    assert_int_equal(l.key_len, 9);
    assert_memory_equal(l.key, "order-123", 9);
    assert_int_equal(l.day, day_of("2026-12-05T00:00:00Z"));
    assert_true(l.has_body);

    /* Empty and blank lines are skipped. */
    assert_int_equal(parse(p, "", &l, &err), 0);
    assert_int_equal(parse(p, " \t\r", &l, &err), 0);

    /* A dead letter needs no body_sha256; its error class is kept. */
    assert_int_equal(
        parse(p,
              "{\"v\":1,\"ts\":\"2026-12-05T12:00:00Z\",\"sink\":\"s\","
              "\"key\":\"k\",\"outcome\":\"dead_lettered\",\"error\":"
              "\"rejected\"}",
              &l, &err),
        1);
    assert_int_equal(l.outcome, RECONCILE_DEAD_LETTERED);
    assert_false(l.effect);
    assert_int_equal(l.error_len, 8);
    assert_memory_equal(l.error, "rejected", 8);

    /* Escaped keys and values decode; the pair hash follows the text. */
    uint64_t pair[2];
    assert_int_equal(
        parse(p,
              "{\"v\":1,\"ts\":\"2026-12-05T12:00:00Z\",\"sink\":\"crm\","
              "\"key\":\"k\\u00e9\",\"outcome\":\"already_handled\"}",
              &l, &err),
        1);
    memcpy(pair, l.pair, sizeof(pair));
    assert_int_equal(
        parse(p,
              "{\"outcome\":\"already_handled\",\"key\":\"k\xc3\xa9\","
              "\"sink\":\"\\u0063rm\",\"ts\":\"2026-12-05T12:00:00Z\","
              "\"v\":1}",
              &l, &err),
        1);
    assert_memory_equal(pair, l.pair, sizeof(pair));
    reconcile_parser_destroy(p);
}

/* Each line must be refused with a message holding want. */
static const struct {
    const char *line, *want;
} bad_lines[] = {
    {"[1]", "not a JSON object"},
    {"1", "not a JSON object"},
    {"\"x\"", "not a JSON object"},
    {"{", "not JSON"},
    {"{\"v\":1", "not JSON"},
    {"{\"v\":1,}", "not JSON"},
    {"{\"v\":1} x", "not JSON"},
    {"{\"v\":01}", "leading zero"},
    {"{\"v\":1,\"x\":99999999999999999999}", "too big integer"},
    {"{\"v\":1,\"x\":1e999}", "real number overflow"},
    {"{\"v\":1,\"x\":\"\x01\"}", "control character"},
    {"{\"v\":1,\"x\":\"\xff\"}", "invalid UTF-8"},
    {"{\"v\":1,\"x\":\"\xc0\xaf\"}", "invalid UTF-8"},
    {"{\"v\":1,\"x\":\"\xed\xa0\x80\"}", "invalid UTF-8"},
    {"{\"v\":1,\"x\":\"\\ud800\"}", "surrogate"},
    {"{\"v\":1,\"x\":\"\\udc00\"}", "surrogate"},
    {"{\"v\":1,\"x\":\"\\u12\"}", "\\u escape"},
    {"{\"v\":1,\"x\":\"\\q\"}", "invalid escape"},
    {"{\"v\":1,\"x\":tru}", "invalid token"},
    {"{\"v\":1,\"x\\u0000\":1}", "NUL byte"},
    {"{\"v\":1,\"x\":[1 2]}", "not JSON"},
    {"{\"x\":1}", "missing field `v`"},
    {"{\"v\":2}", "`v` is not 1"},
    {"{\"v\":\"1\"}", "`v` is not 1"},
    {"{\"v\":1.0}", "`v` is not 1"},
    {"{\"v\":1}", "missing field `ts`"},
    {"{\"v\":1,\"ts\":5}", "`ts` is not a non-empty string"},
    {"{\"v\":1,\"ts\":\"2026-12-05T12:00:00Z\"}", "missing field `sink`"},
    {"{\"v\":1,\"ts\":\"2026-12-05T12:00:00Z\",\"sink\":\"s\"}",
     "missing field `key`"},
    {"{\"v\":1,\"ts\":\"2026-12-05T12:00:00Z\",\"sink\":\"s\",\"key\":\"\"}",
     "`key` is not a non-empty string"},
    {"{\"v\":1,\"ts\":\"2026-12-05T12:00:00Z\",\"sink\":\"s\",\"key\":\"k\"}",
     "missing field `outcome`"},
    {"{\"v\":1,\"ts\":\"2026-12-05T12:00:00Z\",\"sink\":\"s\",\"key\":\"k\","
     "\"outcome\":\"sent\"}",
     "unknown `outcome`"},
    {"{\"v\":1,\"ts\":\"yesterday\",\"sink\":\"s\",\"key\":\"k\","
     "\"outcome\":\"delivered\"}",
     "`ts` is not an RFC 3339 time"},
    {"{\"v\":1,\"ts\":\"2026-12-05T12:00:00Z\",\"sink\":\"s\",\"key\":\"k\","
     "\"outcome\":\"delivered\"}",
     "missing field `body_sha256`"},
    {"{\"v\":1,\"ts\":\"2026-12-05T12:00:00Z\",\"sink\":\"s\",\"key\":\"k\","
     "\"outcome\":\"shadow\",\"body_sha256\":\"abc\"}",
     "not 64 hex digits"},
    {"{\"v\":1,\"ts\":\"2026-12-05T12:00:00Z\",\"sink\":\"s\",\"key\":\"k\","
     "\"outcome\":\"applied\",\"body_sha256\":\"" SHA "\",\"method\":5}",
     "`method` is not a string"},
    {"{\"v\":1,\"ts\":\"2026-12-05T12:00:00Z\",\"sink\":\"s\",\"key\":\"k\","
     "\"outcome\":\"dead_lettered\",\"error\":[]}",
     "`error` is not a string"},
};

static void test_bad_lines(void **state)
{
    reconcile_parser_t *p = reconcile_parser_new(NULL, 0, NULL);
    struct reconcile_line l;

    (void)state;
    for (size_t i = 0; i < sizeof(bad_lines) / sizeof(bad_lines[0]); i++) {
        struct sl_error err = {{0}};
        int rc = parse(p, bad_lines[i].line, &l, &err);
        if (rc != -1 || strstr(err.msg, bad_lines[i].want) == NULL) {
            fail_msg("line %zu `%s`: rc %d, `%s` (want `%s`)", i,
                     bad_lines[i].line, rc, err.msg, bad_lines[i].want);
        }
    }
    /* Nested past the depth bound: an error, not a stack overflow. */
    size_t n = 100000;
    char *deep = malloc(n * 2 + 32);
    assert_non_null(deep);
    strcpy(deep, "{\"v\":1,\"x\":");
    size_t o = strlen(deep);
    memset(deep + o, '[', n);
    memset(deep + o + n, ']', n);
    strcpy(deep + o + 2 * n, "}");
    struct sl_error err = {{0}};
    assert_int_equal(parse(p, deep, &l, &err), -1);
    assert_non_null(strstr(err.msg, "too deeply nested"));
    free(deep);
    /* Over the line bound: refused before it is read. */
    assert_int_equal(reconcile_parse_line(p, good, RECONCILE_LINE_MAX + 1,
                                          &l, &err),
                     -1);
    assert_non_null(strstr(err.msg, "longer than"));
    /* Every proper prefix of a good line is refused. */
    for (size_t k = 1; k < strlen(good); k++) {
        assert_int_equal(reconcile_parse_line(p, good, k, &l, &err), -1);
    }
    reconcile_parser_destroy(p);
}

/* Mutated lines: the parser never crashes, and it finds a line to be JSON
 * exactly when jansson does. */
static void test_mutations_agree_with_jansson(void **state)
{
    reconcile_parser_t *p = reconcile_parser_new(NULL, 0, NULL);
    static const char alphabet[] = "{}[]\":,\\/u0123456789eE+-.tfnrl xyz"
                                   "\x00\x01\x7f\x80\xc3\xa9\xed\xff";
    size_t len = strlen(good);
    char *line = malloc(len + 8);
    unsigned seed = 12345;

    (void)state;
    assert_non_null(line);
    for (int iter = 0; iter < 50000; iter++) {
        struct reconcile_line l;
        struct sl_error err = {{0}};
        size_t n = len;
        memcpy(line, good, len);
        for (int m = 0; m <= iter % 3; m++) {
            seed = seed * 1103515245u + 12345u;
            size_t at = (seed >> 8) % n;
            char c = alphabet[(seed >> 20) % (sizeof(alphabet) - 1)];
            switch ((seed >> 4) % 3) {
            case 0:
                line[at] = c;
                break;
            case 1:
                memmove(line + at, line + at + 1, n - at - 1);
                n--;
                break;
            default:
                memmove(line + at + 1, line + at, n - at);
                line[at] = c;
                n++;
                break;
            }
        }
        int rc = reconcile_parse_line(p, line, n, &l, &err);
        int ours = rc == 1 || (rc == -1 && strncmp(err.msg, "not ", 4) != 0);
        json_t *j = json_loadb(line, n, JSON_ALLOW_NUL, NULL);
        int theirs = j != NULL && json_is_object(j);
        json_decref(j);
        /* Blank after mutation; or holding a NUL, which jansson takes
         * for the end of a number and then skips: {"a":1<NUL>} is an
         * object to it. */
        if (rc == 0 || memchr(line, '\0', n) != NULL) {
            continue;
        }
        if (ours != theirs) {
            fail_msg("iteration %d: rc %d `%s`, jansson %s: %.*s", iter, rc,
                     err.msg, theirs ? "accepts" : "refuses", (int)n, line);
        }
    }
    free(line);
    reconcile_parser_destroy(p);
}

/* The digest of a line with body (and method, path) as given. */
static void digest_of(reconcile_parser_t *p, const char *method,
                      const char *body, uint64_t out[2])
{
    char line[2048];
    struct reconcile_line l;
    struct sl_error err = {{0}};

    snprintf(line, sizeof(line),
             "{\"v\":1,\"ts\":\"2026-12-05T12:00:00Z\",\"sink\":\"s\","
             "\"key\":\"k\",\"outcome\":\"delivered\",\"method\":\"%s\","
             "\"path\":\"/a\",\"body_sha256\":\"" SHA "\",\"body\":%s}",
             method, body);
    if (parse(p, line, &l, &err) != 1) {
        fail_msg("`%s`: %s", line, err.msg);
    }
    assert_true(l.has_body);
    memcpy(out, l.digest, 2 * sizeof(uint64_t));
}

static int same_body(reconcile_parser_t *p, const char *a, const char *b)
{
    uint64_t x[2], y[2];

    digest_of(p, "POST", a, x);
    digest_of(p, "POST", b, y);
    return x[0] == y[0] && x[1] == y[1];
}

static void test_canonical_digests(void **state)
{
    const char *ignore[] = {"meta.sent_at", "trace"};
    reconcile_parser_t *p = reconcile_parser_new(NULL, 0, NULL);
    reconcile_parser_t *ip = reconcile_parser_new(ignore, 2, NULL);
    uint64_t x[2], y[2];

    (void)state;
    /* Key order, whitespace and escapes do not matter. */
    assert_true(same_body(p, "{\"a\":1,\"b\":{\"c\":[1,\"x\"],\"d\":null}}",
                          " { \"b\" : { \"d\" : null , \"c\" : [ 1 , "
                          "\"\\u0078\" ] } , \"a\" : 1 } "));
    /* Reals as doubles: 1.0 and 1.00 and 10e-1 are one number; 1 and 1.0
     * are not; -0 is the integer 0. */
    assert_true(same_body(p, "{\"t\":1.0}", "{\"t\":1.00}"));
    assert_true(same_body(p, "{\"t\":1.0}", "{\"t\":10e-1}"));
    assert_false(same_body(p, "{\"t\":1}", "{\"t\":1.0}"));
    assert_true(same_body(p, "{\"t\":-0}", "{\"t\":0}"));
    assert_false(same_body(p, "{\"t\":42}", "{\"t\":43}"));
    assert_false(same_body(p, "{\"t\":\"42\"}", "{\"t\":42}"));
    assert_false(same_body(p, "[1,2]", "[2,1]"));
    assert_false(same_body(p, "{\"a\":{}}", "{\"a\":[]}"));
    assert_false(same_body(p, "{\"ab\":\"c\"}", "{\"a\":\"bc\"}"));
    /* The last of duplicate keys wins, as in jansson. */
    assert_true(same_body(p, "{\"a\":1,\"a\":2}", "{\"a\":2}"));
    /* A body of any JSON type. */
    assert_true(same_body(p, "\"x\"", " \"x\" "));
    assert_false(same_body(p, "null", "false"));
    /* Method and path are part of the digest. */
    digest_of(p, "POST", "{}", x);
    digest_of(p, "PUT", "{}", y);
    assert_false(x[0] == y[0] && x[1] == y[1]);

    /* Ignored fields: gone wherever they are, absent ones are fine, and
     * only the path given (not the same key elsewhere). */
    assert_true(same_body(ip,
                          "{\"total\":42,\"meta\":{\"sent_at\":\"a\","
                          "\"x\":1},\"trace\":\"t1\"}",
                          "{\"meta\":{\"x\":1,\"sent_at\":\"b\"},"
                          "\"total\":42}"));
    assert_true(same_body(ip, "{\"meta\":5}", "{\"meta\":5}"));
    assert_false(same_body(ip, "{\"sent_at\":1}", "{\"sent_at\":2}"));
    assert_false(same_body(ip, "{\"x\":{\"meta\":{\"sent_at\":1}}}",
                           "{\"x\":{\"meta\":{\"sent_at\":2}}}"));
    assert_false(same_body(ip, "{\"meta\":[{\"sent_at\":1}]}",
                           "{\"meta\":[{\"sent_at\":2}]}"));
    assert_false(same_body(ip, "{\"total\":42,\"meta\":{\"sent_at\":1}}",
                           "{\"total\":43,\"meta\":{\"sent_at\":1}}"));
    reconcile_parser_destroy(p);
    reconcile_parser_destroy(ip);

    /* Bad paths. */
    const char *empty[] = {"a..b"};
    struct sl_error err = {{0}};
    assert_null(reconcile_parser_new(empty, 1, &err));
    assert_non_null(strstr(err.msg, "empty component"));
    reconcile_parser_destroy(NULL);
}

static void test_canonical_text(void **state)
{
    const char *ignore[] = {"a.c", "missing.path", "b.x"};
    json_t *j = json_loads("{\"b\":1,\"a\":{\"d\":[1,2.5,{\"z\":1,\"y\":2}],"
                           "\"c\":null}}",
                           0, NULL);
    char *s;

    (void)state;
    assert_non_null(j);
    s = reconcile_canonical(j, ignore, 3);
    assert_string_equal(s, "{\"a\":{\"d\":[1,2.5,{\"y\":2,\"z\":1}]},\"b\":1}");
    free(s);
    json_decref(j);
    j = json_integer(7);
    s = reconcile_canonical(j, NULL, 0);
    assert_string_equal(s, "7");
    free(s);
    json_decref(j);
}

static void check_diff(const char *l, const char *r, const char *want)
{
    json_t *a = json_loads(l, JSON_DECODE_ANY, NULL);
    json_t *b = json_loads(r, JSON_DECODE_ANY, NULL);
    char out[512];

    assert_non_null(a);
    assert_non_null(b);
    assert_int_equal(reconcile_first_diff(a, b, "body", out, sizeof(out)),
                     want != NULL);
    assert_string_equal(out, want != NULL ? want : "");
    json_decref(a);
    json_decref(b);
}

static void test_first_diff(void **state)
{
    (void)state;
    check_diff("{\"total\":42,\"id\":\"a\"}", "{\"id\":\"a\",\"total\":43}",
               "body.total: 42 != 43");
    check_diff("{\"a\":1,\"b\":{\"c\":[1,2]}}", "{\"b\":{\"c\":[1,3]},\"a\":1}",
               "body.b.c[1]: 2 != 3");
    check_diff("{\"a\":1}", "{\"a\":1,\"b\":true}",
               "body.b: (absent) != true");
    check_diff("[1]", "[1,{\"x\":\"y\"}]", "body[1]: (absent) != {\"x\":\"y\"}");
    check_diff("{\"t\":1}", "{\"t\":1.0}", "body.t: 1 != 1.0");
    check_diff("{\"a\":{\"b\":1}}", "{\"a\":{\"b\":1}}", NULL);
    /* Long values are cut; control characters are not shown raw. */
    check_diff("{\"s\":\"" "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
               "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"}",
               "{\"s\":\"\\u001b[31m\"}",
               "body.s: \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
               "aaaaaaaaaaaaaaaaaaaaaaaaaa... != \"\\u001B[31m\"");
}

static void test_days(void **state)
{
    char buf[16];
    int32_t d;

    (void)state;
    assert_int_equal(day_of("1970-01-01T00:00:00Z"), 0);
    assert_int_equal(day_of("1969-12-31T23:59:59.999Z"), -1);
    assert_int_equal(day_of("2000-03-01T00:00:00Z"), 11017);
    assert_string_equal(reconcile_format_day(buf, sizeof(buf),
                                             day_of("2026-12-05T12:00:00."
                                                    "123Z")),
                        "2026-12-05");
    /* The UTC date, whatever the offset. */
    assert_string_equal(reconcile_format_day(buf, sizeof(buf),
                                             day_of("2026-12-05T23:30:00-"
                                                    "01:00")),
                        "2026-12-06");
    assert_string_equal(reconcile_format_day(buf, sizeof(buf),
                                             day_of("2026-12-05T00:30:00+"
                                                    "02:00")),
                        "2026-12-04");
    assert_string_equal(reconcile_format_day(buf, sizeof(buf),
                                             day_of("2024-02-29t00:00:00z")),
                        "2024-02-29");
    assert_string_equal(reconcile_format_day(buf, sizeof(buf),
                                             day_of("2026-12-31T23:59:60Z")),
                        "2026-12-31");
    static const char *const bad[] = {
        "", "2026-12-05", "2026-12-05T12:00:00", "2026-12-05T12:00:00.Z",
        "2026-02-29T00:00:00Z", "2026-13-01T00:00:00Z", "2026-00-01T00:00:00Z",
        "2026-12-32T00:00:00Z", "2026-12-05T24:00:00Z", "2026-12-05T12:60:00Z",
        "2026-12-05T12:00:00Zx", "2026-12-05T12:00:00+0100",
        "2026-12-05T12:00:00+01:60", "2026-1a-05T12:00:00Z",
        "-026-12-05T12:00:00Z", "2026-12-05T12:00:00.123"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (reconcile_parse_day(bad[i], strlen(bad[i]), &d) != -1) {
            fail_msg("`%s` was taken as a day", bad[i]);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good_line),
        cmocka_unit_test(test_bad_lines),
        cmocka_unit_test(test_mutations_agree_with_jansson),
        cmocka_unit_test(test_canonical_digests),
        cmocka_unit_test(test_canonical_text),
        cmocka_unit_test(test_first_diff),
        cmocka_unit_test(test_days),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
