/* test_testcmd.c -- `sluice test`: input values built from YAML, values
 * compared as JSON or bytes with one difference per line, and whole runs
 * (pass, fail, invalid files) on pipelines with and without Lua. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine.h"
#include "testcmd.h"

/* ---- input values ---- */

static void assert_value(const char *yaml, const char *want)
{
    struct sl_error err;
    size_t len = 0;
    char *got = testcmd_value_from_yaml(yaml, strlen(yaml), &len, &err);

    if (got == NULL) {
        fail_msg("`%s`: %s", yaml, err.msg);
    }
    assert_int_equal(len, strlen(got));
    if (strcmp(got, want) != 0) {
        fail_msg("`%s`: got `%s`, want `%s`", yaml, got, want);
    }
    free(got);
}

static void test_value_keeps_yaml_order_and_number_text(void **state)
{
    (void)state;
    assert_value("{order_id: 1, amount: 284.85, z: 1e3, big: "
                 "12345678901234567890, n: null, e: ~, t: true, f: false}",
                 "{\"order_id\":1,\"amount\":284.85,\"z\":1e3,\"big\":"
                 "12345678901234567890,\"n\":null,\"e\":null,\"t\":true,"
                 "\"f\":false}");
    assert_value("[0.1, 71.20, -0.0, 1E-7]", "[0.1,71.20,-0.0,1E-7]");
    assert_value("items:\n  - {b: 2, a: 1}\n  - []\n  - {}\n",
                 "{\"items\":[{\"b\":2,\"a\":1},[],{}]}");
}

static void test_value_spells_yaml_numbers_as_json(void **state)
{
    (void)state;
    assert_value("[+1, 007, -007, .5, -.5, 1., 0x1F, 0o17, 1.e5]",
                 "[1,7,-7,0.5,-0.5,1.0,31,15,1.0e5]");
}

static void test_value_strings_are_escaped_or_raw(void **state)
{
    (void)state;
    /* inside JSON: escaped; quoted scalars are strings, never numbers */
    assert_value("{s: \"a\\\"b\\\\c\\nd\\te\\x01\", q: \"42\", t: 'true', "
                 "u: \"Zo\\u00eb\", k: 1}",
                 "{\"s\":\"a\\\"b\\\\c\\nd\\te\\u0001\",\"q\":\"42\","
                 "\"t\":\"true\",\"u\":\"Zo\xc3\xab\",\"k\":1}");
    assert_value("{\"key \\\"x\\\"\": 1, 2: two}",
                 "{\"key \\\"x\\\"\":1,\"2\":\"two\"}");
    /* keys are escaped as values are */
    assert_value("{\"k\\n\": \"v\\n\"}", "{\"k\\n\":\"v\\n\"}");
    /* a string value is the bytes as written */
    assert_value("not json", "not json");
    assert_value("\"{\\\"a\\\": 1}\"", "{\"a\": 1}");
    assert_value("|\n  line 1\n  line 2\n", "line 1\nline 2\n");
    assert_value("\"\"", "");
    /* a plain scalar that is a number or boolean is its JSON text */
    assert_value("42", "42");
    assert_value("+42", "42");
    assert_value("true", "true");
}

static void test_value_null_is_none(void **state)
{
    struct sl_error err;
    size_t len = 99;

    (void)state;
    assert_null(testcmd_value_from_yaml("~", 1, &len, &err));
    assert_string_equal(err.msg, "");
    assert_null(testcmd_value_from_yaml("null\n", 5, &len, &err));
    assert_string_equal(err.msg, "");
}

static void test_value_errors_say_where(void **state)
{
    struct sl_error err;
    size_t len;
    const char *y1 = "{a: 1,\n b: [1, .inf]}";
    const char *y2 = "{a: 1, a: 2}";
    const char *y3 = "{a: [1, 2}";
    const char *y4 = "&x [*x]";

    (void)state;
    assert_null(testcmd_value_from_yaml(y1, strlen(y1), &len, &err));
    assert_string_equal(err.msg, "2:9: b[1]: `.inf` is not a JSON number "
                                 "(quote it for a string)");
    assert_null(testcmd_value_from_yaml(y2, strlen(y2), &len, &err));
    assert_string_equal(err.msg, "1:8: a: duplicate key (first at line 1)");
    assert_null(testcmd_value_from_yaml(y3, strlen(y3), &len, &err));
    assert_non_null(strstr(err.msg, "invalid YAML"));
    /* a recursive alias is cut off, not followed forever */
    assert_null(testcmd_value_from_yaml(y4, strlen(y4), &len, &err));
    assert_non_null(strstr(err.msg, "nested deeper than"));
}

