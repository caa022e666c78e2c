/* jsonnum.h -- the JSON number grammar (RFC 8259), shared by the scanners
 * that check JSON without building a tree (keysrc.c, reconcile.c). */
#ifndef SLUICE_JSONNUM_H
#define SLUICE_JSONNUM_H

/* The end of the number that starts at p (before end), or NULL when p
 * starts none, with *why saying what is wrong ("invalid number", "invalid
 * number (a leading zero)"). *real: it has a fraction or an exponent;
 * *digits: where its integer digits start (past a '-'). */
const unsigned char *jsonnum_end(const unsigned char *p,
                                 const unsigned char *end, int *real,
                                 const unsigned char **digits,
                                 const char **why);

#endif
