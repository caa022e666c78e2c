/* fuzz_httpd.c -- libFuzzer target for the publisher's HTTP/1.1 server
 * (worker/httpd.c) on a real loop.
 *
 * The input is what a client sends: byte 0 picks how the handler answers
 * and how the client leaves, byte 1 the size of the client's writes
 * (1-64 bytes, the loop turning between them, so every split of a head
 * and a body is reached), the rest is the bytes. The client is a unix
 * socket on the server's listener. Checked beyond "no crash, no leak, no
 * UB": the handler's calls keep their contract (nothing after an answer,
 * on_complete at most once, on_abort only before it), and what the client
 * reads starts as an HTTP/1.1 answer. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "httpd.h"
#include "loop.h"

enum {
    ANSWER_AT_HEAD = 1,  /* every third request, before its body */
    ANSWER_IN_BODY = 2,  /* every second request, at its first piece */
    ANSWER_LATER = 4,    /* completed requests wait until the client left */
    CLIENT_RESETS = 8,   /* the client leaves with a reset, not a FIN */
    CLIENT_STAYS = 16,   /* the client half-closes only after the answers */
};

#define DEFERRED_MAX 256

struct freq {
    httpd_conn_t *conn;
    int complete;
};

struct fuzz {
    unsigned flags;
    unsigned heads;
    int live; /* requests the handler holds */
    struct freq *deferred[DEFERRED_MAX];
    size_t ndeferred, nanswered;
};

static void answer(struct freq *r, unsigned status)
{
    static const char body[] = "{\"ok\":true}\n";

    httpd_answer(r->conn, status, "Retry-After: 1\r\n", body,
                 sizeof(body) - 1);
}

static void *on_head(void *arg, httpd_conn_t *conn,
                     const struct httpd_head *head)
{
    struct fuzz *f = arg;

    if (head->method == NULL || head->path == NULL) {
        abort();
    }
    (void)httpd_header(conn, "Content-Type");
    struct sl_header h[8];
    size_t n = httpd_headers(conn, h, 8);
    for (size_t i = 0; i < n; i++) {
        if (h[i].name == NULL || h[i].value == NULL ||
            strlen(h[i].value) != h[i].value_len) {
            abort();
        }
    }
    if ((f->flags & ANSWER_AT_HEAD) && f->heads++ % 3 == 0) {
        httpd_answer(conn, 404, NULL, "{}", 2);
        return NULL;
    }
    struct freq *r = calloc(1, sizeof(*r));
    if (r == NULL) {
        abort();
    }
    r->conn = conn;
    f->live++;
    return r;
}

static struct fuzz *the_fuzz; /* the handler's calls carry only the req */

static void on_body(void *req, const char *data, size_t len)
{
    struct freq *r = req;

    if (r == NULL || r->complete || (len > 0 && data == NULL)) {
        abort();
    }
    if ((the_fuzz->flags & ANSWER_IN_BODY) && the_fuzz->heads % 2 == 0) {
        answer(r, 413);
        the_fuzz->live--;
        free(r);
    }
}

static void on_complete(void *req)
{
    struct freq *r = req;
    struct fuzz *f = the_fuzz;

    if (r == NULL || r->complete) {
        abort();
    }
    r->complete = 1;
    if ((f->flags & ANSWER_LATER) && f->ndeferred < DEFERRED_MAX) {
        f->deferred[f->ndeferred++] = r;
        return;
    }
    answer(r, 202);
    f->live--;
    free(r);
}

static void on_abort(void *req)
{
    struct freq *r = req;

    if (r == NULL || r->complete) {
        abort(); /* a request read whole is answered, never aborted */
    }
    the_fuzz->live--;
    free(r);
}

/* Answers the deferred requests, turning the loop after each when
 * turning (which may complete more) or not (the last, before the end). */
