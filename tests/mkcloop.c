/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: mkcloop, the project's own writer of cloop test vectors.
 *
 *   mkcloop -d DIALECT [-B blocksize] [-c codec[,codec...]]
 *           [--corrupt-block N] [--data-offset N] [--short-last]
 *           [--dup-entry N] [--append N:LEN[:BYTE]] INPUT OUTPUT
 *
 * An independent implementation of the layouts described in
 * research/formats.md section 1 (it deliberately shares no code with
 * index/, so that it cross-checks the reader instead of sharing its
 * bugs).  The whole image is built in memory: test inputs are small.
 *
 * Every dialect zero-pads the last block to the block size (unless
 * --short-last).  Exit
 * status: 0 ok, 1 usage or I/O error, 2 a requested codec is not built
 * into this binary (tests may turn that into a skip).
 */

#include <config.h>

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>
#ifdef HAVE_LIBLZMA
#include <lzma.h>
#endif
#ifdef HAVE_LIBLZ4
#include <lz4.h>
#endif
#ifdef HAVE_LIBLZO2
#include <lzo/lzo1x.h>
#endif
#ifdef HAVE_LIBZSTD
#include <zstd.h>
#endif

#define HEADER_SIZE 136         /* 128-byte preamble + BE32 bs + BE32 n */

static const char *progname = "mkcloop";

/* ------------------------------------------------------------------ */
/* Small helpers. */

static void __attribute__ ((noreturn, format (printf, 1, 2)))
die (const char *fmt, ...)
{
  va_list ap;

  fprintf (stderr, "%s: ", progname);
  va_start (ap, fmt);
  vfprintf (stderr, fmt, ap);
  va_end (ap);
  fputc ('\n', stderr);
  exit (1);
}

static void *
xmalloc (size_t n)
{
  void *p = malloc (n ? n : 1);
  if (p == NULL)
    die ("out of memory");
  return p;
}

/* A growable output image. */
struct image {
  unsigned char *p;
  size_t len, cap;
};

static void
img_reserve (struct image *img, size_t extra)
{
  if (img->len + extra <= img->cap)
    return;
  size_t cap = img->cap ? img->cap : 4096;
  while (cap < img->len + extra)
    cap *= 2;
  img->p = realloc (img->p, cap);
  if (img->p == NULL)
    die ("out of memory");
  img->cap = cap;
}

static void
img_put (struct image *img, const void *data, size_t n)
{
  if (n == 0)
    return;
  img_reserve (img, n);
  memcpy (img->p + img->len, data, n);
  img->len += n;
}

static void
img_zeros (struct image *img, size_t n)
{
  if (n == 0)
    return;
  img_reserve (img, n);
  memset (img->p + img->len, 0, n);
  img->len += n;
}

static void
img_be32 (struct image *img, uint32_t v)
{
  unsigned char b[4] = { v >> 24, v >> 16, v >> 8, v };
  img_put (img, b, 4);
}

static void
img_be64 (struct image *img, uint64_t v)
{
  img_be32 (img, v >> 32);
  img_be32 (img, (uint32_t) v);
}

static void
img_le64 (struct image *img, uint64_t v)
{
  unsigned char b[8];
  for (int i = 0; i < 8; i++)
    b[i] = v >> (8 * i);
  img_put (img, b, 8);
}

/* ------------------------------------------------------------------ */
/* Codecs. */

enum codec { C_ZLIB, C_NONE, C_XZ, C_LZ4, C_LZO, C_ZSTD, C_COUNT };

static const char *codec_names[C_COUNT] = {
  "zlib", "none", "xz", "lz4", "lzo", "zstd"
};

static const char *
codec_name (enum codec c)
{
  return (unsigned) c < C_COUNT ? codec_names[c] : "?";
}

