/* listener.c -- a listening TCP socket from host:port (listener.h). */
#include "listener.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"

int listener_open(const char *what, const char *listen_at, int *port,
                  struct sl_error *err)
{
    char host[256];
    const char *colon = strrchr(listen_at, ':');
    const char *h = listen_at;
    size_t hlen;
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV},
                    *res = NULL;
    int fd = -1, rc, one = 1;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);

    if (colon == NULL || colon[1] == '\0') {
        return sl_error_set(err, "%s: expected host:port, found \"%s\"",
                            what, listen_at);
    }
    hlen = (size_t)(colon - listen_at);
    if (hlen >= 2 && h[0] == '[' && h[hlen - 1] == ']') {
        h++;
        hlen -= 2;
    }
    if (hlen >= sizeof(host)) {
        return sl_error_set(err, "%s: host name too long", what);
    }
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    rc = getaddrinfo(hlen > 0 ? host : NULL, colon + 1, &hints, &res);
    if (rc != 0) {
        return sl_error_set(err, "%s %s: %s", what, listen_at,
                            gai_strerror(rc));
    }
    fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        freeaddrinfo(res);
        return sl_error_set(err, "%s %s: %s", what, listen_at,
                            strerror(errno));
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, res->ai_addr, res->ai_addrlen) != 0 ||
        listen(fd, 64) != 0 ||
        getsockname(fd, (struct sockaddr *)&ss, &sl) != 0) {
        int e = errno;
        freeaddrinfo(res);
        close(fd);
        return sl_error_set(err, "%s %s: %s", what, listen_at,
                            strerror(e));
    }
    freeaddrinfo(res);
    *port = ntohs(ss.ss_family == AF_INET6
                      ? ((struct sockaddr_in6 *)&ss)->sin6_port
                      : ((struct sockaddr_in *)&ss)->sin_port);
    return fd;
}

void listener_mhd_log(void *arg, const char *fmt, va_list ap)
{
    char msg[512];

    vsnprintf(msg, sizeof(msg), fmt, ap);
    msg[strcspn(msg, "\n")] = '\0';
    log_warn("%s: %s", (const char *)arg, msg);
}