static void test_value_alias_bomb_is_bounded(void **state)
{
    struct sl_error err;
    size_t len;
    char yaml[1024];
    size_t n = 0;

    (void)state;
    /* 10^9 leaves if expanded */
    n += (size_t)snprintf(yaml + n, sizeof(yaml) - n,
                          "a: &a [1,1,1,1,1,1,1,1,1,1]\n");
    for (char c = 'b'; c <= 'j'; c++) {
        n += (size_t)snprintf(yaml + n, sizeof(yaml) - n,
                              "%c: &%c [*%c,*%c,*%c,*%c,*%c,*%c,*%c,*%c,*%c,"
                              "*%c]\n",
                              c, c, c - 1, c - 1, c - 1, c - 1, c - 1, c - 1,
                              c - 1, c - 1, c - 1, c - 1);
    }
    assert_null(testcmd_value_from_yaml(yaml, n, &len, &err));
    assert_non_null(strstr(err.msg, "expands to more than"));
}

/* ---- comparing ---- */

static char out[8192];

/* Compares and returns the number of differences (text in out). */
static int compare(const char *expected, const char *actual)
{
    struct sl_error err;
    int n = testcmd_compare_value(expected, actual,
                                  actual ? strlen(actual) : 0, "body", out,
                                  sizeof(out), &err);
    if (n < 0) {
        fail_msg("`%s`: %s", expected, err.msg);
    }
    return n;
}

static void assert_same(const char *expected, const char *actual)
{
    if (compare(expected, actual) != 0) {
        fail_msg("`%s` vs `%s`:\n%s", expected, actual ? actual : "(none)",
                 out);
    }
}

static void assert_diff(const char *expected, const char *actual,
                        const char *want)
{
    compare(expected, actual);
    if (strcmp(out, want) != 0) {
        fail_msg("`%s` vs `%s`:\ngot:\n%swant:\n%s", expected,
                 actual ? actual : "(none)", out, want);
    }
}

static void test_compare_equal_by_json_semantics(void **state)
{
    (void)state;
    assert_same("{a: 1, b: [1, 2.5, x], c: {d: null, e: true}}",
                "{\"c\":{\"e\":true,\"d\":null},\"b\":[1.0,2.50,\"x\"],"
                "\"a\":1e0}");
    assert_same("{total: 284.85, n: 100}", "{\"total\":284.85,\"n\":1e2}");
    assert_same("{id: 9007199254740993}", "{\"id\":9007199254740993}");
    assert_same("{id: 12345678901234567890}",
                "{\"id\":12345678901234567890}");
    assert_same("{hex: 0x1F, neg: -0.0}", "{\"hex\":31,\"neg\":0}");
    assert_same("[]", " [ ] ");
    assert_same("42", "42.0");
    assert_same("{s: \"42\"}", "{\"s\":\"42\"}");
    /* strings compare as bytes, not JSON */
    assert_same("\"{\\\"a\\\": 1}\"", "{\"a\": 1}");
    assert_same("~", NULL);
}

static void test_compare_reports_each_difference_with_its_path(void **state)
{
    (void)state;
    assert_diff("{total_cents: 28485, customer: c-1, items: [1, 2, 3], "
                "meta: {ok: true}}",
                "{\"total_cents\":28484,\"cust_id\":\"c-1\","
                "\"items\":[1,3],\"meta\":{\"ok\":\"true\"},\"x\":null}",
                "body.total_cents: expected 28485, got 28484\n"
                "body.customer: missing\n"
                "body.items[1]: expected 2, got 3\n"
                "body.items[2]: missing\n"
                "body.meta.ok: expected true, got \"true\"\n"
                "body.cust_id: unexpected \"c-1\"\n"
                "body.x: unexpected null\n");
    assert_diff("[1]", "[1, {\"a\": [2]}]",
                "body[1]: unexpected {\"a\":[2]}\n");
    assert_diff("{a: {b: 1}}", "{\"a\":[1]}",
                "body.a: expected {\"b\":1}, got [1]\n");
    assert_diff("{\"a.b\": 1, \"\": 2}", "{\"a.b\":2,\"\":3}",
                "body[\"a.b\"]: expected 1, got 2\n"
                "body[\"\"]: expected 2, got 3\n");
    assert_diff("{x: 1.5}", "{\"x\":0.1}", "body.x: expected 1.5, got 0.1\n");
    assert_diff("{x: 1}", "{\"x\":1.25}", "body.x: expected 1, got 1.25\n");
    assert_diff("{x: 1.0}", "{\"x\":2.0}", "body.x: expected 1.0, got 2.0\n");
}