static bool
codec_built (enum codec c)
{
  switch (c) {
  case C_ZLIB: case C_NONE: return true;
#ifdef HAVE_LIBLZMA
  case C_XZ: return true;
#endif
#ifdef HAVE_LIBLZ4
  case C_LZ4: return true;
#endif
#ifdef HAVE_LIBLZO2
  case C_LZO: return true;
#endif
#ifdef HAVE_LIBZSTD
  case C_ZSTD: return true;
#endif
  default: return false;
  }
}

/* Compress in[0..n) with codec c.  Returns a malloc'd buffer and sets
 * *out_len.  Never returns on failure. */
static unsigned char *
compress_block (enum codec c, const unsigned char *in, size_t n,
                size_t *out_len)
{
  unsigned char *out;

  switch (c) {
  case C_NONE:
    out = xmalloc (n);
    memcpy (out, in, n);
    *out_len = n;
    return out;

  case C_ZLIB: {
    uLongf len = compressBound (n);
    out = xmalloc (len);
    if (compress2 (out, &len, in, n, Z_BEST_COMPRESSION) != Z_OK)
      die ("zlib compression failed");
    *out_len = len;
    return out;
  }

#ifdef HAVE_LIBLZMA
  case C_XZ: {
    /* A complete .xz stream with a CRC32 check (what the kernel's
     * xz_dec can verify).  Preset 1 keeps test-vector writing fast. */
    size_t cap = lzma_stream_buffer_bound (n), pos = 0;
    out = xmalloc (cap);
    if (lzma_easy_buffer_encode (1, LZMA_CHECK_CRC32, NULL, in, n,
                                 out, &pos, cap) != LZMA_OK)
      die ("xz compression failed");
    *out_len = pos;
    return out;
  }
#endif

#ifdef HAVE_LIBLZ4
  case C_LZ4: {
    int cap = LZ4_compressBound ((int) n);
    out = xmalloc (cap);
    int r = LZ4_compress_default ((const char *) in, (char *) out,
                                  (int) n, cap);
    if (r <= 0)
      die ("lz4 compression failed");
    *out_len = r;
    return out;
  }
#endif

#ifdef HAVE_LIBLZO2
  case C_LZO: {
    static bool inited;
    if (!inited) {
      if (lzo_init () != LZO_E_OK)
        die ("lzo_init failed");
      inited = true;
    }
    size_t cap = n + n / 16 + 64 + 3;
    lzo_uint len = cap;
    void *work = xmalloc (LZO1X_1_MEM_COMPRESS);
    out = xmalloc (cap);
    if (lzo1x_1_compress (in, n, out, &len, work) != LZO_E_OK)
      die ("lzo compression failed");
    free (work);
    *out_len = len;
    return out;
  }
#endif

#ifdef HAVE_LIBZSTD
  case C_ZSTD: {
    size_t cap = ZSTD_compressBound (n);
    out = xmalloc (cap);
    size_t r = ZSTD_compress (out, cap, in, n, 3);
    if (ZSTD_isError (r))
      die ("zstd compression failed: %s", ZSTD_getErrorName (r));
    *out_len = r;
    return out;
  }
#endif

  default:
    fprintf (stderr, "%s: codec %s not built\n", progname, codec_name (c));
    exit (2);
  }
}

/* ------------------------------------------------------------------ */
/* Dialects. */

enum dialect {
  D_V2, D_V4, D_V4_FOOTER, D_068, D_10, D_SLITAZ_V3, D_DPLASA_V3,
  D_FBSD_V2, D_FBSD_L3, D_FBSD_Z4, D_FBSD_DEDUP,
};

struct dialect_info {
  const char *name;
  enum dialect d;
  unsigned allowed;             /* bit mask of codecs allowed */
  bool mixed;                   /* may cycle through several codecs */
  enum codec dflt;
};

#define BIT(c) (1u << (c))
#define V4_CODECS (BIT (C_ZLIB) | BIT (C_NONE) | BIT (C_XZ) | BIT (C_LZ4) \
                   | BIT (C_LZO))

