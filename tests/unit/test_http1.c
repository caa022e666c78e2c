/* test_http1.c -- the lean HTTP/1.1 client against a scripted server in
 * the test itself: keep-alive reuse, chunked and close-delimited bodies,
 * Retry-After, the stale keep-alive resend, protocol errors, timeouts and
 * refused connections. */
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
};

struct call {
    struct http1_request req;
    int done;
    struct http1_result res;
    char head[128];
};

static void on_done(struct http1_request *req, const struct http1_result *res)
{
    struct call *c = (struct call *)req;

    c->done++;
    c->res = *res;
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    struct sockaddr_in a = {.sin_family = AF_INET};
    socklen_t len = sizeof(a);
    struct sl_error err;

    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    f->loop = loop_new(&err);
    f->host = (struct connector_host){.sink_name = "test",
                                      .max_in_flight = 2};
    loop_fill_host(f->loop, &f->host);
    f->listener = socket(AF_INET, SOCK_STREAM, 0);
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

/* Runs the loop so the client connects and writes, then accepts. */
static int server_accept(struct fixture *f)
{
    for (int i = 0; i < 5; i++) {
        loop_run_once(f->loop, 5);
    }
    return accept(f->listener, NULL, NULL);
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

static void server_write(int fd, const char *text)
{
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
}

static void test_keep_alive_reuses_connection(void **state)
{
    struct fixture *f = *state;
    struct call c;

    start(f, &c, "one");
    int fd = server_accept(f);
    server_read_request(f, fd, "one");
    server_write(fd, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    run_until_done(f, &c);
    assert_int_equal(c.res.error, 0);
    assert_int_equal(c.res.status, 200);
    assert_string_equal(c.res.body, "ok");
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

    start(f, &c, "x");
    int fd = server_accept(f);
    server_read_request(f, fd, "x");
    server_write(fd, "HTTP/1.1 503 Service Unavailable\r\n"
                     "Transfer-Encoding: chunked\r\nRetry-After: 7\r\n\r\n"
                     "4\r\nbusy\r\n0\r\n\r\n");
    run_until_done(f, &c);
    assert_int_equal(c.res.error, 0);
    assert_int_equal(c.res.status, 503);
    assert_int_equal(c.res.retry_after_ms, 7000);
    assert_string_equal(c.res.body, "busy");
    close(fd);
}

static void test_close_delimited_body(void **state)
{
    struct fixture *f = *state;
    struct call c;

    start(f, &c, "x");
    int fd = server_accept(f);
    server_read_request(f, fd, "x");
    server_write(fd, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nhello");
    close(fd);
    run_until_done(f, &c);
    assert_int_equal(c.res.error, 0);
    assert_int_equal(c.res.status, 200);
    assert_string_equal(c.res.body, "hello");
}

static void test_stale_keep_alive_is_resent_once(void **state)
{
    struct fixture *f = *state;
    struct call c;

    start(f, &c, "a");
    int fd = server_accept(f);
    server_read_request(f, fd, "a");
    server_write(fd, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
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
    server_write(fd2, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    run_until_done(f, &c);
    assert_int_equal(c.res.error, 0);
    assert_int_equal(c.res.status, 200);
    close(fd2);
}

static void test_garbage_is_a_protocol_error(void **state)
{
    struct fixture *f = *state;
    struct call c;

    start(f, &c, "x");
    int fd = server_accept(f);
    server_read_request(f, fd, "x");
    server_write(fd, "SMTP READY\r\n\r\n");
    run_until_done(f, &c);
    assert_int_equal(c.res.error, EPROTO);
    close(fd);
}

static void test_silent_server_times_out(void **state)
{
    struct fixture *f = *state;
    struct call c;

    start(f, &c, "x");
    int fd = server_accept(f);
    server_read_request(f, fd, "x");
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
    start(f, &c, "x");
    int fd = server_accept(f);
    server_read_request(f, fd, "x");
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_keep_alive_reuses_connection,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_chunked_with_retry_after, setup,
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
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
