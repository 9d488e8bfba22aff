/* SPDX-License-Identifier: BSD-3-Clause */
/* cloop-store: helpers shared by every subcommand (messages, exit
 * codes, number parsing, loading an index and its signature file).
 */
#ifndef CLOOP_STORE_TOOL_H
#define CLOOP_STORE_TOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "error.h"
#include "store.h"

/* Exit codes (documented in cloop-store.pod, EXIT STATUS). */
#define EXIT_OK          0
#define EXIT_FAIL        1      /* verify: blocks missing or corrupt */
#define EXIT_UNTRUSTED   2      /* verify: index malformed, unreadable,
                                 * badly signed, untrusted or expired */
#define EXIT_USAGE       64     /* bad command line */

/* Print "cloop-store: MESSAGE\n" to stderr. */
void tool_error (const char *fmt, ...)
  __attribute__ ((format (printf, 1, 2)));

/* Print "cloop-store SUBCOMMAND: MESSAGE" and a hint to use --help;
 * returns EXIT_USAGE. */
int tool_usage_error (const char *cmd, const char *fmt, ...)
  __attribute__ ((format (printf, 2, 3)));

/* Parse the options of a command that has none but --help.  Returns
 * 0 to go on (optind at the first argument), -1 after printing usage
 * for --help, or EXIT_USAGE after an error message. */
int tool_parse_no_options (const char *cmd, int argc, char **argv,
                           void (*usage) (FILE *));

/* Parse a whole decimal unsigned number in [min, max].  0, or -1 (the
 * caller names the option in its message). */
int parse_u64 (const char *s, uint64_t min, uint64_t max, uint64_t *out);

/* Parse a size: a decimal number with an optional K, M or G suffix
 * (binary multiples, "KiB"/"MiB" spellings accepted).  0 or -1. */
int parse_size (const char *s, uint64_t *out);

/* Read a whole file of at most max bytes into a new buffer (*buf with
 * a NUL after the *len bytes; caller frees).  0, or -1 with err set
 * (ENOENT etc. from open, EFBIG if larger than max). */
int read_whole_file (const char *path, size_t max, unsigned char **buf,
                     size_t *len, struct cloop_err *err);

/* An index file as loaded from disk. */
struct loaded_index {
  char *path;                   /* as given */
  unsigned char *bytes;         /* exact file contents */
  size_t len;
  struct store_index *idx;      /* parsed */
};

/* Read and parse an index file.  0, or -1 with err set (the message
 * names the path). */
int loaded_index_open (const char *path, struct loaded_index *li,
                       struct cloop_err *err);
void loaded_index_close (struct loaded_index *li);

/* Path of an index's signature file (path + ".sig"; caller frees),
 * NULL on ENOMEM. */
char *signature_path (const char *index_path);

/* Format seconds since the epoch as ISO 8601 UTC ("2024-05-01T12:00:00Z")
 * into out (at least 32 bytes). */
void format_utc (char out[32], uint64_t t);

/* Human-readable size, e.g. "12.3 MiB" (out: at least 32 bytes). */
void format_bytes (char out[32], uint64_t n);

/* Check a store name (docs/FORMAT.md): 1..255 bytes of valid UTF-8
 * without control characters.  NULL if valid, else why not. */
const char *store_name_problem (const char *name);

/* Check a description: at most 4096 bytes of valid UTF-8 without NUL.
 * NULL if valid, else why not. */
const char *store_description_problem (const char *desc);

/* Number of online CPUs (at least 1). */
unsigned online_cpus (void);

#endif /* CLOOP_STORE_TOOL_H */
