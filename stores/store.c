/* store.c -- the marker stores sluice knows, by name. */
#include <string.h>

#include "store.h"

static const struct store *const stores[] = {
    &sqlite_store,
    &redis_store,
};

const struct store *store_find(const char *name)
{
    for (size_t i = 0; i < sizeof(stores) / sizeof(stores[0]); i++) {
        if (strcmp(stores[i]->name, name) == 0) {
            return stores[i];
        }
    }
    return NULL;
}