static void test_compare_values_that_are_not_json(void **state)
{
    (void)state;
    assert_diff("{a: 1}", "not json",
                "body: expected JSON, got `not json`\n");
    assert_diff("{a: 1}", "bin\x01\xff\n",
                "body: expected JSON, got `bin\\x01\\xff\\n`\n");
    assert_diff("{a: 1}", NULL, "body: expected JSON, got no value\n");
    assert_diff("abc", "abd", "body: expected \"abc\", got \"abd\"\n");
    assert_diff("abc", NULL, "body: expected \"abc\", got no value\n");
    assert_diff("~", "x", "body: expected no value, got `x`\n");
    assert_diff("", "x", "body: expected no value, got `x`\n");
    assert_same("", NULL);
    assert_diff("\"q\\\"\"", "q", "body: expected \"q\\\"\", got \"q\"\n");
}

static void test_compare_cuts_long_values(void **state)
{
    char actual[2048];

    (void)state;
    memset(actual, 'x', sizeof(actual) - 1);
    actual[sizeof(actual) - 1] = '\0';
    compare("{a: 1}", actual);
    assert_true(strlen(out) < 260);
    assert_non_null(strstr(out, "xxx...`\n"));
}

static void test_compare_bounds_the_lines(void **state)
{
    char actual[4096];
    size_t n = 0;
    int count;

    (void)state;
    n += (size_t)snprintf(actual + n, sizeof(actual) - n, "[");
    for (int i = 0; i < 300; i++) {
        n += (size_t)snprintf(actual + n, sizeof(actual) - n, "%s%d",
                              i ? "," : "", i);
    }
    snprintf(actual + n, sizeof(actual) - n, "]");
    count = compare("[]", actual);
    assert_int_equal(count, 300);
    /* every difference counts, but only the first ones are written */
    assert_true(strlen(out) < 2000);
}

static void test_compare_rejects_bad_expectations(void **state)
{
    struct sl_error err;

    (void)state;
    assert_int_equal(testcmd_compare_value("{a: .nan}", "{}", 2, "v", out,
                                           sizeof(out), &err),
                     -1);
    assert_non_null(strstr(err.msg, "not a JSON number"));
}

/* ---- whole runs ---- */

static char dir[64];

static void write_file(const char *name, const char *text)
{
    char path[256];
    FILE *fp;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    fp = fopen(path, "w");
    assert_non_null(fp);
    fputs(text, fp);
    fclose(fp);
}

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof(dir), "/tmp/sluice-test-testcmd-XXXXXX");
    return mkdtemp(dir) == NULL ? -1 : 0;
}

static int teardown(void **state)
{
    char cmd[128];

    (void)state;
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : -1;
}

struct run {
    int rc;
    char *out, *err;
};

/* Runs sluice test on dir/pipeline with the test files named (none: the
 * default one), capturing both streams. */
static struct run run(const char *pipeline, const char *tests, int verbose)
{
    char ppath[256], tpath[256];
    const char *list[1] = {tpath};
    struct run r = {0};
    size_t olen, elen;
    FILE *o, *e;

    snprintf(ppath, sizeof(ppath), "%s/%s", dir, pipeline);
    snprintf(tpath, sizeof(tpath), "%s/%s", dir, tests ? tests : "");
    o = open_memstream(&r.out, &olen);
    e = open_memstream(&r.err, &elen);
    assert_non_null(o);
    assert_non_null(e);
    struct testcmd_options opts = {.pipeline = ppath,
                                   .tests = list,
                                   .test_count = tests ? 1 : 0,
                                   .verbose = verbose,
                                   .out = o,
                                   .err = e};
    r.rc = testcmd_run(&opts);
    fclose(o);
    fclose(e);
    return r;
}

static void run_free(struct run *r)
{
    free(r->out);
    free(r->err);
}

static void assert_contains(const char *text, const char *needle)
{
    if (strstr(text, needle) == NULL) {
        fail_msg("expected `%s` in:\n%s", needle, text);
    }
}

