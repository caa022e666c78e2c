/* test_keyrule.c -- the publisher's record key: extraction from JSON and
 * headers, refusals, static and auto sharding (one key at 60% of the
 * traffic over 8 partitions), one entity to one record key, the hold,
 * the consumer's inverse, a sketch that stays bounded under a million
 * distinct keys, determinism, and the cost of one call. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include <malloc.h>

#include "keyrule.h"

/* ---- helpers ---- */

/* A request: up to two headers and a body. */
struct req {
    struct sl_header h[2];
    char v[2][512];
    char body[1024];
    struct keyrule_input in;
};

static const struct keyrule_input *req_json(struct req *r, const char *body)
{
    size_t n = strlen(body);

    memcpy(r->body, body, n + 1);
    r->in = (struct keyrule_input){.body = r->body, .body_len = n};
    return &r->in;
}

/* X-Tenant: tenant (when not NULL), X-Order: order (when not NULL). */
static const struct keyrule_input *req_hdr(struct req *r, const char *tenant,
                                           const char *order)
{
    size_t n = 0;

    if (tenant != NULL) {
        snprintf(r->v[n], sizeof(r->v[n]), "%s", tenant);
        r->h[n] = (struct sl_header){
            .name = "X-Tenant", .value = r->v[n], .value_len = strlen(tenant)};
        n++;
    }
    if (order != NULL) {
        snprintf(r->v[n], sizeof(r->v[n]), "%s", order);
        r->h[n] = (struct sl_header){
            .name = "X-Order", .value = r->v[n], .value_len = strlen(order)};
        n++;
    }
    r->in = (struct keyrule_input){.headers = r->h, .header_count = n};
    return &r->in;
}

/* Kafka's default partitioner: murmur2 of the key, positive, mod n. */
static int kafka_partition(const char *key, size_t len, int n)
{
    return (int)((keyrule_murmur2(key, len) & 0x7fffffff) % (uint32_t)n);
}

static int partition_of8(void *arg, const char *key, size_t len)
{
    (void)arg;
    return kafka_partition(key, len, 8);
}

static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* Options with header sources, hot_keys.auto over 8 partitions. */
static struct keyrule_options auto_options(void)
{
    return (struct keyrule_options){
        .key = "header:x-tenant",
        .shard_by = "header:x-order",
        .autos = {.enabled = 1},
        .partitions = 8,
        .partition_of = partition_of8,
    };
}

/* One record of the usual traffic: `hot_pct`% for tenant-42, the rest
 * over 1000 other tenants; orders among 100000. */
static const struct keyrule_input *traffic(struct req *r, uint64_t *rng,
                                           int hot_pct, unsigned *order)
{
    char tenant[32], ord[32];
    uint64_t x = rng_next(rng);

    *order = (unsigned)((x >> 20) % 100000);
    if ((int)(x % 100) < hot_pct) {
        snprintf(tenant, sizeof(tenant), "tenant-42");
    } else {
        snprintf(tenant, sizeof(tenant), "tenant-%u",
                 1000 + (unsigned)((x >> 40) % 1000));
    }
    snprintf(ord, sizeof(ord), "order-%u", *order);
    return req_hdr(r, tenant, ord);
}

/* ---- extraction ---- */

static void test_json_key(void **state)
{
    struct keyrule_options o = {.key = "json:tenant_id"};
    struct sl_error err = {{0}};
    struct keyrule_decision d;
    struct req r;
    keyrule_t *kr;

    (void)state;
    kr = keyrule_new(&o, &err);
    assert_non_null(kr);
    assert_int_equal(keyrule_apply(kr,
                                   req_json(&r, "{\"tenant_id\":\"t-1\","
                                                "\"x\":[1,2]}"),
                                   0, &d, &err),
                     0);
    assert_string_equal(d.key, "t-1");
    assert_int_equal(d.key_len, 3);
    assert_int_equal(d.base_len, 3);
    assert_int_equal(d.shard, -1);
    assert_int_equal(d.hot, KEYRULE_COLD);
    /* An integer is its decimal text; escapes are decoded. */
    assert_int_equal(
        keyrule_apply(kr, req_json(&r, "{\"tenant_id\":-42}"), 0, &d, &err),
        0);
    assert_string_equal(d.key, "-42");
    assert_int_equal(keyrule_apply(kr,
                                   req_json(&r, "{\"tenant_id\":\"a\\u0042"
                                                "\\u00e9\"}"),
                                   0, &d, &err),
                     0);
    assert_string_equal(d.key, "aB\xc3\xa9");
    keyrule_destroy(kr);

    /* A path into nested objects. */
    o.key = "json:meta.tenant.id";
    kr = keyrule_new(&o, &err);
    assert_non_null(kr);
    assert_int_equal(
        keyrule_apply(kr,
                      req_json(&r, "{\"meta\":{\"tenant\":{\"id\":\"n\"}}}"),
                      0, &d, &err),
        0);
    assert_string_equal(d.key, "n");
    assert_int_equal(keyrule_apply(kr,
                                   req_json(&r, "{\"meta\":{\"tenant\":7}}"),
                                   0, &d, &err),
                     -1);
    assert_string_equal(err.msg, "key json:meta.tenant.id: field missing (the "
                                 "path crosses a value that is not an "
                                 "object)");
    keyrule_destroy(kr);
}

