/* SPDX-License-Identifier: BSD-3-Clause */
/* cloop-store: raw and cloop image sources (see image-source.h). */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "blockmap.h"
#include "cloop.h"
#include "decode.h"
#include "image-source.h"

#define PROBE_LEN 4096

struct image_source {
  int fd;
  bool own_fd;
  char *path;
  uint64_t size;                /* decoded size, UINT64_MAX if unknown */
  uint64_t pos;                 /* decoded bytes returned so far */
  /* cloop only */
  struct block_map *map;
  struct decoder *dec;
  unsigned char *packed;        /* map->max_length bytes */
  unsigned char *block;         /* one decoded block */
  uint64_t next_block;          /* next block to decode */
  size_t block_len, block_pos;  /* valid and consumed bytes of block */
  /* raw pipe only: the head read to probe it, returned first */
  unsigned char *head;
  size_t head_len, head_pos;
};

/* byte_reader over a file descriptor, for cloop_open. */
static int
fd_pread (void *opaque, void *buf, size_t len, uint64_t offset,
          struct cloop_err *err)
{
  struct image_source *src = opaque;
  size_t got = 0;

  while (got < len) {
    ssize_t r = pread (src->fd, (char *) buf + got, len - got, offset + got);
    if (r < 0 && errno == EINTR)
      continue;
    if (r < 0)
      return cloop_err_set (err, errno, "%s: read: %s", src->path,
                            strerror (errno));
    if (r == 0)
      return cloop_err_set (err, EIO, "%s: unexpected end of file",
                            src->path);
    got += r;
  }
  return 0;
}

/* Size of a seekable file or block device, or -1 if it is not
 * seekable. */
static int
seekable_size (int fd, uint64_t *size)
{
  struct stat st;
  off_t end;

  if (fstat (fd, &st) == -1 || !(S_ISREG (st.st_mode) || S_ISBLK (st.st_mode)))
    return -1;
  end = lseek (fd, 0, SEEK_END);
  if (end < 0 || lseek (fd, 0, SEEK_SET) < 0)
    return -1;
  *size = end;
  return 0;
}

/* Try to open src as cloop.  Returns 1 if it is one (map set), 0 if it
 * is raw, -1 on error (err set). */
static int
try_cloop (struct image_source *src, uint64_t file_size, enum source_kind kind,
           struct cloop_err *err)
{
  struct byte_reader reader = { src, file_size, fd_pread };
  unsigned char head[PROBE_LEN];
  size_t head_len = file_size < PROBE_LEN ? file_size : PROBE_LEN;
  struct cloop_err cerr = { 0 };
  bool looks_cloop;

  if (fd_pread (src, head, head_len, 0, err) == -1)
    return -1;
  looks_cloop = cloop_probe_head (head, head_len);
  src->map = cloop_open (&reader, &cerr);
  if (src->map != NULL)
    return 1;
  if (kind == SOURCE_CLOOP || looks_cloop) {
    *err = cerr;
    cloop_err_prefix (err, "%s: %s", src->path,
                      looks_cloop ? "looks like cloop but cannot be read"
                                  : "not a cloop file");
    return -1;
  }
  return 0;
}

/* Read up to len bytes of a pipe (short only at its end).  Bytes read,
 * or -1 with err set. */
static ssize_t
read_fd (struct image_source *src, unsigned char *buf, size_t len,
         struct cloop_err *err)
{
  size_t done = 0;

  while (done < len) {
    ssize_t r = read (src->fd, buf + done, len - done);
    if (r < 0 && errno == EINTR)
      continue;
    if (r < 0)
      return cloop_err_set (err, errno, "%s: read: %s", src->path,
                            strerror (errno));
    if (r == 0)
      break;
    done += r;
  }
  return done;
}

/* Probe the head of a source that cannot be seeked (a pipe, stdin):
 * a cloop file there would otherwise be published as a raw image of
 * its compressed bytes.  The head is kept and returned by the first
 * reads.  0, or -1 with err set (the refusal names what to do). */
static int
probe_pipe (struct image_source *src, struct cloop_err *err)
{
  ssize_t n;

  src->head = malloc (PROBE_LEN);
  if (src->head == NULL)
    return cloop_err_set (err, ENOMEM, "out of memory");
  n = read_fd (src, src->head, PROBE_LEN, err);
  if (n < 0)
    return -1;
  src->head_len = n;
  if (cloop_probe_head (src->head, src->head_len))
    return cloop_err_set (err, EINVAL, "%s: this stream starts like a cloop "
                          "file, but a cloop source must be a seekable file: "
                          "pass the file's path instead, or -t raw to "
                          "publish the compressed bytes as a raw image",
                          strcmp (src->path, "-") == 0 ? "stdin"
                                                       : src->path);
  return 0;
}

/* Prepare decoding state for a cloop source. */
static int
setup_cloop (struct image_source *src, struct cloop_err *err)
{
  struct block_map *map = src->map;

  src->size = map->size;
  src->dec = decoder_new (false);
  src->packed = malloc (map->max_length ? map->max_length : 1);
  src->block = malloc (map->block_size);
  if (src->dec == NULL || src->packed == NULL || src->block == NULL)
    return cloop_err_set (err, ENOMEM, "out of memory");
  return 0;
}

