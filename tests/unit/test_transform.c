/* test_transform.c -- the Lua host (lua/transform.c) through its API, on
 * pipelines loaded from YAML: what a pipeline transform reads, what it
 * changes (and that nothing changes when it only reads), drop and split,
 * sink requests, retry verdicts and the attempt a policy sees, the json,
 * log and sluice modules, the sandbox and its limits per call, and that
 * every error names file:line; and a spec filled by hand, without a cfg.
 * Each test is what docs/lua.md promises. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cfg.h"
#include "cfgtransform.h"

static char dir[64];
static struct cfg *cfg;
static transform_t *tr;
static struct sl_error err;
static struct cfg_errors cfg_errs;

/* ---- fixtures ---- */

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof(dir), "/tmp/sluice-test-transform-XXXXXX");
    assert_non_null(mkdtemp(dir));
    return 0;
}

static void close_pipeline(void)
{
    transform_destroy(tr);
    tr = NULL;
    cfg_free(cfg);
    cfg = NULL;
}

static int teardown(void **state)
{
    char cmd[128];

    (void)state;
    close_pipeline();
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
    return 0;
}

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

/* Writes pipeline.yaml with `top` (top-level lines) and the extra lines of
 * sinks a and b (indented four spaces), and loads it. */
static void load_cfg(const char *top, const char *sink_a, const char *sink_b)
{
    char yaml[4096], path[256];

    close_pipeline();
    snprintf(yaml, sizeof(yaml),
             "pipeline: test\n"
             "%s"
             "source:\n"
             "  brokers: \"127.0.0.1:9\"\n"
             "  topics: [t]\n"
             "sinks:\n"
             "  a:\n"
             "    type: http\n"
             "    url: \"http://127.0.0.1:9/a\"\n"
             "%s"
             "  b:\n"
             "    type: http\n"
             "    url: \"http://127.0.0.1:9/b\"\n"
             "%s",
             top ? top : "", sink_a ? sink_a : "", sink_b ? sink_b : "");
    write_file("pipeline.yaml", yaml);
    snprintf(path, sizeof(path), "%s/pipeline.yaml", dir);
    memset(&cfg_errs, 0, sizeof(cfg_errs));
    cfg = cfg_load(path, &cfg_errs);
    if (cfg == NULL) {
        fail_msg("cfg_load:\n%s", cfg_errs.text);
    }
}

static void open_ok(const char *top, const char *sink_a, const char *sink_b)
{
    load_cfg(top, sink_a, sink_b);
    tr = cfg_transform_new(cfg, &err);
    if (tr == NULL) {
        fail_msg("transform_new: %s", err.msg);
    }
}

/* Expects transform_new to fail; returns its error. */
static const char *open_fails(const char *top, const char *sink_a,
                              const char *sink_b)
{
    load_cfg(top, sink_a, sink_b);
    memset(&err, 0, sizeof(err));
    tr = cfg_transform_new(cfg, &err);
    assert_null(tr);
    return err.msg;
}

/* A pipeline whose transform (t.lua) is lua, plus top-level extra. */
static void pipeline_with(const char *lua, const char *extra)
{
    char top[512];

    write_file("t.lua", lua);
    snprintf(top, sizeof(top), "transform: t.lua\n%s", extra ? extra : "");
    open_ok(top, NULL, NULL);
}

static void pipeline(const char *lua)
{
    pipeline_with(lua, NULL);
}

/* ---- messages and assertions ---- */

static struct connector_msg msg_of(const char *value)
{
    return (struct connector_msg){
        .topic = "orders",
        .partition = 3,
        .offset = 1041,
        .timestamp_ms = 1795975200000,
        .key = "tenant-07",
        .key_len = 9,
        .value = value,
        .value_len = value != NULL ? strlen(value) : 0,
        .dedupe_key = "orders-3-1041",
    };
}

static void assert_contains(const char *text, const char *needle)
{
    if (text == NULL || strstr(text, needle) == NULL) {
        fail_msg("expected `%s` in: %s", needle, text ? text : "(null)");
    }
}

static void assert_bytes(const void *p, size_t len, const char *want)
{
    if (want == NULL) {
        if (p != NULL) {
            fail_msg("expected NULL, got `%.*s`", (int)len, (const char *)p);
        }
        assert_int_equal(len, 0);
        return;
    }
    if (p == NULL) {
        fail_msg("expected `%s`, got NULL", want);
    }
    if (len != strlen(want) || memcmp(p, want, len) != 0) {
        fail_msg("expected `%s`, got `%.*s`", want, (int)len,
                 (const char *)p);
    }
}

/* Headers as "name=value;name=value" in their order. */
static void assert_headers(const struct sl_header *h, size_t n,
                           const char *want)
{
    char text[1024];
    size_t len = 0;

    text[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        len += (size_t)snprintf(text + len, sizeof(text) - len, "%s%s=%.*s",
                                i ? ";" : "", h[i].name,
                                (int)h[i].value_len,
                                h[i].value ? (const char *)h[i].value : "");
        assert_true(len < sizeof(text));
    }
    assert_string_equal(text, want);
}

/* Runs the pipeline transform, expecting n outputs. */
static void run_ok(const struct connector_msg *in, int n)
{
    int rc = transform_run(tr, in, &err);

    if (rc < 0) {
        fail_msg("transform_run failed: %s", err.msg);
    }
    assert_int_equal(rc, n);
}

/* Runs the pipeline transform, expecting one output; returns it. */
static const struct transform_out *run_one(const struct connector_msg *in)
{
    run_ok(in, 1);
    return transform_output(tr, 0);
}

static const char *run_fails(const struct connector_msg *in)
{
    memset(&err, 0, sizeof(err));
    int rc = transform_run(tr, in, &err);
    if (rc != -1) {
        fail_msg("expected -1, got %d", rc);
    }
    return err.msg;
}

static int shape(size_t sink, size_t output, const struct connector_msg *m,
                 struct transform_request *req)
{
    memset(&err, 0, sizeof(err));
    int rc = transform_shape(tr, sink, output, m, req, &err);
    if (rc < 0) {
        fail_msg("transform_shape failed: %s", err.msg);
    }
    return rc;
}

/* Shapes output o for sink s, expecting a request whose body is want. */
static void shape_body(size_t sink, size_t output,
                       const struct connector_msg *m,
                       struct transform_request *req, const char *want)
{
    assert_int_equal(shape(sink, output, m, req), TRANSFORM_SEND);
    assert_bytes(req->body, req->body_len, want);
}

/* The view a sink gets of output o of in. */
/* Output i of the last run as a sink sees it. */
static struct connector_msg view_of(const struct connector_msg *in, size_t i)
{
    struct connector_msg m;

    transform_output_view(tr, i, in, &m);
    return m;
}

/* FNV-1a 64, as specified (offset basis 0xcbf29ce484222325). */
static uint64_t fnv1a_64(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ULL;

    for (; *s != '\0'; s++) {
        h = (h ^ (unsigned char)*s) * 0x100000001b3ULL;
    }
    return h;
}

/* ---- no scripts ---- */

static void test_no_scripts_pass_through(void **state)
{
    struct connector_msg in = msg_of("{\"a\":1}");
    const struct transform_out *o;
    struct transform_request req;
    struct connector_result res = {.status = CONNECTOR_RETRY,
                                   .http_status = 503,
                                   .retry_after_ms = -1};
    struct transform_attempt a = {.sink = "a", .msg = &in, .attempt = 1,
                                  .result = &res};
    struct sl_decision d;

    (void)state;
    open_ok(NULL, NULL, NULL);
    assert_false(transform_has_pipeline(tr));
    assert_false(transform_has_sink(tr, 0));
    assert_false(transform_has_retry(tr, 0));
    o = run_one(&in);
    assert_true(o->unchanged);
    assert_ptr_equal(o->value, in.value);
    assert_ptr_equal(o->key, in.key);
    assert_null(o->dedupe_key);
    assert_null(transform_output(tr, 1));
    memset(&req, 0xff, sizeof(req));
    assert_int_equal(shape(0, 0, &in, &req), TRANSFORM_SEND);
    assert_null(req.body);
    assert_null(req.method);
    assert_null(req.path);
    assert_int_equal(req.header_count, 0);
    assert_int_equal(transform_retry(tr, 0, &a, &d, &err), 0);
    assert_int_equal(d.verdict, SL_VERDICT_DEFAULT);
    assert_int_equal(transform_memory(tr), 0);
}

/* ---- reading the message ---- */

static const char read_api_lua[] =
    "local function show(v) if v == nil then return 'nil' end\n"
    "  return tostring(v) end\n"
    "function transform(msg)\n"
    "  local h = msg.headers\n"
    "  local a = h.a\n"
    "  if a ~= nil then\n"
    "    assert(type(a) == 'table' and #a == 2, 'a repeated header is a "
    "list')\n"
    "  else\n"
    "    a = {'-', '-'}\n"
    "  end\n"
    "  assert(math.type(msg.partition) == 'integer')\n"
    "  assert(math.type(msg.offset) == 'integer')\n"
    "  assert(msg.timestamp == nil or math.type(msg.timestamp) == "
    "'integer')\n"
    "  msg.value = table.concat({show(msg.key), show(msg.value), msg.topic,\n"
    "    show(msg.partition), show(msg.offset), show(msg.timestamp),\n"
    "    a[1], a[2], show(h.b), show(h.zz), msg.dedupe_key, show(msg.nope)},\n"
    "    '|')\n"
    "  return msg\n"
    "end\n";