static void test_header_key(void **state)
{
    struct keyrule_options o = {.key = "header:X-Tenant-Id"};
    struct sl_error err = {{0}};
    struct keyrule_decision d;
    struct sl_header h[3] = {
        {.name = "x-tenant-id", .value = "first", .value_len = 5},
        {.name = "Content-Type", .value = "a/b", .value_len = 3},
        {.name = "X-TENANT-ID", .value = "last!", .value_len = 4},
    };
    struct keyrule_input in = {.headers = h, .header_count = 3};
    keyrule_t *kr = keyrule_new(&o, &err);

    (void)state;
    assert_non_null(kr);
    /* Any case; the last one; value_len counts, not a NUL. */
    assert_int_equal(keyrule_apply(kr, &in, 0, &d, &err), 0);
    assert_string_equal(d.key, "last");
    in.header_count = 2;
    assert_int_equal(keyrule_apply(kr, &in, 0, &d, &err), 0);
    assert_string_equal(d.key, "first");
    in.header_count = 0;
    assert_int_equal(keyrule_apply(kr, &in, 0, &d, &err), -1);
    assert_string_equal(err.msg, "key header:X-Tenant-Id: no such header");
    keyrule_destroy(kr);
}

/* Every unusable key is refused with its reason, and counted. */
static void test_refusals(void **state)
{
    struct keyrule_options o = {.key = "json:tenant_id"};
    struct sl_error err = {{0}};
    struct keyrule_decision d;
    struct keyrule_stats st;
    struct req r;
    char big[400];
    keyrule_t *kr = keyrule_new(&o, &err);
    static const struct {
        const char *body;
        const char *msg;
    } cases[] = {
        {"{\"other\":1}", "key json:tenant_id: field missing"},
        {"{\"tenant_id\":null}", "key json:tenant_id: not a string or integer"},
        {"{\"tenant_id\":1.5}", "key json:tenant_id: not a string or integer"},
        {"{\"tenant_id\":{}}", "key json:tenant_id: not a string or integer"},
        {"{\"tenant_id\":true}", "key json:tenant_id: not a string or integer"},
        {"{\"tenant_id\":\"\"}", "key json:tenant_id: empty"},
        {"{\"tenant_id\":\"a\\u0000b\"}", "key json:tenant_id: the body is "
                                          "not JSON"},
        {"{\"tenant_id\":\"a\",\"tenant_id\":\"b\"}", "key json:tenant_id: "
                                                      "the body is not JSON"},
        {"{\"tenant_id\":\"a\"", "key json:tenant_id: the body is not JSON"},
        {"", "key json:tenant_id: the body is not JSON"},
        {"[1,2]", "key json:tenant_id: field missing (the path crosses a "
                  "value that is not an object)"},
        {"{\"tenant_id\":123456789012345678901234567890}",
         "key json:tenant_id: the body is not JSON"},
    };

    (void)state;
    assert_non_null(kr);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        memset(err.msg, 0, sizeof(err.msg));
        assert_int_equal(
            keyrule_apply(kr, req_json(&r, cases[i].body), 0, &d, &err), -1);
        assert_string_equal(err.msg, cases[i].msg);
    }
    /* 256 bytes is a key; 257 is refused. */
    memset(big, 'k', sizeof(big));
    snprintf(r.body, sizeof(r.body), "{\"tenant_id\":\"%.256s\"}", big);
    r.in = (struct keyrule_input){.body = r.body, .body_len = strlen(r.body)};
    assert_int_equal(keyrule_apply(kr, &r.in, 0, &d, &err), 0);
    assert_int_equal(d.key_len, 256);
    snprintf(r.body, sizeof(r.body), "{\"tenant_id\":\"%.257s\"}", big);
    r.in.body_len = strlen(r.body);
    assert_int_equal(keyrule_apply(kr, &r.in, 0, &d, &err), -1);
    assert_string_equal(err.msg, "key json:tenant_id: longer than 256 bytes");
    /* A raw NUL byte in the body, inside the key or after the JSON. */
    {
        static const char nul_in[] = "{\"tenant_id\":\"a\0b\"}";
        static const char nul_after[] = "{\"tenant_id\":\"a\"}\0x";
        r.in = (struct keyrule_input){.body = nul_in,
                                      .body_len = sizeof(nul_in) - 1};
        assert_int_equal(keyrule_apply(kr, &r.in, 0, &d, &err), -1);
        assert_string_equal(err.msg, "key json:tenant_id: the body is not "
                                     "JSON");
        r.in = (struct keyrule_input){.body = nul_after,
                                      .body_len = sizeof(nul_after) - 1};
        assert_int_equal(keyrule_apply(kr, &r.in, 0, &d, &err), -1);
    }
    /* Deep nesting: jansson's depth limit, not the stack. */
    {
        size_t n = 100000;
        char *deep = malloc(2 * n + 1);
        assert_non_null(deep);
        memset(deep, '[', n);
        memset(deep + n, ']', n);
        r.in = (struct keyrule_input){.body = deep, .body_len = 2 * n};
        assert_int_equal(keyrule_apply(kr, &r.in, 0, &d, &err), -1);
        assert_string_equal(err.msg, "key json:tenant_id: the body is not "
                                     "JSON");
        free(deep);
    }
    keyrule_stats(kr, &st);
    assert_int_equal(st.refused, sizeof(cases) / sizeof(cases[0]) + 4);
    assert_int_equal(st.records, 1);
    keyrule_destroy(kr);

    /* Headers: NUL bytes, huge values, empty values. */
    o.key = "header:x-tenant";
    kr = keyrule_new(&o, &err);
    assert_non_null(kr);
    {
        static char huge[1 << 20];
        struct sl_header h = {.name = "X-Tenant", .value = "a\0b",
                                     .value_len = 3};
        struct keyrule_input in = {.headers = &h, .header_count = 1};
        assert_int_equal(keyrule_apply(kr, &in, 0, &d, &err), -1);
        assert_string_equal(err.msg, "key header:x-tenant: holds a NUL byte");
        h.value_len = 0;
        assert_int_equal(keyrule_apply(kr, &in, 0, &d, &err), -1);
        assert_string_equal(err.msg, "key header:x-tenant: empty");
        memset(huge, 'x', sizeof(huge));
        h.value = huge;
        h.value_len = sizeof(huge);
        assert_int_equal(keyrule_apply(kr, &in, 0, &d, &err), -1);
        assert_string_equal(err.msg, "key header:x-tenant: longer than 256 "
                                     "bytes");
    }
    /* Without hot keys the separator is any byte of a key. */
    assert_int_equal(keyrule_apply(kr, req_hdr(&r, "a~1", NULL), 0, &d, &err),
                     0);
    assert_string_equal(d.key, "a~1");
    keyrule_destroy(kr);

    /* With hot keys, a base key holding it is refused. */
    {
        struct keyrule_static s = {.key = "tenant-42", .shards = 4};
        o.shard_by = "header:x-order";
        o.statics = &s;
        o.static_count = 1;
        kr = keyrule_new(&o, &err);
        assert_non_null(kr);
        assert_int_equal(
            keyrule_apply(kr, req_hdr(&r, "a~1", NULL), 0, &d, &err), -1);
        assert_string_equal(err.msg, "key header:x-tenant: holds `~`, the "
                                     "separator of hot keys' shard suffixes");
        keyrule_destroy(kr);
    }
}

