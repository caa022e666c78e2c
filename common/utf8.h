/* utf8.h -- the one UTF-8 decoder of sluice, and the JSON string escape
 * of the short texts it writes (log lines, the publisher's answers). */
#ifndef SLUICE_UTF8_H
#define SLUICE_UTF8_H

#include <stddef.h>
#include <stdint.h>

/* The length (1 to 4) of the valid UTF-8 sequence at p, n >= 1 bytes
 * left, with its code point in *cp (cp may be NULL); 0 when it is not one:
 * a stray continuation byte, an overlong form, a surrogate, past
 * U+10FFFF, or cut short. */
size_t utf8_decode(const unsigned char *p, size_t n, uint32_t *cp);

/* The NUL-terminated in as the contents of a JSON string (no quotes):
 * '"' and '\\' escaped, control bytes and DEL as \u00XX, UTF-8 as it
 * is, and each byte that is not UTF-8 as \ufffd, so that the output is
 * JSON whatever the input; cut at a whole piece (never inside a
 * character) to fit cap (>= 1) with its NUL. Returns the length written. */
size_t utf8_json_escape(char *out, size_t cap, const char *in);

#endif
