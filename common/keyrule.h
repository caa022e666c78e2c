/* keyrule.h -- the record key the publisher gives a request: its base key
 * (`key:`), and a shard suffix when that key is hot (`hot_keys:`).
 *
 * One function decides: keyrule_apply(). The publisher and `sluice test`
 * both call it. A handle is one lane's: not thread-safe. It does no I/O,
 * reads no clock (the caller passes now_ms) and uses no randomness, so the
 * same calls give the same decisions. Its memory is allocated once by
 * keyrule_new(); see docs/hot-keys.md for the rules. */
#ifndef SLUICE_KEYRULE_H
#define SLUICE_KEYRULE_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"

typedef struct keyrule keyrule_t;

#define KEYRULE_KEY_MAX 256 /* bytes of a base key or shard_by value */
#define KEYRULE_SEP_MAX 8   /* bytes of the separator */
#define KEYRULE_SHARDS_MIN 2
#define KEYRULE_SHARDS_MAX 256
#define KEYRULE_PARTITIONS_MAX 4096
#define KEYRULE_CAPACITY_MAX 4096
#define KEYRULE_STATIC_MAX 4096
/* base + separator + up to 3 digits + NUL */
#define KEYRULE_RECORD_KEY_MAX (KEYRULE_KEY_MAX + KEYRULE_SEP_MAX + 3 + 1)

/* Defaults, taken where an option is 0 (or NULL). */
#define KEYRULE_SEP_DEFAULT "~"
#define KEYRULE_SHARE_DEFAULT 0.2
#define KEYRULE_CAPACITY_DEFAULT 64
#define KEYRULE_WINDOW_DEFAULT 10000
#define KEYRULE_MIN_RECORDS_DEFAULT 1000
#define KEYRULE_AUTO_SHARDS_DEFAULT 8
#define KEYRULE_HOLD_MS_DEFAULT (10 * 60 * 1000)
/* A key needs at least this many records (halved like the others) of
 * its own in the window to turn hot. */
#define KEYRULE_KEY_RECORDS_MIN 16

/* hot_keys.static: one entry, e.g. `tenant-42: 8`. */
struct keyrule_static {
    const char *key; /* NUL-terminated */
    int64_t shards;  /* KEYRULE_SHARDS_MIN..KEYRULE_SHARDS_MAX */
};

/* hot_keys.auto. Field types are those of cfg's option types (OPT_BOOL,
 * OPT_RATIO, OPT_INT, OPT_DURATION) so that a table can fill it. */
struct keyrule_auto {
    int enabled;
    double share;        /* of its partition's records: (0, 1]; 0: 0.2 */
    int64_t capacity;    /* Space-Saving counters, 1..4096; 0: 64 */
    int64_t window;      /* counts are halved every window records;
                            100..1e9; 0: 10000 */
    int64_t min_records; /* records in the window before any decision,
                            1..window; 0: 1000 */
    int64_t shards;      /* 2..256; 0: 8 */
    int64_t hold_ms;     /* stays sharded this long after it was last
                            hot; 1 ms..1 day; 0: 10 min */
};

/* Partition of a record key as the producer will choose it (e.g. murmur2
 * of the key mod the topic's partitions): 0..partitions-1. */
typedef int keyrule_partition_fn(void *arg, const char *key, size_t len);

/* What keyrule_new() needs; it copies every string and the static list,
 * so the caller may free them once it returns. */
struct keyrule_options {
    const char *key;       /* required: "json:PATH" or "header:NAME" */
    const char *shard_by;  /* the same forms; required with hot keys */
    const char *separator; /* 1..8 bytes, no digit; NULL or "": "~" */
    const struct keyrule_static *statics;
    size_t static_count;
    struct keyrule_auto autos;
    /* Needed with autos.enabled only. */
    int64_t partitions; /* 1..KEYRULE_PARTITIONS_MAX */
    keyrule_partition_fn *partition_of;
    void *partition_arg;
};