static int bad_partition(void *arg, const char *key, size_t len)
{
    (void)arg;
    (void)key;
    (void)len;
    return 8;
}

static void test_new_errors(void **state)
{
    struct keyrule_static s[2] = {{.key = "a", .shards = 4},
                                  {.key = "b", .shards = 4}};
    static const struct {
        struct keyrule_options o;
        const char *msg;
    } cases[] = {
        {{.key = NULL}, "key: expected `header:NAME` or `json:PATH`"},
        {{.key = "lua:f"}, "key: expected `header:NAME` or `json:PATH`"},
        {{.key = "coordinates"}, "key: expected `header:NAME` or `json:PATH`"},
        {{.key = "json:"}, "key: the name after the colon is missing"},
        {{.key = "json:a..b"}, "key: a JSON path is field names joined by "
                               "`.`, e.g. `meta.id`"},
        {{.key = "json:a", .shard_by = "xml:b"},
         "shard_by: expected `header:NAME` or `json:PATH`"},
        {{.key = "json:a", .autos = {.enabled = 1}},
         "shard_by: hot keys need it: the field that spreads a hot key's "
         "records over its shards, each entity's always to the same one"},
        {{.key = "json:a", .separator = "-1"},
         "separator: `-1` holds a digit, so a shard number could not be "
         "split off"},
        {{.key = "json:a", .separator = "123456789"},
         "separator: longer than 8 bytes"},
        {{.key = "json:a", .shard_by = "json:b", .autos = {.enabled = 1}},
         "hot_keys.auto needs the caller's partition_of"},
        {{.key = "json:a", .shard_by = "json:b", .autos = {.enabled = 1},
          .partition_of = partition_of8, .partitions = 4097},
         "hot_keys.auto: 4097 partitions is not in 1..4096"},
        {{.key = "json:a", .shard_by = "json:b",
          .autos = {.enabled = 1, .share = 1.5}},
         "hot_keys.auto.share: expected a ratio above 0 and at most 1"},
        {{.key = "json:a", .shard_by = "json:b",
          .autos = {.enabled = 1, .capacity = 5000}},
         "hot_keys.auto.capacity: 5000 is not in 1..4096"},
        {{.key = "json:a", .shard_by = "json:b",
          .autos = {.enabled = 1, .window = 1000, .min_records = 2000}},
         "hot_keys.auto.min_records: 2000 is not in 1..1000"},
        {{.key = "json:a", .shard_by = "json:b",
          .autos = {.enabled = 1, .shards = 1}},
         "hot_keys.auto.shards: 1 is not in 2..256"},
    };
    struct sl_error err = {{0}};
    struct keyrule_options o;

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        memset(err.msg, 0, sizeof(err.msg));
        assert_null(keyrule_new(&cases[i].o, &err));
        assert_string_equal(err.msg, cases[i].msg);
    }
    o = (struct keyrule_options){.key = "json:a", .shard_by = "json:b",
                                 .statics = s, .static_count = 2};
    s[1].key = "a";
    assert_null(keyrule_new(&o, &err));
    assert_string_equal(err.msg, "hot_keys.static: `a` is listed twice");
    s[1].key = "b~c";
    assert_null(keyrule_new(&o, &err));
    assert_string_equal(err.msg, "hot_keys.static: `b~c`: holds the "
                                 "separator `~`");
    s[1].key = "b";
    s[1].shards = 257;
    assert_null(keyrule_new(&o, &err));
    assert_string_equal(err.msg, "hot_keys.static: `b`: 257 shards is not in "
                                 "2..256");
    s[1].shards = 1;
    assert_null(keyrule_new(&o, &err));
    s[1].shards = 256;
    s[1].key = "";
    assert_null(keyrule_new(&o, &err));
    assert_string_equal(err.msg, "hot_keys.static: entry 2: a key is 1 to "
                                 "256 bytes");
    s[1].key = "b";
    keyrule_destroy(keyrule_new(&o, &err));
    keyrule_destroy(NULL);

    /* A partition_of out of range is the caller's bug: refused, said. */
    o = auto_options();
    o.partition_of = bad_partition;
    {
        keyrule_t *kr = keyrule_new(&o, &err);
        struct keyrule_decision d;
        struct req r;
        assert_non_null(kr);
        assert_int_equal(
            keyrule_apply(kr, req_hdr(&r, "t", "o"), 0, &d, &err), -1);
        assert_string_equal(err.msg, "partition_of gave 8 for a topic of 8 "
                                     "partitions");
        keyrule_destroy(kr);
    }
}

