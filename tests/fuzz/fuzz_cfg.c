/* fuzz_cfg.c -- libFuzzer target for the pipeline loader (worker/cfg.c).
 *
 * Each input is written as a pipeline file into a scratch directory that
 * links the example pipeline's transforms/ and policies/, so relative
 * script paths resolve, then loaded with cfg_load and checked as
 * `sluice validate` does (the Kafka properties of source and DLQ). A few
 * environment variables are set for ${VAR} expansion, and
 * cfg_expand_env also runs on the raw bytes. Everything is freed: leaks
 * are reported.
 *
 * Properties checked: every error line names the file first; a secret
 * from the environment never shows up in an error unless the input holds
 * it literally. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cfg.h"
#include "consumer.h"
#include "dlq.h"

#ifndef FUZZ_PIPELINES_DIR
#error "FUZZ_PIPELINES_DIR: the repository's pipelines/ directory"
#endif

#define SECRET "s3cr3t-fuzz-token"

static char dir[64];
static char path[128];
static struct cfg_errors errs;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void cleanup(void)
{
    char p[160];

    unlink(path);
    snprintf(p, sizeof(p), "%s/transforms", dir);
    unlink(p);
    snprintf(p, sizeof(p), "%s/policies", dir);
    unlink(p);
    rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    char p[160];

    (void)argc;
    (void)argv;
    snprintf(dir, sizeof(dir), "/tmp/fuzz_cfg.XXXXXX");
    if (mkdtemp(dir) == NULL) {
        perror("fuzz_cfg: mkdtemp");
        abort();
    }
    snprintf(path, sizeof(path), "%s/pipeline.yaml", dir);
    snprintf(p, sizeof(p), "%s/transforms", dir);
    if (symlink(FUZZ_PIPELINES_DIR "/transforms", p) != 0) {
        abort();
    }
    snprintf(p, sizeof(p), "%s/policies", dir);
    if (symlink(FUZZ_PIPELINES_DIR "/policies", p) != 0) {
        abort();
    }
    atexit(cleanup);
    /* What ${...} in the inputs (see corpus/ and fuzz_cfg.dict) meets:
     * set, set to empty, unset, a secret, and values that are themselves
     * YAML or ${...} (expansion happens once, after parsing). */
    setenv("KAFKA_BROKERS", "127.0.0.1:9092", 1);
    setenv("SINK_BASE", "http://127.0.0.1:18081", 1);
    setenv("BILLING_URL", "http://127.0.0.1:18081/billing", 1);
    setenv("BILLING_TOKEN", SECRET, 1);
    setenv("FUZZ_EMPTY", "", 1);
    setenv("FUZZ_NESTED", "${BILLING_TOKEN}", 1);
    setenv("FUZZ_YAML", "{a: [1, 2]}\n- x", 1);
    setenv("FUZZ_NUM", "250ms", 1);
    unsetenv("FUZZ_UNSET");
    return 0;
}

static int contains(const char *hay, size_t n, const char *needle)
{
    return memmem(hay, n, needle, strlen(needle)) != NULL;
}

/* Every line of errs names the file first: "path:line:col: ...". */
static void check_errors(const uint8_t *data, size_t size)
{
    size_t plen = strlen(path);

    if (errs.len >= sizeof(errs.text) - 1) {
        return; /* truncated: the last line may be cut */
    }
    for (const char *line = errs.text; *line != '\0';) {
        const char *nl = strchr(line, '\n');
        if (strncmp(line, path, plen) != 0 || line[plen] != ':') {
            fprintf(stderr, "fuzz_cfg: an error without file:line:col: %s\n",
                    line);
            abort();
        }
        if (nl == NULL) {
            break;
        }
        line = nl + 1;
    }
    if (contains((const char *)data, size, SECRET)) {
        return;
    }
    for (const char *line = errs.text; *line != '\0';) {
        size_t n = strcspn(line, "\n");
        /* A script's path is shown as resolved: a file name is no
         * secret, even when it came from the environment. */
        if (contains(line, n, SECRET) && !contains(line, n, "cannot read ")) {
            fprintf(stderr, "fuzz_cfg: an error shows a secret: %.*s\n",
                    (int)n, line);
            abort();
        }
        line += n + (line[n] == '\n');
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    FILE *fp = fopen(path, "wb");
    struct cfg *cfg;
    char *text, *expanded;
    struct sl_error err = {{0}};

    if (fp == NULL || fwrite(data, 1, size, fp) != size || fclose(fp) != 0) {
        abort();
    }
    memset(&errs, 0, sizeof(errs));
    cfg = cfg_load(path, &errs);
    if (cfg != NULL) {
        for (size_t i = 0; i < cfg->sink_count; i++) {
            (void)cfg_sink_dlq_topic(cfg, i);
        }
        /* librdkafka loads the libraries plugin.library.paths names at
         * conf_set: nothing a fuzzer should make it open. */
        if (!contains((const char *)data, size, "plugin")) {
            (void)consumer_check_config(cfg, &errs);
            (void)dlq_check_config(cfg, &errs);
        }
        cfg_free(cfg);
    }
    check_errors(data, size);

    /* The expander alone, on the whole input as one string. */
    text = malloc(size + 1);
    if (text == NULL) {
        return 0;
    }
    memcpy(text, data, size);
    text[size] = '\0';
    expanded = cfg_expand_env(text, &err);
    if (expanded == NULL && err.msg[0] == '\0') {
        abort(); /* a failure always says why */
    }
    if (expanded == NULL && contains(err.msg, strlen(err.msg), SECRET)) {
        abort();
    }
    free(expanded);
    free(text);
    return 0;
}
