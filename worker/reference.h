/* reference.h -- docs/pipeline-reference.md, generated from the option
 * tables so that an option is described in exactly one place. */
#ifndef SLUICE_REFERENCE_H
#define SLUICE_REFERENCE_H

#include <stdio.h>

/* Writes the pipeline reference as Markdown to out. */
void reference_write(FILE *out);

/* Writes a JSON Schema (draft-07) of the pipeline format to out, from the
 * same tables: what editors (yaml-language-server) check and complete. */
void reference_write_schema(FILE *out);

#endif