static const struct dialect_info dialects[] = {
  { "v2",         D_V2,         BIT (C_ZLIB), false, C_ZLIB },
  { "v4",         D_V4,         V4_CODECS,    true,  C_ZLIB },
  { "v4-footer",  D_V4_FOOTER,  V4_CODECS,    true,  C_ZLIB },
  { "0.68",       D_068,        BIT (C_ZLIB), false, C_ZLIB },
  { "1.0",        D_10,         BIT (C_ZLIB), false, C_ZLIB },
  { "slitaz-v3",  D_SLITAZ_V3,  BIT (C_ZLIB), false, C_ZLIB },
  { "dplasa-v3",  D_DPLASA_V3,  V4_CODECS,    true,  C_ZLIB },
  { "fbsd-v2",    D_FBSD_V2,    BIT (C_ZLIB), false, C_ZLIB },
  { "fbsd-l3",    D_FBSD_L3,    BIT (C_XZ),   false, C_XZ },
  { "fbsd-z4",    D_FBSD_Z4,    BIT (C_ZSTD), false, C_ZSTD },
  { "fbsd-dedup", D_FBSD_DEDUP, BIT (C_ZLIB) | BIT (C_XZ) | BIT (C_ZSTD),
    false, C_ZLIB },
};

/* V4 per-block compressor codes (top nibble of each pointer). */
static unsigned
v4_code (enum codec c)
{
  switch (c) {
  case C_ZLIB: return 0;
  case C_NONE: return 1;
  case C_XZ: return 2;
  case C_LZ4: return 3;
  case C_LZO: return 4;
  default: abort ();
  }
}

/* dplasa V3 per-block flag bits; 0 = stored. */
static uint32_t
dplasa_flags (enum codec c)
{
  switch (c) {
  case C_NONE: return 0;
  case C_ZLIB: return 1u << 1;
  case C_LZO: return 1u << 2;
  case C_XZ: return 1u << 3;
  case C_LZ4: return 1u << 4;
  default: abort ();
  }
}

/* One stored block. */
struct block {
  unsigned char *data;          /* NULL if nothing stored (zero / dup) */
  size_t len;
  enum codec codec;
  uint64_t offset;              /* absolute file offset, set at layout */
  bool zero;                    /* FreeBSD: all-zero, length 0 */
  long dup_of;                  /* FreeBSD dedup: earlier block, or -1 */
  /* --append: extra bytes stored after the block's stream, inside its
   * index range.  append_sector: up to the next 512-byte boundary of
   * the file offset (512 bytes if already aligned), as old mkuzip pads
   * its last block. */
  size_t append_len;
  bool append_sector;
  unsigned char append_byte;
};

/* The 128-byte preamble with sig (e.g. "V2.0") at 0x0B.  A NULL sig
 * gives the 0.68 preamble, which has no version at 0x0B. */
static void
put_preamble (struct image *img, const char *sig, bool freebsd)
{
  char pre[128];

  memset (pre, 0, sizeof pre);
  if (sig == NULL)
    snprintf (pre, sizeof pre,
              "#!/bin/sh\ninsmod cloop.o file=$0 && mount -r -t iso9660"
              " /dev/cloop $1\nexit $?\n");
  else if (freebsd)
    snprintf (pre, sizeof pre,
              "#!/bin/sh\n#%s Format\n(kldstat -qm g_uzip||kldload"
              " geom_uzip)>&-&&mount_cd9660 /dev/`mdconfig -af $0`.uzip"
              " $1\nexit $?\n", sig);
  else
    snprintf (pre, sizeof pre,
              "#!/bin/sh\n#%s Format\nmodprobe cloop file=$0 && mount -r"
              " -t iso9660 /dev/cloop $1\nexit $?\n", sig);
  img_put (img, pre, sizeof pre);
}

static void
put_header (struct image *img, const char *sig, bool freebsd,
            uint32_t bs, uint32_t n)
{
  put_preamble (img, sig, freebsd);
  img_be32 (img, bs);
  img_be32 (img, n);
}

