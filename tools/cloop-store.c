/* SPDX-License-Identifier: BSD-3-Clause */
/* cloop-store: publish disk images as signed, content-addressed block
 * stores (docs/FORMAT.md) and check them.  This file only dispatches
 * to the subcommands (commands.h). */
#include <config.h>

#include <stdio.h>
#include <string.h>

#include "commands.h"
#include "tool.h"

struct command {
  const char *name;
  int (*run) (int argc, char **argv);
  const char *summary;
};

static const struct command commands[] = {
  { "create", cmd_create, "publish an image (raw or cloop) into a store" },
  { "keygen", cmd_keygen, "make an Ed25519 key pair" },
  { "sign", cmd_sign, "add or replace a signature of an index" },
  { "verify", cmd_verify, "check signature, expiry and every block" },
  { "info", cmd_info, "describe an index" },
  { "diff", cmd_diff, "compare two indexes (download needed)" },
  { "profile", cmd_profile, "embed, remove or show a boot profile" },
  { "hashes", cmd_hashes, "block-hash list of a plain cloop file" },
  { "warm", cmd_warm, "fill an nbdkit-cloop disk cache with a remote image" },
  { "cache", cmd_cache, "verify or trim an nbdkit-cloop disk cache" },
};
#define NCOMMANDS (sizeof commands / sizeof commands[0])

static void
usage (FILE *f)
{
  size_t i;

  fprintf (f, "Usage: cloop-store COMMAND [OPTIONS] ARGS...\n"
           "       cloop-store COMMAND --help\n\nCommands:\n");
  for (i = 0; i < NCOMMANDS; i++)
    fprintf (f, "  %-8s %s\n", commands[i].name, commands[i].summary);
  fprintf (f, "\nSee cloop-store(1).\n");
}

int
main (int argc, char **argv)
{
  size_t i;

  if (argc < 2) {
    usage (stderr);
    return EXIT_USAGE;
  }
  if (strcmp (argv[1], "--help") == 0 || strcmp (argv[1], "-h") == 0 ||
      strcmp (argv[1], "help") == 0) {
    usage (stdout);
    return EXIT_OK;
  }
  if (strcmp (argv[1], "--version") == 0) {
    printf ("cloop-store %s\n", PACKAGE_VERSION);
    return EXIT_OK;
  }
  for (i = 0; i < NCOMMANDS; i++)
    if (strcmp (argv[1], commands[i].name) == 0)
      return commands[i].run (argc - 1, argv + 1);
  tool_error ("unknown command '%s'", argv[1]);
  usage (stderr);
  return EXIT_USAGE;
}
