/* cfgtransform.h -- a pipeline's scripts, loaded from its cfg.
 *
 * lua/transform.h knows nothing of struct cfg (a lower floor includes
 * nothing of the worker): these fill its struct transform_spec from a
 * cfg and report its errors the way the config loader reports its own. */
#ifndef SLUICE_CFGTRANSFORM_H
#define SLUICE_CFGTRANSFORM_H

#include "cfg.h"
#include "transform.h"

/* transform_new on cfg's scripts (cfg->transform, dedupe.key lua:F, each
 * sink's transform and retry). The result does not point into cfg.
 * NULL with err filled ("file:line:col: key: ..."). */
transform_t *cfg_transform_new(const struct cfg *cfg, struct sl_error *err);

/* transform_check on cfg's scripts: every error into errs, as
 * "file:line:col: key: ..." at the YAML key that names the script.
 * 0 or -1. */
int cfg_transform_check(const struct cfg *cfg, struct cfg_errors *errs);

#endif