static void test_msg_read_api(void **state)
{
    static const struct sl_header hdrs[] = {
        {"a", "1", 1},
        {"b", "x", 1},
        {"a", "2", 1},
    };
    struct connector_msg in = msg_of("v1");
    const struct transform_out *o;

    (void)state;
    pipeline(read_api_lua);
    assert_true(transform_has_pipeline(tr));
    in.offset = (int64_t)1 << 40;
    in.headers = hdrs;
    in.header_count = 3;
    o = run_one(&in);
    assert_bytes(o->value, o->value_len,
                 "tenant-07|v1|orders|3|1099511627776|1795975200000|1|2|x|"
                 "nil|orders-3-1041|nil");

    /* No key, no value, no timestamp, no headers. */
    in = msg_of(NULL);
    in.key = NULL;
    in.key_len = 0;
    in.timestamp_ms = -1;
    in.dedupe_key = "msg-id-7";
    o = run_one(&in);
    assert_bytes(o->value, o->value_len,
                 "nil|nil|orders|3|1041|nil|-|-|nil|nil|msg-id-7|nil");
}

/* ---- unchanged: zero copy ---- */

static void test_return_msg_is_unchanged(void **state)
{
    static const struct sl_header hdrs[] = {{"h", "v", 1}};
    struct connector_msg in = msg_of("{\"a\":1}");
    const struct transform_out *o;

    (void)state;
    pipeline("function transform(msg) return msg end\n");
    in.headers = hdrs;
    in.header_count = 1;
    o = run_one(&in);
    assert_true(o->unchanged);
    assert_ptr_equal(o->key, in.key);
    assert_int_equal(o->key_len, in.key_len);
    assert_ptr_equal(o->value, in.value);
    assert_int_equal(o->value_len, in.value_len);
    assert_ptr_equal(o->headers, in.headers);
    assert_int_equal(o->header_count, 1);
    assert_null(o->dedupe_key);
}

static void test_reading_json_forwards_the_bytes(void **state)
{
    /* Not canonical: spaces, unsorted keys, 71.20, a big integer, a null,
     * empty containers. Only reading must forward it as it is. */
    static const char value[] =
        "{ \"kind\" : \"order\", \"amount\": 71.20, \"items\": [1, 2],\n"
        "  \"big\": 9007199254740993, \"none\": null, \"e\": {}, "
        "\"l\": [] }";
    struct connector_msg in = msg_of(value);
    const struct transform_out *o;

    (void)state;
    pipeline("function transform(msg)\n"
             "  local o = msg.json\n"
             "  if o.kind == 'skip' then return nil end\n"
             "  local n = 0\n"
             "  for _, item in ipairs(o.items) do n = n + item end\n"
             "  assert(n == 3 and msg.json.amount > 71)\n"
             "  assert(o.big == 9007199254740993 and o.none == json.null)\n"
             "  return msg\n"
             "end\n");
    o = run_one(&in);
    assert_true(o->unchanged);
    assert_ptr_equal(o->value, in.value);
    assert_int_equal(o->value_len, strlen(value));
    assert_ptr_equal(o->key, in.key);

    in = msg_of("{\"kind\":\"skip\"}");
    run_ok(&in, 0);
}

/* A header name repeated around another one: reading msg.headers must not
 * change or reorder them ("headers that are not changed keep their
 * order"). */
static void test_reading_headers_is_unchanged(void **state)
{
    static const struct sl_header hdrs[] = {
        {"a", "1", 1},
        {"b", "x", 1},
        {"a", "2", 1},
    };
    struct connector_msg in = msg_of("v");
    const struct transform_out *o;

    (void)state;
    pipeline("function transform(msg)\n"
             "  local h = msg.headers\n"
             "  assert(h.a[1] == '1' and h.a[2] == '2' and h.b == 'x')\n"
             "  return msg\n"
             "end\n");
    in.headers = hdrs;
    in.header_count = 3;
    o = run_one(&in);
    assert_headers(o->headers, o->header_count, "a=1;b=x;a=2");
    assert_true(o->unchanged);
}

/* ---- changes ---- */

static void test_change_key(void **state)
{
    struct connector_msg in = msg_of("v");
    const struct transform_out *o;

    (void)state;
    pipeline("function transform(msg)\n"
             "  if msg.offset == 1 then msg.key = 'k2'\n"
             "  else msg.key = nil; assert(msg.key == nil) end\n"
             "  return msg\n"
             "end\n");
    in.offset = 1;
    o = run_one(&in);
    assert_false(o->unchanged);
    assert_bytes(o->key, o->key_len, "k2");
    assert_ptr_equal(o->value, in.value); /* the value is not copied */
    assert_ptr_equal(o->headers, in.headers);

    in.offset = 2;
    o = run_one(&in);
    assert_false(o->unchanged);
    assert_null(o->key);
    assert_int_equal(o->key_len, 0);
    assert_ptr_equal(o->value, in.value);
}

static void test_change_value(void **state)
{
    struct connector_msg in = msg_of("{\"z\":1}");
    const struct transform_out *o;

    (void)state;
    pipeline("function transform(msg)\n"
             "  if msg.offset == 1 then msg.value = 'x'\n"
             "  elseif msg.offset == 2 then msg.value = nil\n"
             "  elseif msg.offset == 4 then\n"
             "    msg.json.z = 5\n"
             "    msg.key = msg.value\n"
             "  else\n"
             "    msg.json = json.null\n"
             "  end\n"
             "  return msg\n"
             "end\n");
    in.offset = 1;
    o = run_one(&in);
    assert_false(o->unchanged);
    assert_bytes(o->value, o->value_len, "x");
    assert_ptr_equal(o->key, in.key);

    in.offset = 2; /* a tombstone */
    o = run_one(&in);
    assert_false(o->unchanged);
    assert_null(o->value);

    in.offset = 4; /* msg.value reads the change made through msg.json */
    o = run_one(&in);
    assert_bytes(o->value, o->value_len, "{\"z\":5}");
    assert_bytes(o->key, o->key_len, "{\"z\":5}");

    in.offset = 5;
    o = run_one(&in);
    assert_bytes(o->value, o->value_len, "null");
}

/* msg.value = text, then a change through msg.json: the JSON view of the
 * new value is what goes out, changed. */
static void test_json_change_after_value_assignment(void **state)
{
    struct connector_msg in = msg_of("{\"z\":1}");
    const struct transform_out *o;

    (void)state;
    pipeline("function transform(msg)\n"
             "  msg.value = '{\"y\":1}'\n"
             "  msg.json.y = 2\n"
             "  assert(msg.json.y == 2)\n"
             "  if msg.offset == 2 then msg.key = msg.value end\n"
             "  return msg\n"
             "end\n");
    in.offset = 1;
    o = run_one(&in);
    assert_bytes(o->value, o->value_len, "{\"y\":2}");
    in.offset = 2; /* and msg.value reads the change, as it does without
                    * the assignment */
    o = run_one(&in);
    assert_bytes(o->key, o->key_len, "{\"y\":2}");
}

static void test_change_json(void **state)
{
    struct connector_msg in =
        msg_of("{\"id\":9007199254740993,\"a\":null,\"n\":71.25,"
               "\"s\":\"x\"}");
    const struct transform_out *o;

    (void)state;
    pipeline("function transform(msg)\n"
             "  local o = msg.json\n"
             "  if msg.offset == 1 then o.tag = 't'\n"
             "  elseif msg.offset == 2 then o.id = o.id + 1\n"
             "  elseif msg.offset == 3 then o.s = nil\n"
             "  else msg.json = { x = json.null, list = json.array() } end\n"
             "  return msg\n"
             "end\n");
    in.offset = 1;
    o = run_one(&in);
    assert_false(o->unchanged);
    /* Re-encoded with sorted keys; the integer exact, the null kept. */
    assert_bytes(o->value, o->value_len,
                 "{\"a\":null,\"id\":9007199254740993,\"n\":71.25,"
                 "\"s\":\"x\",\"tag\":\"t\"}");
    assert_ptr_equal(o->key, in.key);

    in.offset = 2;
    o = run_one(&in);
    assert_bytes(o->value, o->value_len,
                 "{\"a\":null,\"id\":9007199254740994,\"n\":71.25,"
                 "\"s\":\"x\"}");

    in.offset = 3;
    o = run_one(&in);
    assert_bytes(o->value, o->value_len,
                 "{\"a\":null,\"id\":9007199254740993,\"n\":71.25}");

    in.offset = 4;
    o = run_one(&in);
    assert_bytes(o->value, o->value_len, "{\"list\":[],\"x\":null}");

    /* {"a":null} with a change elsewhere keeps its null. */
    in = msg_of("{\"a\":null}");
    in.offset = 1;
    o = run_one(&in);
    assert_bytes(o->value, o->value_len, "{\"a\":null,\"tag\":\"t\"}");
}

/* docs/lua.md: "A number the script did not change goes out with its
 * original text: 71.20 stays 71.20". */
static void test_json_numbers_keep_their_text(void **state)
{
    struct connector_msg in =
        msg_of("{\"amount\":71.20,\"rate\":1e2,\"x\":284.85}");
    const struct transform_out *o;

    (void)state;
    pipeline("function transform(msg)\n"
             "  msg.json.tag = 't'\n"
             "  return msg\n"
             "end\n");
    o = run_one(&in);
    assert_bytes(o->value, o->value_len,
                 "{\"amount\":71.20,\"rate\":1e2,\"tag\":\"t\","
                 "\"x\":284.85}");
}

