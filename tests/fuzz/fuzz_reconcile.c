/* fuzz_reconcile.c -- libFuzzer target for sluice reconcile's line parser
 * (worker/reconcile.c), which reads outcome logs other services write.
 *
 * Any bytes: no crash, no read past the line. A line that parses must
 * parse again to the same pair, day and digests (the scanner keeps no
 * state between lines), and jansson must read it as a JSON object too:
 * the one-pass scanner never accepts what jansson refuses (a \u0000
 * escape aside: jansson takes it with JSON_ALLOW_NUL; reconcile refuses it
 * in a key only, where it would make two keys one). */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "reconcile.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const ignore[] = {"meta.sent_at", "ts"};
    struct sl_error err;
    struct reconcile_line a, b;
    reconcile_parser_t *p = reconcile_parser_new(ignore, 2, &err);
    /* An exact copy on the heap, so that ASan sees any overread. */
    char *line = malloc(size ? size : 1);

    if (p == NULL || line == NULL) {
        abort();
    }
    memcpy(line, data, size);
    int rc = reconcile_parse_line(p, line, size, &a, &err);
    if (rc == 1) {
        uint64_t pair[2] = {a.pair[0], a.pair[1]};
        uint64_t digest[2] = {a.digest[0], a.digest[1]};
        int32_t day = a.day;
        int has_body = a.has_body;
        if (reconcile_parse_line(p, line, size, &b, &err) != 1 ||
            b.pair[0] != pair[0] || b.pair[1] != pair[1] || b.day != day ||
            b.has_body != has_body ||
            (has_body && (b.digest[0] != digest[0] ||
                          b.digest[1] != digest[1]))) {
            fprintf(stderr, "fuzz_reconcile: a second parse differs\n");
            abort();
        }
        json_error_t jerr;
        json_t *j = memchr(line, '\0', size) != NULL
                        ? NULL
                        : json_loadb(line, size, JSON_ALLOW_NUL, &jerr);
        if (j == NULL || !json_is_object(j)) {
            fprintf(stderr, "fuzz_reconcile: accepted what jansson "
                            "refuses: %.*s\n",
                    (int)(size > 300 ? 300 : size), line);
            abort();
        }
        json_decref(j);
    }
    free(line);
    reconcile_parser_destroy(p);
    return 0;
}
