/* testcmd.h -- `sluice test`: a pipeline's Lua transforms run against
 * test cases from YAML files, without Kafka or network.
 *
 * The test file format is described at the top of testcmd.c. Each case
 * feeds one message to the pipeline transform and checks what comes out
 * (dropped, split, failed, or each message's key, value, headers and what
 * every listed sink's transform would send), printing one line per
 * difference with the path where it is. */
#ifndef SLUICE_TESTCMD_H
#define SLUICE_TESTCMD_H

#include <stddef.h>
#include <stdio.h>

#include "common.h"

/* testcmd_run's results; they are also sluice's exit codes. */
enum {
    TESTCMD_PASSED = 0,  /* every case passed */
    TESTCMD_FAILED = 1,  /* at least one case failed */
    TESTCMD_INVALID = 2, /* a file is invalid or missing: nothing ran */
};

struct testcmd_options {
    const char *pipeline;     /* the pipeline YAML file */
    const char *const *tests; /* test files; none: <dir>/<base>.test.yaml */
    size_t test_count;
    int verbose;              /* also show what passing cases sent */
    FILE *out;                /* results; NULL: stdout */
    FILE *err;                /* file errors; NULL: stderr */
};

/* Loads the pipeline and every test file (reporting every error as
 * file:line:col: key.path: message before giving up), then runs each case
 * in file order. Returns TESTCMD_PASSED, TESTCMD_FAILED or
 * TESTCMD_INVALID. */
int testcmd_run(const struct testcmd_options *opts);

/* ---- the pieces, for unit tests ---- */

/* The bytes a test's `input.value` becomes, from one YAML document:
 * a mapping or sequence becomes JSON text (YAML order kept, numbers as
 * written), a string its bytes as written, a number or boolean its JSON
 * text. Returns a new NUL-terminated buffer (the caller frees; *len
 * excludes the NUL), or NULL with err ("line:col: key: message"); a null
 * document gives NULL with err->msg empty (no value). */
char *testcmd_value_from_yaml(const char *yaml, size_t yaml_len, size_t *len,
                              struct sl_error *err);

/* Compares actual (NULL: no value) with the expectation written as one
 * YAML document, the way `sluice test` checks a value or body: JSON by
 * value (objects order-free, numbers numerically), strings as exact
 * bytes, null as no value. Writes "PATH: difference\n" per difference
 * into out (NUL-terminated, truncated to out_size) and returns how many
 * there are, or -1 with err when the expectation is invalid. */
int testcmd_compare_value(const char *expected_yaml, const void *actual,
                          size_t actual_len, const char *path, char *out,
                          size_t out_size, struct sl_error *err);

#endif
