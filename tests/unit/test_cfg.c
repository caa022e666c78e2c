/* test_cfg.c -- the pipeline loader: a good file with its defaults, each
 * kind of error with its file:line:col, and ${ENV} expansion. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "cfg.h"
#include "connector.h"

static char path[64];

static const char *write_yaml(const char *text)
{
    int fd;
    FILE *fp;

    snprintf(path, sizeof(path), "/tmp/sluice-test-cfg-XXXXXX");
    fd = mkstemp(path);
    assert_true(fd >= 0);
    fp = fdopen(fd, "w");
    fputs(text, fp);
    fclose(fp);
    return path;
}

/* Loads text expecting failure; returns the error text (static). */
static const char *load_errors(const char *text, int *count)
{
    static struct cfg_errors errs;
    struct cfg *cfg;

    memset(&errs, 0, sizeof(errs));
    cfg = cfg_load(write_yaml(text), &errs);
    unlink(path);
    assert_null(cfg);
    *count = errs.count;
    return errs.text;
}

/* Asserts that errors contain "<file>:<where>: <needle>". */
static void assert_error(const char *errors, const char *where,
                         const char *needle)
{
    char want[512];

    snprintf(want, sizeof(want), "%s:%s: %s", path, where, needle);
    if (strstr(errors, want) == NULL) {
        fail_msg("expected `%s` in:\n%s", want, errors);
    }
}

static const char good[] =
    "pipeline: orders\n"
    "source:\n"
    "  brokers: localhost:9092\n"
    "  topics: [orders, refunds]\n"
    "  properties:\n"
    "    session.timeout.ms: 6000\n"
    "delivery:\n"
    "  ordering: partition\n"
    "  max_in_flight_bytes: 8MiB\n"
    "sinks:\n"
    "  billing:\n"
    "    type: http\n"
    "    url: http://billing/charges\n"
    "    timeout: 250ms\n"
    "    headers:\n"
    "      Authorization: Bearer ${TEST_CFG_TOKEN}\n"
    "  crm:\n"
    "    type: http\n"
    "    url: http://crm/\n"
    "    max_in_flight: 8\n";

static void test_good_file_and_defaults(void **state)
{
    struct cfg_errors errs = {0};
    struct cfg *cfg;

    (void)state;
    setenv("TEST_CFG_TOKEN", "s3cret", 1);
    cfg = cfg_load(write_yaml(good), &errs);
    unlink(path);
    if (cfg == NULL) {
        fail_msg("%s", errs.text);
    }
    assert_string_equal(cfg->pipeline, "orders");
    assert_string_equal(cfg->source.brokers, "localhost:9092");
    assert_int_equal(cfg->source.topics.count, 2);
    assert_string_equal(cfg->source.topics.items[1], "refunds");
    assert_string_equal(cfg->source.group, "orders"); /* defaults to name */
    assert_int_equal(cfg->source.start, CFG_START_EARLIEST);
    assert_int_equal(cfg->source.properties.count, 1);
    assert_string_equal(cfg->source.properties.values[0], "6000");
    assert_int_equal(cfg->delivery.ordering, CFG_ORDERING_PARTITION);
    assert_int_equal(cfg->delivery.max_in_flight_bytes, 8 * 1024 * 1024);
    assert_int_equal(cfg->delivery.max_in_flight, 10000);
    assert_int_equal(cfg->delivery.commit_interval_ms, 1000);
    assert_int_equal(cfg->sink_count, 2);
    assert_string_equal(cfg->sinks[0].name, "billing");
    assert_ptr_equal(cfg->sinks[0].connector, &http_connector);
    assert_int_equal(cfg->sinks[0].max_in_flight, 64);
    assert_int_equal(cfg->sinks[1].max_in_flight, 8);
    assert_int_equal(cfg->sinks[0].line, 11);
    /* Failures: the DLQ and answer-class defaults. */
    assert_string_equal(cfg->dlq.topic, "orders.dlq");
    assert_string_equal(cfg->dlq.brokers, "localhost:9092");
    assert_int_equal(cfg->dlq.max_replays, 3);
    assert_string_equal(cfg_sink_dlq_topic(cfg, 1), "orders.dlq");
    assert_int_equal(cfg->delivery.retry_max_attempts, 0);
    assert_int_equal(cfg->delivery.retry_deadline_ms, 600000);
    assert_int_equal(cfg->sinks[0].answers[0], CFG_ANSWER_RETRY);
    assert_int_equal(cfg->sinks[0].answers[503], CFG_ANSWER_RETRY);
    assert_int_equal(cfg->sinks[0].answers[501], CFG_ANSWER_DEFAULT);
    assert_int_equal(cfg->sinks[0].answers[400], CFG_ANSWER_DEFAULT);
    assert_int_equal(cfg->sinks[0].breaker_failures, 5);
    assert_int_equal(cfg->sinks[0].park_after_ms, 0);
    cfg_free(cfg);
    cfg_free(NULL);
}