static void test_change_headers(void **state)
{
    static const struct sl_header hdrs[] = {
        {"h", "1", 1},
        {"keep", "k", 1},
        {"chg", "old", 3},
    };
    struct connector_msg in = msg_of("v");
    const struct transform_out *o;

    (void)state;
    pipeline("function transform(msg)\n"
             "  if msg.offset == 1 then\n"
             "    msg.headers['x'] = '1'\n"
             "    msg.headers['h'] = nil\n"
             "    msg.headers['chg'] = 'new'\n"
             "    msg.headers['list'] = {'p', 'q'}\n"
             "    msg.headers['b'] = 2\n"
             "  elseif msg.offset == 2 then\n"
             "    msg.headers = { z = '1', keep = 'K' }\n"
             "  else\n"
             "    msg.headers.bad = true\n"
             "  end\n"
             "  return msg\n"
             "end\n");
    in.headers = hdrs;
    in.header_count = 3;
    in.offset = 1;
    o = run_one(&in);
    assert_false(o->unchanged);
    /* The input's names first, in its order; new names sorted. */
    assert_headers(o->headers, o->header_count,
                   "keep=k;chg=new;b=2;list=p;list=q;x=1");
    assert_ptr_equal(o->value, in.value);

    in.offset = 2;
    o = run_one(&in);
    assert_headers(o->headers, o->header_count, "keep=K;z=1");

    in.offset = 3;
    assert_contains(run_fails(&in), "headers[\"bad\"]");
}

static void test_change_dedupe_key(void **state)
{
    struct connector_msg in = msg_of("v");
    const struct transform_out *o;

    (void)state;
    pipeline("function transform(msg)\n"
             "  assert(msg.dedupe_key == 'orders-3-1041')\n"
             "  if msg.offset == 1 then msg.dedupe_key = 'd-1'\n"
             "  else msg.dedupe_key = '' end\n"
             "  return msg\n"
             "end\n");
    in.offset = 1;
    o = run_one(&in);
    assert_false(o->unchanged);
    assert_string_equal(o->dedupe_key, "d-1");
    assert_ptr_equal(o->value, in.value);

    in.offset = 2;
    assert_contains(run_fails(&in), "non-empty string");
}

/* ---- drop and split ---- */

static void test_drop(void **state)
{
    struct connector_msg in = msg_of("v");

    (void)state;
    pipeline("function transform(msg)\n"
             "  if msg.offset == 1 then return nil end\n"
             "  if msg.offset == 2 then return {} end\n"
             "  if msg.offset == 3 then return false end\n"
             "  return msg\n"
             "end\n");
    for (int64_t off = 1; off <= 3; off++) {
        in.offset = off;
        run_ok(&in, 0);
        assert_null(transform_output(tr, 0));
    }
    in.offset = 4;
    run_ok(&in, 1);
}

static void test_split(void **state)
{
    static const struct sl_header hdrs[] = {{"h", "v", 1}};
    struct connector_msg in =
        msg_of("{\"order_id\":\"b-1\",\"items\":[1,2]}");
    const struct transform_out *o;

    (void)state;
    pipeline("function transform(msg)\n"
             "  local b = msg.json\n"
             "  if msg.offset == 2 then return { key = 'solo' } end\n"
             "  msg.key = 'kk'\n"
             "  local out = {}\n"
             "  for i, item in ipairs(b.items) do\n"
             "    out[i] = { json = { order_id = b.order_id, item = item } }\n"
             "  end\n"
             "  out[#out + 1] = { value = 'raw', key = false,\n"
             "                    dedupe_key = 'custom',\n"
             "                    headers = { n = '1' } }\n"
             "  out[#out + 1] = msg\n"
             "  return out\n"
             "end\n");
    in.headers = hdrs;
    in.header_count = 1;
    in.offset = 1;
    run_ok(&in, 4);
    for (size_t i = 0; i < 2; i++) {
        char want[64];
        o = transform_output(tr, i);
        snprintf(want, sizeof(want), "{\"item\":%zu,\"order_id\":\"b-1\"}",
                 i + 1);
        assert_false(o->unchanged);
        assert_bytes(o->value, o->value_len, want);
        assert_bytes(o->key, o->key_len, "kk"); /* as the script left it */
        assert_headers(o->headers, o->header_count, "h=v");
        /* A part whose script chose no dedupe key gets the input's with
         * its place, so no sink takes it for a duplicate of another. */
        snprintf(want, sizeof(want), "%s#%zu", in.dedupe_key, i + 1);
        assert_string_equal(o->dedupe_key, want);
    }
    o = transform_output(tr, 2);
    assert_bytes(o->value, o->value_len, "raw");
    assert_null(o->key);
    assert_string_equal(o->dedupe_key, "custom");
    assert_headers(o->headers, o->header_count, "n=1");
    o = transform_output(tr, 3);
    assert_false(o->unchanged); /* its key changed */
    assert_string_equal(o->dedupe_key, "orders-3-1041#4");
    assert_bytes(o->key, o->key_len, "kk");
    assert_ptr_equal(o->value, in.value); /* msg.json only read */
    assert_headers(o->headers, o->header_count, "h=v");
    assert_null(transform_output(tr, 4));

    /* One table, not a list: one message. */
    in.offset = 2;
    o = run_one(&in);
    assert_false(o->unchanged);
    assert_bytes(o->key, o->key_len, "solo");
    assert_ptr_equal(o->value, in.value);
}

static void test_split_errors(void **state)
{
    struct connector_msg in = msg_of("v");

    (void)state;
    pipeline("function transform(msg)\n"
             "  if msg.offset == 1 then return { msg, 42 } end\n"
             "  if msg.offset == 2 then return {{ value = 'a', json = {} }} "
             "end\n"
             "  return {{ key = 7 }}\n"
             "end\n");
    in.offset = 1;
    assert_contains(run_fails(&in), "item 2 is a number");
    in.offset = 2;
    assert_contains(run_fails(&in), "not both");
    in.offset = 3;
    assert_contains(run_fails(&in), "key: expected a string or false");
}

/* ---- errors ---- */

static void test_runtime_error_names_file_and_line(void **state)
{
    struct connector_msg in = msg_of("v");
    const char *e;

    (void)state;
    pipeline("function transform(msg)\n"
             "  if msg.offset == 1 then\n"
             "    local t = nil\n"
             "    return t.field\n"
             "  end\n"
             "  if msg.offset == 2 then error('custom failure') end\n"
             "  msg.topic = 'other'\n"
             "  return msg\n"
             "end\n");
    in.offset = 1;
    e = run_fails(&in);
    assert_contains(e, "t.lua:4:");
    assert_contains(e, "attempt to index a nil value");
    assert_null(transform_output(tr, 0));

    in.offset = 2;
    e = run_fails(&in);
    assert_contains(e, "t.lua:6:");
    assert_contains(e, "custom failure");

    /* Raised by the host (C), still with the script's line. */
    in.offset = 3;
    e = run_fails(&in);
    assert_contains(e, "t.lua:7:");
    assert_contains(e, "msg.topic cannot be set");
}

static void test_bad_return_type(void **state)
{
    struct connector_msg in = msg_of("v");

    (void)state;
    pipeline("function transform(msg)\n"
             "  if msg.offset == 1 then return 42 end\n"
             "  if msg.offset == 2 then return 'text' end\n"
             "  return true\n"
             "end\n");
    for (int64_t off = 1; off <= 3; off++) {
        in.offset = off;
        const char *e = run_fails(&in);
        assert_contains(e, "t.lua");
        assert_contains(e, "must return the message");
    }
}

static void test_json_of_non_json_value(void **state)
{
    struct connector_msg in = msg_of("not json");

    (void)state;
    pipeline("function transform(msg) return msg.json.a end\n");
    assert_contains(run_fails(&in), "not JSON");
    assert_contains(err.msg, "t.lua:1:");
    in = msg_of(NULL);
    assert_contains(run_fails(&in), "no value");
    /* The state is fine afterwards: this one decodes (and returns a
     * number, which is not a message). */
    in = msg_of("{\"a\":1}");
    assert_contains(run_fails(&in), "must return the message");
}

static void test_bad_assignments(void **state)
{
    struct connector_msg in = msg_of("v");

    (void)state;
    pipeline("function transform(msg)\n"
             "  if msg.offset == 1 then msg.topic = 'x' end\n"
             "  if msg.offset == 2 then msg.partition = 1 end\n"
             "  if msg.offset == 3 then msg.key = {} end\n"
             "  if msg.offset == 4 then msg.value = {} end\n"
             "  if msg.offset == 5 then msg.json = nil end\n"
             "  if msg.offset == 6 then msg.headers = 'x' end\n"
             "  return msg\n"
             "end\n");
    static const char *const want[] = {
        "msg.topic cannot be set", "msg.partition cannot be set",
        "msg.key: expected a string or nil", "set msg.json for a table",
        "msg.json: cannot be nil", "msg.headers: expected a table",
    };
    for (int64_t off = 1; off <= 6; off++) {
        in.offset = off;
        assert_contains(run_fails(&in), want[off - 1]);
    }
}

/* docs/lua.md: "The msg object is valid only during the call; keeping it
 * in a global for later is an error." */
/* The msg is one object reused for every call (no allocation per
 * message): one kept in a global is the message of whichever call is
 * running, never a dangling pointer, and outside any call it raises. */
