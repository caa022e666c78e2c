/* resolve.h -- one host name, resolved off the lane's loop and cached.
 *
 * getaddrinfo blocks for as long as the resolver takes; on the loop thread
 * that would freeze every sink of the lane and its consumer. A resolver
 * looks its name up on a thread of its own (one lookup at a time), hands
 * the addresses back to the loop through an eventfd watched there, and
 * keeps them for RESOLVE_TTL_MS. A numeric address is parsed once, at
 * creation, and never looked up. */
#ifndef SLUICE_RESOLVE_H
#define SLUICE_RESOLVE_H

#include <stddef.h>
#include <sys/socket.h>

#include "connector.h"

typedef struct resolve resolve_t;

#define RESOLVE_TTL_MS 30000
#define RESOLVE_ADDRS_MAX 8 /* addresses kept of one answer */

struct resolve_addr {
    struct sockaddr_storage addr;
    socklen_t len;
    int family;
};

/* Returns a resolver for hostname:port on host's loop, or NULL with err
 * filled. ready(arg) runs on the loop each time a lookup ends, whatever
 * its outcome, never from inside a resolve_* call. The strings are
 * copied. */
resolve_t *resolve_new(const struct connector_host *host,
                       const char *hostname, const char *port,
                       void (*ready)(void *arg), void *arg,
                       struct sl_error *err);

/* The address to connect to: 0 with *addr set (valid until the next
 * resolve_* call) when one is cached and fresh; 1 when a lookup is under
 * way (started now if needed): ready() follows; -1 when the lookup that
 * just ended failed, with its reason in resolve_error(). A failure is
 * reported once: the next call looks the name up again. O(1) and
 * without a system call while the cache is fresh. */
int resolve_get(resolve_t *r, const struct resolve_addr **addr);

/* The address from resolve_get did not connect: the next resolve_get
 * tries the answer's next address and looks the name up again (a
 * numeric address stays). */
void resolve_failed(resolve_t *r);

/* "cannot resolve HOST: reason" of the last failed lookup; "" when none. */
const char *resolve_error(const resolve_t *r);

/* The host name as configured. */
const char *resolve_name(const resolve_t *r);

/* Stops watching; a lookup under way finishes on its thread and is then
 * dropped. resolve_destroy(NULL) is a no-op. */
void resolve_destroy(resolve_t *r);

#endif