/* A request as the key rule reads it. Headers are matched by name without
 * regard to case; of several with the name, the last one counts. body is
 * the request body (JSON for json: sources). */
struct keyrule_input {
    const struct sl_header *headers;
    size_t header_count;
    const void *body;
    size_t body_len;
};

enum keyrule_hot {
    KEYRULE_COLD,   /* not sharded */
    KEYRULE_STATIC, /* listed in hot_keys.static */
    KEYRULE_AUTO,   /* found hot by hot_keys.auto (or held) */
};

/* One decision, in the caller's memory. */
struct keyrule_decision {
    /* The record key, NUL-terminated; its first base_len bytes are the
     * base key (then key[base_len] is the separator or the NUL). */
    char key[KEYRULE_RECORD_KEY_MAX];
    size_t key_len;
    size_t base_len;
    int shard;       /* -1: not sharded */
    int shards;      /* of the key; 0 when not sharded */
    int hot;         /* enum keyrule_hot */
    int turned_hot;  /* 1: hot_keys.auto found the key hot just now */
    int turned_cold; /* 1: the key's hold ran out just now: not sharded */
    /* The base key's partition as partition_of says (the one its records
     * would get unsharded); -1 without hot_keys.auto. */
    int partition;
    /* A sharded record without a usable shard_by value takes shard 0:
     * why (a static string); NULL otherwise. */
    const char *shard_by_missing;
};

struct keyrule_stats {
    uint64_t records;          /* decided (not refused) */
    uint64_t refused;          /* no usable key: keyrule_apply gave -1 */
    uint64_t sharded;          /* records given a shard suffix */
    uint64_t turned_hot;       /* auto: keys that turned hot */
    uint64_t turned_cold;      /* auto: keys whose hold ran out */
    uint64_t missing_shard_by; /* sharded records that took shard 0 */
    uint64_t hot_full;         /* auto: hot keys left unsharded because
                                  `capacity` keys were sharded already */
    uint64_t auto_hot_keys;    /* auto: keys sharded now */
};

/* A key rule for o; NULL with err filled (the option named, e.g.
 * "hot_keys.static: `a~b`: holds the separator `~`") when o is invalid
 * or memory runs out. Free with keyrule_destroy(). */
keyrule_t *keyrule_new(const struct keyrule_options *o, struct sl_error *err);

/* Frees kr; NULL is a no-op. */
void keyrule_destroy(keyrule_t *kr);

/* Decides the record key of the request in: fills *d and returns 0; or
 * returns -1 with err saying why the request has no usable key, e.g.
 * "key json:tenant_id: field missing" (the publisher answers 400 with
 * it). Counts the record toward hot_keys.auto's sketch at time now_ms
 * (a clock that goes back is taken as standing still). Allocates
 * nothing (a json: source's body is scanned, not parsed into a tree).
 * kr, in and d are not NULL; err may be. */
int keyrule_apply(keyrule_t *kr, const struct keyrule_input *in,
                  int64_t now_ms, struct keyrule_decision *d,
                  struct sl_error *err);

/* kr's counters so far. */
void keyrule_stats(const keyrule_t *kr, struct keyrule_stats *st);

/* The consumer's inverse: the base key of a record key key[0, len), i.e.
 * key without a trailing sep (NULL: "~") followed by 1 to 3 ASCII digits
 * and the end, when something is left before it; else the whole key.
 * Returns key and sets *base_len; key NULL gives NULL and 0. */
const char *keyrule_key_base(const char *key, size_t len, const char *sep,
                             size_t *base_len);

/* The shard of a shard_by value: Kafka's murmur2 of its bytes, made
 * positive (& 0x7fffffff), mod shards (1..KEYRULE_SHARDS_MAX): what
 * Java's Utils.toPositive(Utils.murmur2(bytes)) % shards gives. Stable
 * across builds, hosts and languages. */
int keyrule_shard_of(const void *value, size_t len, int shards);

/* Kafka's murmur2 (seed 0x9747b28c), as its default partitioner uses. */
uint32_t keyrule_murmur2(const void *p, size_t len);

#endif