/* ---- static sharding ---- */

/* keyrule_murmur2 is Kafka's: the vectors of Kafka's UtilsTest. */
static void test_murmur2_is_kafkas(void **state)
{
    static const struct {
        const char *in;
        int32_t want;
    } cases[] = {
        {"21", -973932308},
        {"foobar", -790332482},
        {"a-little-bit-long-string", -985981536},
        {"a-little-bit-longer-string", -1486304829},
        {"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971},
        {"abc", 479470107},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint32_t h = keyrule_murmur2(cases[i].in, strlen(cases[i].in));
        assert_int_equal(h, (uint32_t)cases[i].want);
        assert_int_equal(keyrule_shard_of(cases[i].in, strlen(cases[i].in),
                                          7),
                         (int)((h & 0x7fffffff) % 7));
    }
}


static void test_static(void **state)
{
    struct keyrule_static s[2] = {{.key = "tenant-42", .shards = 8},
                                  {.key = "tenant-7", .shards = 256}};
    struct keyrule_options o = {.key = "json:tenant_id",
                                .shard_by = "json:order_id",
                                .separator = "::",
                                .statics = s,
                                .static_count = 2};
    struct sl_error err = {{0}};
    struct keyrule_decision d;
    struct keyrule_stats st;
    struct req r;
    char body[128], want[64];
    int seen[8] = {0};
    keyrule_t *kr = keyrule_new(&o, &err);

    (void)state;
    assert_non_null(kr);
    /* Copies: the caller's strings may go. */
    s[0].key = "gone";
    o.separator = NULL;
    for (int i = 0; i < 1000; i++) {
        snprintf(body, sizeof(body),
                 "{\"tenant_id\":\"tenant-42\",\"order_id\":\"o-%d\"}", i);
        assert_int_equal(keyrule_apply(kr, req_json(&r, body), 0, &d, &err),
                         0);
        char id[16];
        snprintf(id, sizeof(id), "o-%d", i);
        int shard = keyrule_shard_of(id, strlen(id), 8);
        snprintf(want, sizeof(want), "tenant-42::%d", shard);
        assert_string_equal(d.key, want);
        assert_int_equal(d.shard, shard);
        assert_int_equal(d.shards, 8);
        assert_int_equal(d.hot, KEYRULE_STATIC);
        assert_int_equal(d.base_len, 9);
        assert_int_equal(d.key_len, strlen(want));
        assert_null(d.shard_by_missing);
        seen[shard]++;
    }
    /* 1000 ids spread over 8 shards evenly. */
    for (int i = 0; i < 8; i++) {
        assert_true(seen[i] > 80 && seen[i] < 170);
    }
    /* Integer shard_by values hash as their text; 3-digit shards. */
    assert_int_equal(
        keyrule_apply(kr,
                      req_json(&r, "{\"tenant_id\":\"tenant-7\","
                                   "\"order_id\":12345}"),
                      0, &d, &err),
        0);
    snprintf(want, sizeof(want), "tenant-7::%d",
             keyrule_shard_of("12345", 5, 256));
    assert_string_equal(d.key, want);
    /* Not listed: unchanged. */
    assert_int_equal(
        keyrule_apply(kr,
                      req_json(&r, "{\"tenant_id\":\"tenant-4\","
                                   "\"order_id\":\"o-1\"}"),
                      0, &d, &err),
        0);
    assert_string_equal(d.key, "tenant-4");
    assert_int_equal(d.shard, -1);
    /* No usable shard_by: shard 0, said and counted. */
    req_json(&r, "{\"tenant_id\":\"tenant-42\"}");
    assert_int_equal(keyrule_apply(kr, &r.in, 0, &d, &err), 0);
    assert_string_equal(d.key, "tenant-42::0");
    assert_string_equal(d.shard_by_missing, "field missing");
    assert_int_equal(
        keyrule_apply(kr,
                      req_json(&r, "{\"tenant_id\":\"tenant-42\","
                                   "\"order_id\":[1]}"),
                      0, &d, &err),
        0);
    assert_string_equal(d.shard_by_missing, "not a string or integer");
    keyrule_stats(kr, &st);
    assert_int_equal(st.records, 1004);
    assert_int_equal(st.sharded, 1003);
    assert_int_equal(st.missing_shard_by, 2);
    assert_int_equal(st.turned_hot, 0);
    assert_int_equal(st.refused, 0);
    keyrule_destroy(kr);
}

/* ---- auto sharding ---- */

/* tenant-42 takes 60% of 200000 records over 8 partitions. Unsharded its
 * partition would get 65% of the traffic; sharded 8 ways, the busiest
 * partition must stay under 25%. It gets 20.6%: murmur2 puts the 8 shard
 * keys on 6 distinct partitions, two pairs sharing one (12.5% would be a
 * perfect spread). Every order of the hot tenant keeps one record key. */
static void test_auto_spreads_hot_key(void **state)
{
    struct keyrule_options o = auto_options();
    struct sl_error err = {{0}};
    struct keyrule_decision d;
    struct keyrule_stats st;
    struct req r;
    uint64_t rng = 88172645463325292ULL;
    long sharded_part[8] = {0}, plain_part[8] = {0}, after = 0;
    long first_hot = -1;
    static signed char order_shard[100000];
    keyrule_t *kr = keyrule_new(&o, &err);

    (void)state;
    assert_non_null(kr);
    memset(order_shard, -1, sizeof(order_shard));
    for (long i = 0; i < 200000; i++) {
        unsigned order;
        const struct keyrule_input *in = traffic(&r, &rng, 60, &order);
        assert_int_equal(keyrule_apply(kr, in, i, &d, &err), 0);
        int is42 = strcmp(r.v[0], "tenant-42") == 0;
        if (d.turned_hot) {
            assert_true(is42);
            assert_int_equal(first_hot, -1);
            first_hot = i;
        }
        assert_int_equal(d.turned_cold, 0);
        if (is42 && first_hot >= 0) {
            /* One entity, one record key. */
            assert_int_equal(d.hot, KEYRULE_AUTO);
            assert_int_equal(d.shards, 8);
            if (order_shard[order] < 0) {
                order_shard[order] = (signed char)d.shard;
            }
            assert_int_equal(d.shard, order_shard[order]);
        } else {
            assert_int_equal(d.shard, -1);
        }
        if (i >= 20000) {
            sharded_part[kafka_partition(d.key, d.key_len, 8)]++;
            plain_part[kafka_partition(d.key, d.base_len, 8)]++;
            after++;
        }
    }
    /* Decided once the window held min_records (1000) records. */
    assert_true(first_hot >= 999 && first_hot < 1100);
    long max_sharded = 0, max_plain = 0;
    for (int p = 0; p < 8; p++) {
        max_sharded = sharded_part[p] > max_sharded ? sharded_part[p]
                                                    : max_sharded;
        max_plain = plain_part[p] > max_plain ? plain_part[p] : max_plain;
    }
    printf("keyrule: 60%% key over 8 partitions: busiest partition %.1f%% "
           "unsharded, %.1f%% sharded; spread:",
           100.0 * max_plain / after, 100.0 * max_sharded / after);
    for (int p = 0; p < 8; p++) {
        printf(" %.1f", 100.0 * sharded_part[p] / after);
    }
    printf("\n");
    assert_true((double)max_plain / after > 0.6);
    assert_true((double)max_sharded / after < 0.25);
    keyrule_stats(kr, &st);
    assert_int_equal(st.records, 200000);
    assert_int_equal(st.turned_hot, 1);
    assert_int_equal(st.auto_hot_keys, 1);
    assert_int_equal(st.turned_cold, 0);
    assert_int_equal(st.missing_shard_by, 0);
    assert_int_equal(st.hot_full, 0);
    keyrule_destroy(kr);
}

/* Nothing turns hot before min_records, nor a key that is small in
 * absolute terms even if it is most of a quiet partition. */
static void test_auto_cold_start(void **state)
{
    struct keyrule_options o = auto_options();
    struct sl_error err = {{0}};
    struct keyrule_decision d;
    struct keyrule_stats st;
    struct req r;
    char t[32];
    keyrule_t *kr = keyrule_new(&o, &err);

    (void)state;
    assert_non_null(kr);
    /* 999 records of one key: 100% of its partition, but too early. */
    for (int i = 0; i < 999; i++) {
        assert_int_equal(
            keyrule_apply(kr, req_hdr(&r, "only", "o"), i, &d, &err), 0);
        assert_int_equal(d.shard, -1);
    }
    /* 20000 records over 5000 keys: none holds 16 records. */
    for (int i = 0; i < 20000; i++) {
        snprintf(t, sizeof(t), "k%d", i % 5000);
        assert_int_equal(
            keyrule_apply(kr, req_hdr(&r, t, "o"), 1000 + i, &d, &err), 0);
        assert_int_equal(d.shard, -1);
    }
    keyrule_stats(kr, &st);
    assert_int_equal(st.turned_hot, 0);
    assert_int_equal(st.sharded, 0);
    keyrule_destroy(kr);
}

/* A hot key that cools stays sharded for `hold` after it was last hot,
 * then its next record says turned_cold; it turns hot again only when
 * it is hot again. */
static void test_hold(void **state)
{
    struct keyrule_options o = auto_options();
    struct sl_error err = {{0}};
    struct keyrule_decision d;
    struct keyrule_stats st;
    struct req r;
    uint64_t rng = 1234567;
    unsigned order;
    const int64_t hold = 60000, t0 = 100000;
    keyrule_t *kr;

    (void)state;
    o.autos.hold_ms = hold;
    kr = keyrule_new(&o, &err);
    assert_non_null(kr);
    for (int i = 0; i < 30000; i++) {
        assert_int_equal(keyrule_apply(kr, traffic(&r, &rng, 60, &order), i,
                                       &d, &err),
                         0);
    }
    keyrule_stats(kr, &st);
    assert_int_equal(st.turned_hot, 1);
    /* tenant-42 falls to 1% (7.5% of its partition): the clock stands at
     * t0, so it stays sharded however long the counts take to fall. */
    for (int i = 0; i < 60000; i++) {
        assert_int_equal(keyrule_apply(kr, traffic(&r, &rng, 1, &order), t0,
                                       &d, &err),
                         0);
        if (strcmp(r.v[0], "tenant-42") == 0) {
            assert_int_equal(d.hot, KEYRULE_AUTO);
            assert_true(d.shard >= 0);
        }
    }
    /* Last hot at t0 at the latest: still held a millisecond before. */
    assert_int_equal(keyrule_apply(kr, req_hdr(&r, "tenant-42", "order-1"),
                                   t0 + hold - 1, &d, &err),
                     0);
    assert_int_equal(d.hot, KEYRULE_AUTO);
    assert_int_equal(d.turned_cold, 0);
    assert_int_equal(keyrule_apply(kr, req_hdr(&r, "tenant-42", "order-1"),
                                   t0 + hold, &d, &err),
                     0);
    assert_int_equal(d.turned_cold, 1);
    assert_int_equal(d.hot, KEYRULE_COLD);
    assert_string_equal(d.key, "tenant-42");
    /* At 1% it stays cold: no flapping. */
    for (int i = 0; i < 60000; i++) {
        assert_int_equal(keyrule_apply(kr, traffic(&r, &rng, 1, &order),
                                       t0 + hold + i, &d, &err),
                         0);
        assert_int_equal(d.shard, -1);
    }
    keyrule_stats(kr, &st);
    assert_int_equal(st.turned_hot, 1);
    assert_int_equal(st.turned_cold, 1);
    assert_int_equal(st.auto_hot_keys, 0);
    /* Hot again: sharded again, to the same record keys as before. */
    int turned = 0;
    for (int i = 0; i < 30000; i++) {
        assert_int_equal(keyrule_apply(kr, traffic(&r, &rng, 60, &order),
                                       t0 + 2 * hold + i, &d, &err),
                         0);
        turned += d.turned_hot;
    }
    assert_int_equal(turned, 1);
    keyrule_stats(kr, &st);
    assert_int_equal(st.turned_hot, 2);
    keyrule_destroy(kr);
}

/* A hot key whose records stop is unsharded when a window ends after its
 * hold ran out (no record of it says so; the stats do). */
static void test_hold_expires_silently(void **state)
{
    struct keyrule_options o = auto_options();
    struct sl_error err = {{0}};
    struct keyrule_decision d;
    struct keyrule_stats st;
    struct req r;
    uint64_t rng = 42;
    unsigned order;
    keyrule_t *kr;

    (void)state;
    o.autos.hold_ms = 1000;
    kr = keyrule_new(&o, &err);
    assert_non_null(kr);
    for (int i = 0; i < 5000; i++) {
        assert_int_equal(keyrule_apply(kr, traffic(&r, &rng, 60, &order), 0,
                                       &d, &err),
                         0);
    }
    keyrule_stats(kr, &st);
    assert_int_equal(st.auto_hot_keys, 1);
    for (int i = 0; i < 10000; i++) {
        assert_int_equal(keyrule_apply(kr, traffic(&r, &rng, 0, &order),
                                       5000, &d, &err),
                         0);
    }
    keyrule_stats(kr, &st);
    assert_int_equal(st.auto_hot_keys, 0);
    assert_int_equal(st.turned_cold, 1);
    keyrule_destroy(kr);
}

/* ---- the inverse ---- */

static void test_key_base(void **state)
{
    static const struct {
        const char *key, *sep, *base;
    } cases[] = {
        {"tenant-42~3", NULL, "tenant-42"},
        {"tenant-42~255", "~", "tenant-42"},
        {"tenant-42~007", "~", "tenant-42"},
        {"tenant-42", NULL, "tenant-42"},
        {"tenant-42~", NULL, "tenant-42~"},
        {"tenant-42~1234", NULL, "tenant-42~1234"},
        {"tenant~42x", NULL, "tenant~42x"},
        {"~3", NULL, "~3"},
        {"~", NULL, "~"},
        {"3", NULL, "3"},
        {"123", NULL, "123"},
        {"a~~3", NULL, "a~"},
        {"a~b3", NULL, "a~b3"},
        {"a~3~4", NULL, "a~3"},
        {"order-12", NULL, "order-12"},
        {"a::12", "::", "a"},
        {"a:12", "::", "a:12"},
        {"::12", "::", "::12"},
        {"a~1", "", "a~1"},
        {"", NULL, ""},
    };
    size_t n;

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *k = cases[i].key;
        assert_ptr_equal(keyrule_key_base(k, strlen(k), cases[i].sep, &n), k);
        assert_int_equal(n, strlen(cases[i].base));
        assert_memory_equal(k, cases[i].base, n);
    }
    /* len, not a NUL, ends the key. */
    assert_non_null(keyrule_key_base("a~12345", 4, NULL, &n));
    assert_int_equal(n, 1);
    assert_null(keyrule_key_base(NULL, 5, NULL, &n));
    assert_int_equal(n, 0);

    /* Round trip over every shard of a static key and of cold keys. */
    {
        struct keyrule_static s = {.key = "t", .shards = 256};
        struct keyrule_options o = {.key = "header:x-tenant",
                                    .shard_by = "header:x-order",
                                    .statics = &s,
                                    .static_count = 1};
        struct sl_error err = {{0}};
        struct keyrule_decision d;
        struct req r;
        char ord[32];
        int seen[256] = {0};
        keyrule_t *kr = keyrule_new(&o, &err);
        assert_non_null(kr);
        for (int i = 0; i < 20000; i++) {
            snprintf(ord, sizeof(ord), "%d", i);
            assert_int_equal(keyrule_apply(kr, req_hdr(&r, i % 2 ? "t" : ord,
                                                       ord),
                                           0, &d, &err),
                             0);
            keyrule_key_base(d.key, d.key_len, NULL, &n);
            assert_int_equal(n, d.base_len);
            if (d.shard >= 0) {
                seen[d.shard] = 1;
            }
        }
        for (int i = 0; i < 256; i++) {
            assert_true(seen[i]);
        }
        keyrule_destroy(kr);
    }
}

