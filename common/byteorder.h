/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: unaligned big/little-endian loads and stores. */
#ifndef CLOOP_BYTEORDER_H
#define CLOOP_BYTEORDER_H

#include <stdint.h>

static inline uint32_t
load_be32 (const void *p)
{
  const unsigned char *b = p;
  return ((uint32_t) b[0] << 24) | ((uint32_t) b[1] << 16) |
         ((uint32_t) b[2] << 8) | b[3];
}

static inline uint64_t
load_be64 (const void *p)
{
  const unsigned char *b = p;
  return ((uint64_t) load_be32 (b) << 32) | load_be32 (b + 4);
}

static inline uint32_t
load_le32 (const void *p)
{
  const unsigned char *b = p;
  return ((uint32_t) b[3] << 24) | ((uint32_t) b[2] << 16) |
         ((uint32_t) b[1] << 8) | b[0];
}

static inline uint64_t
load_le64 (const void *p)
{
  const unsigned char *b = p;
  return ((uint64_t) load_le32 (b + 4) << 32) | load_le32 (b);
}

static inline void
store_be32 (void *p, uint32_t v)
{
  unsigned char *b = p;
  b[0] = v >> 24; b[1] = v >> 16; b[2] = v >> 8; b[3] = v;
}

static inline void
store_be64 (void *p, uint64_t v)
{
  store_be32 (p, v >> 32);
  store_be32 ((unsigned char *) p + 4, (uint32_t) v);
}

static inline void
store_le64 (void *p, uint64_t v)
{
  unsigned char *b = p;
  for (int i = 0; i < 8; i++)
    b[i] = v >> (8 * i);
}

#endif /* CLOOP_BYTEORDER_H */