static void test_answer_classes(void **state)
{
    struct cfg_errors errs = {0};
    struct cfg *cfg;
    int n;
    const char *e;

    (void)state;
    cfg = cfg_load(write_yaml("pipeline: p\n"
                              "source: {brokers: b, topics: t}\n"
                              "dlq: {topic: failures}\n"
                              "sinks:\n"
                              "  a:\n"
                              "    type: http\n"
                              "    url: http://a/\n"
                              "    dlq_topic: a-failures\n"
                              "    retry_on: [5xx, 404]\n"
                              "    permanent_on: [503]\n"
                              "    done_on: 409\n"),
                   &errs);
    unlink(path);
    if (cfg == NULL) {
        fail_msg("%s", errs.text);
    }
    const unsigned char *a = cfg->sinks[0].answers;
    assert_int_equal(a[0], CFG_ANSWER_DEFAULT); /* transport not listed */
    assert_int_equal(a[500], CFG_ANSWER_RETRY);
    assert_int_equal(a[599], CFG_ANSWER_RETRY);
    assert_int_equal(a[503], CFG_ANSWER_PERMANENT); /* status beats class */
    assert_int_equal(a[404], CFG_ANSWER_RETRY);
    assert_int_equal(a[409], CFG_ANSWER_DONE);
    assert_int_equal(a[429], CFG_ANSWER_DEFAULT);
    assert_string_equal(cfg_sink_dlq_topic(cfg, 0), "a-failures");
    assert_string_equal(cfg->dlq.topic, "failures");
    cfg_free(cfg);

    /* 409 is already applied by default; `applied_on: []` turns it off
     * and the other lists may be empty too. */
    cfg = cfg_load(write_yaml("pipeline: p\n"
                              "source: {brokers: b, topics: t}\n"
                              "sinks:\n"
                              "  a: {type: http, url: http://a/}\n"
                              "  b: {type: http, url: http://b/,\n"
                              "      applied_on: [], retry_on: []}\n"),
                   &errs);
    unlink(path);
    if (cfg == NULL) {
        fail_msg("%s", errs.text);
    }
    assert_int_equal(cfg->sinks[0].answers[409], CFG_ANSWER_APPLIED);
    assert_int_equal(cfg->sinks[0].answers[503], CFG_ANSWER_RETRY);
    assert_int_equal(cfg->sinks[1].answers[409], CFG_ANSWER_DEFAULT);
    assert_int_equal(cfg->sinks[1].answers[503], CFG_ANSWER_DEFAULT);
    cfg_free(cfg);

    e = load_errors("pipeline: p\n"
                    "source: {brokers: b, topics: t}\n"
                    "sinks:\n"
                    "  a:\n"
                    "    type: http\n"
                    "    url: http://a/\n"
                    "    retry_on: [6xx, 50]\n",
                    &n);
    assert_int_equal(n, 2);
    assert_error(e, "7:15", "sinks.a.retry_on: expected a status (100-599), "
                            "a class such as 5xx, or `transport`, found "
                            "`6xx`");

    /* A DLQ topic that is a source topic would loop failures. */
    e = load_errors("pipeline: p\n"
                    "source: {brokers: b, topics: [t, u]}\n"
                    "dlq: {topic: t}\n"
                    "sinks:\n"
                    "  a: {type: http, url: 'http://a/', dlq_topic: u}\n",
                    &n);
    assert_int_equal(n, 2);
    assert_error(e, "3:6", "dlq.topic: `t` is a source topic");
    assert_error(e, "5:3", "sinks.a.dlq_topic: `u` is a source topic");
}

