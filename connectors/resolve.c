/* resolve.c -- host names looked up on a thread, answers kept on the loop.
 *
 * A lookup is a job shared by the loop and one detached thread, freed by
 * whichever lets go of it last (a reference count), so destroying a
 * resolver never waits for a slow resolver to answer. The thread writes
 * the answer into the job, then signals the job's eventfd; the loop reads
 * the answer from there. Everything else, the cache included, is touched
 * by the loop thread alone. */
#include "resolve.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

struct job {
    atomic_int refs; /* the loop's and the thread's */
    int fd;          /* eventfd: the thread's answer is in */
    char *hostname, *port;
    /* Written by the thread before it signals fd. */
    int rc, sys_errno; /* getaddrinfo's result; errno for EAI_SYSTEM */
    size_t count;
    struct resolve_addr addrs[RESOLVE_ADDRS_MAX];
};

struct resolve {
    const struct connector_host *host;
    char *hostname, *port;
    void (*ready)(void *arg);
    void *arg;
    int numeric;     /* a literal address: never looked up */
    int failed;      /* the last lookup failed, not reported yet */
    uint64_t expiry; /* now_ms past which the answer is stale; 0: none */
    size_t count, next;
    struct resolve_addr addrs[RESOLVE_ADDRS_MAX];
    struct job *job; /* the lookup under way, NULL when none */
    void *watch;
    char error[320];
};

static void job_release(struct job *j)
{
    if (atomic_fetch_sub(&j->refs, 1) == 1) {
        close(j->fd);
        free(j->hostname);
        free(j->port);
        free(j);
    }
}

/* Copies up to RESOLVE_ADDRS_MAX stream addresses of ai into out. */
static size_t addrs_copy(struct resolve_addr *out, const struct addrinfo *ai)
{
    size_t n = 0;

    for (; ai != NULL && n < RESOLVE_ADDRS_MAX; ai = ai->ai_next) {
        if (ai->ai_addrlen > sizeof(out[n].addr)) {
            continue;
        }
        memcpy(&out[n].addr, ai->ai_addr, ai->ai_addrlen);
        out[n].len = ai->ai_addrlen;
        out[n].family = ai->ai_family;
        n++;
    }
    return n;
}

static void *job_run(void *arg)
{
    struct job *j = arg;
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_ADDRCONFIG};
    struct addrinfo *ai = NULL;
    uint64_t one = 1;

    j->rc = getaddrinfo(j->hostname, j->port, &hints, &ai);
    j->sys_errno = errno;
    if (j->rc == 0) {
        j->count = addrs_copy(j->addrs, ai);
        freeaddrinfo(ai);
        if (j->count == 0) {
            j->rc = EAI_NONAME;
        }
    }
    /* Nobody may be watching any more; the write still cannot block. */
    if (write(j->fd, &one, sizeof(one)) < 0) {
        /* An eventfd counter cannot overflow from one write. */
    }
    job_release(j);
    return NULL;
}

static void job_done(void *arg, unsigned events)
{
    resolve_t *r = arg;
    struct job *j = r->job;
    uint64_t n;

    (void)events;
    if (read(j->fd, &n, sizeof(n)) != (ssize_t)sizeof(n)) {
        return; /* spurious: the answer is not in yet */
    }
    r->host->watch_free(r->host->io, r->watch);
    r->watch = NULL;
    r->job = NULL;
    if (j->rc == 0) {
        memcpy(r->addrs, j->addrs, j->count * sizeof(j->addrs[0]));
        r->count = j->count;
        r->expiry = r->host->now_ms(r->host->io) + RESOLVE_TTL_MS;
        r->failed = 0;
    } else {
        r->count = 0;
        r->expiry = 0;
        r->failed = 1;
        snprintf(r->error, sizeof(r->error), "cannot resolve %s: %s",
                 r->hostname,
                 j->rc == EAI_SYSTEM ? strerror(j->sys_errno)
                                     : gai_strerror(j->rc));
    }
    job_release(j);
    r->ready(r->arg);
}