static const char plain_pipeline[] =
    "pipeline: plain\n"
    "source: {brokers: embedded, topics: [orders, refunds]}\n"
    "sinks:\n"
    "  billing: {type: http, url: 'http://127.0.0.1:1/b'}\n"
    "  search: {type: http, url: 'http://127.0.0.1:1/s', method: PUT}\n";

static void test_run_without_scripts_passes_values_through(void **state)
{
    struct run r;

    (void)state;
    write_file("plain.yaml", plain_pipeline);
    write_file("plain.test.yaml",
               "tests:\n"
               "  - name: as it is\n"
               "    input:\n"
               "      key: k\n"
               "      value: {order_id: 1, amount: 284.85}\n"
               "      headers: {message-id: m-1, x-many: [a, b]}\n"
               "    expect:\n"
               "      key: k\n"
               "      value: {amount: 284.85, order_id: 1}\n"
               "      headers: {x-many: [a, b], x-absent: ~}\n"
               "      sinks:\n"
               "        billing: {body: {order_id: 1, amount: 284.850}, "
               "method: POST, path: ~}\n"
               "        search: {method: PUT}\n"
               "  - name: raw bytes\n"
               "    input: {value: \"not json\"}\n"
               "    expect: {value: \"not json\", key: ~, "
               "sinks: {billing: {body: \"not json\"}}}\n");
    r = run("plain.yaml", NULL, 1);
    assert_int_equal(r.rc, TESTCMD_PASSED);
    assert_contains(r.out, "ok   as it is (");
    assert_contains(r.out, "plain.test.yaml:2)\n");
    assert_contains(r.out, "ok   raw bytes (");
    assert_contains(r.out, "plain.test.yaml:14)\n");
    /* --verbose shows what each sink got */
    assert_contains(r.out, "    sinks.search: PUT `{\"order_id\":1,"
                           "\"amount\":284.85}`\n");
    assert_contains(r.out, "2 passed, 0 failed\n");
    assert_string_equal(r.err, "");
    run_free(&r);
}

static void test_run_failures_show_differences(void **state)
{
    struct run r;

    (void)state;
    write_file("plain.yaml", plain_pipeline);
    write_file("fail.test.yaml",
               "tests:\n"
               "  - name: wrong\n"
               "    input: {value: {total_cents: 28484, cust_id: c-1}}\n"
               "    expect:\n"
               "      sinks:\n"
               "        billing:\n"
               "          body: {total_cents: 28485, customer: c-1}\n"
               "        search: skip\n"
               "  - name: not dropped\n"
               "    input: {value: x}\n"
               "    expect: drop\n"
               "  - name: no error\n"
               "    input: {value: x}\n"
               "    expect: {error: json}\n"
               "  - name: not split\n"
               "    input: {value: x}\n"
               "    expect: {messages: [{value: x}, {value: y}]}\n"
               "  - name: right\n"
               "    input: {value: x}\n"
               "    expect: {value: x}\n");
    r = run("plain.yaml", "fail.test.yaml", 0);
    assert_int_equal(r.rc, TESTCMD_FAILED);
    assert_contains(r.out,
                    "fail.test.yaml:2)\n"
                    "    sinks.billing.body.total_cents: expected 28485, "
                    "got 28484\n"
                    "    sinks.billing.body.customer: missing\n"
                    "    sinks.billing.body.cust_id: unexpected \"c-1\"\n"
                    "    sinks.search: expected skip, got a request\n");
    assert_contains(r.out, "FAIL not dropped (");
    assert_contains(r.out, "    expected drop, got 1 message\n");
    assert_contains(r.out, "    expected an error containing \"json\", got "
                           "1 message\n");
    assert_contains(r.out, "    messages: expected 2 messages, got 1 "
                           "message\n");
    assert_contains(r.out, "ok   right (");
    assert_contains(r.out, "1 passed, 4 failed\n");
    run_free(&r);
}