static void test_msg_kept_after_its_call(void **state)
{
    struct connector_msg first = msg_of("first");
    struct connector_msg second = msg_of("second");
    const struct transform_out *o;

    (void)state;
    pipeline("function transform(msg)\n"
             "  if saved ~= nil then\n"
             "    msg.key = saved.value\n"
             "    return msg\n"
             "  end\n"
             "  saved = msg\n"
             "  return msg\n"
             "end\n");
    run_ok(&first, 1);
    o = run_one(&second);
    assert_bytes(o->key, o->key_len, "second");
}

/* ---- the sandbox, per call ---- */

static void test_instruction_budget_fails_one_call(void **state)
{
    struct connector_msg in = msg_of("v");
    const struct transform_out *o;

    (void)state;
    pipeline_with("function transform(msg)\n"
                  "  if msg.offset == 1 then while true do end end\n"
                  "  if msg.offset == 2 then\n"
                  "    while true do pcall(function() while true do end "
                  "end) end\n"
                  "  end\n"
                  "  if msg.offset == 4 then\n"
                  "    coroutine.wrap(function() while true do end end)()\n"
                  "  end\n"
                  "  msg.value = 'ok'\n"
                  "  return msg\n"
                  "end\n",
                  "lua:\n  instruction_limit: 100000\n");
    for (int64_t off = 1; off <= 4; off += off == 2 ? 2 : 1) {
        in.offset = off;
        assert_contains(run_fails(&in), "instruction budget");
        in.offset = 3;
        o = run_one(&in);
        assert_bytes(o->value, o->value_len, "ok");
    }
}

static void test_memory_limit_fails_one_call(void **state)
{
    struct connector_msg in = msg_of("v");
    const struct transform_out *o;

    (void)state;
    pipeline_with("function transform(msg)\n"
                  "  if msg.offset == 1 then\n"
                  "    local t = {}\n"
                  "    for i = 1, 1e9 do t[i] = string.rep('x', 4096) .. i "
                  "end\n"
                  "  end\n"
                  "  msg.value = string.rep('y', 10)\n"
                  "  return msg\n"
                  "end\n",
                  "lua:\n  memory_limit: 8MiB\n");
    in.offset = 1;
    assert_contains(run_fails(&in), "memory");
    assert_true(transform_memory(tr) < (size_t)8 << 20);
    in.offset = 2;
    o = run_one(&in);
    assert_bytes(o->value, o->value_len, "yyyyyyyyyy");
    in.offset = 1;
    assert_contains(run_fails(&in), "memory");
    in.offset = 2;
    o = run_one(&in);
    assert_bytes(o->value, o->value_len, "yyyyyyyyyy");
}

static void test_sandbox_has_no_way_out(void **state)
{
    struct connector_msg in = msg_of("v");
    const struct transform_out *o;

    (void)state;
    write_file("helper.lua", "return { twice = function(x) return 2 * x end "
                             "}\n");
    pipeline("function transform(msg)\n"
             "  local n = msg.offset\n"
             "  if n == 1 then os.execute('touch /tmp/sluice-pwned') end\n"
             "  if n == 2 then io.open('/etc/passwd') end\n"
             "  if n == 3 then require('../../etc/passwd') end\n"
             "  if n == 4 then require('nowhere') end\n"
             "  if n == 5 then require('/etc/passwd') end\n"
             "  if n == 6 then dofile('/etc/passwd') end\n"
             "  if n == 7 then loadfile('/etc/passwd') end\n"
             "  if n == 8 then debug.getinfo(1) end\n"
             "  assert(load('\\27Lua\\84\\0') == nil, 'binary chunk')\n"
             "  assert(os.getenv == nil and os.exit == nil)\n"
             "  assert(package == nil and collectgarbage == nil)\n"
             "  assert(string.dump == nil)\n"
             "  msg.value = tostring(require('helper').twice(21))\n"
             "  return msg\n"
             "end\n");
    static const char *const want[] = {
        "execute", "io", "bad module name", "not found",
        "bad module name", "dofile", "loadfile", "debug",
    };
    for (int64_t n = 1; n <= 8; n++) {
        in.offset = n;
        const char *e = run_fails(&in);
        assert_contains(e, "t.lua:");
        assert_contains(e, want[n - 1]);
    }
    assert_int_not_equal(access("/tmp/sluice-pwned", F_OK), 0);
    /* require from the pipeline's directory works. */
    in.offset = 9;
    o = run_one(&in);
    assert_bytes(o->value, o->value_len, "42");
}

/* ---- loading ---- */

static void test_load_syntax_error(void **state)
{
    const char *e;

    (void)state;
    write_file("t.lua", "function transform(msg)\n"
                        "  return msg +\n"
                        "end\n");
    e = open_fails("transform: t.lua\n", NULL, NULL);
    assert_contains(e, "t.lua:3:");

    /* A runtime error while loading, with its line too. */
    write_file("t.lua", "local x = nil\n"
                        "x.y = 1\n"
                        "function transform(msg) return msg end\n");
    e = open_fails("transform: t.lua\n", NULL, NULL);
    assert_contains(e, "t.lua:2:");

    /* In a sink's script as well. */
    write_file("s.lua", "function transform(msg)\n"
                        "  return {\n"
                        "end\n");
    e = open_fails(NULL, "    transform: s.lua\n", NULL);
    assert_contains(e, "s.lua:3:");
}

static void test_load_missing_function(void **state)
{
    const char *e;

    (void)state;
    write_file("t.lua", "function transfrom(msg) return msg end\n");
    e = open_fails("transform: t.lua\n", NULL, NULL);
    assert_contains(e, "t.lua: defines no function `transform` (did you "
                       "mean `transfrom`?)");

    write_file("s.lua", "transform = 42\n");
    e = open_fails(NULL, NULL, "    transform: s.lua\n");
    assert_contains(e, "s.lua: defines no function `transform`");

    write_file("r.lua", "function transform(a) return nil end\n");
    e = open_fails(NULL, "    retry: r.lua\n", NULL);
    assert_contains(e, "r.lua: defines no function `retry`");
}

/* transform_check's reports, as "file:line:col: key: msg" lines. */
struct reports {
    char text[2048];
    size_t len;
    int count;
};

static void collect(void *arg, const char *file, int line, int col,
                    const char *key, const char *msg)
{
    struct reports *r = arg;

    r->len += (size_t)snprintf(r->text + r->len, sizeof(r->text) - r->len,
                               "%s:%d:%d: %s: %s\n", file, line, col, key,
                               msg);
    assert_true(r->len < sizeof(r->text));
    r->count++;
}

/* lua/ without a cfg: a spec filled by hand, copied by transform_new (its
 * strings may go at once), and errors through the caller's callback. */
static void test_spec_without_cfg(void **state)
{
    char path[256], *text;
    struct transform_sink_spec sinks[2];
    struct transform_spec spec;
    struct reports r = {0};

    (void)state;
    close_pipeline();
    write_file("t.lua", "function transform(msg)\n"
                        "  msg.key = msg.key_base\n"
                        "  return msg\n"
                        "end\n"
                        "function dedupe(msg) return 'd' end\n");
    write_file("r.lua", "function retry(a)\n"
                        "  return 'give_up', a.backoff_ms .. '/' ..\n"
                        "    a.backoff_max_ms\n"
                        "end\n");
    snprintf(path, sizeof(path), "%s/t.lua", dir);
    text = strdup(path);
    assert_non_null(text);
    snprintf(path, sizeof(path), "%s/r.lua", dir);
    sinks[0] = (struct transform_sink_spec){.name = strdup("a")};
    sinks[1] = (struct transform_sink_spec){.name = strdup("b"),
                                            .retry = strdup(path)};
    spec = (struct transform_spec){
        .path = "p.yaml",
        .dir = dir,
        .transform = text,
        .transform_line = 2,
        .transform_col = 12,
        .dedupe_fn = "dedupe",
        .shard_separator = strdup("#"),
        .retry_backoff_ms = 7,
        .retry_backoff_max_ms = 70,
        .sinks = sinks,
        .sink_count = 2,
    };
    tr = transform_new(&spec, &err);
    if (tr == NULL) {
        fail_msg("transform_new: %s", err.msg);
    }
    /* Scribbled over and freed: the transform must hold its own copy. */
    memset(text, 'x', strlen(text));
    free(text);
    free((void *)spec.shard_separator);
    free((void *)sinks[0].name);
    free((void *)sinks[1].name);
    free((void *)sinks[1].retry);
    memset(sinks, 0, sizeof(sinks));

    struct connector_msg in = msg_of("v");
    in.key = "tenant-07#12";
    in.key_len = strlen(in.key);
    assert_bytes(run_one(&in)->key, run_one(&in)->key_len, "tenant-07");

    char key[16];
    assert_string_equal(transform_dedupe_key(tr, &in, key, sizeof(key), &err),
                        "d");

    struct connector_result res = {.status = CONNECTOR_RETRY,
                                   .http_status = 503,
                                   .retry_after_ms = -1};
    struct transform_attempt a = {.sink = "b", .msg = &in, .attempt = 1,
                                  .result = &res};
    struct sl_decision d;
    assert_false(transform_has_retry(tr, 0));
    assert_int_equal(transform_retry(tr, 1, &a, &d, &err), 0);
    assert_int_equal(d.verdict, SL_VERDICT_GIVE_UP);
    assert_string_equal(d.reason, "7/70");
    transform_destroy(tr);
    tr = NULL;

    /* Every error, each at its key, through the callback. */
    write_file("bad.lua", "function transfrom(msg) return msg end\n");
    snprintf(path, sizeof(path), "%s/bad.lua", dir);
    sinks[0] = (struct transform_sink_spec){.name = "a",
                                            .transform = path,
                                            .transform_line = 9,
                                            .transform_col = 16};
    sinks[1] = (struct transform_sink_spec){.name = "b",
                                            .retry = path,
                                            .retry_line = 12,
                                            .retry_col = 12};
    spec = (struct transform_spec){.path = "p.yaml", .sinks = sinks,
                                   .sink_count = 2};
    assert_int_equal(transform_check(&spec, collect, &r), -1);
    assert_int_equal(r.count, 2);
    assert_contains(r.text, "p.yaml:9:16: sinks.a.transform: ");
    assert_contains(r.text, "bad.lua: defines no function `transform` (did "
                            "you mean `transfrom`?)\n");
    assert_contains(r.text, "p.yaml:12:12: sinks.b.retry: ");
    assert_contains(r.text, "bad.lua: defines no function `retry`\n");

    /* transform_new stops at the first, with the same text. */
    assert_null(transform_new(&spec, &err));
    assert_contains(err.msg, "p.yaml:9:16: sinks.a.transform: ");
}