static void test_invalid_yaml_has_position(void **state)
{
    int n;
    const char *e = load_errors("pipeline: x\nsource: [a\n", &n);

    (void)state;
    assert_int_equal(n, 1);
    assert_error(e, "3:1", "invalid YAML:");
}

static void test_unknown_key_suggests(void **state)
{
    int n;
    const char *e = load_errors("pipeline: x\n"
                                "source:\n"
                                "  brokers: b\n"
                                "  topic: [t]\n"
                                "sinks:\n"
                                "  a:\n"
                                "    type: http\n"
                                "    ur: http://x\n"
                                "    colour: blue\n",
                                &n);

    (void)state;
    assert_error(e, "4:3", "source.topic: unknown key; did you mean `topics`?");
    assert_error(e, "8:5", "sinks.a.ur: unknown key; did you mean `url`?");
    assert_error(e, "9:5", "sinks.a.colour: unknown key; expected one of: "
                           "type max_in_flight transform retry dlq_topic "
                           "shadow_url retry_on");
    /* Missing required keys are reported at their mapping. */
    assert_error(e, "3:3", "source.topics: missing required key `topics`");
    assert_error(e, "7:5", "sinks.a.url: missing required key `url`");
    assert_int_equal(n, 5);
}

/* sample_ratio is a number from 0 to 1, or a percentage; admin.listen
 * and tracing are sections of their own. */
static void test_tracing_and_admin_sections(void **state)
{
    int n;
    const char *e;
    static const char *const bad[] = {"1.5", "-0.1", "nan", "50%%x", "x",
                                      "101%"};

    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char text[512];
        snprintf(text, sizeof(text),
                 "pipeline: x\nsource:\n  brokers: b\n  topics: [t]\n"
                 "tracing:\n  sample_ratio: \"%s\"\n"
                 "sinks:\n  a:\n    type: http\n    url: http://x\n",
                 bad[i]);
        e = load_errors(text, &n);
        assert_error(e, "6:17", "tracing.sample_ratio: expected a ratio");
        assert_int_equal(n, 1);
    }
    e = load_errors("pipeline: x\nsource:\n  brokers: b\n  topics: [t]\n"
                    "admin:\n  listen: 127.0.0.1:0\n  port: 1\n"
                    "tracing:\n  sample_ratio: 25%\n  new_trace: false\n"
                    "sinks:\n  a:\n    type: http\n    url: http://x\n",
                    &n);
    assert_error(e, "7:3", "admin.port: unknown key");
    assert_error(e, "10:3", "tracing.new_trace: unknown key; did you mean "
                            "`new_traces`?");
    assert_int_equal(n, 2);

    static const struct {
        const char *url, *why;
    } endpoints[] = {
        {"ftp://x/v1/traces", "expected an http:// or https:// URL"},
        {"http:///v1/traces", "the URL has no host"},
        {"https://user:pw@otel:4318/v1/traces", "credentials in the URL"},
        {"http://otel:4318/v1 traces", "the URL has a space or a control byte"},
    };
    for (size_t i = 0; i < sizeof(endpoints) / sizeof(endpoints[0]); i++) {
        char text[512], want[128];
        snprintf(text, sizeof(text),
                 "pipeline: x\nsource:\n  brokers: b\n  topics: [t]\n"
                 "tracing:\n  otlp_endpoint: \"%s\"\n"
                 "sinks:\n  a:\n    type: http\n    url: http://x\n",
                 endpoints[i].url);
        e = load_errors(text, &n);
        snprintf(want, sizeof(want), "tracing.otlp_endpoint: %s",
                 endpoints[i].why);
        assert_error(e, "6:18", want);
        assert_int_equal(n, 1);
    }
    struct cfg_errors errs = {0};
    struct cfg *cfg = cfg_load(
        write_yaml("pipeline: x\nsource:\n  brokers: b\n  topics: [t]\n"
                   "tracing:\n  otlp_endpoint: http://[::1]:4318/v1/traces\n"
                   "sinks:\n  a:\n    type: http\n    url: http://x\n"),
        &errs);
    unlink(path);
    if (cfg == NULL) {
        fail_msg("%s", errs.text);
    }
    assert_string_equal(cfg->tracing.otlp_endpoint,
                        "http://[::1]:4318/v1/traces");
    cfg_free(cfg);
}