/* Append the stored blocks at the current end of img, setting each
 * block's offset.  Zero-length and dedup'd blocks take the offset of
 * the current end or of their original.  A block's --append bytes
 * follow its stream and count in its length. */
static void
put_blocks (struct image *img, struct block *b, uint32_t n)
{
  for (uint32_t i = 0; i < n; i++) {
    if (b[i].dup_of >= 0)
      b[i].offset = b[b[i].dup_of].offset;
    else {
      b[i].offset = img->len;
      if (b[i].data)
        img_put (img, b[i].data, b[i].len);
      size_t extra = b[i].append_sector ? 512 - img->len % 512
                                        : b[i].append_len;
      img_reserve (img, extra);
      memset (img->p + img->len, b[i].append_byte, extra);
      img->len += extra;
      b[i].len += extra;
    }
  }
}

/* Write the (n+1)-entry offset index at index_pos of img (space must
 * already be reserved there). */
enum index_kind { IDX_BE64, IDX_BE64_V4, IDX_BE32, IDX_LE64 };

/* --dup-entry N: entry N+1 of the index is written as a copy of entry
 * N (a malformed index: block N gets length 0 and block N+1 spans both
 * streams). */
static long dup_entry = -1;

static void
fill_index (struct image *img, size_t index_pos, enum index_kind kind,
            const struct block *b, uint32_t n, uint64_t end)
{
  struct image tmp = { 0 };

  for (uint32_t i = 0; i <= n; i++) {
    uint32_t k = dup_entry >= 0 && (long) i == dup_entry + 1 ? i - 1 : i;
    uint64_t off = k < n ? b[k].offset : end;
    switch (kind) {
    case IDX_BE64: img_be64 (&tmp, off); break;
    case IDX_BE64_V4:
      img_be64 (&tmp, off | (k < n ? (uint64_t) v4_code (b[k].codec) << 60
                             : 0));
      break;
    case IDX_BE32:
      if (off > UINT32_MAX)
        die ("image too large for 32-bit offsets");
      img_be32 (&tmp, off);
      break;
    case IDX_LE64: img_le64 (&tmp, off); break;
    }
  }
  memcpy (img->p + index_pos, tmp.p, tmp.len);
  free (tmp.p);
}

/* Header first: header, index, blocks (V2, V4, 0.68, 1.0, FreeBSD). */
static void
layout_header_first (struct image *img, const char *sig, bool freebsd,
                     enum index_kind kind, uint32_t bs,
                     struct block *b, uint32_t n)
{
  size_t entry = kind == IDX_BE32 ? 4 : 8;

  put_header (img, sig, freebsd, bs, n);
  size_t index_pos = img->len;
  img_zeros (img, entry * ((size_t) n + 1));
  put_blocks (img, b, n);
  fill_index (img, index_pos, kind, b, n, img->len);
  if (freebsd && img->len % 512)  /* mkuzip pads to a sector */
    img_zeros (img, 512 - img->len % 512);
}

/* V4 header last: [lead] blocks, index, header (last 136 bytes). */
static void
layout_v4_footer (struct image *img, uint64_t lead, uint32_t bs,
                  struct block *b, uint32_t n)
{
  img_zeros (img, lead);
  put_blocks (img, b, n);
  uint64_t end = img->len;
  size_t index_pos = img->len;
  img_zeros (img, 8 * ((size_t) n + 1));
  fill_index (img, index_pos, IDX_BE64_V4, b, n, end);
  put_header (img, "V4.0", false, bs, n);
}

/* SliTaz/fusecloop V3.0: header with n = 0xFFFFFFFF, blocks, n BE32
 * sizes, tail {BE32 4, BE32 n}. */
static void
layout_slitaz (struct image *img, uint32_t bs, struct block *b, uint32_t n)
{
  put_header (img, "V3.0", false, bs, UINT32_MAX);
  put_blocks (img, b, n);
  for (uint32_t i = 0; i < n; i++) {
    if (b[i].len > UINT32_MAX)
      die ("block too large");
    img_be32 (img, b[i].len);
  }
  img_be32 (img, 4);
  img_be32 (img, n);
}

