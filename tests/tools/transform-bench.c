/*
 * transform-bench -- the Lua stage alone: a pipeline's transforms run on
 * orders read from a file, with no Kafka and no network, and their CPU
 * cost per message printed as one JSON line.
 *
 *   transform-bench PIPELINE.yaml ORDERS_FILE [--iterations N]
 *
 * ORDERS_FILE holds one order JSON per line (tests/tools/gen_orders.py's
 * make_order). Each order becomes the message the engine would see:
 * topic "orders", partition 0, offset i, key = its "tenant_id", one header
 * message-id = its "order_id", which is also the dedupe key. The file is
 * repeated until N messages (default 200000).
 *
 * Pass 1 does per message what the engine does: transform_run, then for
 * every output transform_shape_all on that output's view. Pass 2 calls transform_run only. Each pass is timed
 * with CLOCK_PROCESS_CPUTIME_ID after a short warm-up (not counted).
 * outputs, dropped, requests (body_bytes: their bodies) and skipped are
 * pass 1's; errors (a call that returned -1) are those of every pass, the
 * warm-up's included, and the first one is printed to stderr. Exit 0 when
 * the passes ran (errors or not: they are in the JSON), 1 when the
 * pipeline or the file cannot be loaded, 2 on bad usage.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cfg.h"
#include "cfgtransform.h"
#include "connector.h"
#include "units.h"

#define DEFAULT_ITERATIONS 200000L
#define WARMUP_MAX 5000L
#define TIMESTAMP_BASE 1795975200000LL /* gen_orders' CREATED_AT_BASE */

struct order {
    const char *key; /* NULL: the line has no "tenant_id" */
    size_t key_len;
    const char *value;
    size_t value_len;
    char *id; /* NUL-terminated: the message-id header and dedupe key */
};

struct counts {
    long outputs;
    long dropped;
    long requests;
    long skipped;
    long errors;
    size_t body_bytes;
};

static void usage(FILE *out)
{
    fputs("usage: transform-bench PIPELINE.yaml ORDERS_FILE "
          "[--iterations N]\n",
          out);
}

static double cpu_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t cap = 0, n = 0;

    if (f == NULL) {
        fprintf(stderr, "transform-bench: %s: %s\n", path, strerror(errno));
        return NULL;
    }
    for (;;) {
        if (cap - n < 65536) {
            char *p = realloc(buf, cap * 2 + 65536);
            if (p == NULL) {
                fprintf(stderr, "transform-bench: out of memory\n");
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = p;
            cap = cap * 2 + 65536;
        }
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (got == 0) {
            break;
        }
    }
    if (ferror(f)) {
        fprintf(stderr, "transform-bench: %s: read error\n", path);
        free(buf);
        fclose(f);
        return NULL;
    }
    fclose(f);
    buf[n] = '\0';
    *len = n;
    return buf;
}

/* The string value of "field":"..." in line (no escapes in gen_orders'
 * ids), or NULL. */
static const char *string_field(const char *line, size_t len,
                                const char *field, size_t *out_len)
{
    char pat[64];
    const char *end = line + len, *p, *q;
    int n = snprintf(pat, sizeof(pat), "\"%s\":\"", field);

    for (p = line; p + n <= end; p++) {
        if (memcmp(p, pat, (size_t)n) == 0) {
            p += n;
            for (q = p; q < end && *q != '"'; q++) {
            }
            if (q == end) {
                return NULL;
            }
            *out_len = (size_t)(q - p);
            return p;
        }
    }
    return NULL;
}

/* Splits buf into orders, one per non-empty line. */
static struct order *parse_orders(char *buf, size_t len, size_t *count)
{
    struct order *orders = NULL;
    size_t n = 0, cap = 0;
    char *p = buf, *end = buf + len;

    while (p < end) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t line_len = (nl != NULL ? nl : end) - p;
        if (line_len > 0 && p[line_len - 1] == '\r') {
            line_len--;
        }
        if (line_len > 0) {
            struct order *o;
            const char *id;
            size_t id_len = 0;
            if (n == cap) {
                struct order *q = realloc(orders,
                                          (cap * 2 + 1024) * sizeof(*q));
                if (q == NULL) {
                    goto oom;
                }
                orders = q;
                cap = cap * 2 + 1024;
            }
            o = &orders[n];
            o->value = p;
            o->value_len = line_len;
            o->key = string_field(p, line_len, "tenant_id", &o->key_len);
            id = string_field(p, line_len, "order_id", &id_len);
            if (id != NULL) {
                o->id = malloc(id_len + 1);
                if (o->id != NULL) {
                    memcpy(o->id, id, id_len);
                    o->id[id_len] = '\0';
                }
            } else {
                /* As the engine derives it: topic-partition-offset. */
                o->id = malloc(64);
                if (o->id != NULL) {
                    snprintf(o->id, 64, "orders-0-%zu", n);
                }
            }
            if (o->id == NULL) {
                goto oom;
            }
            n++;
        }
        p = nl != NULL ? nl + 1 : end;
    }
    *count = n;
    return orders;
oom:
    fprintf(stderr, "transform-bench: out of memory\n");
    for (size_t i = 0; i < n; i++) {
        free(orders[i].id);
    }
    free(orders);
    return NULL;
}

static void first_error(struct counts *c, long msg, const char *what,
                        const char *text)
{
    static int printed;

    c->errors++;
    if (!printed) {
        printed = 1;
        fprintf(stderr, "transform-bench: message %ld: %s failed: %s\n", msg,
                what, text);
    }
}

/* Runs messages [first, first + count) through the transforms; shape:
 * the sinks' transforms too. */
