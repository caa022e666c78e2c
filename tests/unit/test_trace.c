/* test_trace.c -- traceparent parsing, ids and sampling, and the OTLP
 * JSON export on a real loop against a small collector in a thread. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <jansson.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "loop.h"
#include "trace.h"

static const char valid[] =
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

static void test_parse_and_format(void **state)
{
    struct trace_ctx c;
    char out[TRACEPARENT_LEN + 1], hex[33];

    (void)state;
    assert_int_equal(trace_parse(valid, strlen(valid), &c), 0);
    assert_int_equal(c.flags, 1);
    assert_int_equal(c.trace_id[0], 0x4b);
    assert_int_equal(c.span_id[7], 0xb7);
    trace_format(&c, out);
    assert_string_equal(out, valid);
    trace_id_hex(&c, hex);
    assert_string_equal(hex, "4bf92f3577b34da6a3ce929d0e0e4736");

    /* A later version is read as 00 when its start parses. */
    const char *future =
        "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-what";
    assert_int_equal(trace_parse(future, strlen(future), &c), 0);
    assert_int_equal(c.flags, 0);
    trace_format(&c, out);
    assert_memory_equal(out, "00-4bf92f3577b34da6a3ce929d0e0e4736", 35);

    static const char *const bad[] = {
        "",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", /* case */
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01", /* zero */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", /* zero */
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", /* ff */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x", /* 00 long */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1", /* short */
        "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x", /* no - */
        "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01", /* hex */
        "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", /* sep */
        "0-04bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-zz",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (trace_parse(bad[i], strlen(bad[i]), &c) != -1) {
            fail_msg("accepted %s", bad[i]);
        }
    }
    /* Not NUL-terminated: the length rules. */
    assert_int_equal(trace_parse(valid, strlen(valid) - 1, &c), -1);
    assert_int_equal(trace_parse(NULL, 55, &c), -1);
}

/* ---- a loop and a collector ---- */

struct collector {
    int fd, port;
    int status; /* what it answers */
    int requests;
    char *bodies; /* every body received, NUL-separated after the first */
    size_t bodies_len;
    pthread_t thread;
    int stop;
};

static void *collector_main(void *arg)
{
    struct collector *c = arg;

    for (;;) {
        int conn = accept(c->fd, NULL, NULL);
        if (conn < 0 || c->stop) {
            if (conn >= 0) {
                close(conn);
            }
            return NULL;
        }
        /* One request per connection is enough: curl reconnects. */
        size_t cap = 1 << 22, len = 0;
        char *req = malloc(cap + 1);
        long want = -1;
        char *body = NULL;
        while (len < cap) {
            ssize_t n = read(conn, req + len, cap - len);
            if (n <= 0) {
                break;
            }
            len += (size_t)n;
            req[len] = '\0';
            if (body == NULL && (body = strstr(req, "\r\n\r\n")) != NULL) {
                body += 4;
                char *cl = strcasestr(req, "Content-Length:");
                want = cl != NULL ? strtol(cl + 15, NULL, 10) : 0;
            }
            if (body != NULL && (long)(req + len - body) >= want) {
                break;
            }
        }
        if (body != NULL) {
            size_t blen = (size_t)(req + len - body);
            c->bodies = realloc(c->bodies, c->bodies_len + blen + 1);
            memcpy(c->bodies + c->bodies_len, body, blen);
            c->bodies_len += blen;
            c->bodies[c->bodies_len++] = '\0';
        }
        free(req);
        char answer[128];
        int n = snprintf(answer, sizeof(answer),
                         "HTTP/1.1 %d X\r\nContent-Length: 2\r\n"
                         "Connection: close\r\n\r\n{}",
                         c->status);
        /* Counted before the answer: the test reads it once the tracer
         * has its answer. */
        __atomic_add_fetch(&c->requests, 1, __ATOMIC_SEQ_CST);
        if (write(conn, answer, (size_t)n) < 0) {
            /* the test notices */
        }
        close(conn);
    }
}