/* dplasa cloop-3: [lead] blocks, pad to 4096, index footer. */
static void
layout_dplasa (struct image *img, uint64_t lead, uint32_t bs,
               uint64_t original_size, struct block *b, uint32_t n)
{
  img_zeros (img, lead);
  put_blocks (img, b, n);
  uint64_t end = img->len;
  if (img->len % 4096)
    img_zeros (img, 4096 - img->len % 4096);
  uint64_t x = img->len;
  img_be32 (img, n);
  img_be32 (img, bs);
  img_be64 (img, original_size);
  for (uint32_t i = 0; i < n; i++)
    img_be64 (img, b[i].offset);
  img_be64 (img, end);
  for (uint32_t i = 0; i < n; i++)
    img_be32 (img, dplasa_flags (b[i].codec));
  img_be64 (img, x);
  img_be32 (img, 3);
  img_put (img, "\nCLOOP3\n", 8);
}

/* ------------------------------------------------------------------ */

static void
usage (FILE *fp)
{
  fprintf (fp,
"Usage: %s -d DIALECT [-B BLOCKSIZE] [-c CODEC[,CODEC...]]\n"
"               [--corrupt-block N] [--data-offset N] [--short-last]\n"
"               [--dup-entry N] [--append N:LEN[:BYTE]] INPUT OUTPUT\n"
"Write INPUT as a cloop image of DIALECT (last block zero-padded).\n"
"  -d DIALECT   v2 | v4 | v4-footer | 0.68 | 1.0 | slitaz-v3 | dplasa-v3 |\n"
"               fbsd-v2 | fbsd-l3 | fbsd-z4 | fbsd-dedup\n"
"  -B SIZE      block size, a multiple of 512 (default 65536)\n"
"  -c CODECS    v4, v4-footer, dplasa-v3: zlib,none,xz,lz4,lzo (a list is\n"
"               cycled per block); fbsd-dedup: zlib | xz | zstd\n"
"  --corrupt-block N  flip a byte in the middle of block N's stored data\n"
"  --data-offset N    v4-footer, dplasa-v3: start block data at offset N\n"
"  --short-last       do not pad the last block: it decodes to only the\n"
"                     input's remaining bytes (not dplasa-v3, fbsd-dedup)\n"
"  --dup-entry N      write index entry N+1 as a copy of entry N (dialects\n"
"                     with an offset table, not fbsd-dedup)\n"
"  --append N:LEN[:BYTE]  store LEN bytes of BYTE (default 0) after block\n"
"                     N's stream, inside its index range; LEN 'sector' =\n"
"                     up to the next 512-byte boundary of the file offset\n"
"Exit status 2 if a codec is not built into this program.\n",
           progname);
}

static uint64_t
parse_u64 (const char *opt, const char *s)
{
  char *end;
  errno = 0;
  unsigned long long v = strtoull (s, &end, 0);
  if (errno || end == s || *end || s[0] == '-')
    die ("%s: not a non-negative integer: '%s'", opt, s);
  return v;
}

/* Parse --append N:LEN[:BYTE]; LEN may be "sector". */
static void
parse_append (const char *arg, uint64_t *block, uint64_t *len, bool *sector,
              uint64_t *byte)
{
  char *copy = strdup (arg), *save = NULL;
  char *n = copy ? strtok_r (copy, ":", &save) : NULL;
  char *l = n ? strtok_r (NULL, ":", &save) : NULL;
  char *v = l ? strtok_r (NULL, ":", &save) : NULL;

  if (l == NULL || strtok_r (NULL, ":", &save) != NULL)
    die ("--append: expected N:LEN[:BYTE], got '%s'", arg);
  *block = parse_u64 ("--append", n);
  *sector = strcmp (l, "sector") == 0;
  *len = *sector ? 0 : parse_u64 ("--append", l);
  *byte = v ? parse_u64 ("--append", v) : 0;
  if (*len > 1024 * 1024 || *byte > 255)
    die ("--append: LEN at most 1M, BYTE at most 255");
  free (copy);
}