static void test_dedupe_section(void **state)
{
    int n;
    const char *e = load_errors("pipeline: x\n"
                                "source:\n"
                                "  brokers: b\n"
                                "  topics: [t]\n"
                                "dedupe:\n"
                                "  key: jsn:order_id\n"
                                "  store: redis\n"
                                "  path: m.db\n"
                                "  tls: true\n"
                                "  ttl: 5\n"
                                "sinks:\n"
                                "  a:\n"
                                "    type: http\n"
                                "    url: http://x\n",
                                &n);

    (void)state;
    assert_error(e, "6:8", "dedupe.key: expected `header:NAME`, "
                           "`json:PATH`, `lua:FUNCTION` or `coordinates`");
    assert_error(e, "8:3", "dedupe.path: unknown key");
    assert_error(e, "10:8", "dedupe.ttl:");
    assert_int_equal(n, 3);
    e = load_errors("pipeline: x\n"
                    "source:\n"
                    "  brokers: b\n"
                    "  topics: [t]\n"
                    "dedupe:\n"
                    "  key: lua:order_key\n"
                    "  store: redis\n"
                    "  address: \"localhost:99999\"\n"
                    "sinks:\n"
                    "  a:\n"
                    "    type: http\n"
                    "    url: http://x\n",
                    &n);
    assert_error(e, "6:8", "dedupe.key: `lua:` names a function of the "
                           "pipeline's `transform` script, and there is "
                           "none");
    assert_error(e, "8:12", "dedupe.address:");
    assert_int_equal(n, 2);
    e = load_errors("pipeline: x\n"
                    "source:\n"
                    "  brokers: b\n"
                    "  topics: [t]\n"
                    "dedupe:\n"
                    "  store: redis\n"
                    "  tls: true\n"
                    "sinks:\n"
                    "  a:\n"
                    "    type: http\n"
                    "    url: http://x\n",
                    &n);
    assert_error(e, "7:8", "dedupe.tls: tls needs hiredis 1.0");
    assert_int_equal(n, 1);
}

