/* test_http1.c -- the lean HTTP/1.1 client against a scripted server in
 * the test itself: keep-alive reuse, chunked and close-delimited bodies,
 * Retry-After, the stale keep-alive resend, protocol errors, timeouts and
 * refused connections; what is kept of failed responses. Then the http
 * connector on both transports (curl through http_proxy pointing at the
 * same server): per-message method, path and headers, invalid ones
 * rejected without a request, failed responses handed over, and the
 * status classification. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "http1.h"
#include "loop.h"

struct fixture {
    loop_t *loop;
    struct connector_host host;
    int listener;
    char port[16];
    http1_pool_t *pool;
    int curl;   /* connector tests: through libcurl, not the lean client */
    void *sink; /* connector tests: the http sink's context */
    const char *userinfo; /* connector tests: "user:pass@" in the URL */
};

/* A failed response's headers ("name: value\n" each) and body, copied
 * while they are valid. */
struct kept {
    int set; /* headers and body were handed over */
    size_t header_count;
    char headers[8192];
    size_t body_len;
    char body[CONNECTOR_BODY_MAX + 1];
};

static void keep(struct kept *k, const struct sl_header *headers,
                 size_t count, const char *body, size_t body_len)
{
    size_t n = 0;

    memset(k, 0, sizeof(*k));
    assert_true((headers == NULL) == (body == NULL));
    if (headers == NULL) {
        assert_int_equal(count, 0);
        assert_int_equal(body_len, 0);
        return;
    }
    k->set = 1;
    k->header_count = count;
    for (size_t i = 0; i < count; i++) {
        n += (size_t)snprintf(k->headers + n, sizeof(k->headers) - n,
                              "%s: %.*s\n", headers[i].name,
                              (int)headers[i].value_len,
                              (const char *)headers[i].value);
        assert_true(n < sizeof(k->headers));
    }
    assert_true(body_len <= CONNECTOR_BODY_MAX);
    memcpy(k->body, body, body_len);
    k->body_len = body_len;
}

struct call {
    struct http1_request req;
    int done;
    struct http1_result res; /* pointers cleared: see kept */
    struct kept kept;
    char head[128];
};

static void on_done(struct http1_request *req, const struct http1_result *res)
{
    struct call *c = (struct call *)req;

    c->done++;
    c->res = *res;
    keep(&c->kept, res->headers, res->header_count, res->body, res->body_len);
    c->res.headers = NULL;
    c->res.body = NULL;
}