/* Starts a lookup on a thread of its own. 0, or -1 with r->error set. */
static int job_start(resolve_t *r)
{
    struct job *j = calloc(1, sizeof(*j));
    pthread_attr_t attr;
    pthread_t tid;
    sigset_t all, old;
    int rc;

    if (j == NULL) {
        goto oom;
    }
    j->fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    j->hostname = strdup(r->hostname);
    j->port = strdup(r->port);
    if (j->fd < 0 || j->hostname == NULL || j->port == NULL) {
        if (j->fd >= 0) {
            close(j->fd);
        }
        free(j->hostname);
        free(j->port);
        free(j);
        goto oom;
    }
    atomic_init(&j->refs, 2);
    r->watch = r->host->watch_new(r->host->io, j->fd, job_done, r);
    if (r->watch == NULL) {
        atomic_init(&j->refs, 1);
        job_release(j);
        goto oom;
    }
    r->host->watch_set(r->host->io, r->watch, CONNECTOR_READABLE);
    r->job = j;
    /* The thread takes no signal: they are the main thread's business. */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    rc = pthread_create(&tid, &attr, job_run, j);
    pthread_attr_destroy(&attr);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        r->host->watch_free(r->host->io, r->watch);
        r->watch = NULL;
        r->job = NULL;
        atomic_store(&j->refs, 1);
        job_release(j);
        snprintf(r->error, sizeof(r->error),
                 "cannot resolve %s: no resolver thread: %s", r->hostname,
                 strerror(rc));
        return -1;
    }
    return 0;
oom:
    snprintf(r->error, sizeof(r->error), "cannot resolve %s: out of memory",
             r->hostname);
    return -1;
}

resolve_t *resolve_new(const struct connector_host *host,
                       const char *hostname, const char *port,
                       void (*ready)(void *arg), void *arg,
                       struct sl_error *err)
{
    resolve_t *r = calloc(1, sizeof(*r));
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV};
    struct addrinfo *ai = NULL;

    if (r == NULL) {
        sl_error_set(err, "out of memory");
        return NULL;
    }
    r->host = host;
    r->ready = ready;
    r->arg = arg;
    r->hostname = strdup(hostname);
    r->port = strdup(port);
    if (r->hostname == NULL || r->port == NULL) {
        resolve_destroy(r);
        sl_error_set(err, "out of memory");
        return NULL;
    }
    /* A literal address is parsed, not looked up: no thread, no wait.
     * inet_pton first: it cannot reach a resolver, whatever libc does. */
    struct in_addr v4;
    struct in6_addr v6;
    if ((inet_pton(AF_INET, hostname, &v4) == 1 ||
         inet_pton(AF_INET6, hostname, &v6) == 1) &&
        getaddrinfo(hostname, port, &hints, &ai) == 0) {
        r->count = addrs_copy(r->addrs, ai);
        r->numeric = r->count > 0;
        freeaddrinfo(ai);
    }
    return r;
}

int resolve_get(resolve_t *r, const struct resolve_addr **addr)
{
    if (r->numeric ||
        (r->count > 0 && r->host->now_ms(r->host->io) < r->expiry)) {
        *addr = &r->addrs[r->next % r->count];
        return 0;
    }
    if (r->failed && r->job == NULL) {
        r->failed = 0; /* reported once; the next call looks again */
        return -1;
    }
    if (r->job == NULL && job_start(r) != 0) {
        return -1;
    }
    return 1;
}

void resolve_failed(resolve_t *r)
{
    r->next++;
    if (!r->numeric) {
        r->expiry = 0;
    }
}

const char *resolve_error(const resolve_t *r)
{
    return r->error;
}

const char *resolve_name(const resolve_t *r)
{
    return r->hostname;
}

void resolve_destroy(resolve_t *r)
{
    if (r == NULL) {
        return;
    }
    if (r->job != NULL) {
        r->host->watch_free(r->host->io, r->watch);
        job_release(r->job);
    }
    free(r->hostname);
    free(r->port);
    free(r);
}
