/* listener.h -- a listening TCP socket for the servers sluice runs (the
 * admin server, the publisher's httpd). */
#ifndef SLUICE_LISTENER_H
#define SLUICE_LISTENER_H

#include <stdarg.h>

#include "common.h"

/* Binds and listens on listen_at, `host:port` (`[v6]:port`, an empty
 * host: every address; port 0: a free one, written to *port). Returns the
 * socket, or -1 with err filled; what names the option in errors (e.g.
 * "admin.listen"). */
int listener_open(const char *what, const char *listen_at, int *port,
                  struct sl_error *err);

/* libmicrohttpd's MHD_OPTION_EXTERNAL_LOGGER for the admin server: its
 * message as one warning line, after the server's name (arg: a string). */
void listener_mhd_log(void *arg, const char *fmt, va_list ap);

#endif