static void test_files_have_their_own_globals(void **state)
{
    struct connector_msg in = msg_of("v");
    const struct transform_out *o;
    struct transform_request req;
    struct connector_result res = {.status = CONNECTOR_RETRY,
                                   .http_status = 503,
                                   .retry_after_ms = -1};
    struct transform_attempt a = {.sink = "a", .msg = &in, .attempt = 1,
                                  .result = &res};
    struct sl_decision d;

    (void)state;
    write_file("t.lua", "function helper() return 'pipeline' end\n"
                        "count = 0\n"
                        "function transform(msg)\n"
                        "  count = count + 1\n"
                        "  msg.value = helper() .. count .. type(json)\n"
                        "  return msg\n"
                        "end\n");
    write_file("s.lua", "function helper() return 'sink' end\n"
                        "count = 100\n"
                        "json = 'shadowed here only'\n"
                        "function transform(msg)\n"
                        "  count = count + 1\n"
                        "  return helper() .. count\n"
                        "end\n");
    write_file("r.lua", "function helper() return 'retry' end\n"
                        "function retry(a) return 'give_up', helper() end\n");
    open_ok("transform: t.lua\n", "    transform: s.lua\n"
                                  "    retry: r.lua\n",
            NULL);
    assert_true(transform_has_sink(tr, 0));
    assert_true(transform_has_retry(tr, 0));
    assert_false(transform_has_sink(tr, 1));
    assert_false(transform_has_retry(tr, 1));
    o = run_one(&in);
    assert_bytes(o->value, o->value_len, "pipeline1table");
    struct connector_msg view = view_of(&in, 0);
    shape_body(0, 0, &view, &req, "sink101");
    assert_int_equal(transform_retry(tr, 0, &a, &d, &err), 0);
    assert_int_equal(d.verdict, SL_VERDICT_GIVE_UP);
    assert_string_equal(d.reason, "retry");
    o = run_one(&in);
    assert_bytes(o->value, o->value_len, "pipeline2table");
}

/* ---- sink transforms ---- */

static void test_sink_request(void **state)
{
    struct connector_msg in = msg_of("{\"a\":1}");
    struct transform_request req;

    (void)state;
    write_file("s.lua",
               "function transform(msg)\n"
               "  local n = msg.offset\n"
               "  if n == 1 then\n"
               "    return { json = { id = msg.key, n = 1 },\n"
               "             path = '/x/' .. msg.key, method = 'PUT',\n"
               "             headers = { ['X-Tenant'] = 't7',\n"
               "                         ['X-List'] = {'a', 'b'} } }\n"
               "  end\n"
               "  if n == 2 then return { body = 'raw body' } end\n"
               "  if n == 3 then return 'a string body' end\n"
               "  if n == 4 then return nil end\n"
               "  if n == 5 then return false end\n"
               "  if n == 6 then return msg end\n"
               "  if n == 7 then return { body = {} } end\n"
               "  if n == 8 then return { body = 'x', json = {} } end\n"
               "  if n == 9 then return 42 end\n"
               "  if n == 10 then return { method = 1 } end\n"
               "  if n == 11 then return { bdy = 'typo' } end\n"
               "  if n == 12 then return { 'positional' } end\n"
               "end\n");
    open_ok(NULL, "    transform: s.lua\n", NULL);
    assert_false(transform_has_pipeline(tr));
    assert_true(transform_has_sink(tr, 0));
    assert_false(transform_has_sink(tr, 1));

    in.offset = 1;
    run_ok(&in, 1);
    shape_body(0, 0, &in, &req, "{\"id\":\"tenant-07\",\"n\":1}");
    assert_string_equal(req.path, "/x/tenant-07");
    assert_string_equal(req.method, "PUT");
    assert_headers(req.headers, req.header_count,
                   "X-List=a;X-List=b;X-Tenant=t7");
    /* Sink b has no transform: the message as it is. */
    assert_int_equal(shape(1, 0, &in, &req), TRANSFORM_SEND);
    assert_null(req.body);
    assert_null(req.path);
    assert_null(req.method);
    assert_int_equal(req.header_count, 0);

    in.offset = 2;
    run_ok(&in, 1);
    shape_body(0, 0, &in, &req, "raw body");
    assert_null(req.method);
    assert_null(req.path);
    assert_int_equal(req.header_count, 0);

    in.offset = 3;
    run_ok(&in, 1);
    shape_body(0, 0, &in, &req, "a string body");

    for (int64_t n = 4; n <= 5; n++) {
        in.offset = n;
        run_ok(&in, 1);
        assert_int_equal(shape(0, 0, &in, &req), TRANSFORM_SKIP);
    }

    in.offset = 6;
    run_ok(&in, 1);
    assert_int_equal(shape(0, 0, &in, &req), TRANSFORM_SEND);
    assert_null(req.body);
    assert_null(req.method);
    assert_null(req.path);
    assert_int_equal(req.header_count, 0);

    static const char *const want[] = {
        "body: expected a string", "set body or json, not both",
        "must return a request table", "method: expected a string",
        "unknown request field \"bdy\"", "named by strings, not a number",
    };
    for (int64_t n = 7; n <= 12; n++) {
        in.offset = n;
        run_ok(&in, 1);
        assert_int_equal(transform_shape(tr, 0, 0, &in, &req, &err), -1);
        assert_contains(err.msg, "s.lua");
        assert_contains(err.msg, want[n - 7]);
    }
}

/* transform_shape_all runs every sink's transform in one protected call,
 * yet each script has its own budget and an error fails only its sink. */
static void test_shape_all_isolates_sinks(void **state)
{
    struct connector_msg in = msg_of("{\"n\":1}");
    const struct transform_shaped *sh;

    (void)state;
    write_file("a.lua", "function transform(msg)\n"
                        "  local n = msg.json.n\n"
                        "  if msg.offset == 2 then error('a broke') end\n"
                        "  if msg.offset == 3 then while true do end end\n"
                        "  for i = 1, 70000 do end\n"
                        "  return { body = 'a' .. n, headers = { ['X-A'] = "
                        "'1' } }\n"
                        "end\n");
    write_file("b.lua", "function transform(msg)\n"
                        "  for i = 1, 70000 do end\n"
                        "  return { json = msg.json, headers = { ['X-B'] = "
                        "{'2', '3'} } }\n"
                        "end\n");
    open_ok("lua:\n  instruction_limit: 100000\n", "    transform: a.lua\n",
            "    transform: b.lua\n");
    for (int64_t off = 1; off <= 3; off++) {
        in.offset = off;
        run_ok(&in, 1);
        sh = transform_shape_all(tr, 0, &in);
        if (off == 1) {
            /* 140,000 instructions in all: each within its 100,000. */
            assert_int_equal(sh[0].result, TRANSFORM_SEND);
            assert_bytes(sh[0].req.body, sh[0].req.body_len, "a1");
            assert_headers(sh[0].req.headers, sh[0].req.header_count,
                           "X-A=1");
        } else {
            assert_int_equal(sh[0].result, -1);
            assert_contains(sh[0].err.msg, "a.lua:");
            assert_contains(sh[0].err.msg, off == 2 ? "a broke"
                                                    : "instruction budget");
        }
        assert_int_equal(sh[1].result, TRANSFORM_SEND);
        assert_bytes(sh[1].req.body, sh[1].req.body_len, "{\"n\":1}");
        assert_headers(sh[1].req.headers, sh[1].req.header_count,
                       "X-B=2;X-B=3");
    }
}

static void test_sink_msg_is_read_only(void **state)
{
    struct connector_msg in = msg_of("v");
    struct transform_request req;

    (void)state;
    write_file("s.lua", "function transform(msg)\n"
                        "  if msg.offset == 1 then msg.value = 'x' end\n"
                        "  if msg.offset == 2 then msg.key = 'k' end\n"
                        "  return msg.key .. '/' .. msg.value\n"
                        "end\n");
    open_ok(NULL, "    transform: s.lua\n", NULL);
    for (int64_t n = 1; n <= 2; n++) {
        in.offset = n;
        run_ok(&in, 1);
        assert_int_equal(transform_shape(tr, 0, 0, &in, &req, &err), -1);
        assert_contains(err.msg, "read-only");
        assert_contains(err.msg, "s.lua:");
    }
    in.offset = 3;
    run_ok(&in, 1);
    shape_body(0, 0, &in, &req, "tenant-07/v");
}

