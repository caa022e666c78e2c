/* test_metrics.c -- snapshots, their Prometheus text and the board. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "metrics.h"

static char *render(const struct metrics_snapshot *s,
                    void (*write)(const struct metrics_snapshot *, FILE *))
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);

    assert_non_null(f);
    write(s, f);
    fclose(f);
    return text;
}

static struct metrics_snapshot *sample(void)
{
    struct metrics_snapshot *s = metrics_new(1, 1);

    assert_non_null(s);
    s->pipeline = "orders \"eu\"";
    s->consumed = 1234;
    s->ready = 1;
    s->sinks[0].name = "crm";
    s->sinks[0].delivered = 1200;
    s->sinks[0].oldest_age_s = 2.5;
    metrics_observe(&s->sinks[0].latency, METRICS_REQUEST, 3000000);  /* 3ms */
    metrics_observe(&s->sinks[0].latency, METRICS_REQUEST, 70000000); /* 70ms */
    metrics_observe(&s->sinks[0].latency, METRICS_REQUEST,
                    60000000000ull); /* 60 s: over every bound */
    snprintf(s->partitions[0].topic, sizeof(s->partitions[0].topic),
             "orders");
    s->partitions[0].partition = 3;
    s->partitions[0].committed = 100;
    s->partitions[0].consumed = 120;
    s->partitions[0].high_watermark = -1; /* unknown: no series */
    s->partitions[0].lag = -1;
    return s;
}

static void test_exposition(void **state)
{
    struct metrics_snapshot *s = sample();
    char *text = render(s, metrics_write_prometheus);

    (void)state;
    /* Label values are escaped; HELP and TYPE come once per name. */
    assert_non_null(strstr(text, "sluice_records_consumed_total{pipeline="
                                 "\"orders \\\"eu\\\"\"} 1234\n"));
    assert_non_null(strstr(text, "# TYPE sluice_records_consumed_total "
                                 "counter\n"));
    assert_non_null(strstr(text,
                           "sluice_sink_delivered_total{pipeline=\"orders "
                           "\\\"eu\\\"\",sink=\"crm\"} 1200\n"));
    assert_non_null(strstr(text, "sluice_sink_oldest_pending_age_seconds{"
                                 "pipeline=\"orders \\\"eu\\\"\",sink="
                                 "\"crm\"} 2.5\n"));
    /* Buckets are cumulative and end at +Inf with the count. */
    assert_non_null(strstr(text, ",sink=\"crm\",le=\"0.005\"} 1\n"));
    assert_non_null(strstr(text, ",sink=\"crm\",le=\"0.05\"} 1\n"));
    assert_non_null(strstr(text, ",sink=\"crm\",le=\"0.1\"} 2\n"));
    assert_non_null(strstr(text, ",sink=\"crm\",le=\"30\"} 2\n"));
    assert_non_null(strstr(text, ",sink=\"crm\",le=\"+Inf\"} 3\n"));
    assert_non_null(strstr(text, "sluice_sink_request_duration_seconds_count"
                                 "{pipeline=\"orders \\\"eu\\\"\",sink="
                                 "\"crm\"} 3\n"));
    assert_non_null(strstr(text, "sluice_partition_committed_offset{pipeline"
                                 "=\"orders \\\"eu\\\"\",topic=\"orders\","
                                 "partition=\"3\"} 100\n"));
    assert_null(strstr(text, "sluice_partition_lag_records{"));
    assert_null(strstr(text, "sluice_partition_high_watermark_offset{"));
    {
        /* Exactly one HELP line per metric name. */
        const char *p = text;
        int helps = 0;
        while ((p = strstr(p, "# HELP sluice_sink_skipped_total ")) != NULL) {
            helps++;
            p++;
        }
        assert_int_equal(helps, 1);
    }
    free(text);
    metrics_free(s);
}

static void test_status_json(void **state)
{
    struct metrics_snapshot *s = sample();
    char *text;

    (void)state;
    snprintf(s->sinks[0].last_error, sizeof(s->sinks[0].last_error),
             "HTTP 503: \"down\"");
    text = render(s, metrics_write_status);
    assert_non_null(strstr(text, "\"name\": \"crm\""));
    assert_non_null(strstr(text, "\"last_error\": \"HTTP 503: \\\"down\\\"\""));
    assert_non_null(strstr(text, "\"high_watermark\": null"));
    assert_non_null(strstr(text, "\"ready\": true"));
    free(text);
    metrics_free(s);
}

static void test_board_keeps_what_readers_hold(void **state)
{
    metrics_board_t *b = metrics_board_new();
    struct metrics_snapshot *first = sample(), *second = sample(), *held;

    (void)state;
    assert_null(metrics_board_acquire(b));
    metrics_board_publish(b, first);
    held = metrics_board_acquire(b);
    assert_ptr_equal(held, first);
    /* Replaced while held: still readable until released (ASan checks). */
    metrics_board_publish(b, second);
    assert_int_equal((int)held->consumed, 1234);
    metrics_board_release(b, held);
    held = metrics_board_acquire(b);
    assert_ptr_equal(held, second);
    metrics_board_release(b, held);
    assert_int_equal(metrics_board_last_beat(b), 0);
    metrics_board_beat(b, 42);
    assert_int_equal(metrics_board_last_beat(b), 42);
    metrics_board_free(b);
}

static void test_reference(void **state)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);

    (void)state;
    metrics_write_reference(f);
    fclose(f);
    assert_non_null(strstr(text, "| `sluice_sink_skipped_total` | counter | "
                                 "pipeline, sink, `reason=\"dedupe\"` or "
                                 "`reason=\"transform\"` |"));
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exposition),
        cmocka_unit_test(test_status_json),
        cmocka_unit_test(test_board_keeps_what_readers_hold),
        cmocka_unit_test(test_reference),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
