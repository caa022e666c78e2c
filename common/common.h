/* common.h -- the types every floor of sluice shares: the caller-supplied
 * error buffer, option tables, message headers and a retry decision.
 *
 * The floors read worker -> lua, connectors, stores -> common: this header
 * includes nothing of sluice, so a connector, a store or a script module
 * can use these types without reaching into the runtime or each other. */
#ifndef SLUICE_COMMON_H
#define SLUICE_COMMON_H

#include <stddef.h>
#include <stdint.h>

/* A caller-supplied error buffer so that error paths never allocate. */
struct sl_error {
    char msg[512];
};

/* Formats into err->msg (truncating). err may be NULL. Returns -1 so that
 * callers can write `return sl_error_set(err, ...)`. */
int sl_error_set(struct sl_error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Levenshtein distance of a and b, for did-you-mean hints in errors
 * (SIZE_MAX when b is 64 bytes or longer). */
size_t sl_edit_distance(const char *a, const char *b);

/* ---- Options: declared once, used for parsing, validation and docs ---- */

enum opt_type {
    OPT_STRING,      /* char *, owned by the context (freed by cfg_free) */
    OPT_INT,         /* int64_t */
    OPT_BOOL,        /* int, 0 or 1 */
    OPT_DURATION,    /* int64_t milliseconds; text such as 500ms, 5s, 1m */
    OPT_SIZE,        /* int64_t bytes; text such as 512KiB, 64MiB */
    OPT_ENUM,        /* int, index into choices */
    OPT_STRING_MAP,  /* struct opt_map */
    OPT_STRING_LIST, /* struct opt_list; a YAML sequence or one scalar */
    OPT_RATIO,       /* double in [0, 1]; text such as 0.25 or 25% */
};

enum {
    OPT_REQUIRED = 1 << 0,
    OPT_SECRET = 1 << 1, /* never echoed in errors, logs or status */
    OPT_FILE = 1 << 2,   /* OPT_STRING: a file, relative to the pipeline
                            file, that must be readable; stored resolved */
    OPT_EMPTY = 1 << 3,  /* OPT_STRING_LIST: `[]` is a value (else a list
                            needs an entry) */
};

struct opt_spec {
    const char *name;
    enum opt_type type;
    int flags;
    const char *def;             /* default as text; NULL: none */
    size_t offset;               /* where the value goes in the context */
    int64_t min, max;            /* limits for INT/DURATION/SIZE; 0,0: none */
    const char *const *choices;  /* OPT_ENUM: NULL-terminated names */
    const char *doc;
};

struct opt_map {
    size_t count;
    char **keys;
    char **values;
};

struct opt_list {
    size_t count;
    char **items;
};

/* ---- Headers of a record or a request ---- */

struct sl_header {
    const char *name; /* NUL-terminated */
    const void *value;
    size_t value_len;
};

/* ---- Retry decisions: what a policy says about a failed attempt ---- */

enum sl_verdict {
    SL_VERDICT_DEFAULT, /* the script left it to the default policy */
    SL_VERDICT_RETRY,   /* after delay_ms; -1: the default policy's delay */
    SL_VERDICT_GIVE_UP, /* permanent: to the DLQ (until then: logged) */
    SL_VERDICT_DONE,    /* count as delivered (e.g. 409 already exists) */
};

struct sl_decision {
    enum sl_verdict verdict;
    int64_t delay_ms;  /* SL_VERDICT_RETRY */
    char reason[256]; /* SL_VERDICT_GIVE_UP: why, for the log and the DLQ */
};

#endif