static void test_run_invalid_files_exit_2(void **state)
{
    struct run r;

    (void)state;
    write_file("plain.yaml", plain_pipeline);
    /* no tests beside the pipeline */
    r = run("plain.yaml", NULL, 0);
    assert_int_equal(r.rc, TESTCMD_INVALID);
    assert_contains(r.err, "no tests: write ");
    assert_contains(r.err, "/plain.test.yaml\n");
    assert_string_equal(r.out, "");
    run_free(&r);

    write_file("bad.test.yaml",
               "tests:\n"
               "  - name: one\n"
               "    input: {value: {a: 1}, partiton: 3}\n"
               "    expect:\n"
               "      sinks: {biling: skip, search: maybe}\n"
               "  - input: {}\n"
               "    expect: {error: x, value: y}\n");
    r = run("plain.yaml", "bad.test.yaml", 0);
    assert_int_equal(r.rc, TESTCMD_INVALID);
    assert_contains(r.err, "bad.test.yaml:3:28: tests[0].input.partiton: "
                           "unknown key; expected one of: key, value, ");
    assert_contains(r.err, "bad.test.yaml:5:15: tests[0].expect.sinks."
                           "biling: no such sink in ");
    assert_contains(r.err, "(its sinks: billing, search)\n");
    assert_contains(r.err, "bad.test.yaml:5:37: tests[0].expect.sinks."
                           "search: expected skip, {error: TEXT} or a "
                           "request");
    assert_contains(r.err, "bad.test.yaml:6:5: tests[1].name: missing "
                           "required key `name`\n");
    assert_contains(r.err, "bad.test.yaml:7:13: tests[1].expect: `error` "
                           "goes alone");
    assert_contains(r.err, "sluice: 5 error(s) in ");
    assert_string_equal(r.out, "");
    run_free(&r);

    /* an invalid pipeline */
    write_file("broken.yaml", "pipeline: x\nsinks: 3\n");
    r = run("broken.yaml", "bad.test.yaml", 0);
    assert_int_equal(r.rc, TESTCMD_INVALID);
    assert_contains(r.err, "broken.yaml:");
    run_free(&r);
}

static void test_run_lua_transforms(void **state)
{
    struct run r;

    char sub[128];

    (void)state;
    snprintf(sub, sizeof(sub), "%s/t", dir);
    assert_int_equal(mkdir(sub, 0755), 0);
    write_file("lua.yaml",
               "pipeline: lua\n"
               "source: {brokers: embedded, topics: [orders]}\n"
               "transform: t/orders.lua\n"
               "sinks:\n"
               "  billing: {type: http, url: 'http://127.0.0.1:1/b', "
               "transform: t/billing.lua}\n"
               "  crm: {type: http, url: 'http://127.0.0.1:1/c', "
               "transform: t/crm.lua}\n");
    write_file("t/orders.lua",
               "function transform(msg)\n"
               "  local o = msg.json\n"
               "  if o.test then return nil end\n"
               "  if o.items then\n"
               "    local out = {}\n"
               "    for i, it in ipairs(o.items) do\n"
               "      out[i] = {json = {item = it}}\n"
               "    end\n"
               "    return out\n"
               "  end\n"
               "  o.amount_cents = math.floor(o.amount * 100 + 0.5)\n"
               "  msg.headers['x-source'] = 'sluice'\n"
               "  return msg\n"
               "end\n");
    write_file("t/billing.lua",
               "function transform(msg)\n"
               "  local o = msg.json\n"
               "  if o.item then\n"
               "    return {json = {item = o.item},\n"
               "            headers = {Idem = msg.dedupe_key}}\n"
               "  end\n"
               "  return {method = 'PUT', path = '/orders/' .. o.order_id,\n"
               "          json = {total_cents = o.amount_cents},\n"
               "          headers = {['X-Tenant'] = msg.key}}\n"
               "end\n");
    write_file("t/crm.lua",
               "function transform(msg)\n"
               "  local o = msg.json\n"
               "  if o.item == 2 then return nil end\n"
               "  if o.customer == nil and not o.item then\n"
               "    error('no customer')\n"
               "  end\n"
               "  return msg\n"
               "end\n");
    write_file("lua.test.yaml",
               "tests:\n"
               "  - name: enriched and shaped\n"
               "    input: {key: t7, value: {order_id: 1, amount: 284.85, "
               "customer: c-1}}\n"
               "    expect:\n"
               "      key: t7\n"
               "      value: {order_id: 1, amount: 284.85, amount_cents: "
               "28485, customer: c-1}\n"
               "      headers: {x-source: sluice}\n"
               "      sinks:\n"
               "        billing: {method: PUT, path: /orders/1, body: "
               "{total_cents: 28485}, headers: {x-tenant: t7}}\n"
               "        crm: {body: {order_id: 1, amount: 284.85, "
               "amount_cents: 28485, customer: c-1}}\n"
               "  - name: dropped\n"
               "    input: {value: {test: true}}\n"
               "    expect: drop\n"
               "  - name: not json\n"
               "    input: {value: not json}\n"
               "    expect: {error: json}\n"
               "  - name: split\n"
               "    input: {value: {items: [1, 2]}, headers: {message-id: m-9}}\n"
               "    expect:\n"
               "      messages:\n"
               "        - value: {item: 1}\n"
               "          sinks: {billing: {body: {item: 1}, headers: "
               "{idem: \"m-9#1\"}}, crm: {}}\n"
               "        - value: {item: 2}\n"
               "          sinks: {crm: skip}\n"
               "  - name: a sink fails\n"
               "    input: {value: {order_id: 2, amount: 1}}\n"
               "    expect: {sinks: {crm: {error: no customer}}}\n"
               "  - name: this one fails\n"
               "    input: {key: t7, value: {order_id: 3, amount: 1.01}}\n"
               "    expect:\n"
               "      sinks:\n"
               "        billing: {body: {total_cents: 100}}\n"
               "        crm: skip\n");
    r = run("lua.yaml", NULL, 0);
    assert_int_equal(r.rc, TESTCMD_FAILED);
    assert_contains(r.out, "ok   enriched and shaped (");
    assert_contains(r.out, "ok   dropped (");
    assert_contains(r.out, "ok   not json (");
    assert_contains(r.out, "ok   split (");
    assert_contains(r.out, "ok   a sink fails (");
    assert_contains(r.out, "FAIL this one fails (");
    assert_contains(r.out, "    sinks.billing.body.total_cents: expected "
                           "100, got 101\n");
    assert_contains(r.out, "    sinks.crm: expected skip, got an error: ");
    assert_contains(r.out, "no customer");
    assert_contains(r.out, "5 passed, 1 failed\n");
    assert_string_equal(r.err, "");
    run_free(&r);

    /* a script that does not load: the pipeline is invalid */
    write_file("t/crm.lua", "function transform(msg\n");
    r = run("lua.yaml", NULL, 0);
    assert_int_equal(r.rc, TESTCMD_INVALID);
    assert_contains(r.err, "crm.lua");
    assert_string_equal(r.out, "");
    run_free(&r);
}