static void test_bad_values(void **state)
{
    int n;
    const char *e = load_errors("pipeline: x\n"
                                "source:\n"
                                "  brokers: b\n"
                                "  topics: t\n"
                                "  start: middle\n"
                                "  embedded_partitions: 0\n"
                                "delivery:\n"
                                "  commit_interval: 5\n"
                                "  max_in_flight: lots\n"
                                "  max_in_flight_bytes: 12XB\n"
                                "sinks:\n"
                                "  a:\n"
                                "    type: http\n"
                                "    url: http://x\n"
                                "    forward_headers: maybe\n"
                                "    headers: [x]\n"
                                "  b:\n"
                                "    type: smtp\n"
                                "  c d:\n"
                                "    type: http\n",
                                &n);

    (void)state;
    assert_error(e, "5:10", "source.start: expected one of: earliest latest, "
                            "found `middle`");
    assert_error(e, "6:24", "source.embedded_partitions: must be between 1 "
                            "and 1024, found `0`");
    assert_error(e, "8:20", "delivery.commit_interval: expected a duration");
    assert_error(e, "9:18", "delivery.max_in_flight: expected an integer");
    assert_error(e, "10:24", "delivery.max_in_flight_bytes: expected a size");
    assert_error(e, "15:22", "sinks.a.forward_headers: expected true or false");
    assert_error(e, "16:14", "sinks.a.headers: expected a mapping, found a "
                             "list");
    assert_error(e, "18:11", "sinks.b.type: unknown sink type; expected one "
                             "of: http");
    assert_error(e, "19:3", "sinks.c d: a sink name is letters");
    assert_int_equal(n, 9);
}

static void test_missing_sections_and_duplicates(void **state)
{
    int n;
    const char *e = load_errors("pipline: x\n"
                                "sinks:\n"
                                "  a:\n"
                                "    type: http\n"
                                "    url: http://x\n"
                                "    url: http://y\n",
                                &n);

    (void)state;
    assert_error(e, "1:1", "pipline: unknown key; did you mean `pipeline`?");
    assert_error(e, "6:5", "sinks.a.url: duplicate key (first at line 5)");
    assert_error(e, "1:1", "pipeline: missing required key `pipeline`");
    assert_error(e, "1:1", "source: missing required key `source`");
    assert_int_equal(n, 4);
}

static void test_env_in_file(void **state)
{
    int n;
    const char *e;

    (void)state;
    unsetenv("TEST_CFG_UNSET");
    setenv("TEST_CFG_SECRET", "hunter2", 1);
    e = load_errors("pipeline: x\n"
                    "source:\n"
                    "  brokers: ${TEST_CFG_UNSET}\n"
                    "  topics: [t]\n"
                    "  start: ${TEST_CFG_SECRET}\n"
                    "sinks:\n"
                    "  a:\n"
                    "    type: http\n"
                    "    url: ${TEST_CFG_UNSET:-http://fallback}\n",
                    &n);
    assert_error(e, "3:12", "source.brokers: environment variable "
                            "TEST_CFG_UNSET is not set");
    /* A value that came from the environment is never echoed. */
    assert_error(e, "5:10", "source.start: expected one of: earliest latest");
    assert_null(strstr(e, "hunter2"));
    assert_int_equal(n, 2);
}

static void test_expand_env(void **state)
{
    struct sl_error err;
    char *s;

    (void)state;
    setenv("TEST_A", "alpha", 1);
    setenv("TEST_EMPTY", "", 1);
    unsetenv("TEST_NONE");
    s = cfg_expand_env("x-${TEST_A}-y", &err);
    assert_string_equal(s, "x-alpha-y");
    free(s);
    s = cfg_expand_env("${TEST_NONE:-def}/${TEST_EMPTY:-e}/${TEST_EMPTY}", &err);
    assert_string_equal(s, "def/e/");
    free(s);
    s = cfg_expand_env("cost $$5 and $HOME", &err);
    assert_string_equal(s, "cost $5 and $HOME");
    free(s);
    s = cfg_expand_env("${TEST_NONE:-}", &err);
    assert_string_equal(s, "");
    free(s);
    assert_null(cfg_expand_env("${TEST_NONE}", &err));
    assert_non_null(strstr(err.msg, "TEST_NONE is not set"));
    assert_null(cfg_expand_env("${TEST_A", &err));
    assert_non_null(strstr(err.msg, "expected }"));
    assert_null(cfg_expand_env("${}", &err));
    assert_null(cfg_expand_env("${TEST_A:-x", &err));
    assert_non_null(strstr(err.msg, "missing }"));
}

