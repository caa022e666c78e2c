/* main.c -- the sluice command line: run, validate, test, dlq, reconcile,
 * reference.
 *
 * Only parses arguments and maps outcomes to exit codes (0 ok, 1 runtime
 * failure, 2 bad usage or configuration); the runtime lives in the
 * library the tests link too. */
#include <curl/curl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cfg.h"
#include "consumer.h"
#include "dlqcmd.h"
#include "engine.h"
#include "log.h"
#include "reconcile.h"
#include "reference.h"
#include "testcmd.h"

#ifndef SLUICE_VERSION
#define SLUICE_VERSION "0.1.0"
#endif

enum { EXIT_OK = 0, EXIT_RUNTIME = 1, EXIT_USAGE = 2 };

static const char usage_text[] =
    "usage: sluice <command> [options]\n"
    "\n"
    "Consume Kafka topics as a consumer group and deliver every message to\n"
    "every sink of a declarative pipeline, at least once.\n"
    "\n"
    "commands:\n"
    "  run PIPELINE.yaml        run the pipeline until SIGINT/SIGTERM\n"
    "  validate PIPELINE.yaml   check a pipeline file without connecting\n"
    "  test PIPELINE.yaml [TESTS.yaml ...]\n"
    "                           run the pipeline's transforms on test cases\n"
    "  reference [--format markdown|json-schema]\n"
    "                           print the pipeline reference\n"
    "  dlq stats|list|show|replay PIPELINE.yaml ...\n"
    "                           inspect and replay the dead-letter queue\n"
    "  reconcile [options] LEFT RIGHT\n"
    "                           compare two outcome logs (files or kafka://)\n"
    "\n"
    "options:\n"
    "  -h, --help               show help (also: sluice COMMAND --help)\n"
    "  -V, --version            show the version\n"
    "\n"
    "exit status: 0 ok, 1 runtime failure or a failed test, 2 bad usage or\n"
    "configuration, 3 run stopped with messages left uncommitted\n";

static const char run_usage[] =
    "usage: sluice run [options] PIPELINE.yaml\n"
    "\n"
    "Runs the pipeline until SIGINT or SIGTERM, then stops consuming, lets\n"
    "in-flight messages finish (delivery.drain_timeout), commits and leaves\n"
    "the consumer group.\n"
    "\n"
    "options:\n"
    "  --progress               print a progress line every second\n"
    "  --admin HOST:PORT        serve /metrics, /healthz, /readyz, /status,\n"
    "                           /pause, /resume there (admin.listen)\n"
    "  --log-level LEVEL        debug, info (default), warn, error\n"
    "  --log-format FORMAT      text (default) or json\n"
    "  --shadow                 a shadow run (mode: shadow): its own group,\n"
    "                           nothing sent but to shadow_urls, no markers,\n"
    "                           no DLQ writes; the outcome log says what\n"
    "                           would have been sent\n"
    "  -h, --help               show this help\n"
    "\n"
    "exit status: 0 stopped with everything consumed committed, 1 runtime\n"
    "failure, 2 bad configuration, 3 stopped with messages left uncommitted\n"
    "(the drain timed out or the dead-letter queue could not be written;\n"
    "they are redelivered)\n";

static const char validate_usage[] =
    "usage: sluice validate PIPELINE.yaml\n"
    "\n"
    "Checks the file (YAML, keys, values, ${ENV} references, librdkafka\n"
    "properties) without connecting anywhere. Prints every error as\n"
    "file:line:column: key: message and exits 2 when there is any.\n";

static const char test_usage[] =
    "usage: sluice test [options] PIPELINE.yaml [TESTS.yaml ...]\n"
    "\n"
    "Runs the pipeline's Lua transforms on the test cases in TESTS.yaml\n"
    "(default: PIPELINE.test.yaml beside the pipeline), without Kafka or\n"
    "network, and shows what differs from what each case expects. Exits 0\n"
    "when every case passes, 1 when any fails, 2 when a file is invalid\n"
    "(every error as file:line:column: key: message).\n"
    "\n"
    "options:\n"
    "  -v, --verbose            also show what each sink got in passing cases\n"
    "  -h, --help               show this help\n";

static const char reference_usage[] =
    "usage: sluice reference [--format markdown|json-schema]\n"
    "\n"
    "Prints the pipeline reference as Markdown (docs/pipeline-reference.md)\n"
    "or as a JSON Schema for editors (pipelines/sluice-pipeline.schema.json).\n";

static int cmd_reference(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"format", required_argument, NULL, 'f'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c, schema = 0;

    optind = 1;
    opterr = 0; /* the usage says it */
    while ((c = getopt_long(argc, argv, "+h", longopts, NULL)) != -1) {
        switch (c) {
        case 'f':
            if (strcmp(optarg, "markdown") != 0 &&
                strcmp(optarg, "json-schema") != 0) {
                fprintf(stderr, "sluice: unknown reference format `%s`\n",
                        optarg);
                fputs(reference_usage, stderr);
                return EXIT_USAGE;
            }
            schema = optarg[0] == 'j';
            break;
        case 'h':
            fputs(reference_usage, stdout);
            return EXIT_OK;
        default:
            fputs(reference_usage, stderr);
            return EXIT_USAGE;
        }
    }
    if (optind != argc) {
        fputs(reference_usage, stderr);
        return EXIT_USAGE;
    }
    if (schema) {
        reference_write_schema(stdout);
    } else {
        reference_write(stdout);
    }
    return fflush(stdout) == 0 ? EXIT_OK : EXIT_RUNTIME;
}