/* The dedupe key the engine and `sluice test` both derive: the producer's
 * message id, else topic-partition-offset, also for an id that is empty,
 * too long, or holds a NUL byte (cut there, two ids could collide). */
static void test_dedupe_key(void **state)
{
    char key[ENGINE_DEDUPE_MAX], tiny[8];
    char long_id[ENGINE_DEDUPE_MAX];

    (void)state;
    memset(long_id, 'x', sizeof(long_id));
    assert_string_equal(engine_dedupe_key(key, sizeof(key), "m-1", 3,
                                          "orders", 3, 1041),
                        "m-1");
    assert_string_equal(engine_dedupe_key(key, sizeof(key), NULL, 0,
                                          "orders", 3, 1041),
                        "orders-3-1041");
    assert_string_equal(engine_dedupe_key(key, sizeof(key), "", 0, "orders",
                                          3, 1041),
                        "orders-3-1041");
    assert_string_equal(engine_dedupe_key(key, sizeof(key), "a\0b", 3,
                                          "orders", 3, 1041),
                        "orders-3-1041");
    assert_string_equal(engine_dedupe_key(key, sizeof(key), long_id,
                                          sizeof(long_id), "orders", 3, 1041),
                        "orders-3-1041");
    assert_string_equal(engine_dedupe_key(tiny, sizeof(tiny), "m-1", 3,
                                          "orders", 3, 1041),
                        "m-1");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dedupe_key),
        cmocka_unit_test(test_value_keeps_yaml_order_and_number_text),
        cmocka_unit_test(test_value_spells_yaml_numbers_as_json),
        cmocka_unit_test(test_value_strings_are_escaped_or_raw),
        cmocka_unit_test(test_value_null_is_none),
        cmocka_unit_test(test_value_errors_say_where),
        cmocka_unit_test(test_value_alias_bomb_is_bounded),
        cmocka_unit_test(test_compare_equal_by_json_semantics),
        cmocka_unit_test(test_compare_reports_each_difference_with_its_path),
        cmocka_unit_test(test_compare_values_that_are_not_json),
        cmocka_unit_test(test_compare_cuts_long_values),
        cmocka_unit_test(test_compare_bounds_the_lines),
        cmocka_unit_test(test_compare_rejects_bad_expectations),
        cmocka_unit_test_setup_teardown(
            test_run_without_scripts_passes_values_through, setup, teardown),
        cmocka_unit_test_setup_teardown(test_run_failures_show_differences,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_run_invalid_files_exit_2, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_run_lua_transforms, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