/* Parse a comma-separated codec list into codecs[], return its length. */
static size_t
parse_codecs (const char *arg, enum codec *codecs, size_t max)
{
  char *copy = strdup (arg), *save = NULL, *tok;
  size_t k = 0;

  if (copy == NULL)
    die ("out of memory");
  for (tok = strtok_r (copy, ",", &save); tok;
       tok = strtok_r (NULL, ",", &save)) {
    enum codec c;
    for (c = 0; c < C_COUNT; c++)
      if (strcmp (tok, codec_names[c]) == 0)
        break;
    if (c == C_COUNT)
      die ("-c: unknown codec '%s' (zlib, none, xz, lz4, lzo, zstd)", tok);
    if (k == max)
      die ("-c: too many codecs");
    codecs[k++] = c;
  }
  free (copy);
  if (k == 0)
    die ("-c: empty codec list");
  return k;
}

static unsigned char *
read_file (const char *path, size_t *len)
{
  FILE *fp = fopen (path, "rb");
  if (fp == NULL)
    die ("%s: %s", path, strerror (errno));
  struct image buf = { 0 };
  for (;;) {
    img_reserve (&buf, 65536);
    size_t r = fread (buf.p + buf.len, 1, 65536, fp);
    buf.len += r;
    if (r < 65536) {
      if (ferror (fp))
        die ("%s: read error", path);
      break;
    }
  }
  fclose (fp);
  *len = buf.len;
  return buf.p;
}

static bool
all_zero (const unsigned char *p, size_t n)
{
  for (size_t i = 0; i < n; i++)
    if (p[i])
      return false;
  return true;
}