static void answer_deferred(struct fuzz *f, loop_t *loop, int turning)
{
    while (f->nanswered < f->ndeferred) {
        struct freq *r = f->deferred[f->nanswered++];
        answer(r, 202);
        f->live--;
        free(r);
        if (turning) {
            loop_run_once(loop, 0);
        }
    }
}

static void turn(loop_t *loop, int times)
{
    for (int i = 0; i < times; i++) {
        loop_run_once(loop, 0);
    }
}

/* Reads what the server sent; 1 at its EOF (or a reset). */
static int client_read(int fd, char *first, size_t *first_len)
{
    char buf[4096];

    for (;;) {
        ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
        if (n == 0) {
            return 1;
        }
        if (n < 0) {
            return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : 1;
        }
        size_t keep = 9 - *first_len;
        if (keep > (size_t)n) {
            keep = (size_t)n;
        }
        memcpy(first + *first_len, buf, keep);
        *first_len += keep;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static unsigned serial;
    struct fuzz f = {0};
    struct sl_error err;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    char first[10] = {0};
    size_t first_len = 0;
    int eof = 0;

    if (size < 2) {
        return 0;
    }
    f.flags = data[0];
    size_t chunk = 1 + data[1] % 64;
    data += 2;
    size -= 2;
    the_fuzz = &f;

    loop_t *loop = loop_new(&err);
    if (loop == NULL) {
        abort();
    }
    /* An abstract name: nothing on disk, no TIME_WAIT between inputs. */
    int n = snprintf(sa.sun_path + 1, sizeof(sa.sun_path) - 1,
                     "sluice-fuzz-httpd-%d-%u", (int)getpid(), serial++);
    socklen_t sa_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) +
                                   1 + (size_t)n);
    int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sa_len) != 0 ||
        listen(lfd, 4) != 0) {
        abort();
    }
    struct httpd_limits limits = {
        .max_connections = 4,
        .max_head = 2048,
        .idle_timeout_ms = 60000,
    };
    struct httpd_handler handler = {
        .arg = &f,
        .on_head = on_head,
        .on_body = on_body,
        .on_complete = on_complete,
        .on_abort = on_abort,
    };
    httpd_t *d = httpd_new(loop, lfd, &limits, &handler, &err);
    if (d == NULL) {
        abort();
    }
    int cfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (cfd < 0 || connect(cfd, (struct sockaddr *)&sa, sa_len) != 0) {
        abort();
    }
    turn(loop, 1);
    for (size_t off = 0; off < size && !eof;) {
        size_t len = size - off < chunk ? size - off : chunk;
        ssize_t w = send(cfd, data + off, len, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (w > 0) {
            off += (size_t)w;
        } else if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
            break; /* the server closed */
        }
        turn(loop, 2);
        eof = client_read(cfd, first, &first_len);
    }
    if (!(f.flags & CLIENT_STAYS)) {
        if (f.flags & CLIENT_RESETS) {
            struct linger lg = {1, 0};
            setsockopt(cfd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
            close(cfd);
            cfd = -1;
        } else {
            shutdown(cfd, SHUT_WR);
        }
    }
    turn(loop, 4);
    /* The deferred answers: some connections are gone by now. */
    answer_deferred(&f, loop, 1);
    if (cfd >= 0) {
        shutdown(cfd, SHUT_WR);
        for (int i = 0; i < 16 && !eof; i++) {
            turn(loop, 1);
            answer_deferred(&f, loop, 1);
            eof = client_read(cfd, first, &first_len);
        }
        close(cfd);
    }
    answer_deferred(&f, loop, 0);
    if (first_len > 0 &&
        memcmp(first, "HTTP/1.1 ", first_len < 9 ? first_len : 9) != 0) {
        abort(); /* the server's output is answers, from its first byte */
    }
    httpd_destroy(d);
    loop_destroy(loop);
    if (f.live != 0) {
        abort(); /* a request neither answered nor aborted */
    }
    return 0;
}