static void unset_proxies(void)
{
    static const char *const vars[] = {
        "http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY",
        "all_proxy",  "ALL_PROXY",  "no_proxy",    "NO_PROXY",   NULL};

    for (size_t i = 0; vars[i] != NULL; i++) {
        unsetenv(vars[i]);
    }
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    struct sockaddr_in a = {.sin_family = AF_INET};
    socklen_t len = sizeof(a);
    struct sl_error err;

    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    unset_proxies();
    f->loop = loop_new(&err);
    f->host = (struct connector_host){.sink_name = "test",
                                      .max_in_flight = 2};
    loop_fill_host(f->loop, &f->host);
    f->listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    assert_int_equal(bind(f->listener, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(f->listener, 16), 0);
    getsockname(f->listener, (struct sockaddr *)&a, &len);
    snprintf(f->port, sizeof(f->port), "%d", ntohs(a.sin_port));
    f->pool = http1_pool_new(&f->host, "127.0.0.1", f->port, 2, 1000, 500,
                             &err);
    assert_non_null(f->pool);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;

    http1_pool_destroy(f->pool);
    close(f->listener);
    for (int i = 0; i < 3; i++) {
        loop_run_once(f->loop, 0); /* frees dead watches */
    }
    loop_destroy(f->loop);
    free(f);
    return 0;
}

static void start(struct fixture *f, struct call *c, const char *body)
{
    memset(c, 0, sizeof(*c));
    snprintf(c->head, sizeof(c->head),
             "POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: %zu\r\n\r\n",
             strlen(body));
    c->req.iov[0] = (struct iovec){c->head, strlen(c->head)};
    c->req.iov[1] = (struct iovec){(void *)body, strlen(body)};
    c->req.iovcnt = 2;
    c->req.done = on_done;
    assert_int_equal(http1_send(f->pool, &c->req), 0);
    assert_int_equal(c->done, 0); /* never from inside send */
}

static void run_until_done(struct fixture *f, struct call *c)
{
    for (int i = 0; i < 400 && !c->done; i++) {
        loop_run_once(f->loop, 10);
    }
    assert_int_equal(c->done, 1);
}

/* Runs the loop until the client connected, then accepts (blocking). */
static int server_accept(struct fixture *f)
{
    for (int i = 0; i < 400; i++) {
        loop_run_once(f->loop, 5);
        int fd = accept4(f->listener, NULL, NULL, SOCK_CLOEXEC);
        if (fd >= 0) {
            return fd;
        }
    }
    return -1;
}

/* Whether a client connected while the loop ran a little. */
static int server_connected(struct fixture *f)
{
    for (int i = 0; i < 10; i++) {
        loop_run_once(f->loop, 5);
    }
    int fd = accept4(f->listener, NULL, NULL, SOCK_CLOEXEC);
    if (fd >= 0) {
        close(fd);
        return 1;
    }
    return 0;
}

/* Reads one whole request (head + Content-Length body) from fd. */
static void server_read_request(struct fixture *f, int fd, const char *body)
{
    char buf[4096];
    size_t got = 0;

    for (int i = 0; i < 200; i++) {
        loop_run_once(f->loop, 2);
        ssize_t n = recv(fd, buf + got, sizeof(buf) - 1 - got, MSG_DONTWAIT);
        if (n > 0) {
            got += (size_t)n;
            buf[got] = '\0';
            char *end = strstr(buf, "\r\n\r\n");
            if (end != NULL && strcmp(end + 4, body) == 0) {
                return;
            }
        }
    }
    fail_msg("request not received: %s", buf);
}

static const char http_ok[] = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";

static void server_write(int fd, const char *text)
{
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
}

/* Starts a request with body on a new connection and reads it on the
 * server side; returns the server's socket. */
static int start_accepted(struct fixture *f, struct call *c, const char *body)
{
    start(f, c, body);
    int fd = server_accept(f);
    server_read_request(f, fd, body);
    return fd;
}

static void test_keep_alive_reuses_connection(void **state)
{
    struct fixture *f = *state;
    struct call c;

    int fd = start_accepted(f, &c, "one");
    server_write(fd, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    run_until_done(f, &c);
    assert_int_equal(c.res.error, 0);
    assert_int_equal(c.res.status, 200);
    assert_false(c.kept.set); /* nothing kept of a 2xx */
    assert_int_equal(c.res.retry_after_ms, -1);

    /* The second request arrives on the same server-side socket. */
    start(f, &c, "two");
    server_read_request(f, fd, "two");
    server_write(fd, "HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n");
    run_until_done(f, &c);
    assert_int_equal(c.res.status, 201);
    close(fd);
}

static void test_chunked_with_retry_after(void **state)
{
    struct fixture *f = *state;
    struct call c;

    int fd = start_accepted(f, &c, "x");
    server_write(fd, "HTTP/1.1 503 Service Unavailable\r\n"
                     "Transfer-Encoding: chunked\r\nRetry-After: 7\r\n\r\n"
                     "4\r\nbusy\r\n0\r\n\r\n");
    run_until_done(f, &c);
    assert_int_equal(c.res.error, 0);
    assert_int_equal(c.res.status, 503);
    assert_int_equal(c.res.retry_after_ms, 7000);
    assert_true(c.kept.set);
    assert_string_equal(c.kept.body, "busy");
    assert_string_equal(c.kept.headers,
                        "transfer-encoding: chunked\nretry-after: 7\n");
    close(fd);
}

static void test_retry_after_as_date(void **state)
{
    struct fixture *f = *state;
    struct call c;

    /* An HTTP-date is longer than delay-seconds; a past one is 0. */
    int fd = start_accepted(f, &c, "x");
    server_write(fd, "HTTP/1.1 429 Too Many Requests\r\n"
                     "Retry-After: Wed, 21 Oct 2015 07:28:00 GMT\r\n"
                     "Content-Length: 0\r\n\r\n");
    run_until_done(f, &c);
    assert_int_equal(c.res.status, 429);
    assert_int_equal(c.res.retry_after_ms, 0);
    close(fd);
}

static void test_close_delimited_body(void **state)
{
    struct fixture *f = *state;
    struct call c;

    int fd = start_accepted(f, &c, "x");
    server_write(fd, "HTTP/1.1 404 Not Found\r\nConnection: close\r\n\r\n"
                     "hello");
    close(fd);
    run_until_done(f, &c);
    assert_int_equal(c.res.error, 0);
    assert_int_equal(c.res.status, 404);
    assert_string_equal(c.kept.body, "hello");
}

static void test_stale_keep_alive_is_resent_once(void **state)
{
    struct fixture *f = *state;
    struct call c;

    int fd = start_accepted(f, &c, "a");
    server_write(fd, http_ok);
    run_until_done(f, &c);
    /* The server drops the idle connection; the client sends before it
     * noticed. The request must reach the server again, on a new
     * connection, and end once. */
    shutdown(fd, SHUT_RDWR);
    close(fd);
    start(f, &c, "b");
    int fd2 = server_accept(f);
    assert_true(fd2 >= 0);
    server_read_request(f, fd2, "b");
    server_write(fd2, http_ok);
    run_until_done(f, &c);
    assert_int_equal(c.res.error, 0);
    assert_int_equal(c.res.status, 200);
    close(fd2);
}

static void test_garbage_is_a_protocol_error(void **state)
{
    struct fixture *f = *state;
    struct call c;

    int fd = start_accepted(f, &c, "x");
    server_write(fd, "SMTP READY\r\n\r\n");
    run_until_done(f, &c);
    assert_int_equal(c.res.error, EPROTO);
    close(fd);
}

static void test_silent_server_times_out(void **state)
{
    struct fixture *f = *state;
    struct call c;

    int fd = start_accepted(f, &c, "x");
    run_until_done(f, &c); /* the pool's timeout is 500 ms */
    assert_int_equal(c.res.error, ETIMEDOUT);
    close(fd);
}

static void test_reset_before_answer_is_an_error(void **state)
{
    struct fixture *f = *state;
    struct call c;

    /* A fresh connection closed without an answer is not resent: only a
     * reused connection may have been closed for idling. */
    int fd = start_accepted(f, &c, "x");
    close(fd);
    run_until_done(f, &c);
    assert_int_not_equal(c.res.error, 0);
}

static void test_refused_connection(void **state)
{
    struct fixture *f = *state;
    struct call c;
    struct sl_error err;

    close(f->listener);
    f->listener = -1;
    http1_pool_t *pool = http1_pool_new(&f->host, "127.0.0.1", f->port, 1,
                                        1000, 500, &err);
    memset(&c, 0, sizeof(c));
    c.req.iov[0] = (struct iovec){"GET / HTTP/1.1\r\n\r\n", 18};
    c.req.iovcnt = 1;
    c.req.done = on_done;
    int rc = http1_send(pool, &c.req);
    if (rc == 0) {
        run_until_done(f, &c);
        rc = c.res.error;
    }
    assert_int_equal(rc, ECONNREFUSED);
    /* The failed connection gave its slot back. */
    assert_int_not_equal(http1_send(pool, &c.req), EAGAIN);
    http1_pool_destroy(pool);
}

/* ---- what is kept of failed responses ---- */

static void test_nothing_kept_on_2xx(void **state)
{
    struct fixture *f = *state;
    struct call c;

    int fd = start_accepted(f, &c, "x");
    server_write(fd, "HTTP/1.1 202 Accepted\r\nX-Request-Id: r1\r\n"
                     "Content-Length: 5\r\n\r\nqueue");
    run_until_done(f, &c);
    assert_int_equal(c.res.status, 202);
    assert_false(c.kept.set);
    close(fd);
}

static void test_failed_response_bounded(void **state)
{
    struct fixture *f = *state;
    struct call c;
    char big[5000], line[64], want[2048] = "";
    static char body[3000];

    /* A header too long for the scratch is dropped whole; after it, the
     * first 32 headers are kept, names lowercased, and 1024 bytes of the
     * body. */
    memset(big, 'b', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    for (size_t i = 0; i < sizeof(body); i++) {
        body[i] = (char)('a' + i % 26);
    }
    int fd = start_accepted(f, &c, "x");
    server_write(fd, "HTTP/1.1 422 Unprocessable\r\nX-Big: ");
    server_write(fd, big);
    server_write(fd, "\r\n");
    for (int i = 0; i < 40; i++) {
        snprintf(line, sizeof(line), "X-H%02d: v%02d \t\r\n", i, i);
        server_write(fd, line);
        if (i < 31) {
            snprintf(line, sizeof(line), "x-h%02d: v%02d\n", i, i);
            strcat(want, line);
        }
    }
    server_write(fd, "Content-Length: 3000\r\n\r\n");
    assert_int_equal(write(fd, body, sizeof(body)), (ssize_t)sizeof(body));
    run_until_done(f, &c);
    assert_int_equal(c.res.status, 422);
    assert_int_equal(c.kept.header_count, 32);
    /* The 32nd is x-h31; its value lost the whitespace after it. */
    strcat(want, "x-h31: v31\n");
    assert_string_equal(c.kept.headers, want);
    assert_int_equal(c.kept.body_len, CONNECTOR_BODY_MAX);
    assert_memory_equal(c.kept.body, body, CONNECTOR_BODY_MAX);
    close(fd);
}

static void test_failed_response_in_pieces(void **state)
{
    struct fixture *f = *state;
    struct call c;
    const char *resp = "HTTP/1.1 409 Conflict\r\nContent-TYPE: text/plain\r\n"
                       "X-Empty:\r\nTransfer-Encoding: chunked\r\n\r\n"
                       "3\r\ndup\r\n4\r\nlica\r\n0\r\n\r\n";

    /* Every header name, value and body split across reads. */
    int fd = start_accepted(f, &c, "x");
    for (size_t i = 0; i < strlen(resp); i += 3) {
        size_t n = strlen(resp) - i < 3 ? strlen(resp) - i : 3;
        assert_int_equal(write(fd, resp + i, n), (ssize_t)n);
        loop_run_once(f->loop, 1);
    }
    run_until_done(f, &c);
    assert_int_equal(c.res.status, 409);
    assert_string_equal(c.kept.headers, "content-type: text/plain\n"
                                        "x-empty: \n"
                                        "transfer-encoding: chunked\n");
    assert_string_equal(c.kept.body, "duplica");
    close(fd);
}

static void test_interim_response_skipped(void **state)
{
    struct fixture *f = *state;
    struct call c;

    int fd = start_accepted(f, &c, "x");
    server_write(fd, "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
                     "HTTP/1.1 410 Gone\r\nContent-Length: 4\r\n\r\ngone");
    run_until_done(f, &c);
    assert_int_equal(c.res.status, 410);
    assert_string_equal(c.kept.headers, "content-length: 4\n");
    assert_string_equal(c.kept.body, "gone");
    close(fd);
}

static void test_head_response_has_no_body(void **state)
{
    struct fixture *f = *state;
    struct call c;

    start(f, &c, "");
    c.req.head = 1;
    int fd = server_accept(f);
    server_read_request(f, fd, "");
    /* The length is the one a GET would have had: no body follows. */
    server_write(fd, "HTTP/1.1 404 Not Found\r\nContent-Length: 100\r\n\r\n");
    run_until_done(f, &c);
    assert_int_equal(c.res.error, 0);
    assert_int_equal(c.res.status, 404);
    assert_int_equal(c.kept.body_len, 0);

    /* And the connection is still in step for the next request. */
    start(f, &c, "y");
    server_read_request(f, fd, "y");
    server_write(fd, http_ok);
    run_until_done(f, &c);
    assert_int_equal(c.res.status, 200);
    close(fd);
}

/* ---- the http connector on both transports ---- */

struct outcome {
    int done;
    struct connector_result res; /* pointers cleared: see kept */
    struct kept kept;
};

static void on_complete(void *engine, void *token,
                        const struct connector_result *res)
{
    struct outcome *o = token;

    (void)engine;
    o->done++;
    o->res = *res;
    keep(&o->kept, res->response_headers, res->response_header_count,
         res->body, res->body_len);
    o->res.response_headers = NULL;
    o->res.body = NULL;
}

static void *opt_field(void *ctx, const char *name)
{
    for (const struct opt_spec *o = http_connector.options; o->name; o++) {
        if (strcmp(o->name, name) == 0) {
            return (char *)ctx + o->offset;
        }
    }
    fail_msg("no option %s", name);
    return NULL;
}

/* Opens an http sink on the scripted server's URL with this path (and
 * query), headers (name, value, ..., NULL) configured. */
static void sink_open(struct fixture *f, const char *path,
                      const char *const *headers)
{
    struct opt_map *map;
    struct sl_error err;
    char text[256];
    size_t n = 0;

    f->sink = calloc(1, http_connector.ctx_size);
    snprintf(text, sizeof(text), "http://%s127.0.0.1:%s%s",
             f->userinfo != NULL ? f->userinfo : "", f->port, path);
    *(char **)opt_field(f->sink, "url") = strdup(text);
    *(int *)opt_field(f->sink, "method") = 0; /* POST */
    *(char **)opt_field(f->sink, "content_type") = strdup("application/json");
    *(int64_t *)opt_field(f->sink, "timeout") = 2000;
    *(int64_t *)opt_field(f->sink, "connect_timeout") = 1000;
    *(int *)opt_field(f->sink, "forward_headers") = 1;
    /* Every method these tests override with (cfg.c's default is POST,
     * PUT and PATCH). */
    static char *methods[] = {"PUT", "PATCH", "HEAD", "DELETE"};
    *(struct opt_list *)opt_field(f->sink, "methods") =
        (struct opt_list){4, methods};
    map = opt_field(f->sink, "headers");
    while (headers != NULL && headers[2 * n] != NULL) {
        n++;
    }
    map->count = n;
    map->keys = calloc(n + 1, sizeof(char *));
    map->values = calloc(n + 1, sizeof(char *));
    for (size_t i = 0; i < n; i++) {
        map->keys[i] = strdup(headers[2 * i]);
        map->values[i] = strdup(headers[2 * i + 1]);
    }
    f->host.complete = on_complete;
    f->host.engine = f;
    if (f->curl) {
        /* Proxied through the scripted server itself, which sees the
         * absolute URL in the request line. */
        snprintf(text, sizeof(text), "http://127.0.0.1:%s", f->port);
        setenv("http_proxy", text, 1);
    }
    assert_int_equal(http_connector.open(f->sink, &f->host, &err), 0);
}

static int setup_sink(void **state, int curl)
{
    setup(state);
    ((struct fixture *)*state)->curl = curl;
    return 0;
}

static int setup_lean(void **state)
{
    return setup_sink(state, 0);
}

static int setup_curl(void **state)
{
    return setup_sink(state, 1);
}

static int teardown_sink(void **state)
{
    struct fixture *f = *state;

    if (f->sink != NULL) {
        struct opt_map *map = opt_field(f->sink, "headers");
        http_connector.close(f->sink);
        for (size_t i = 0; i < map->count; i++) {
            free(map->keys[i]);
            free(map->values[i]);
        }
        free(map->keys);
        free(map->values);
        free(*(char **)opt_field(f->sink, "url"));
        free(*(char **)opt_field(f->sink, "content_type"));
        free(f->sink);
    }
    unset_proxies();
    return teardown(state);
}

static struct connector_msg message(const char *value)
{
    return (struct connector_msg){
        .topic = "orders",
        .offset = 7,
        .timestamp_ms = -1,
        .value = value,
        .value_len = strlen(value),
        .dedupe_key = "orders-0-7",
    };
}

static void send_ok(struct fixture *f, const struct connector_msg *msg,
                    struct outcome *o)
{
    struct connector_result res;

    memset(o, 0, sizeof(*o));
    assert_int_equal(http_connector.send(f->sink, msg, o, &res), 0);
}

static void wait_outcome(struct fixture *f, struct outcome *o)
{
    for (int i = 0; i < 400 && !o->done; i++) {
        loop_run_once(f->loop, 10);
    }
    assert_int_equal(o->done, 1);
}

/* Reads one request (head, then a Content-Length body) into buf; returns
 * where its body starts. */
static char *server_read_any(struct fixture *f, int fd, char *buf, size_t cap)
{
    size_t got = 0;

    for (int i = 0; i < 400; i++) {
        loop_run_once(f->loop, 2);
        ssize_t n = recv(fd, buf + got, cap - 1 - got, MSG_DONTWAIT);
        if (n > 0) {
            got += (size_t)n;
        }
        buf[got] = '\0';
        char *end = strstr(buf, "\r\n\r\n");
        if (end == NULL) {
            continue;
        }
        size_t len = 0;
        for (char *h = strstr(buf, "\r\n"); h != NULL && h < end;
             h = strstr(h + 2, "\r\n")) {
            if (strncasecmp(h + 2, "Content-Length:", 15) == 0) {
                len = strtoul(h + 17, NULL, 10);
            }
        }
        if (got >= (size_t)(end + 4 - buf) + len) {
            return end + 4;
        }
    }
    fail_msg("request not received: %s", buf);
    return NULL;
}

/* How many times header name is in the request head; *value is the
 * first one's value (up to its CR). */
static int request_header(const char *req, const char *name, char *value,
                          size_t cap)
{
    const char *end = strstr(req, "\r\n\r\n");
    int count = 0;

    value[0] = '\0';
    for (const char *h = strstr(req, "\r\n"); h != NULL && h < end;
         h = strstr(h + 2, "\r\n")) {
        size_t len = strlen(name);
        if (strncasecmp(h + 2, name, len) == 0 && h[2 + len] == ':') {
            if (count++ == 0) {
                const char *v = h + 3 + len + (h[3 + len] == ' ');
                snprintf(value, cap, "%.*s", (int)strcspn(v, "\r"), v);
            }
        }
    }
    return count;
}

/* The request line that target (origin-form) takes on f's transport. */
static void expect_request_line(struct fixture *f, const char *req,
                                const char *method, const char *target)
{
    char want[512];

    snprintf(want, sizeof(want), "%s %s%s%s HTTP/1.1\r\n", method,
             f->curl ? "http://127.0.0.1:" : "", f->curl ? f->port : "",
             target);
    if (strncmp(req, want, strlen(want)) != 0) {
        fail_msg("want request line %s got %.*s", want,
                 (int)strcspn(req, "\r"), req);
    }
}

/* Answers the request on fd with text and closes; one connection per
 * request keeps both transports' reuse out of the picture. */
static void answer(int fd, const char *text)
{
    server_write(fd, text);
    close(fd);
}

/* Sends msg, reads its request into req and answers it with reply; returns
 * where the request's body starts, once the outcome arrived. */
static char *exchange(struct fixture *f, const struct connector_msg *msg,
                      struct outcome *o, char *req, size_t cap,
                      const char *reply)
{
    send_ok(f, msg, o);
    int fd = server_accept(f);
    char *body = server_read_any(f, fd, req, cap);
    answer(fd, reply);
    wait_outcome(f, o);
    return body;
}

static const char *const sink_headers[] = {"Authorization", "Bearer cfg",
                                           "X-Tenant", "all", NULL};

static void test_overrides_shape_the_request(void **state)
{
    struct fixture *f = *state;
    struct outcome o;
    char req[8192], v[256];
    static const char trace[] = "a\tb \xc3\xbc!";
    const struct sl_header add[] = {
        {"authorization", "Bearer msg", 10},
        {"X-Trace", trace, sizeof(trace) - 1},
        {"Content-Type", "text/csv", 8},
        {"X-Empty", NULL, 0},
    };
    struct connector_msg msg = message("v1");

    sink_open(f, "/api", sink_headers);
    msg.method = "PUT";
    msg.path = "/orders/7?x=1";
    msg.request_headers = add;
    msg.request_header_count = 4;
    char *body = exchange(f, &msg, &o, req, sizeof(req), http_ok);
    assert_int_equal(o.res.status, CONNECTOR_OK);
    expect_request_line(f, req, "PUT", "/api/orders/7?x=1");
    assert_string_equal(body, "v1");
    /* Added, and replacing the configured ones of the same name. */
    assert_int_equal(request_header(req, "Authorization", v, sizeof(v)), 1);
    assert_string_equal(v, "Bearer msg");
    assert_int_equal(request_header(req, "Content-Type", v, sizeof(v)), 1);
    assert_string_equal(v, "text/csv");
    assert_int_equal(request_header(req, "X-Trace", v, sizeof(v)), 1);
    assert_string_equal(v, trace); /* as is: tab, UTF-8, DEL */
    assert_int_equal(request_header(req, "X-Empty", v, sizeof(v)), 1);
    assert_string_equal(v, "");
    assert_int_equal(request_header(req, "X-Tenant", v, sizeof(v)), 1);
    assert_string_equal(v, "all");
    assert_int_equal(request_header(req, "Idempotency-Key", v, sizeof(v)), 1);
    assert_int_equal(request_header(req, "Host", v, sizeof(v)), 1);

    /* The next message, without overrides, gets the sink's own. */
    msg = message("v2");
    body = exchange(f, &msg, &o, req, sizeof(req), http_ok);
    expect_request_line(f, req, "POST", "/api");
    assert_string_equal(body, "v2");
    assert_int_equal(request_header(req, "Authorization", v, sizeof(v)), 1);
    assert_string_equal(v, "Bearer cfg");
    assert_int_equal(request_header(req, "Content-Type", v, sizeof(v)), 1);
    assert_string_equal(v, "application/json");
    assert_int_equal(request_header(req, "X-Trace", v, sizeof(v)), 0);

    /* A path without '/' goes after one. */
    msg.path = "orders";
    exchange(f, &msg, &o, req, sizeof(req), http_ok);
    expect_request_line(f, req, "POST", "/api/orders");
}

static void test_path_joins_url_query(void **state)
{
    struct fixture *f = *state;
    struct outcome o;
    char req[8192];
    static const struct {
        const char *path, *target;
    } cases[] = {
        {"/x?y=1", "/api/x?k=v&y=1"},
        {"?y=2", "/api/?k=v&y=2"},
        {"/", "/api/?k=v"},
        {"x#frag", "/api/x?k=v"},
    };

    sink_open(f, "/api/?k=v", NULL);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct connector_msg msg = message("v");
        msg.path = cases[i].path;
        exchange(f, &msg, &o, req, sizeof(req), http_ok);
        expect_request_line(f, req, "POST", cases[i].target);
    }
}

static void test_invalid_overrides_rejected(void **state)
{
    struct fixture *f = *state;
    struct connector_result res;
    struct outcome o;
    char req[8192];
    static const struct sl_header bad_name = {"X Bad", "v", 1};
    static const struct sl_header bad_crlf = {"X-Ok", "s3cret\r\nX: b",
                                                     12};
    static const struct sl_header bad_lf = {"X-Lf", "a\nb", 3};
    static const struct sl_header bad_nul = {"X-Nul", "a\0b", 3};
    static const struct sl_header empty_name = {"", "v", 1};
    static const struct sl_header framing = {"content-length", "1",
                                                    1};
    static const struct {
        const char *method, *path;
        const struct sl_header *header;
        const char *error; /* in the error text */
    } cases[] = {
        {"GE T", NULL, NULL, "method `GE T`"},
        {"POST\r\n", NULL, NULL, "method `POST??`"},
        {"", NULL, NULL, "method ``"},
        {NULL, "/a b", NULL, "path `/a b`"},
        {NULL, "/a\r\nX: y", NULL, "path `/a??X: y`"},
        {NULL, "/\x7f", NULL, "byte 0x7f"},
        {NULL, NULL, &bad_name, "`X Bad`"},
        {NULL, NULL, &empty_name, "name ``"},
        {NULL, NULL, &bad_crlf, "`X-Ok`"},
        {NULL, NULL, &bad_lf, "`X-Lf`"},
        {NULL, NULL, &bad_nul, "`X-Nul`"},
        {NULL, NULL, &framing, "`content-length`"},
    };

    sink_open(f, "/api", NULL);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct connector_msg msg = message("v");
        msg.method = cases[i].method;
        msg.path = cases[i].path;
        msg.request_headers = cases[i].header;
        msg.request_header_count = cases[i].header != NULL;
        memset(&res, 0xa5, sizeof(res));
        assert_int_equal(http_connector.send(f->sink, &msg, &o, &res), -1);
        assert_int_equal(res.status, CONNECTOR_REJECT);
        assert_int_equal(res.http_status, 0);
        assert_int_equal(res.retry_after_ms, -1);
        assert_null(res.response_headers);
        assert_null(res.body);
        if (strstr(res.error, cases[i].error) == NULL) {
            fail_msg("case %zu: `%s` not in `%s`", i, cases[i].error,
                     res.error);
        }
        assert_null(strstr(res.error, "s3cret")); /* values never shown */
    }
    /* No request went out, and every slot is still free. */
    assert_false(server_connected(f));
    struct outcome o2;
    struct connector_msg ok = message("v");
    send_ok(f, &ok, &o);
    send_ok(f, &ok, &o2);
    for (int i = 0; i < 2; i++) {
        int fd = server_accept(f);
        assert_true(fd >= 0);
        server_read_any(f, fd, req, sizeof(req));
        answer(fd, http_ok);
    }
    wait_outcome(f, &o);
    wait_outcome(f, &o2);
}

static void test_failed_response_handed_over(void **state)
{
    struct fixture *f = *state;
    struct outcome o;
    char req[8192];
    static char body[3000];
    char head[256];
    struct connector_msg msg = message("v");

    for (size_t i = 0; i < sizeof(body); i++) {
        body[i] = (char)('a' + i % 26);
    }
    body[3] = '\n'; /* shown as a space in the error */
    sink_open(f, "/api", NULL);
    send_ok(f, &msg, &o);
    int fd = server_accept(f);
    server_read_any(f, fd, req, sizeof(req));
    snprintf(head, sizeof(head),
             "HTTP/1.1 503 Service Unavailable\r\nX-Request-ID: r-1\r\n"
             "Retry-After: 3\r\nX-MiXeD:  v  \r\nContent-Length: %zu\r\n"
             "Connection: close\r\n\r\n",
             sizeof(body));
    server_write(fd, head);
    assert_int_equal(write(fd, body, sizeof(body)), (ssize_t)sizeof(body));
    close(fd);
    wait_outcome(f, &o);
    assert_int_equal(o.res.status, CONNECTOR_RETRY);
    assert_int_equal(o.res.http_status, 503);
    assert_int_equal(o.res.retry_after_ms, 3000);
    assert_true(o.kept.set);
    assert_string_equal(o.kept.headers,
                        "x-request-id: r-1\nretry-after: 3\nx-mixed: v\n"
                        "content-length: 3000\nconnection: close\n");
    assert_int_equal(o.kept.body_len, CONNECTOR_BODY_MAX);
    assert_memory_equal(o.kept.body, body, CONNECTOR_BODY_MAX);
    assert_int_equal(strncmp(o.res.error, "HTTP 503: abc efgh", 18), 0);

    /* A 2xx hands over nothing. */
    exchange(f, &msg, &o, req, sizeof(req),
             "HTTP/1.1 200 OK\r\nX-Request-ID: r-2\r\nContent-Length: 2\r\n"
             "\r\nok");
    assert_int_equal(o.res.status, CONNECTOR_OK);
    assert_false(o.kept.set);
    assert_string_equal(o.res.error, "");

    /* A failure without body or headers of note still says it was a
     * response: the pointers are set, the lengths what arrived. */
    exchange(f, &msg, &o, req, sizeof(req),
             "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
    assert_int_equal(o.res.status, CONNECTOR_REJECT);
    assert_true(o.kept.set);
    assert_int_equal(o.kept.body_len, 0);
    assert_string_equal(o.res.error, "HTTP 400");
}

static void test_classification(void **state)
{
    struct fixture *f = *state;
    struct outcome o;
    char req[8192], text[128];
    static const struct {
        int status;
        enum connector_status want;
    } cases[] = {
        {200, CONNECTOR_OK},      {204, CONNECTOR_OK},
        {299, CONNECTOR_OK},      {408, CONNECTOR_RETRY},
        {425, CONNECTOR_RETRY},   {429, CONNECTOR_RETRY},
        {500, CONNECTOR_RETRY},   {502, CONNECTOR_RETRY},
        {503, CONNECTOR_RETRY},   {504, CONNECTOR_RETRY},
        {501, CONNECTOR_REJECT},  {505, CONNECTOR_REJECT},
        {507, CONNECTOR_REJECT},  {409, CONNECTOR_REJECT},
        {400, CONNECTOR_REJECT},  {401, CONNECTOR_REJECT},
        {404, CONNECTOR_REJECT},  {422, CONNECTOR_REJECT},
        {302, CONNECTOR_REJECT},  {304, CONNECTOR_REJECT},
    };
    struct connector_msg msg = message("v");

    sink_open(f, "/api", NULL);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        snprintf(text, sizeof(text),
                 "HTTP/1.1 %d Whatever\r\nContent-Length: 0\r\n\r\n",
                 cases[i].status);
        exchange(f, &msg, &o, req, sizeof(req), text);
        assert_int_equal(o.res.http_status, cases[i].status);
        if (o.res.status != cases[i].want) {
            fail_msg("HTTP %d: got %d, want %d", cases[i].status,
                     (int)o.res.status, (int)cases[i].want);
        }
    }
}

static void test_no_response_is_retried(void **state)
{
    struct fixture *f = *state;
    struct connector_result res;
    struct outcome o;
    char req[8192];
    struct connector_msg msg = message("v");

    sink_open(f, "/api", NULL);
    /* Closed without an answer. */
    send_ok(f, &msg, &o);
    int fd = server_accept(f);
    server_read_any(f, fd, req, sizeof(req));
    close(fd);
    wait_outcome(f, &o);
    assert_int_equal(o.res.status, CONNECTOR_RETRY);
    assert_int_equal(o.res.http_status, 0);
    assert_false(o.kept.set);

    /* Refused: synchronously or through complete(), a retry either way. */
    close(f->listener);
    f->listener = -1;
    memset(&o, 0, sizeof(o));
    if (http_connector.send(f->sink, &msg, &o, &res) == 0) {
        wait_outcome(f, &o);
        res = o.res;
    }
    assert_int_equal(res.status, CONNECTOR_RETRY);
    assert_int_equal(res.http_status, 0);
    assert_null(res.response_headers);
    assert_null(res.body);
}

static void test_head_override(void **state)
{
    struct fixture *f = *state;
    struct outcome o;
    char req[8192], v[64];
    struct connector_msg msg = message("ignored");

    sink_open(f, "/api", NULL);
    msg.method = "HEAD";
    send_ok(f, &msg, &o);
    int fd = server_accept(f);
    char *body = server_read_any(f, fd, req, sizeof(req));
    expect_request_line(f, req, "HEAD", "/api");
    assert_string_equal(body, "");
    assert_int_equal(request_header(req, "Content-Length", v, sizeof(v)), 0);
    /* No body follows, whatever the length says; the connection stays
     * open, so only knowing it was a HEAD ends the response. */
    server_write(fd, "HTTP/1.1 404 Not Found\r\nContent-Length: 50\r\n\r\n");
    for (int i = 0; i < 50 && !o.done; i++) {
        loop_run_once(f->loop, 10); /* well before the 2 s timeout */
    }
    assert_int_equal(o.done, 1);
    assert_int_equal(o.res.status, CONNECTOR_REJECT);
    assert_int_equal(o.res.http_status, 404);
    assert_int_equal(o.kept.body_len, 0);
    close(fd);

    /* The slot's next request is a POST again, with its body. */
    msg = message("v");
    body = exchange(f, &msg, &o, req, sizeof(req), http_ok);
    expect_request_line(f, req, "POST", "/api");
    assert_string_equal(body, "v");
}

static void test_url_credentials_sent(void **state)
{
    struct fixture *f = *state;
    struct outcome o;
    char req[8192], v[64];
    struct connector_msg msg = message("v");

    f->userinfo = "u:p@";
    sink_open(f, "/api", NULL);
    exchange(f, &msg, &o, req, sizeof(req), http_ok);
    assert_int_equal(o.res.status, CONNECTOR_OK);
    assert_int_equal(request_header(req, "Authorization", v, sizeof(v)), 1);
    assert_string_equal(v, "Basic dTpw");
}

#define BOTH(fn)                                                              \
    cmocka_unit_test_setup_teardown(fn, setup_lean, teardown_sink),           \
        cmocka_unit_test_setup_teardown(fn, setup_curl, teardown_sink)

/* Retry-After as RFC 9110 has it: delay-seconds or an HTTP-date, in any
 * of the three date formats, against the time given. */
static void test_retry_after_values(void **state)
{
    const time_t now = 1445412450; /* Wed, 21 Oct 2015 07:27:30 GMT */

    (void)state;
    assert_int_equal(http1_retry_after_ms("120", 3, now), 120000);
    assert_int_equal(http1_retry_after_ms(" 7 \r\n", 5, now), 7000);
    assert_int_equal(http1_retry_after_ms("0", 1, now), 0);
    assert_int_equal(http1_retry_after_ms("Wed, 21 Oct 2015 07:28:00 GMT",
                                          29, now),
                     30000);
    assert_int_equal(http1_retry_after_ms("Wednesday, 21-Oct-15 07:28:00 GMT",
                                          33, now),
                     30000);
    assert_int_equal(http1_retry_after_ms("Wed Oct 21 07:28:00 2015", 24,
                                          now),
                     30000);
    /* A date in the past: retry now (the policy's backoff still waits). */
    assert_int_equal(http1_retry_after_ms("Wed, 21 Oct 2015 07:00:00 GMT",
                                          29, now),
                     0);
    assert_int_equal(http1_retry_after_ms("soon", 4, now), -1);
    assert_int_equal(http1_retry_after_ms("-5", 2, now), -1);
    assert_int_equal(http1_retry_after_ms("", 0, now), -1);
    assert_int_equal(http1_retry_after_ms("   ", 3, now), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_keep_alive_reuses_connection,
                                        setup, teardown),
        cmocka_unit_test(test_retry_after_values),
        cmocka_unit_test_setup_teardown(test_chunked_with_retry_after, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_retry_after_as_date, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_close_delimited_body, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_stale_keep_alive_is_resent_once,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_garbage_is_a_protocol_error,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_silent_server_times_out, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_reset_before_answer_is_an_error,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_refused_connection, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_nothing_kept_on_2xx, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_failed_response_bounded, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_failed_response_in_pieces, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_interim_response_skipped, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_head_response_has_no_body, setup,
                                        teardown),
        BOTH(test_overrides_shape_the_request),
        BOTH(test_path_joins_url_query),
        BOTH(test_invalid_overrides_rejected),
        BOTH(test_failed_response_handed_over),
        BOTH(test_classification),
        BOTH(test_no_response_is_retried),
        BOTH(test_head_override),
        BOTH(test_url_credentials_sent),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
