/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: where the list of exports comes from.
 *
 * Either a catalogue file (exports=FILE): one export per line,
 *
 *   NAME LOCATION [KEY=VALUE ...]
 *
 * separated by blanks; '#' starts a comment line; blank lines are
 * skipped.  LOCATION is an http:// or https:// URL, or a path (a
 * relative path is taken from the catalogue file's folder; a folder is
 * a block store, served through its "index").  The keys are the
 * plugin's own, and are not interpreted here.
 *
 * Or a folder (dir=DIR): every cloop image (any dialect, recognised
 * by its content, not its name) and every block store (a folder
 * holding an "index") directly inside DIR, named by its file or folder
 * name, in name order.  An ISO9660 image NAME gives one export per
 * cloop file KNOPPIX, KNOPPIX1, ... in its /KNOPPIX folder, named
 * NAME/KNOPPIX, NAME/KNOPPIX1, ... (in the ISO's order), with the key
 * iso-file=/KNOPPIX/KNOPPIXn.  Hidden names (starting with '.') and
 * anything else are skipped.
 *
 * Knows nothing of nbdkit.
 */
#ifndef CLOOP_CATALOGUE_H
#define CLOOP_CATALOGUE_H

#include <stddef.h>

#include "error.h"

/* Limits on a catalogue file. */
#define CATALOGUE_FILE_MAX (16 * 1024 * 1024)
#define CATALOGUE_EXPORTS_MAX 10000
#define CATALOGUE_KEYS_MAX 64

struct catalogue_entry {
  unsigned line;                /* line number in the file; 0 for dir= */
  const char *name;
  const char *location;         /* URL or absolute path */
  size_t nkeys;                 /* KEY=VALUE pairs, in order */
  const char *keys[CATALOGUE_KEYS_MAX];
  const char *values[CATALOGUE_KEYS_MAX];
};

struct catalogue;

/* Read and parse the catalogue file path.  NULL with err set, naming
 * the file and, for a bad line, its number. */
struct catalogue *catalogue_read (const char *path, struct cloop_err *err);

/* List the images and stores directly inside dir.  Each entry that is
 * skipped is reported through skipped (may be NULL) with its path and
 * why.  NULL with err set if dir cannot be read. */
struct catalogue *catalogue_scan_dir (const char *dir,
                                      void (*skipped) (const char *path,
                                                       const char *why),
                                      struct cloop_err *err);

/* Number of exports, and the i-th.  Strings live until catalogue_free. */
size_t catalogue_count (const struct catalogue *cat);
const struct catalogue_entry *catalogue_entry (const struct catalogue *cat,
                                               size_t i);

void catalogue_free (struct catalogue *cat);

#endif /* CLOOP_CATALOGUE_H */
