/* fuzz_keysrc.c -- differential libFuzzer target for json: key picking
 * (common/keysrc.c): its one-pass scanner against the jansson picking it
 * replaced (tests/unit/keysrc_jansson.h).
 *
 * Input: a cap byte (the key buffer is byte % 40 bytes), a path up to the
 * first newline, then the value. Picks that path and `tenant_id` from the
 * value in one call, both ways; aborts unless both give the same key and
 * miss for each. The value sits in a buffer of its exact size, so a read
 * past it is ASan's. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keysrc.h"
#include "tests/unit/keysrc_jansson.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[512], out[4][64];
    const uint8_t *nl;
    size_t plen, cap, vlen;
    uint8_t *value;
    struct keysrc_json_pick a[2], b[2];

    if (size < 1) {
        return 0;
    }
    cap = data[0] % 40;
    data++, size--;
    nl = memchr(data, '\n', size);
    plen = nl != NULL ? (size_t)(nl - data) : 0;
    if (plen >= sizeof(path)) {
        return 0;
    }
    memcpy(path, data, plen);
    path[plen] = '\0';
    if (nl != NULL) {
        data += plen + 1, size -= plen + 1;
    }
    vlen = size;
    value = malloc(vlen > 0 ? vlen : 1);
    if (value == NULL) {
        return 0;
    }
    memcpy(value, data, vlen);
    a[0] = (struct keysrc_json_pick){.path = path, .out = out[0], .cap = cap};
    a[1] = (struct keysrc_json_pick){
        .path = "tenant_id", .out = out[1], .cap = sizeof(out[1])};
    b[0] = a[0], b[1] = a[1];
    b[0].out = out[2], b[1].out = out[3];
    keysrc_pick_json(value, vlen, a, 2);
    oracle_pick_json(value, vlen, b, 2);
    for (int i = 0; i < 2; i++) {
        if (a[i].miss != b[i].miss || (a[i].key == NULL) != (b[i].key == NULL) ||
            (a[i].key != NULL && strcmp(a[i].key, b[i].key) != 0)) {
            fprintf(stderr,
                    "fuzz_keysrc: disagree on pick %d (path \"%s\", cap %zu): "
                    "scanner miss %d key %s, jansson miss %d key %s\n",
                    i, a[i].path, a[i].cap, a[i].miss,
                    a[i].key ? a[i].key : "(none)", b[i].miss,
                    b[i].key ? b[i].key : "(none)");
            abort();
        }
    }
    free(value);
    return 0;
}