int
main (int argc, char *argv[])
{
  enum { OPT_CORRUPT = 256, OPT_DATA_OFFSET, OPT_SHORT_LAST, OPT_DUP_ENTRY,
         OPT_APPEND };
  static const struct option long_opts[] = {
    { "corrupt-block", required_argument, NULL, OPT_CORRUPT },
    { "data-offset", required_argument, NULL, OPT_DATA_OFFSET },
    { "short-last", no_argument, NULL, OPT_SHORT_LAST },
    { "dup-entry", required_argument, NULL, OPT_DUP_ENTRY },
    { "append", required_argument, NULL, OPT_APPEND },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  const struct dialect_info *di = NULL;
  uint64_t bs64 = 65536, corrupt = UINT64_MAX, lead = 0;
  enum codec codecs[64];
  size_t ncodecs = 0;
  const char *codec_arg = NULL;
  bool short_last = false;
  uint64_t append_block = UINT64_MAX, append_len = 0, append_byte = 0;
  bool append_sector = false;
  int opt;

  while ((opt = getopt_long (argc, argv, "d:B:c:h", long_opts, NULL)) != -1) {
    switch (opt) {
    case 'd':
      for (size_t i = 0; i < sizeof dialects / sizeof dialects[0]; i++)
        if (strcmp (optarg, dialects[i].name) == 0)
          di = &dialects[i];
      if (di == NULL) {
        fprintf (stderr, "%s: -d: unknown dialect '%s'\n", progname, optarg);
        usage (stderr);
        exit (1);
      }
      break;
    case 'B': bs64 = parse_u64 ("-B", optarg); break;
    case 'c': codec_arg = optarg; break;
    case OPT_CORRUPT: corrupt = parse_u64 ("--corrupt-block", optarg); break;
    case OPT_DATA_OFFSET: lead = parse_u64 ("--data-offset", optarg); break;
    case OPT_SHORT_LAST: short_last = true; break;
    case OPT_DUP_ENTRY:
      dup_entry = parse_u64 ("--dup-entry", optarg) > INT32_MAX ? INT32_MAX
                  : (long) parse_u64 ("--dup-entry", optarg);
      break;
    case OPT_APPEND:
      parse_append (optarg, &append_block, &append_len, &append_sector,
                    &append_byte);
      break;
    case 'h': usage (stdout); exit (0);
    default: usage (stderr); exit (1);
    }
  }
  if (di == NULL) {
    fprintf (stderr, "%s: -d DIALECT is required\n", progname);
    usage (stderr);
    exit (1);
  }
  if (argc - optind != 2) {
    fprintf (stderr, "%s: expected INPUT and OUTPUT\n", progname);
    usage (stderr);
    exit (1);
  }
  if (bs64 == 0 || bs64 % 512 || bs64 > 64 * 1024 * 1024)
    die ("-B: block size must be a non-zero multiple of 512, at most 64M");
  if (lead && di->d != D_V4_FOOTER && di->d != D_DPLASA_V3)
    die ("--data-offset applies only to v4-footer and dplasa-v3");
  if (short_last && (di->d == D_DPLASA_V3 || di->d == D_FBSD_DEDUP))
    die ("--short-last does not apply to %s", di->name);
  if (dup_entry >= 0 && (di->d == D_SLITAZ_V3 || di->d == D_DPLASA_V3 ||
                         di->d == D_FBSD_DEDUP))
    die ("--dup-entry does not apply to %s", di->name);
  const uint32_t bs = bs64;

  if (codec_arg) {
    ncodecs = parse_codecs (codec_arg, codecs, 64);
    if (ncodecs > 1 && !di->mixed)
      die ("-c: dialect %s takes a single codec", di->name);
    for (size_t k = 0; k < ncodecs; k++)
      if (!(di->allowed & BIT (codecs[k])))
        die ("-c: codec %s is not valid in dialect %s",
             codec_name (codecs[k]), di->name);
  }
  else {
    codecs[0] = di->dflt;
    ncodecs = 1;
  }
  for (size_t k = 0; k < ncodecs; k++)
    if (!codec_built (codecs[k])) {
      fprintf (stderr, "%s: codec %s not built\n", progname,
               codec_name (codecs[k]));
      exit (2);
    }

  size_t in_len;
  unsigned char *in = read_file (argv[optind], &in_len);
  if (in_len == 0)
    die ("%s: input is empty", argv[optind]);
  uint64_t n64 = (in_len + bs - 1) / bs;
  if (n64 >= UINT32_MAX)
    die ("too many blocks");
  const uint32_t n = n64;

  /* Zero-padded copy of the input. */
  unsigned char *padded = xmalloc ((size_t) n * bs);
  memcpy (padded, in, in_len);
  memset (padded + in_len, 0, (size_t) n * bs - in_len);
  free (in);
  if (short_last && in_len % bs == 0)
    die ("--short-last: the input is a whole number of blocks");

  const bool freebsd = di->d == D_FBSD_V2 || di->d == D_FBSD_L3 ||
    di->d == D_FBSD_Z4 || di->d == D_FBSD_DEDUP;

  /* Encode every block. */
  struct block *b = calloc (n, sizeof *b);
  if (b == NULL)
    die ("out of memory");
  long last_stored = -1;        /* dedup: most recent block with data */
  bool shared_offset = false;   /* dedup: a zero block precedes it */
  bool *no_backref = calloc (n, sizeof *no_backref);
  if (no_backref == NULL)
    die ("out of memory");
  for (uint32_t i = 0; i < n; i++) {
    const unsigned char *src = padded + (size_t) i * bs;
    b[i].dup_of = -1;
    b[i].codec = codecs[i % ncodecs];

    if (freebsd && all_zero (src, bs)) {
      b[i].zero = true;         /* length 0 */
      shared_offset = true;
      continue;
    }
    if (di->d == D_FBSD_DEDUP) {
      /* A back-reference must point below the running maximum offset
       * (so not at the latest stored block) and at an offset no
       * zero-length block shares. */
      for (long j = 0; j < (long) i; j++)
        if (b[j].data && j != last_stored && !no_backref[j] &&
            memcmp (padded + (size_t) j * bs, src, bs) == 0) {
          b[i].dup_of = j;
          break;
        }
      if (b[i].dup_of >= 0)
        continue;
    }

    /* --short-last: the last block holds only the input's bytes. */
    size_t src_len = short_last && i + 1 == n && in_len % bs ? in_len % bs : bs;
    b[i].data = compress_block (b[i].codec, src, src_len, &b[i].len);
    if (di->d == D_DPLASA_V3 && b[i].codec != C_NONE && b[i].len >= bs) {
      /* dplasa stores a block raw when compression does not shrink it. */
      free (b[i].data);
      b[i].codec = C_NONE;
      b[i].data = compress_block (C_NONE, src, bs, &b[i].len);
    }
    no_backref[i] = shared_offset;
    shared_offset = false;
    last_stored = i;
  }

  if (corrupt != UINT64_MAX) {
    if (corrupt >= n)
      die ("--corrupt-block %" PRIu64 ": image has only %" PRIu32 " blocks",
           corrupt, n);
    struct block *cb = &b[corrupt];
    if (cb->data == NULL || cb->len == 0)
      die ("--corrupt-block %" PRIu64 ": block has no stored data", corrupt);
    if (cb->codec == C_NONE)
      die ("--corrupt-block %" PRIu64 ": block is stored raw, corruption"
           " would be undetectable", corrupt);
    cb->data[cb->len / 2] ^= 0xff;
  }

  if (dup_entry >= 0 && (uint64_t) dup_entry + 1 >= n)
    die ("--dup-entry %ld: image has only %" PRIu32 " blocks", dup_entry, n);
  if (append_block != UINT64_MAX) {
    if (append_block >= n || b[append_block].data == NULL)
      die ("--append %" PRIu64 ": no such stored block", append_block);
    b[append_block].append_len = append_len;
    b[append_block].append_sector = append_sector;
    b[append_block].append_byte = append_byte;
  }

  struct image img = { 0 };
  switch (di->d) {
  case D_V2:
    layout_header_first (&img, "V2.0", false, IDX_BE64, bs, b, n);
    break;
  case D_V4:
    layout_header_first (&img, "V4.0", false, IDX_BE64_V4, bs, b, n);
    break;
  case D_068:
    layout_header_first (&img, NULL, false, IDX_BE32, bs, b, n);
    break;
  case D_10:
    layout_header_first (&img, "V1.0", false, IDX_LE64, bs, b, n);
    break;
  case D_FBSD_V2:
    layout_header_first (&img, "V2.0", true, IDX_BE64, bs, b, n);
    break;
  case D_FBSD_L3:
    layout_header_first (&img, "L3.0", true, IDX_BE64, bs, b, n);
    break;
  case D_FBSD_Z4:
    layout_header_first (&img, "Z4.0", true, IDX_BE64, bs, b, n);
    break;
  case D_FBSD_DEDUP: {
    const char *sig = codecs[0] == C_XZ ? "l3.0"
      : codecs[0] == C_ZSTD ? "z4.0" : "v3.0";
    layout_header_first (&img, sig, true, IDX_BE64, bs, b, n);
    break;
  }
  case D_V4_FOOTER:
    layout_v4_footer (&img, lead, bs, b, n);
    break;
  case D_SLITAZ_V3:
    layout_slitaz (&img, bs, b, n);
    break;
  case D_DPLASA_V3:
    layout_dplasa (&img, lead, bs, in_len, b, n);
    break;
  }

  FILE *fp = fopen (argv[optind + 1], "wb");
  if (fp == NULL)
    die ("%s: %s", argv[optind + 1], strerror (errno));
  if (fwrite (img.p, 1, img.len, fp) != img.len || fclose (fp) != 0)
    die ("%s: write error", argv[optind + 1]);

  for (uint32_t i = 0; i < n; i++)
    free (b[i].data);
  free (b);
  free (no_backref);
  free (padded);
  free (img.p);
  return 0;
}