static void test_unreadable_file(void **state)
{
    struct cfg_errors errs = {0};

    (void)state;
    assert_null(cfg_load("/nonexistent/pipeline.yaml", &errs));
    /* No fake position: the file has none. */
    assert_string_equal(errs.text, "/nonexistent/pipeline.yaml: cannot "
                                   "open: No such file or directory\n");
}

/* A repeated key is an error at every level, at the repeat, naming the
 * first one's line; the loader would otherwise keep one silently. */
static void test_duplicate_keys_everywhere(void **state)
{
    int n;
    const char *e = load_errors(
        "pipeline: a\n"
        "pipeline: b\n"
        "source:\n"
        "  brokers: x:9\n"
        "  topics: [t]\n"
        "  topics: [u]\n"
        "  properties:\n"
        "    session.timeout.ms: 6000\n"
        "    session.timeout.ms: 7000\n"
        "dlq:\n"
        "  topic: d\n"
        "  topic: e\n"
        "  properties: {acks: 1, acks: 2}\n"
        "sinks:\n"
        "  s:\n"
        "    type: http\n"
        "    url: \"http://h/\"\n"
        "    url: \"http://i/\"\n"
        "    headers: {A: x, A: y}\n"
        "  s:\n"
        "    type: http\n"
        "source: {brokers: x, topics: [t]}\n",
        &n);

    (void)state;
    assert_error(e, "2:1", "pipeline: duplicate key (first at line 1)");
    assert_error(e, "6:3", "source.topics: duplicate key (first at line 5)");
    assert_error(e, "9:5", "source.properties.session.timeout.ms: duplicate "
                           "key (first at line 8)");
    assert_error(e, "12:3", "dlq.topic: duplicate key (first at line 11)");
    assert_error(e, "13:25", "dlq.properties.acks: duplicate key (first at "
                             "line 13)");
    assert_error(e, "18:5", "sinks.s.url: duplicate key (first at line 17)");
    assert_error(e, "19:21", "sinks.s.headers.A: duplicate key (first at "
                             "line 19)");
    assert_error(e, "20:3", "sinks.s: duplicate key (first at line 15)");
    assert_error(e, "22:1", "source: duplicate key (first at line 3)");
    assert_int_equal(n, 9);
}

/* A control character in an echoed value cannot split an error line. */
static void test_errors_escape_control_characters(void **state)
{
    struct cfg_errors errs = {0};

    (void)state;
    cfg_errors_add(&errs, "f\ny.yaml", 2, 3, "k\te", "bad `%s`",
                   "x\ny\001z");
    assert_string_equal(errs.text,
                        "f\\ny.yaml:2:3: k\\te: bad `x\\ny\\x01z`\n");
    int n;
    const char *e = load_errors("pipeline: p\n"
                                "transform: \"x\\ny.lua\"\n"
                                "source: {brokers: b, topics: [t]}\n"
                                "sinks: {a: {type: http, url: \"http://h/\"}}\n",
                                &n);
    assert_int_equal(n, 1);
    assert_non_null(strstr(e, "x\\ny.lua: No such file"));
    /* one error, one line */
    assert_ptr_equal(strchr(e, '\n'), e + strlen(e) - 1);
}

/* Deep nesting is refused where it gets too deep, quickly: libyaml's
 * loader takes time in the square of the depth. */
static void test_nesting_depth_is_capped(void **state)
{
    size_t depth = 100000, len = 3 + 2 * depth + 2;
    char *text = malloc(len);
    int n;

    (void)state;
    assert_non_null(text);
    memcpy(text, "x: ", 3);
    memset(text + 3, '[', depth);
    memset(text + 3 + depth, ']', depth);
    text[3 + 2 * depth] = '\n';
    text[3 + 2 * depth + 1] = '\0';
    const char *e = load_errors(text, &n);
    free(text);
    assert_int_equal(n, 1);
    assert_error(e, "1:67", "nested deeper than 64 levels");
}