static void test_sink_reuses_the_pipeline_json(void **state)
{
    struct connector_msg in = msg_of("{\"id\":1}");
    const struct transform_out *o;
    struct transform_request req;

    (void)state;
    write_file("t.lua", "function transform(msg)\n"
                        "  msg.json.tag = 't'\n"
                        "  return msg\n"
                        "end\n");
    write_file("a.lua", "function transform(msg)\n"
                        "  msg.json.seen_a = true\n"
                        "  return { body = msg.json.tag }\n"
                        "end\n");
    write_file("b.lua", "function transform(msg)\n"
                        "  return { body = tostring(msg.json.seen_a) .. ','\n"
                        "                  .. msg.json.tag }\n"
                        "end\n");
    open_ok("transform: t.lua\n", "    transform: a.lua\n",
            "    transform: b.lua\n");
    o = run_one(&in);
    assert_bytes(o->value, o->value_len, "{\"id\":1,\"tag\":\"t\"}");
    struct connector_msg view = view_of(&in, 0);
    shape_body(0, 0, &view, &req, "t");
    /* A change a sink makes to msg.json is seen by the next sink. */
    shape_body(1, 0, &view, &req, "true,t");
    /* Not decoded again: a view whose bytes are not even JSON still gets
     * the pipeline's table. */
    view.value = "not json";
    view.value_len = 8;
    shape_body(0, 0, &view, &req, "t");
}

static void test_sink_json_per_split_output(void **state)
{
    struct connector_msg in = msg_of("{\"items\":[1,2,3]}");
    struct transform_request req;

    (void)state;
    write_file("t.lua", "function transform(msg)\n"
                        "  local out = {}\n"
                        "  for i = 1, msg.offset do\n"
                        "    out[i] = { json = { item = msg.json.items[i] } "
                        "}\n"
                        "  end\n"
                        "  return out\n"
                        "end\n");
    write_file("a.lua", "function transform(msg)\n"
                        "  return tostring(msg.json.item)\n"
                        "end\n");
    open_ok("transform: t.lua\n", "    transform: a.lua\n", NULL);
    in.offset = 3;
    run_ok(&in, 3);
    for (size_t i = 0; i < 3; i++) {
        char want[8];
        struct connector_msg view = view_of(&in, i);
        snprintf(want, sizeof(want), "%zu", i + 1);
        shape_body(0, i, &view, &req, want);
    }
    /* A smaller run after a larger one: output 0 is the new one. */
    in = msg_of("{\"items\":[7]}");
    in.offset = 1;
    run_ok(&in, 1);
    struct connector_msg view = view_of(&in, 0);
    shape_body(0, 0, &view, &req, "7");
}

/* A pipeline transform that never touches the JSON: each message's sink
 * transform decodes that message's value. */
static void test_sink_decodes_json_the_pipeline_left(void **state)
{
    struct connector_msg one = msg_of("{\"id\":1}");
    struct connector_msg two = msg_of("{\"id\":2}");
    struct transform_request req;

    (void)state;
    write_file("a.lua", "function transform(msg)\n"
                        "  return tostring(msg.json.id)\n"
                        "end\n");
    write_file("t.lua", "function transform(msg)\n"
                        "  if msg.offset == 7 then\n"
                        "    return {{ value = '{\"id\":70}' }, msg}\n"
                        "  end\n"
                        "  return msg\n"
                        "end\n");
    open_ok("transform: t.lua\n", "    transform: a.lua\n", NULL);
    run_ok(&one, 1);
    shape_body(0, 0, &one, &req, "1");
    run_ok(&two, 1);
    shape_body(0, 0, &two, &req, "2");

    /* An item with a value of its own. */
    one.offset = 7;
    run_ok(&one, 2);
    struct connector_msg view = view_of(&one, 0);
    shape_body(0, 0, &view, &req, "70");
    view = view_of(&one, 1);
    shape_body(0, 1, &view, &req, "1");
}

/* No pipeline transform: each message's sink transform sees that
 * message's JSON, not the last one's. */
static void test_sink_json_without_pipeline_transform(void **state)
{
    struct connector_msg one = msg_of("{\"id\":1}");
    struct connector_msg two = msg_of("{\"id\":2}");
    struct transform_request req;

    (void)state;
    write_file("a.lua", "function transform(msg)\n"
                        "  return tostring(msg.json.id)\n"
                        "end\n");
    open_ok(NULL, "    transform: a.lua\n", NULL);
    run_ok(&one, 1);
    shape_body(0, 0, &one, &req, "1");
    run_ok(&two, 1);
    shape_body(0, 0, &two, &req, "2");
}

/* What a call returns stays valid through the other kind of call, even
 * when that one makes the collector run. */
static void test_results_survive_other_calls(void **state)
{
    struct connector_msg in = msg_of("v");
    const struct transform_out *o, *o2;
    struct transform_request req;

    (void)state;
    write_file("t.lua", "function transform(msg)\n"
                        "  local out = {}\n"
                        "  for i = 1, msg.offset do\n"
                        "    out[i] = { key = 'k' .. i,\n"
                        "               value = string.rep('v', 100) .. i }\n"
                        "  end\n"
                        "  return out\n"
                        "end\n");
    write_file("a.lua", "function transform(msg)\n"
                        "  local keep = {}\n"
                        "  for i = 1, 3000 do\n"
                        "    keep[i % 10 + 1] = string.rep('g', 1000) .. i\n"
                        "  end\n"
                        "  return { body = 'b' .. msg.key, path = '/p' }\n"
                        "end\n");
    open_ok("transform: t.lua\n", "    transform: a.lua\n", NULL);
    in.offset = 5;
    run_ok(&in, 5);
    for (size_t i = 0; i < 5; i++) {
        struct connector_msg view = view_of(&in, i);
        assert_int_equal(shape(0, i, &view, &req), TRANSFORM_SEND);
    }
    for (size_t i = 0; i < 5; i++) {
        char want[128];
        o = transform_output(tr, i);
        memset(want, 'v', 100);
        snprintf(want + 100, sizeof(want) - 100, "%zu", i + 1);
        assert_bytes(o->value, o->value_len, want);
        snprintf(want, sizeof(want), "k%zu", i + 1);
        assert_bytes(o->key, o->key_len, want);
    }
    assert_bytes(req.body, req.body_len, "bk5");
    assert_string_equal(req.path, "/p");
    /* Fewer outputs the next time. */
    in.offset = 2;
    run_ok(&in, 2);
    o = transform_output(tr, 0);
    o2 = transform_output(tr, 1);
    struct connector_msg view = view_of(&in, 1);
    assert_int_equal(shape(0, 1, &view, &req), TRANSFORM_SEND);
    assert_bytes(o->key, o->key_len, "k1");
    assert_bytes(o2->key, o2->key_len, "k2");
    assert_bytes(req.body, req.body_len, "bk2");
}

/* ---- retry policies ---- */

static void test_retry_verdicts(void **state)
{
    struct connector_msg in = msg_of("v");
    struct connector_result res = {.status = CONNECTOR_RETRY,
                                   .http_status = 503,
                                   .retry_after_ms = -1};
    struct transform_attempt a = {.sink = "a", .msg = &in, .result = &res};
    struct sl_decision d;

    (void)state;
    write_file("r.lua", "function retry(a)\n"
                        "  local n = a.attempt\n"
                        "  if n == 1 then return 250 end\n"
                        "  if n == 2 then return 'retry' end\n"
                        "  if n == 3 then return 'give_up', 'why' end\n"
                        "  if n == 4 then return 'done' end\n"
                        "  if n == 5 then return nil end\n"
                        "  if n == 6 then error('boom') end\n"
                        "  if n == 7 then return 'bogus' end\n"
                        "  if n == 8 then return 'retry', 100 end\n"
                        "  if n == 9 then return 'give_up' end\n"
                        "  if n == 10 then return 'retry', -5 end\n"
                        "  if n == 11 then while true do end end\n"
                        "end\n");
    open_ok("lua:\n  instruction_limit: 100000\n", "    retry: r.lua\n",
            NULL);
    assert_true(transform_has_retry(tr, 0));

    struct {
        int rc;
        enum sl_verdict verdict;
        int64_t delay;
        const char *reason; /* or the error */
    } want[] = {
        {0, SL_VERDICT_RETRY, 250, ""},
        {0, SL_VERDICT_RETRY, -1, ""},
        {0, SL_VERDICT_GIVE_UP, -1, "why"},
        {0, SL_VERDICT_DONE, -1, ""},
        {0, SL_VERDICT_DEFAULT, -1, ""},
        {-1, 0, 0, "r.lua:8: boom"},
        {-1, 0, 0, "retry must return"},
        {0, SL_VERDICT_RETRY, 100, ""},
        {0, SL_VERDICT_GIVE_UP, -1, "the retry policy gave up"},
        {-1, 0, 0, "the delay must be"},
        {-1, 0, 0, "instruction budget"},
    };
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        a.attempt = (uint32_t)i + 1;
        memset(&d, 0, sizeof(d));
        memset(&err, 0, sizeof(err));
        int rc = transform_retry(tr, 0, &a, &d, &err);
        if (rc != want[i].rc) {
            fail_msg("attempt %zu: rc %d (%s)", i + 1, rc, err.msg);
        }
        if (rc != 0) {
            assert_contains(err.msg, want[i].reason);
            continue;
        }
        assert_int_equal(d.verdict, want[i].verdict);
        if (d.verdict == SL_VERDICT_RETRY) {
            assert_int_equal(d.delay_ms, want[i].delay);
        }
        if (d.verdict == SL_VERDICT_GIVE_UP) {
            assert_string_equal(d.reason, want[i].reason);
        }
    }
    /* Sink b has no policy. */
    assert_false(transform_has_retry(tr, 1));
    a.attempt = 1;
    assert_int_equal(transform_retry(tr, 1, &a, &d, &err), 0);
    assert_int_equal(d.verdict, SL_VERDICT_DEFAULT);
}