/* ---- bounded, deterministic, fast ---- */

static size_t heap_in_use(void)
{
#if defined(__SANITIZE_ADDRESS__)
    return 0; /* ASan's allocator does not feed mallinfo2 */
#else
    return mallinfo2().uordblks;
#endif
}

/* A million distinct keys and one at 30%: the sketch keeps `capacity`
 * counters, nothing grows, and the heavy key is still found. */
static void test_bounded_under_many_keys(void **state)
{
    struct keyrule_options o = auto_options();
    struct sl_error err = {{0}};
    struct keyrule_decision d;
    struct keyrule_stats st;
    struct req r;
    char t[32];
    uint64_t rng = 99;
    size_t before;
    long distinct = 0;
    keyrule_t *kr = keyrule_new(&o, &err);

    (void)state;
    assert_non_null(kr);
    req_hdr(&r, "x", "order-1");
    before = heap_in_use();
    for (long i = 0; distinct < 1000000; i++) {
        size_t n;
        if (rng_next(&rng) % 10 < 3) {
            n = (size_t)snprintf(t, sizeof(t), "heavy");
        } else {
            n = (size_t)snprintf(t, sizeof(t), "k%ld", distinct++);
        }
        memcpy(r.v[0], t, n);
        r.h[0].value_len = n;
        assert_int_equal(keyrule_apply(kr, &r.in, i, &d, &err), 0);
        assert_true(d.shard == -1 || strcmp(t, "heavy") == 0);
    }
    assert_int_equal(heap_in_use(), before);
    keyrule_stats(kr, &st);
    assert_int_equal(st.turned_hot, 1);
    assert_int_equal(st.auto_hot_keys, 1);
    assert_true(st.records > 1000000);
    keyrule_destroy(kr);
}