static void test_one_document_utf8_only(void **state)
{
    int n;
    const char *e = load_errors("pipeline: p\n---\npipeline: q\n", &n);

    (void)state;
    assert_error(e, "2:1", "a second YAML document");
    e = load_errors("pipeline: p\nsource: \"a\xff\"\n", &n);
    assert_error(e, "2:11", "invalid UTF-8 (byte 0xff)");
    e = load_errors("pipeline: p\nsource: \"a\xc0\x80\"\n", &n);
    assert_error(e, "2:11", "invalid UTF-8 (byte 0xc0)");
    /* a NUL byte: written by hand, the helper writes C strings */
    static const char nul[] = "pipeline: p\nsource: a\0b\n";
    char p[] = "/tmp/sluice-test-cfg-XXXXXX";
    struct cfg_errors errs = {0};
    int fd = mkstemp(p);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, nul, sizeof(nul) - 1), sizeof(nul) - 1);
    close(fd);
    assert_null(cfg_load(p, &errs));
    unlink(p);
    char want[128];
    snprintf(want, sizeof(want), "%s:2:10: a NUL byte", p);
    assert_non_null(strstr(errs.text, want));
}

/* A pipeline or script path that is a FIFO or a directory is refused
 * without blocking, each problem with a script at its YAML key. */
static void test_special_files(void **state)
{
    char dir[] = "/tmp/sluice-test-cfg-dir-XXXXXX", fifo[128], yaml[2048];
    struct cfg_errors errs = {0};
    int n;

    (void)state;
    assert_non_null(mkdtemp(dir));
    snprintf(fifo, sizeof(fifo), "%s/fifo", dir);
    assert_int_equal(mkfifo(fifo, 0600), 0);
    assert_null(cfg_load(fifo, &errs));
    assert_non_null(strstr(errs.text, ": cannot open: is a FIFO"));
    memset(&errs, 0, sizeof(errs));
    assert_null(cfg_load(dir, &errs));
    assert_non_null(strstr(errs.text, ": cannot open: is a directory"));

    snprintf(yaml, sizeof(yaml),
             "pipeline: p\n"
             "transform: %s\n"
             "source: {brokers: b, topics: [t]}\n"
             "sinks:\n"
             "  a: {type: http, url: \"http://h/\", transform: %s}\n"
             "  b: {type: http, url: \"http://h/\", retry: \"\"}\n"
             "  c: {type: http, url: \"http://h/\", retry: /nonexistent.lua}\n",
             fifo, dir);
    const char *e = load_errors(yaml, &n);
    assert_error(e, "2:12", "transform: cannot read");
    assert_non_null(strstr(e, "fifo: is a FIFO, not a regular file"));
    assert_error(e, "5:48", "sinks.a.transform: cannot read");
    assert_non_null(strstr(e, ": is a directory"));
    assert_error(e, "6:44", "sinks.b.retry: expected a file name, found an "
                            "empty string");
    assert_error(e, "7:44", "sinks.c.retry: cannot read /nonexistent.lua: "
                            "No such file or directory");
    assert_int_equal(n, 4);
    unlink(fifo);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good_file_and_defaults),
        cmocka_unit_test(test_invalid_yaml_has_position),
        cmocka_unit_test(test_unknown_key_suggests),
        cmocka_unit_test(test_dedupe_section),
        cmocka_unit_test(test_tracing_and_admin_sections),
        cmocka_unit_test(test_answer_classes),
        cmocka_unit_test(test_bad_values),
        cmocka_unit_test(test_missing_sections_and_duplicates),
        cmocka_unit_test(test_env_in_file),
        cmocka_unit_test(test_expand_env),
        cmocka_unit_test(test_unreadable_file),
        cmocka_unit_test(test_duplicate_keys_everywhere),
        cmocka_unit_test(test_errors_escape_control_characters),
        cmocka_unit_test(test_nesting_depth_is_capped),
        cmocka_unit_test(test_one_document_utf8_only),
        cmocka_unit_test(test_special_files),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