static int cmd_validate(int argc, char **argv)
{
    struct cfg *cfg;

    if (argc == 2 && (strcmp(argv[1], "-h") == 0 ||
                      strcmp(argv[1], "--help") == 0)) {
        fputs(validate_usage, stdout);
        return EXIT_OK;
    }
    if (argc != 2 || argv[1][0] == '-') {
        fputs(validate_usage, stderr);
        return EXIT_USAGE;
    }
    cfg = engine_load_config(argv[1], stderr);
    if (cfg == NULL) {
        return EXIT_USAGE;
    }
    printf("%s: ok (pipeline %s, %zu sink(s))\n", argv[1], cfg->pipeline,
           cfg->sink_count);
    cfg_free(cfg);
    return EXIT_OK;
}

static int cmd_test(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"verbose", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct testcmd_options opts = {0};
    int c;

    optind = 1;
    while ((c = getopt_long(argc, argv, "vh", longopts, NULL)) != -1) {
        switch (c) {
        case 'v':
            opts.verbose = 1;
            break;
        case 'h':
            fputs(test_usage, stdout);
            return EXIT_OK;
        default:
            fputs(test_usage, stderr);
            return EXIT_USAGE;
        }
    }
    if (optind >= argc) {
        fputs(test_usage, stderr);
        return EXIT_USAGE;
    }
    opts.pipeline = argv[optind];
    opts.tests = (const char *const *)argv + optind + 1;
    opts.test_count = (size_t)(argc - optind - 1);
    /* TESTCMD_PASSED/FAILED/INVALID are 0/1/2 like the exit codes. */
    return testcmd_run(&opts);
}

static int cmd_run(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"progress", no_argument, NULL, 'p'},
        {"admin", required_argument, NULL, 'a'},
        {"log-level", required_argument, NULL, 'l'},
        {"log-format", required_argument, NULL, 'f'},
        {"shadow", no_argument, NULL, 's'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct engine_options opts = {0};
    int shadow = 0;
    struct sl_error err;
    struct cfg *cfg;
    engine_t *engine;
    int c, rc;

    optind = 1;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case 'p':
            opts.progress = 1;
            break;
        case 'a':
            opts.admin_listen = optarg;
            break;
        case 's':
            shadow = 1;
            break;
        case 'l':
            if (log_set_level(optarg) != 0) {
                fprintf(stderr, "sluice: unknown log level `%s`\n", optarg);
                return EXIT_USAGE;
            }
            break;
        case 'f':
            if (log_set_format(optarg) != 0) {
                fprintf(stderr, "sluice: unknown log format `%s`\n", optarg);
                return EXIT_USAGE;
            }
            break;
        case 'h':
            fputs(run_usage, stdout);
            return EXIT_OK;
        default:
            fputs(run_usage, stderr);
            return EXIT_USAGE;
        }
    }
    if (optind != argc - 1) {
        fputs(run_usage, stderr);
        return EXIT_USAGE;
    }
    cfg = engine_load_config(argv[optind], stderr);
    if (cfg == NULL) {
        return EXIT_USAGE;
    }
    if (cfg->source_type == CFG_SOURCE_HTTP) {
        if (shadow) {
            fprintf(stderr, "sluice: %s: --shadow is a consumer's: not "
                            "with source.type http\n", argv[optind]);
            cfg_free(cfg);
            return EXIT_USAGE;
        }
    }
    if (shadow && cfg->mode != CFG_MODE_SHADOW &&
        cfg_make_shadow(cfg, &err) != 0) {
        fprintf(stderr, "sluice: %s: %s\n", argv[optind], err.msg);
        cfg_free(cfg);
        return EXIT_USAGE;
    }
    engine = engine_new(cfg, &opts, &err);
    if (engine == NULL) {
        log_error("cannot start: %s", err.msg);
        cfg_free(cfg);
        return EXIT_RUNTIME;
    }
    rc = engine_run(engine); /* ENGINE_* are the exit codes */
    engine_destroy(engine);
    cfg_free(cfg);
    return rc;
}

int main(int argc, char **argv)
{
    int rc;

    if (argc < 2) {
        fputs(usage_text, stderr);
        return EXIT_USAGE;
    }
    if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0 ||
        strcmp(argv[1], "help") == 0) {
        fputs(usage_text, stdout);
        return EXIT_OK;
    }
    if (strcmp(argv[1], "-V") == 0 || strcmp(argv[1], "--version") == 0) {
        printf("sluice %s (librdkafka %s, %s)\n", SLUICE_VERSION,
               consumer_library_version(), curl_version());
        return EXIT_OK;
    }
    if (strcmp(argv[1], "reference") == 0) {
        return cmd_reference(argc - 1, argv + 1);
    }
    if (strcmp(argv[1], "validate") == 0) {
        return cmd_validate(argc - 1, argv + 1);
    }
    if (strcmp(argv[1], "test") == 0) {
        return cmd_test(argc - 1, argv + 1);
    }
    if (strcmp(argv[1], "reconcile") == 0) {
        return reconcile_main(argc - 1, argv + 1);
    }
    if (strcmp(argv[1], "dlq") == 0) {
        /* replay sends to the sinks: curl is set up as for run. */
        curl_global_init(CURL_GLOBAL_DEFAULT);
        rc = dlqcmd_main(argc - 1, argv + 1);
        curl_global_cleanup();
        return rc;
    }
    if (strcmp(argv[1], "run") == 0) {
        curl_global_init(CURL_GLOBAL_DEFAULT);
        rc = cmd_run(argc - 1, argv + 1);
        curl_global_cleanup();
        return rc;
    }
    fprintf(stderr, "sluice: unknown command `%s`\n\n%s", argv[1], usage_text);
    return EXIT_USAGE;
}