struct image_source *
image_source_open (const char *path, enum source_kind kind,
                   struct cloop_err *err)
{
  struct image_source *src = calloc (1, sizeof *src);
  uint64_t file_size;
  int r = 0;

  if (src == NULL || (src->path = strdup (path)) == NULL) {
    free (src);
    cloop_err_set (err, ENOMEM, "out of memory");
    return NULL;
  }
  src->size = UINT64_MAX;
  if (strcmp (path, "-") == 0)
    src->fd = STDIN_FILENO;
  else {
    src->fd = open (path, O_RDONLY | O_CLOEXEC);
    src->own_fd = src->fd >= 0;
    if (src->fd < 0) {
      cloop_err_set (err, errno, "%s: %s", path, strerror (errno));
      goto fail;
    }
  }
  if (seekable_size (src->fd, &file_size) == 0) {
    src->size = file_size;
    if (kind != SOURCE_RAW && file_size > 0)
      r = try_cloop (src, file_size, kind, err);
  }
  else if (kind == SOURCE_CLOOP) {
    cloop_err_set (err, EINVAL, "%s: a cloop source must be a seekable "
                   "file", path);
    goto fail;
  }
  else if (kind == SOURCE_AUTO && probe_pipe (src, err) == -1)
    goto fail;
  if (r == -1 || (r == 1 && setup_cloop (src, err) == -1))
    goto fail;
  return src;

 fail:
  image_source_close (src);
  return NULL;
}

uint64_t
image_source_size (const struct image_source *src)
{
  return src->size;
}

const char *
image_source_kind (const struct image_source *src)
{
  return src->map ? src->map->dialect : "raw image";
}

int
image_source_identity (const struct image_source *src, char *out, size_t n)
{
  struct stat st;

  if (fstat (src->fd, &st) == -1 ||
      !(S_ISREG (st.st_mode) || S_ISBLK (st.st_mode)))
    return -1;
  snprintf (out, n, "dev=%ju ino=%ju size=%jd mtime=%jd.%09ld rdev=%ju",
            (uintmax_t) st.st_dev, (uintmax_t) st.st_ino,
            (intmax_t) st.st_size, (intmax_t) st.st_mtim.tv_sec,
            st.st_mtim.tv_nsec, (uintmax_t) st.st_rdev);
  return 0;
}

uint32_t
image_source_native_block_size (const struct image_source *src)
{
  return src->map ? src->map->block_size : 0;
}

/* Decode the next cloop block into src->block.  0, or -1 with err. */
static int
decode_next (struct image_source *src, struct cloop_err *err)
{
  const struct block_map *map = src->map;
  const struct block_entry *e = &map->entries[src->next_block];
  uint32_t stream_len = block_map_stream_length (map, src->next_block);
  size_t got = 0;

  if (e->codec != CODEC_ZERO &&
      fd_pread (src, src->packed, e->length, e->offset, err) == -1)
    return -1;
  if (decoder_decode_block (src->dec, map, src->next_block, src->packed,
                            src->block, &got, err) == -1) {
    cloop_err_prefix (err, "%s: block %" PRIu64, src->path, src->next_block);
    return -1;
  }
  /* A short last block reads as zeroes beyond what it decoded to. */
  memset (src->block + got, 0, stream_len - got);
  src->block_len = block_map_decoded_length (map, src->next_block);
  src->block_pos = 0;
  src->next_block++;
  return 0;
}

/* Copy decoded cloop bytes into buf. */
static ssize_t
read_cloop (struct image_source *src, unsigned char *buf, size_t len,
            struct cloop_err *err)
{
  size_t done = 0;

  while (done < len) {
    size_t n;

    if (src->block_pos == src->block_len) {
      if (src->next_block == src->map->num_blocks)
        break;
      if (decode_next (src, err) == -1)
        return -1;
    }
    n = src->block_len - src->block_pos;
    if (n > len - done)
      n = len - done;
    memcpy (buf + done, src->block + src->block_pos, n);
    src->block_pos += n;
    done += n;
  }
  return done;
}

/* Read raw bytes sequentially (works on pipes): first what probing
 * kept, then the file. */
static ssize_t
read_raw (struct image_source *src, unsigned char *buf, size_t len,
          struct cloop_err *err)
{
  size_t done = 0;
  ssize_t r;

  if (src->head_pos < src->head_len) {
    done = src->head_len - src->head_pos;
    if (done > len)
      done = len;
    memcpy (buf, src->head + src->head_pos, done);
    src->head_pos += done;
  }
  r = read_fd (src, buf + done, len - done, err);
  return r < 0 ? -1 : (ssize_t) (done + r);
}

ssize_t
image_source_read (struct image_source *src, void *buf, size_t len,
                   struct cloop_err *err)
{
  ssize_t r = src->map ? read_cloop (src, buf, len, err)
                       : read_raw (src, buf, len, err);

  if (r > 0)
    src->pos += r;
  return r;
}

void
image_source_close (struct image_source *src)
{
  if (src == NULL)
    return;
  if (src->own_fd)
    close (src->fd);
  block_map_free (src->map);
  decoder_free (src->dec);
  free (src->packed);
  free (src->block);
  free (src->head);
  free (src->path);
  free (src);
}
