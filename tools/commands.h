/* SPDX-License-Identifier: BSD-3-Clause */
/* cloop-store: the subcommands.  Each takes the arguments after the
 * subcommand name (argv[0] is the subcommand) and returns the process
 * exit status (tool.h, EXIT_*). */
#ifndef CLOOP_STORE_COMMANDS_H
#define CLOOP_STORE_COMMANDS_H

int cmd_create (int argc, char **argv);
int cmd_keygen (int argc, char **argv);
int cmd_sign (int argc, char **argv);
int cmd_verify (int argc, char **argv);
int cmd_info (int argc, char **argv);
int cmd_diff (int argc, char **argv);
int cmd_hashes (int argc, char **argv);
int cmd_profile (int argc, char **argv);
int cmd_warm (int argc, char **argv);
int cmd_cache (int argc, char **argv);

#endif /* CLOOP_STORE_COMMANDS_H */