static void collector_start(struct collector *c, int status)
{
    struct sockaddr_in a = {.sin_family = AF_INET};
    socklen_t len = sizeof(a);
    int one = 1;

    memset(c, 0, sizeof(*c));
    c->status = status;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    setsockopt(c->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    assert_int_equal(bind(c->fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(c->fd, 16), 0);
    getsockname(c->fd, (struct sockaddr *)&a, &len);
    c->port = ntohs(a.sin_port);
    pthread_create(&c->thread, NULL, collector_main, c);
}

static void collector_stop(struct collector *c)
{
    c->stop = 1;
    shutdown(c->fd, SHUT_RDWR);
    pthread_join(c->thread, NULL);
    close(c->fd);
    free(c->bodies);
}

struct rig {
    loop_t *loop;
    struct connector_host host;
    tracer_t *t;
};

static void rig_open(struct rig *r, int port, size_t max_buffer,
                     size_t batch, double ratio)
{
    struct sl_error err;
    char url[64];

    snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1/traces", port);
    r->loop = loop_new(&err);
    assert_non_null(r->loop);
    r->host = (struct connector_host){.sink_name = "tracing",
                                      .max_in_flight = 1};
    loop_fill_host(r->loop, &r->host);
    struct tracer_options o = {
        .endpoint = url,
        .sample_ratio = ratio,
        .service_name = "svc",
        .pipeline = "orders \"eu\"",
        .max_buffer_bytes = max_buffer,
        .max_batch_spans = batch,
        .batch_delay_ms = 10,
        .timeout_ms = 2000,
    };
    r->t = tracer_new(&o, &r->host, &err);
    assert_non_null(r->t);
}

static void rig_close(struct rig *r)
{
    tracer_free(r->t);
    loop_destroy(r->loop);
}

/* Runs the loop until the tracer is idle (or 5 s). */
static void run_until_idle(struct rig *r)
{
    for (int i = 0; i < 500 && !tracer_idle(r->t); i++) {
        loop_run_once(r->loop, 10);
    }
    assert_true(tracer_idle(r->t));
}

static void emit_one(tracer_t *t, const struct trace_ctx *parent,
                     const char *attr_value, size_t attr_len, int error)
{
    struct trace_ctx c;
    struct trace_attr attrs[] = {
        {.key = "http.request.method", .type = TRACE_STR, .str = "POST",
         .str_len = 4},
        {.key = "http.response.status_code", .type = TRACE_INT, .i = 503},
        {.key = "odd", .type = TRACE_STR, .str = attr_value,
         .str_len = attr_len},
    };

    tracer_start(t, parent, &c);
    struct trace_span s = {
        .ctx = c,
        .parent_span_id = parent != NULL ? parent->span_id : NULL,
        .name = "POST",
        .kind = TRACE_CLIENT,
        .start_unix_ns = 1700000000000000000u,
        .end_unix_ns = 1700000000000000123u,
        .error = error,
        .status_message = error ? "refused \"x\"" : NULL,
        .attrs = attrs,
        .attr_count = 3,
    };
    tracer_emit(t, &s);
}

static void test_start_children_and_roots(void **state)
{
    struct rig r;
    struct trace_ctx parent, child, root;

    (void)state;
    rig_open(&r, 9, 1 << 20, 512, 1.0);
    assert_int_equal(trace_parse(valid, strlen(valid), &parent), 0);
    tracer_start(r.t, &parent, &child);
    assert_memory_equal(child.trace_id, parent.trace_id, 16);
    assert_memory_not_equal(child.span_id, parent.span_id, 8);
    assert_int_equal(child.flags, parent.flags);
    tracer_start(r.t, NULL, &root);
    assert_memory_not_equal(root.trace_id, parent.trace_id, 16);
    assert_int_equal(root.flags, TRACE_SAMPLED);
    rig_close(&r);

    static const double ratios[] = {0.0, 0.25, 1.0};
    for (size_t k = 0; k < 3; k++) {
        rig_open(&r, 9, 1 << 20, 512, ratios[k]);
        int sampled = 0, draws = 100000;
        for (int i = 0; i < draws; i++) {
            tracer_start(r.t, NULL, &root);
            sampled += root.flags & TRACE_SAMPLED;
        }
        double share = (double)sampled / draws;
        /* 0.25 over 100k draws: 4 standard deviations is 0.0055. */
        assert_true(share >= ratios[k] - 0.006 && share <= ratios[k] + 0.006);
        rig_close(&r);
    }
}

static json_t *nth_body(const struct collector *c, int n)
{
    const char *p = c->bodies;

    for (int i = 0; i < n; i++) {
        p += strlen(p) + 1;
    }
    json_error_t jerr;
    json_t *j = json_loads(p, 0, &jerr);
    if (j == NULL) {
        fail_msg("not JSON (%s): %.300s", jerr.text, p);
    }
    return j;
}

static void test_export_encodes_otlp_json(void **state)
{
    struct collector c;
    struct rig r;
    struct trace_ctx parent;
    struct tracer_stats st;
    /* A quote, a control byte, a lone continuation byte, a valid é. */
    static const char odd[] = "a\"b\x01\x80\xc3\xa9";

    (void)state;
    collector_start(&c, 200);
    rig_open(&r, c.port, 1 << 20, 512, 1.0);
    assert_int_equal(trace_parse(valid, strlen(valid), &parent), 0);
    emit_one(r.t, &parent, odd, sizeof(odd) - 1, 1);
    emit_one(r.t, NULL, "x", 1, 0);
    parent.flags = 0; /* not sampled: not exported */
    emit_one(r.t, &parent, "x", 1, 0);
    run_until_idle(&r);
    tracer_get_stats(r.t, &st);
    assert_int_equal(st.emitted, 2);
    assert_int_equal(st.exported, 2);
    assert_int_equal(st.dropped, 0);
    assert_int_equal(c.requests, 1);

    json_t *j = nth_body(&c, 0);
    json_t *rs = json_array_get(json_object_get(j, "resourceSpans"), 0);
    json_t *res = json_object_get(json_object_get(rs, "resource"),
                                  "attributes");
    assert_string_equal(json_string_value(json_object_get(
                            json_array_get(res, 0), "key")),
                        "service.name");
    assert_string_equal(
        json_string_value(json_object_get(
            json_object_get(json_array_get(res, 1), "value"), "stringValue")),
        "orders \"eu\"");
    json_t *spans = json_object_get(
        json_array_get(json_object_get(rs, "scopeSpans"), 0), "spans");
    assert_int_equal(json_array_size(spans), 2);
    json_t *s0 = json_array_get(spans, 0), *s1 = json_array_get(spans, 1);
    assert_string_equal(json_string_value(json_object_get(s0, "traceId")),
                        "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_string_equal(json_string_value(json_object_get(s0, "parentSpanId")),
                        "00f067aa0ba902b7");
    assert_int_equal(strlen(json_string_value(json_object_get(s0, "spanId"))),
                     16);
    assert_null(json_object_get(s1, "parentSpanId"));
    assert_int_equal(json_integer_value(json_object_get(s0, "kind")), 3);
    assert_string_equal(
        json_string_value(json_object_get(s0, "startTimeUnixNano")),
        "1700000000000000000");
    assert_string_equal(
        json_string_value(json_object_get(s0, "endTimeUnixNano")),
        "1700000000000000123");
    json_t *attrs = json_object_get(s0, "attributes");
    assert_string_equal(
        json_string_value(json_object_get(
            json_object_get(json_array_get(attrs, 1), "value"), "intValue")),
        "503");
    assert_string_equal(
        json_string_value(json_object_get(
            json_object_get(json_array_get(attrs, 2), "value"), "stringValue")),
        "a\"b\x01\xef\xbf\xbd\xc3\xa9");
    json_t *status = json_object_get(s0, "status");
    assert_int_equal(json_integer_value(json_object_get(status, "code")), 2);
    assert_string_equal(json_string_value(json_object_get(status, "message")),
                        "refused \"x\"");
    assert_null(json_object_get(s1, "status"));
    json_decref(j);
    rig_close(&r);
    collector_stop(&c);
}

static void test_batches_are_bounded(void **state)
{
    struct collector c;
    struct rig r;
    struct tracer_stats st;

    (void)state;
    collector_start(&c, 200);
    rig_open(&r, c.port, 1 << 20, 7, 1.0);
    for (int i = 0; i < 30; i++) {
        emit_one(r.t, NULL, "x", 1, 0);
    }
    run_until_idle(&r);
    tracer_get_stats(r.t, &st);
    assert_int_equal(st.exported, 30);
    assert_int_equal(c.requests, 5); /* 7, 7, 7, 7, 2, in any order */
    size_t sevens = 0, twos = 0;
    for (int i = 0; i < 5; i++) {
        json_t *j = nth_body(&c, i);
        json_t *spans = json_object_get(
            json_array_get(
                json_object_get(
                    json_array_get(json_object_get(j, "resourceSpans"), 0),
                    "scopeSpans"),
                0),
            "spans");
        sevens += json_array_size(spans) == 7;
        twos += json_array_size(spans) == 2;
        json_decref(j);
    }
    assert_int_equal(sevens, 4);
    assert_int_equal(twos, 1);
    rig_close(&r);
    collector_stop(&c);
}

static void test_down_or_failing_collector_drops_and_counts(void **state)
{
    struct collector c;
    struct rig r;
    struct tracer_stats st;

    (void)state;
    /* Nothing listens on port 9 (discard) here: refused at once. */
    rig_open(&r, 9, 1 << 20, 512, 1.0);
    for (int i = 0; i < 10; i++) {
        emit_one(r.t, NULL, "x", 1, 0);
    }
    run_until_idle(&r);
    tracer_get_stats(r.t, &st);
    assert_int_equal(st.emitted, 10);
    assert_int_equal(st.exported, 0);
    assert_int_equal(st.dropped, 10);
    assert_int_equal(st.export_failures, 1);
    rig_close(&r);

    collector_start(&c, 503);
    rig_open(&r, c.port, 1 << 20, 512, 1.0);
    emit_one(r.t, NULL, "x", 1, 0);
    run_until_idle(&r);
    tracer_get_stats(r.t, &st);
    assert_int_equal(st.dropped, 1);
    assert_int_equal(st.export_failures, 1);
    rig_close(&r);
    collector_stop(&c);
}

static void test_the_buffer_bound_holds(void **state)
{
    struct rig r;
    struct tracer_stats st;
    char big[3000];

    (void)state;
    memset(big, 'v', sizeof(big));
    /* No loop run: nothing is exported, the buffer fills. */
    rig_open(&r, 9, 16384, 100000, 1.0);
    for (int i = 0; i < 100; i++) {
        emit_one(r.t, NULL, big, sizeof(big), 0);
    }
    tracer_get_stats(r.t, &st);
    assert_true(st.emitted >= 4 && st.emitted <= 5);
    assert_int_equal(st.emitted + st.dropped, 100);
    /* A span larger than the whole bound is dropped too. */
    char *huge = malloc(20000);
    memset(huge, 'h', 20000);
    emit_one(r.t, NULL, huge, 20000, 0);
    free(huge);
    tracer_get_stats(r.t, &st);
    assert_int_equal(st.emitted + st.dropped, 101);
    rig_close(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_and_format),
        cmocka_unit_test(test_start_children_and_roots),
        cmocka_unit_test(test_export_encodes_otlp_json),
        cmocka_unit_test(test_batches_are_bounded),
        cmocka_unit_test(test_down_or_failing_collector_drops_and_counts),
        cmocka_unit_test(test_the_buffer_bound_holds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
