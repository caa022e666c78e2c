/* store.c -- the marker stores sluice knows, by name. */
#include <string.h>

#include "store.h"

const struct store *const store_all[] = {
    &sqlite_store,
    &redis_store,
    NULL,
};

const struct store *store_find(const char *name)
{
    for (size_t i = 0; store_all[i] != NULL; i++) {
        if (strcmp(store_all[i]->name, name) == 0) {
            return store_all[i];
        }
    }
    return NULL;
}