static void test_deterministic(void **state)
{
    struct keyrule_options o = auto_options();
    struct sl_error err = {{0}};
    struct keyrule_decision d1, d2;
    struct req r;
    uint64_t rng = 7;
    unsigned order;
    keyrule_t *a, *b;

    (void)state;
    o.key = "json:tenant_id";
    o.shard_by = "json:order_id";
    o.autos.hold_ms = 5000;
    a = keyrule_new(&o, &err);
    b = keyrule_new(&o, &err);
    assert_non_null(a);
    assert_non_null(b);
    for (int i = 0; i < 50000; i++) {
        char body[128];
        int pct = (i / 10000) % 2 ? 10 : 50;
        traffic(&r, &rng, pct, &order);
        snprintf(body, sizeof(body), "{\"tenant_id\":\"%s\",\"order_id\":%u}",
                 r.v[0], order);
        req_json(&r, body);
        assert_int_equal(keyrule_apply(a, &r.in, i, &d1, &err), 0);
        assert_int_equal(keyrule_apply(b, &r.in, i, &d2, &err), 0);
        assert_string_equal(d1.key, d2.key);
        assert_int_equal(d1.turned_hot, d2.turned_hot);
        assert_int_equal(d1.turned_cold, d2.turned_cold);
    }
    keyrule_destroy(a);
    keyrule_destroy(b);
}