static void run_pass(transform_t *t, const struct cfg *cfg,
                     const struct order *orders, size_t norders, long first,
                     long count, int shape, struct counts *c)
{
    struct sl_header hdr = {.name = "message-id"};
    struct sl_error err;

    for (long m = first; m < first + count; m++) {
        const struct order *o = &orders[(size_t)m % norders];
        struct connector_msg in = {
            .topic = "orders",
            .partition = 0,
            .offset = m,
            .timestamp_ms = TIMESTAMP_BASE + m,
            .key = o->key,
            .key_len = o->key_len,
            .value = o->value,
            .value_len = o->value_len,
            .dedupe_key = o->id,
            .headers = &hdr,
            .header_count = 1,
        };
        int n;

        hdr.value = o->id;
        hdr.value_len = strlen(o->id);
        n = transform_run(t, &in, &err);
        if (n < 0) {
            first_error(c, m, "transform_run", err.msg);
            continue;
        }
        if (n == 0) {
            c->dropped++;
            continue;
        }
        c->outputs += n;
        if (!shape) {
            continue;
        }
        for (int i = 0; i < n; i++) {
            struct connector_msg view;
            const struct transform_shaped *sh;
            transform_output_view(t, (size_t)i, &in, &view);
            sh = transform_shape_all(t, (size_t)i, &view);
            for (size_t s = 0; s < cfg->sink_count; s++) {
                const struct transform_request *req = &sh[s].req;
                if (sh[s].result == TRANSFORM_SKIP) {
                    c->skipped++;
                } else if (sh[s].result == TRANSFORM_SEND) {
                    c->requests++; /* no body: the output's value */
                    c->body_bytes +=
                        req->body != NULL ? req->body_len : view.value_len;
                } else {
                    first_error(c, m, cfg->sinks[s].name, sh[s].err.msg);
                }
            }
        }
    }
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"iterations", required_argument, NULL, 'n'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    static struct cfg_errors errs;
    long iterations = DEFAULT_ITERATIONS, warmup;
    struct cfg *cfg;
    transform_t *t;
    struct sl_error err;
    struct order *orders;
    struct counts full = {0}, pipe = {0};
    size_t norders = 0, len = 0, sink_transforms = 0;
    char *buf;
    double t0, full_s, pipe_s;
    int64_t n;
    int opt;

    while ((opt = getopt_long(argc, argv, "hn:", opts, NULL)) != -1) {
        switch (opt) {
        case 'n':
            if (units_parse_int(optarg, &n) != 0 || n < 1 ||
                n > LONG_MAX / 4) {
                fprintf(stderr, "transform-bench: bad --iterations\n");
                return 2;
            }
            iterations = (long)n;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (argc - optind != 2) {
        usage(stderr);
        return 2;
    }
    cfg = cfg_load(argv[optind], &errs);
    if (cfg == NULL) {
        fprintf(stderr, "%s", errs.text);
        return 1;
    }
    t = cfg_transform_new(cfg, &err);
    if (t == NULL) {
        fprintf(stderr, "transform-bench: %s\n", err.msg);
        cfg_free(cfg);
        return 1;
    }
    buf = read_file(argv[optind + 1], &len);
    orders = buf != NULL ? parse_orders(buf, len, &norders) : NULL;
    if (orders == NULL || norders == 0) {
        if (buf != NULL && orders != NULL) {
            fprintf(stderr, "transform-bench: %s: no orders\n",
                    argv[optind + 1]);
        }
        free(orders);
        free(buf);
        transform_destroy(t);
        cfg_free(cfg);
        return 1;
    }
    for (size_t s = 0; s < cfg->sink_count; s++) {
        sink_transforms += transform_has_sink(t, s) != 0;
    }

    /* Warm-up (the Lua state's tables and the caches), then the passes.
     * Offsets go on from where the last pass stopped. */
    warmup = iterations / 10 < WARMUP_MAX ? iterations / 10 : WARMUP_MAX;
    {
        struct counts w = {0};
        run_pass(t, cfg, orders, norders, 0, warmup, 1, &w);
        full.errors += w.errors;
    }
    t0 = cpu_s();
    run_pass(t, cfg, orders, norders, warmup, iterations, 1, &full);
    full_s = cpu_s() - t0;
    t0 = cpu_s();
    run_pass(t, cfg, orders, norders, warmup + iterations, iterations, 0,
             &pipe);
    pipe_s = cpu_s() - t0;

    printf("{\"messages\":%ld,\"cpu_us_per_msg\":%.3f,"
           "\"pipeline_only_us_per_msg\":%.3f,\"outputs\":%ld,"
           "\"skipped\":%ld,\"errors\":%ld,\"dropped\":%ld,"
           "\"requests\":%ld,\"body_bytes\":%zu,\"orders_in_file\":%zu,"
           "\"warmup\":%ld,\"pipeline_transform\":%s,"
           "\"sink_transforms\":%zu,\"sinks\":%zu,\"lua_memory_kib\":%zu}\n",
           iterations, full_s * 1e6 / (double)iterations,
           pipe_s * 1e6 / (double)iterations, full.outputs, full.skipped,
           full.errors + pipe.errors, full.dropped, full.requests,
           full.body_bytes, norders, warmup,
           transform_has_pipeline(t) ? "true" : "false", sink_transforms,
           cfg->sink_count, transform_memory(t) / 1024);
    fflush(stdout);

    for (size_t i = 0; i < norders; i++) {
        free(orders[i].id);
    }
    free(orders);
    free(buf);
    transform_destroy(t);
    cfg_free(cfg);
    return 0;
}