static void test_retry_sees_the_attempt(void **state)
{
    static const struct sl_header resp[] = {
        {"retry-after", "2", 1},
        {"x-request-id", "abc", 3},
    };
    struct connector_msg in = msg_of("v");
    struct connector_result res = {
        .status = CONNECTOR_RETRY,
        .http_status = 503,
        .retry_after_ms = 2000,
        .response_headers = resp,
        .response_header_count = 2,
        .body = "busy\0tail",
        .body_len = 9,
    };
    struct transform_attempt a = {.sink = "a", .msg = &in, .attempt = 3,
                                  .elapsed_ms = 1234, .result = &res};
    struct sl_decision d;

    (void)state;
    write_file("r.lua",
               "local function s(v) return tostring(v) end\n"
               "function retry(a)\n"
               "  local names = {}\n"
               "  for k, v in pairs(a.headers) do\n"
               "    names[#names + 1] = k .. '=' .. v\n"
               "  end\n"
               "  table.sort(names)\n"
               "  return 'give_up', table.concat({s(a.sink), s(a.attempt),\n"
               "    s(a.elapsed_ms), s(a.status), s(a.error),\n"
               "    table.concat(names, ','), s(a.body and #a.body),\n"
               "    s(a.body and a.body:sub(1, 4)), s(a.retry_after_ms),\n"
               "    s(a.retryable), s(a.backoff_ms), s(a.backoff_max_ms),\n"
               "    s(a.topic), s(a.partition), s(a.offset), s(a.key),\n"
               "    s(a.dedupe_key)}, '|')\n"
               "end\n");
    open_ok("delivery:\n  retry_backoff: 50ms\n  retry_backoff_max: 2s\n",
            "    retry: r.lua\n", NULL);
    assert_int_equal(transform_retry(tr, 0, &a, &d, &err), 0);
    assert_int_equal(d.verdict, SL_VERDICT_GIVE_UP);
    assert_string_equal(d.reason,
                        "a|3|1234|503|nil|retry-after=2,x-request-id=abc|9|"
                        "busy|2000|true|50|2000|orders|3|1041|tenant-07|"
                        "orders-3-1041");

    /* No response: a transport error, no status, headers or body. */
    struct connector_result refused = {.status = CONNECTOR_RETRY,
                                       .http_status = 0,
                                       .retry_after_ms = -1};
    snprintf(refused.error, sizeof(refused.error), "connection refused");
    in.key = NULL;
    in.key_len = 0;
    a = (struct transform_attempt){.sink = "a", .msg = &in, .attempt = 1,
                                   .elapsed_ms = 0, .result = &refused};
    assert_int_equal(transform_retry(tr, 0, &a, &d, &err), 0);
    assert_int_equal(d.verdict, SL_VERDICT_GIVE_UP);
    assert_string_equal(d.reason,
                        "a|1|0|nil|connection refused||nil|nil|nil|true|50|"
                        "2000|orders|3|1041|nil|orders-3-1041");

    /* A permanent one. */
    struct connector_result bad = {.status = CONNECTOR_REJECT,
                                   .http_status = 400,
                                   .retry_after_ms = -1};
    a.result = &bad;
    assert_int_equal(transform_retry(tr, 0, &a, &d, &err), 0);
    assert_contains(d.reason, "a|1|0|400|nil||nil|nil|nil|false|");
}

static void test_retry_with_the_lua_default_policy(void **state)
{
    struct connector_msg in = msg_of("v");
    struct connector_result res = {.status = CONNECTOR_RETRY,
                                   .http_status = 503,
                                   .retry_after_ms = -1};
    struct transform_attempt a = {.sink = "a", .msg = &in, .attempt = 2,
                                  .result = &res};
    struct sl_decision d;

    (void)state;
    write_file("r.lua", "local policy = require('sluice.retry')\n"
                        "function retry(a)\n"
                        "  if a.status == 409 then return 'done' end\n"
                        "  return policy.default(a)\n"
                        "end\n");
    open_ok("delivery:\n  retry_backoff: 50ms\n  retry_backoff_max: 2s\n",
            "    retry: r.lua\n", NULL);
    for (int i = 0; i < 20; i++) {
        assert_int_equal(transform_retry(tr, 0, &a, &d, &err), 0);
        assert_int_equal(d.verdict, SL_VERDICT_RETRY);
        assert_in_range(d.delay_ms, 0, 100); /* 50 * 2^(2-1) */
    }
    res.retry_after_ms = 5000;
    assert_int_equal(transform_retry(tr, 0, &a, &d, &err), 0);
    assert_int_equal(d.verdict, SL_VERDICT_RETRY);
    assert_int_equal(d.delay_ms, 5000);

    res = (struct connector_result){.status = CONNECTOR_REJECT,
                                    .http_status = 400,
                                    .retry_after_ms = -1};
    assert_int_equal(transform_retry(tr, 0, &a, &d, &err), 0);
    assert_int_equal(d.verdict, SL_VERDICT_GIVE_UP);
    assert_string_equal(d.reason, "HTTP 400: permanent");

    res.http_status = 409;
    assert_int_equal(transform_retry(tr, 0, &a, &d, &err), 0);
    assert_int_equal(d.verdict, SL_VERDICT_DONE);
}

/* ---- modules ---- */

static void test_modules(void **state)
{
    struct connector_msg in = msg_of("v");
    const struct transform_out *o;
    char want[128];

    (void)state;
    pipeline(
        "local policy = require('sluice.retry')\n"
        "function transform(msg)\n"
        "  local s = '{\"a\":[1,2.5,\"x\",null,true,false],\"b\":{},"
        "\"c\":[],\"n\":9007199254740993,\"neg\":-7,\"s\":\"hi\"}'\n"
        "  local again = json.encode(json.decode(s))\n"
        "  assert(again == s, 'round trip: ' .. again)\n"
        "  local v = json.decode('{\"a\":null}')\n"
        "  assert(v.a == json.null and json.is_null(v.a), 'null decodes')\n"
        "  assert(json.encode(v) == '{\"a\":null}', 'null survives')\n"
        "  assert(json.encode({ x = json.null }) == '{\"x\":null}')\n"
        "  local big = json.decode('9007199254740993')\n"
        "  assert(math.type(big) == 'integer' and big == 9007199254740993)\n"
        "  assert(json.encode(json.array()) == '[]')\n"
        "  assert(json.encode({}) == '{}')\n"
        "  assert(not pcall(json.decode, '{bad'))\n"
        "  assert(not pcall(json.encode, { f = print }))\n"
        "  assert(require('json') == json and require('log') == log)\n"
        "  assert(require('sluice') == sluice)\n"
        "  log.info('from the test', 1, {}, nil, msg)\n"
        "  log.debug('d'); log.warn('w'); log.error('e')\n"
        "  print('print', 'works')\n"
        "  local h = sluice.hash('a')\n"
        "  assert(math.type(h) == 'integer' and h == sluice.hash('a'))\n"
        "  assert(sluice.hash('b') ~= h)\n"
        "  local k = sluice.shard('k', 8)\n"
        "  assert(math.type(k) == 'integer' and k >= 0 and k < 8)\n"
        "  assert(k == sluice.shard('k', 8))\n"
        "  for i = 1, 200 do\n"
        "    local b = sluice.shard('key' .. i, 3)\n"
        "    assert(b >= 0 and b < 3)\n"
        "  end\n"
        "  assert(not pcall(sluice.shard, 'k', 0))\n"
        "  assert(sluice.iso8601(0) == '1970-01-01T00:00:00.000Z')\n"
        "  assert(sluice.iso8601(-1) == '1969-12-31T23:59:59.999Z')\n"
        "  assert(sluice.iso8601(1795975200123) ==\n"
        "         '2026-11-29T18:00:00.123Z')\n"
        "  assert(math.type(sluice.now_ms()) == 'integer')\n"
        "  assert(sluice.now_ms() > 1600000000000)\n"
        "  assert(math.type(sluice.monotonic_ms()) == 'integer')\n"
        "  local base = { attempt = 1, backoff_ms = 100, backoff_max_ms = "
        "1000 }\n"
        "  base.status = 503\n"
        "  local verdict, delay = policy.default(base)\n"
        "  assert(verdict == 'retry' and delay >= 0 and delay <= 100)\n"
        "  base.status = nil\n"
        "  assert(policy.default(base) == 'retry', 'no response')\n"
        "  base.status = 400\n"
        "  local why\n"
        "  verdict, why = policy.default(base)\n"
        "  assert(verdict == 'give_up' and why == 'HTTP 400: permanent')\n"
        "  msg.value = tostring(h) .. '|' .. sluice.hash('a')\n"
        "  return msg\n"
        "end\n");
    o = run_one(&in);
    /* Stable across calls too. */
    snprintf(want, sizeof(want), "%.*s", (int)o->value_len,
             (const char *)o->value);
    o = run_one(&in);
    assert_bytes(o->value, o->value_len, want);
}

/* docs/lua.md: "sluice.hash(s): FNV-1a 64 of s, as an integer." The
 * FNV-1a 64 test vector for "a" is 0xaf63dc4c8601ec8c. */