static double now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* Not a test: ns per keyrule_apply with hot_keys.auto on (60% hot). */
static void test_bench(void **state)
{
    enum { N = 300000, VARIANTS = 4096 };
    struct keyrule_options o = auto_options();
    struct sl_error err = {{0}};
    struct keyrule_decision d;
    static struct req reqs[VARIANTS];
    static char bodies[VARIANTS][128];
    uint64_t rng = 5;
    unsigned order;
    double t;
    keyrule_t *kr;

    (void)state;
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1) {
            o.key = "json:tenant_id";
            o.shard_by = "json:order_id";
        }
        kr = keyrule_new(&o, &err);
        assert_non_null(kr);
        for (int i = 0; i < VARIANTS; i++) {
            traffic(&reqs[i], &rng, 60, &order);
            snprintf(bodies[i], sizeof(bodies[i]),
                     "{\"tenant_id\":\"%s\",\"order_id\":\"order-%u\","
                     "\"total\":42.5}",
                     reqs[i].v[0], order);
            reqs[i].in.body = bodies[i];
            reqs[i].in.body_len = strlen(bodies[i]);
            reqs[i].in.header_count = pass == 0 ? 2 : 0;
            reqs[i].in.headers = reqs[i].h;
        }
        t = now_ns();
        for (int i = 0; i < N; i++) {
            keyrule_apply(kr, &reqs[i % VARIANTS].in, i, &d, &err);
        }
        t = now_ns() - t;
        printf("keyrule: %.0f ns per apply (auto on, 60%% hot, %s sources)\n",
               t / N, pass == 0 ? "header:" : "json:");
        keyrule_destroy(kr);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_key),
        cmocka_unit_test(test_header_key),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_new_errors),
        cmocka_unit_test(test_murmur2_is_kafkas),
        cmocka_unit_test(test_static),
        cmocka_unit_test(test_auto_spreads_hot_key),
        cmocka_unit_test(test_auto_cold_start),
        cmocka_unit_test(test_hold),
        cmocka_unit_test(test_hold_expires_silently),
        cmocka_unit_test(test_key_base),
        cmocka_unit_test(test_bounded_under_many_keys),
        cmocka_unit_test(test_deterministic),
        cmocka_unit_test(test_bench),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