static void test_hash_is_fnv1a_64(void **state)
{
    struct connector_msg in = msg_of("v");
    const struct transform_out *o;
    char want[128];

    (void)state;
    pipeline("function transform(msg)\n"
             "  msg.value = sluice.hash('a') .. '|' .. sluice.hash('') ..\n"
             "              '|' .. sluice.shard('k', 8)\n"
             "  return msg\n"
             "end\n");
    o = run_one(&in);
    snprintf(want, sizeof(want), "%lld|%lld|%llu",
             (long long)(int64_t)fnv1a_64("a"),
             (long long)(int64_t)fnv1a_64(""),
             (unsigned long long)(fnv1a_64("k") % 8));
    assert_string_equal(want, "-5808556873153909620|-3750763034362895579|2");
    assert_bytes(o->value, o->value_len, want);
}

/* Many outputs, each with headers of its own; and the cap on new header
 * names. */
static void test_split_many_outputs(void **state)
{
    static const struct sl_header hdrs[] = {{"h", "v", 1}};
    struct connector_msg in = msg_of("v");

    (void)state;
    pipeline("function transform(msg)\n"
             "  if msg.offset == 2 then\n"
             "    for i = 1, 65 do msg.headers['n' .. i] = 'x' end\n"
             "    return msg\n"
             "  end\n"
             "  local out = {}\n"
             "  for i = 1, 100 do\n"
             "    out[i] = { value = 'v' .. i,\n"
             "               headers = { h = 'v' .. i, ['x-' .. i] = 'y' } }\n"
             "  end\n"
             "  return out\n"
             "end\n");
    in.headers = hdrs;
    in.header_count = 1;
    in.offset = 1;
    run_ok(&in, 100);
    for (size_t i = 0; i < 100; i++) {
        char want[64];
        const struct transform_out *o = transform_output(tr, i);
        snprintf(want, sizeof(want), "v%zu", i + 1);
        assert_bytes(o->value, o->value_len, want);
        snprintf(want, sizeof(want), "h=v%zu;x-%zu=y", i + 1, i + 1);
        assert_headers(o->headers, o->header_count, want);
    }
    in.offset = 2;
    assert_contains(run_fails(&in), "more than 64 new names");
}

/* A retry delay that is not a number of milliseconds (NaN) is an error,
 * like a negative one, not a delay cast from NaN. */
static void test_retry_nan_delay(void **state)
{
    struct connector_msg in = msg_of("v");
    struct connector_result res = {.status = CONNECTOR_RETRY,
                                   .http_status = 503,
                                   .retry_after_ms = -1};
    struct transform_attempt a = {.sink = "a", .msg = &in, .result = &res};
    struct sl_decision d;

    (void)state;
    write_file("r.lua", "function retry(a)\n"
                        "  if a.attempt == 1 then return 0/0 end\n"
                        "  return 'retry', 0/0\n"
                        "end\n");
    open_ok(NULL, "    retry: r.lua\n", NULL);
    for (uint32_t n = 1; n <= 2; n++) {
        a.attempt = n;
        memset(&d, 0, sizeof(d));
        int rc = transform_retry(tr, 0, &a, &d, &err);
        if (rc != -1) {
            fail_msg("attempt %u: NaN accepted as a delay: verdict %d, "
                     "delay_ms %lld",
                     n, (int)d.verdict, (long long)d.delay_ms);
        }
        assert_contains(err.msg, "delay");
    }
}

/* sluice.iso8601 at the ends of the integer range: text or an error,
 * never a date from an overflowed computation. */
static void test_iso8601_extremes(void **state)
{
    struct connector_msg in = msg_of("v");
    const struct transform_out *o;

    (void)state;
    pipeline("function transform(msg)\n"
             "  local ok, s = pcall(sluice.iso8601, math.mininteger)\n"
             "  msg.value = ok and s or 'error'\n"
             "  return msg\n"
             "end\n");
    o = run_one(&in);
    assert_non_null(o->value);
    if (!(o->value_len == 5 && memcmp(o->value, "error", 5) == 0) &&
        ((const char *)o->value)[0] != '-') {
        fail_msg("sluice.iso8601(math.mininteger) = `%.*s`: a negative "
                 "time became a date after 1970",
                 (int)o->value_len, (const char *)o->value);
    }
}

/* load(text, name, mode, env) runs the chunk in env, as in Lua: a chunk
 * given its own table must not write to the globals every file reads. */
static void test_load_honours_env(void **state)
{
    struct connector_msg in = msg_of("v");
    const struct transform_out *o;

    (void)state;
    pipeline("function transform(msg)\n"
             "  local env = { x = 42 }\n"
             "  local f = assert(load('y = 5 return x', '=chunk', 't', "
             "env))\n"
             "  local r = f()\n"
             "  msg.value = tostring(r) .. ',' .. tostring(env.y) .. ',' ..\n"
             "              tostring(rawget(_G, 'y'))\n"
             "  return msg\n"
             "end\n");
    o = run_one(&in);
    assert_bytes(o->value, o->value_len, "42,5,nil");
}

/* Runs fn in a child process; fails if it takes longer than secs (it
 * hung) or dies. */
static void run_bounded(void (*fn)(void), unsigned secs, const char *what)
{
    pid_t pid = fork();
    int status;

    assert_true(pid >= 0);
    if (pid == 0) {
        alarm(secs);
        fn();
        _exit(0);
    }
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (WIFSIGNALED(status) && WTERMSIG(status) == SIGALRM) {
        fail_msg("%s: still running after %u s (no instruction budget)",
                 what, secs);
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fail_msg("%s: the child failed (status %d)", what, status);
    }
}

static void finalizer_calls(void)
{
    struct connector_msg in = msg_of("v");

    /* The first call leaves a finalizer that loops; the failed second
     * call collects it. Either call must end under the budget. */
    /* Refused: Lua runs finalizers with hooks off, out of the budget. */
    in.offset = 1;
    if (transform_run(tr, &in, &err) != -1 ||
        strstr(err.msg, "__gc") == NULL) {
        _exit(3);
    }
    in.offset = 2;
    (void)transform_run(tr, &in, &err);
    in.offset = 3;
    if (transform_run(tr, &in, &err) != 1) {
        _exit(4);
    }
    transform_destroy(tr);
    tr = NULL;
}

/* A __gc finalizer runs with hooks off in Lua 5.4: one that loops must
 * not hang the worker past the instruction budget. */
static void test_gc_finalizer_is_bounded(void **state)
{
    (void)state;
    pipeline_with("function transform(msg)\n"
                  "  if msg.offset == 1 then\n"
                  "    setmetatable({}, { __gc = function()\n"
                  "      while true do end\n"
                  "    end })\n"
                  "  end\n"
                  "  if msg.offset == 2 then error('collect now') end\n"
                  "  return msg\n"
                  "end\n",
                  "lua:\n  instruction_limit: 100000\n");
    run_bounded(finalizer_calls, 5, "a looping __gc finalizer");
}

/* Where lua/lib is: the repo's, found from this binary
 * (<repo>/<build>/tests/test_transform), else relative to the cwd. */
static void set_lib_dir(void)
{
    char exe[PATH_MAX], lib[PATH_MAX + 32], probe[PATH_MAX + 64];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);

    if (n > 0) {
        exe[n] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash != NULL) {
            *slash = '\0';
            snprintf(lib, sizeof(lib), "%s/../../lua/lib", exe);
            snprintf(probe, sizeof(probe), "%s/sluice/retry.lua", lib);
            if (access(probe, R_OK) == 0) {
                setenv("SLUICE_LUA_LIB", lib, 1);
                return;
            }
        }
    }
    setenv("SLUICE_LUA_LIB", "lua/lib", 1);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_no_scripts_pass_through),
        T(test_msg_read_api),
        T(test_return_msg_is_unchanged),
        T(test_reading_json_forwards_the_bytes),
        T(test_reading_headers_is_unchanged),
        T(test_change_key),
        T(test_change_value),
        T(test_change_json),
        T(test_json_change_after_value_assignment),
        T(test_json_numbers_keep_their_text),
        T(test_change_headers),
        T(test_change_dedupe_key),
        T(test_drop),
        T(test_split),
        T(test_split_errors),
        T(test_runtime_error_names_file_and_line),
        T(test_bad_return_type),
        T(test_json_of_non_json_value),
        T(test_bad_assignments),
        T(test_msg_kept_after_its_call),
        T(test_instruction_budget_fails_one_call),
        T(test_memory_limit_fails_one_call),
        T(test_sandbox_has_no_way_out),
        T(test_load_syntax_error),
        T(test_load_missing_function),
        T(test_spec_without_cfg),
        T(test_files_have_their_own_globals),
        T(test_sink_request),
        T(test_sink_msg_is_read_only),
        T(test_shape_all_isolates_sinks),
        T(test_sink_reuses_the_pipeline_json),
        T(test_sink_json_per_split_output),
        T(test_sink_decodes_json_the_pipeline_left),
        T(test_sink_json_without_pipeline_transform),
        T(test_results_survive_other_calls),
        T(test_retry_verdicts),
        T(test_retry_sees_the_attempt),
        T(test_retry_with_the_lua_default_policy),
        T(test_modules),
        T(test_hash_is_fnv1a_64),
        T(test_split_many_outputs),
        T(test_retry_nan_delay),
        T(test_iso8601_extremes),
        T(test_load_honours_env),
        T(test_gc_finalizer_is_bounded),
    };

    set_lib_dir();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
