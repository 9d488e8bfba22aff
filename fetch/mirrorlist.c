/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-cloop: mirror lists (see mirrorlist.h and docs/FORMAT.md).
 *
 * Both formats feed the same URL check (add_url), then the list is
 * sorted by priority (stable) and repeated URLs are dropped.  The
 * metalink is parsed by libxml2 from memory with XML_PARSE_NONET and
 * without XML_PARSE_NOENT or XML_PARSE_DTDLOAD; a DOCTYPE stops the
 * parser the moment it is seen (before any entity is declared, let
 * alone expanded), and libxml2's messages are collected, never
 * printed.
 */
#include <config.h>

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libxml/SAX2.h>
#include <libxml/parser.h>
#include <libxml/tree.h>
#include <libxml/xmlerror.h>

#include "mirrorlist.h"

#define METALINK_NS "urn:ietf:params:xml:ns:metalink"
#define METALINK3_NS "http://www.metalinker.org/"
#define SHOWN_URL 120           /* bytes of a URL quoted in a message */

static pthread_once_t xml_once = PTHREAD_ONCE_INIT;

static void
xml_init_once (void)
{
  xmlInitParser ();
}

void
mirrorlist_global_init (void)
{
  pthread_once (&xml_once, xml_init_once);
}

void
mirror_list_free (struct mirror_list *list)
{
  if (list == NULL)
    return;
  for (size_t i = 0; i < list->n; i++)
    free (list->mirrors[i].url);
  free (list->mirrors);
  free (list->file_name);
  for (size_t i = 0; i < list->n_notes; i++)
    free (list->notes[i]);
  memset (list, 0, sizeof *list);
}

static bool
is_blank (unsigned char c)
{
  return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static char
lower (char c)
{
  return c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c;
}

static bool
is_alpha (char c)
{
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

/* Trim blanks around s[0..*len); returns the new start. */
static const char *
trim (const char *s, size_t *len)
{
  while (*len > 0 && is_blank (s[0]))
    s++, (*len)--;
  while (*len > 0 && is_blank (s[*len - 1]))
    (*len)--;
  return s;
}

/* Length of the RFC 3986 scheme that s[0..len) starts with (followed
 * by "://"), or 0 if it starts with none. */
static size_t
scheme_len (const char *s, size_t len)
{
  size_t i = 0;

  if (len == 0 || !is_alpha (s[0]))
    return 0;
  while (i < len && (is_alpha (s[i]) || (s[i] >= '0' && s[i] <= '9') ||
                     s[i] == '+' || s[i] == '-' || s[i] == '.'))
    i++;
  if (len - i < 3 || memcmp (s + i, "://", 3) != 0)
    return 0;
  return i;
}

/* Keep a skip reason (the first MIRRORLIST_MAX_NOTES) and count it. */
static int
note_skip (struct mirror_list *out, const char *name, unsigned line,
           const char *url, size_t len, const char *why,
           struct cloop_err *err)
{
  char *note;

  out->n_skipped++;
  if (out->n_notes == MIRRORLIST_MAX_NOTES)
    return 0;
  if (asprintf (&note, "%s:%u: skipped %.*s%s (%s)", name, line,
                (int) (len < SHOWN_URL ? len : SHOWN_URL), url,
                len > SHOWN_URL ? "..." : "", why) == -1)
    return cloop_err_set (err, ENOMEM, "out of memory");
  out->notes[out->n_notes++] = note;
  return 0;
}

/* Check one URL s[0..len) (already trimmed) and append it to out, or
 * skip it (another scheme).  strict: a line that is not a URL at all
 * is an error (plain lists) rather than skipped (metalinks).  0, or
 * -1 with err set. */
static int
add_url (struct mirror_list *out, const char *name, unsigned line,
         const char *s, size_t len, unsigned priority, const char *location,
         bool strict, struct cloop_err *err)
{
  size_t sl = scheme_len (s, len), i;
  struct mirror *m;
  char *url;

  if (len > MIRRORLIST_MAX_URL)
    return cloop_err_set (err, EINVAL, "%s:%u: URL of %zu bytes is longer "
                          "than the limit of %d", name, line, len,
                          MIRRORLIST_MAX_URL);
  if (sl == 0 && strict)
    return cloop_err_set (err, EINVAL, "%s:%u: '%.*s%s' is not a URL",
                          name, line, (int) (len < SHOWN_URL ? len
                                             : SHOWN_URL), s,
                          len > SHOWN_URL ? "..." : "");
  if (sl == 0)
    return note_skip (out, name, line, s, len, "not an absolute URL", err);
  if (!((sl == 4 && strncasecmp (s, "http", 4) == 0) ||
        (sl == 5 && strncasecmp (s, "https", 5) == 0)))
    return note_skip (out, name, line, s, len, "only http:// and https:// "
                      "are used", err);
  for (i = 0; i < len; i++)
    if ((unsigned char) s[i] <= ' ' || s[i] == 0x7f)
      return cloop_err_set (err, EINVAL, "%s:%u: URL '%.*s...' holds a "
                            "blank or control character", name, line,
                            (int) (i < SHOWN_URL ? i : SHOWN_URL), s);
  if (len == sl + 3 || s[sl + 3] == '/' || s[sl + 3] == '?' ||
      s[sl + 3] == '#')
    return cloop_err_set (err, EINVAL, "%s:%u: URL '%.*s%s' has no host",
                          name, line, (int) (len < SHOWN_URL ? len
                                             : SHOWN_URL), s,
                          len > SHOWN_URL ? "..." : "");
  if (out->n == MIRRORLIST_MAX_MIRRORS)
    return cloop_err_set (err, EINVAL, "%s:%u: more than %d mirrors",
                          name, line, MIRRORLIST_MAX_MIRRORS);

  if (out->mirrors == NULL &&
      (out->mirrors = calloc (MIRRORLIST_MAX_MIRRORS,
                              sizeof *out->mirrors)) == NULL)
    return cloop_err_set (err, ENOMEM, "out of memory");
  if ((url = strndup (s, len)) == NULL)
    return cloop_err_set (err, ENOMEM, "out of memory");
  for (i = 0; i < sl; i++)
    url[i] = lower (url[i]);
  m = &out->mirrors[out->n++];
  m->url = url;
  m->priority = priority;
  snprintf (m->location, sizeof m->location, "%s", location);
  return 0;
}

/* Sort by priority, keeping the order of equals (insertion sort: n is
 * at most MIRRORLIST_MAX_MIRRORS), then drop repeated URLs (the first,
 * best placed, stays). */
static void
sort_and_dedup (struct mirror_list *out)
{
  size_t i, j, k;

  for (i = 1; i < out->n; i++) {
    struct mirror m = out->mirrors[i];
    for (j = i; j > 0 && out->mirrors[j - 1].priority > m.priority; j--)
      out->mirrors[j] = out->mirrors[j - 1];
    out->mirrors[j] = m;
  }
  for (i = 0, k = 0; i < out->n; i++) {
    bool seen = false;
    for (j = 0; j < k && !seen; j++)
      seen = strcmp (out->mirrors[j].url, out->mirrors[i].url) == 0;
    if (seen)
      free (out->mirrors[i].url);
    else
      out->mirrors[k++] = out->mirrors[i];
  }
  out->n = k;
}

/* The "no usable URL" error. */
static int
no_mirror (const struct mirror_list *out, const char *name,
           struct cloop_err *err)
{
  if (out->n_notes > 0)
    return cloop_err_set (err, EINVAL, "%s: no http:// or https:// URL "
                          "(%zu skipped; the first: %s)", name,
                          out->n_skipped, out->notes[0]);
  return cloop_err_set (err, EINVAL, "%s: no mirror URL", name);
}

/* ------------------------------------------------------------------ */
/* Plain lists. */

static int
parse_plain (const char *s, size_t len, const char *name,
             struct mirror_list *out, struct cloop_err *err)
{
  unsigned line = 0;
  const char *end = s + len;

  if (memchr (s, '\0', len) != NULL)
    return cloop_err_set (err, EINVAL, "%s: not a mirror list (a NUL byte "
                          "at offset %zu)", name,
                          (size_t) ((const char *) memchr (s, '\0', len) - s));
  while (s < end) {
    const char *nl = memchr (s, '\n', end - s), *p;
    size_t n = (nl ? nl : end) - s;

    line++;
    p = trim (s, &n);
    s = nl ? nl + 1 : end;
    if (n == 0 || p[0] == '#')
      continue;
    if (add_url (out, name, line, p, n, (unsigned) out->n + 1, "", true,
                 err) == -1)
      return -1;
  }
  return 0;
}

/* ------------------------------------------------------------------ */
/* Metalink 4. */

struct xml_state {
  bool doctype;                 /* a DOCTYPE was seen: parser stopped */
  int line;                     /* of the first error */
  char msg[200];                /* libxml2's first error, or "" */
};

static void
keep_first_error (struct xml_state *st, const xmlError *e)
{
  size_t n;

  if (st->msg[0] != '\0' || e == NULL || e->level < XML_ERR_ERROR)
    return;
  st->line = e->line;
  snprintf (st->msg, sizeof st->msg, "%s",
            e->message ? e->message : "unknown XML error");
  n = strlen (st->msg);
  while (n > 0 && is_blank (st->msg[n - 1]))
    st->msg[--n] = '\0';
}

/* Errors raised on our parser context (data is the context). */
static void
on_ctxt_error (void *data, xmlErrorPtr e)
{
  xmlParserCtxtPtr ctxt = data;

  keep_first_error (ctxt->_private, e);
}

/* Errors libxml2 raises without a context (e.g. in encoding
 * conversion), while this thread parses; data is our state. */
static void
on_thread_error (void *data, xmlErrorPtr e)
{
  keep_first_error (data, e);
}

/* <!DOCTYPE ...>: refused before its internal subset is read. */
static void
on_doctype (void *data, const xmlChar *root, const xmlChar *external_id,
            const xmlChar *system_id)
{
  xmlParserCtxtPtr ctxt = data;
  struct xml_state *st = ctxt->_private;

  st->doctype = true;
  if (st->line == 0 && ctxt->input != NULL)
    st->line = ctxt->input->line;
  xmlStopParser (ctxt);
}

/* Parse buf into a tree, or NULL with err set. */
static xmlDocPtr
read_xml (const void *buf, size_t len, const char *name,
          struct cloop_err *err)
{
  struct xml_state st = { 0 };
  xmlParserCtxtPtr ctxt;
  xmlDocPtr doc;
  xmlStructuredErrorFunc old_serror;
  void *old_serror_data;

  if ((ctxt = xmlNewParserCtxt ()) == NULL) {
    cloop_err_set (err, ENOMEM, "out of memory");
    return NULL;
  }
  ctxt->_private = &st;
  ctxt->sax->serror = on_ctxt_error;
  ctxt->sax->internalSubset = on_doctype;
  /* libxml2's handlers are per thread: borrow this thread's for the
   * parse, and put the caller's back. */
  old_serror = xmlStructuredError;
  old_serror_data = xmlStructuredErrorContext;
  xmlSetStructuredErrorFunc (&st, on_thread_error);
  doc = xmlCtxtReadMemory (ctxt, buf, (int) len, NULL, NULL,
                           XML_PARSE_NONET | XML_PARSE_NOCDATA |
                           XML_PARSE_NOERROR | XML_PARSE_NOWARNING |
                           XML_PARSE_BIG_LINES);
  xmlSetStructuredErrorFunc (old_serror_data, old_serror);
  xmlFreeParserCtxt (ctxt);

  if (doc != NULL && !st.doctype && doc->intSubset == NULL &&
      doc->extSubset == NULL)
    return doc;
  if (st.doctype || doc != NULL)
    cloop_err_set (err, EINVAL, "%s:%d: a DOCTYPE is not allowed in a "
                   "metalink (no DTDs, no entities)", name, st.line);
  else if (st.msg[0] != '\0')
    cloop_err_set (err, EINVAL, "%s:%d: not well-formed XML: %s", name,
                   st.line, st.msg);
  else
    cloop_err_set (err, EINVAL, "%s: not well-formed XML", name);
  xmlFreeDoc (doc);
  return NULL;
}

/* node is the metalink element local (in the metalink namespace). */
static bool
is_ml (xmlNodePtr node, const char *local)
{
  return node->type == XML_ELEMENT_NODE && node->ns != NULL &&
         node->ns->href != NULL &&
         strcmp ((const char *) node->ns->href, METALINK_NS) == 0 &&
         strcmp ((const char *) node->name, local) == 0;
}

static unsigned
line_of (xmlNodePtr node)
{
  long l = xmlGetLineNo (node);

  return l > 0 && l < 1000000000 ? (unsigned) l : 0;
}

/* The text of node, trimmed: *text (xmlFree it) and [*s, *s + *len).
 * -1 with err set. */
static int
node_text (xmlNodePtr node, xmlChar **text, const char **s, size_t *len,
           struct cloop_err *err)
{
  if ((*text = xmlNodeGetContent (node)) == NULL)
    return cloop_err_set (err, ENOMEM, "out of memory");
  *len = strlen ((const char *) *text);
  *s = trim ((const char *) *text, len);
  return 0;
}

/* Decimal s[0..len) into *v (at most max); false if not one. */
static bool
parse_decimal (const char *s, size_t len, uint64_t max, uint64_t *v)
{
  *v = 0;
  if (len == 0)
    return false;
  for (size_t i = 0; i < len; i++) {
    if (s[i] < '0' || s[i] > '9' || *v > (max - (s[i] - '0')) / 10)
      return false;
    *v = *v * 10 + (s[i] - '0');
  }
  return true;
}

static int
hex_value (char c)
{
  if (c >= '0' && c <= '9')
    return c - '0';
  c = lower (c);
  return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* <url priority= location=>URL</url> */
static int
file_url (xmlNodePtr node, const char *name, struct mirror_list *out,
          struct cloop_err *err)
{
  unsigned line = line_of (node);
  xmlChar *prio = xmlGetNoNsProp (node, BAD_CAST "priority");
  xmlChar *loc = xmlGetNoNsProp (node, BAD_CAST "location");
  xmlChar *text = NULL;
  uint64_t priority = MIRRORLIST_PRIORITY_MAX;
  char location[8] = "";
  const char *s = NULL;
  size_t len;
  int r = -1;

  if (prio != NULL) {
    len = strlen ((const char *) prio);
    s = trim ((const char *) prio, &len);
    if (!parse_decimal (s, len, MIRRORLIST_PRIORITY_MAX, &priority) ||
        priority == 0) {
      cloop_err_set (err, EINVAL, "%s:%u: <url priority=\"%.20s\">: not a "
                     "number from 1 to %d", name, line, (const char *) prio,
                     MIRRORLIST_PRIORITY_MAX);
      goto out;
    }
  }
  if (loc != NULL) {
    len = strlen ((const char *) loc);
    s = trim ((const char *) loc, &len);
    if (len != 2 || !is_alpha (s[0]) || !is_alpha (s[1])) {
      cloop_err_set (err, EINVAL, "%s:%u: <url location=\"%.20s\">: not an "
                     "ISO 3166-1 two-letter country code", name, line,
                     (const char *) loc);
      goto out;
    }
    location[0] = lower (s[0]);
    location[1] = lower (s[1]);
  }
  if (node_text (node, &text, &s, &len, err) == -1)
    goto out;
  r = add_url (out, name, line, s, len, (unsigned) priority, location, false,
               err);
 out:
  xmlFree (prio);
  xmlFree (loc);
  xmlFree (text);
  return r;
}

/* <size>N</size> */
static int
file_size (xmlNodePtr node, const char *name, struct mirror_list *out,
           struct cloop_err *err)
{
  unsigned line = line_of (node);
  xmlChar *text;
  const char *s = NULL;
  size_t len;
  uint64_t v;
  bool ok;

  if (out->have_size)
    return cloop_err_set (err, EINVAL, "%s:%u: a second <size>", name, line);
  if (node_text (node, &text, &s, &len, err) == -1)
    return -1;
  ok = parse_decimal (s, len, UINT64_MAX, &v);
  if (!ok || v == 0 || v > MIRRORLIST_MAX_SIZE)
    cloop_err_set (err, EINVAL, "%s:%u: <size>%.30s%s</size>: %s", name,
                   line, s, len > 30 ? "..." : "",
                   !ok ? "not a decimal number of bytes"
                   : v == 0 ? "an empty file" : "larger than 2^50 bytes");
  xmlFree (text);
  if (!ok || v == 0 || v > MIRRORLIST_MAX_SIZE)
    return -1;
  out->have_size = true;
  out->size = v;
  return 0;
}

/* <hash type="sha-256">HEX</hash>; other types are ignored. */
static int
file_hash (xmlNodePtr node, const char *name, struct mirror_list *out,
           struct cloop_err *err)
{
  unsigned line = line_of (node);
  xmlChar *type = xmlGetNoNsProp (node, BAD_CAST "type");
  xmlChar *text = NULL;
  unsigned char h[MIRRORLIST_SHA256_LEN];
  const char *s = NULL;
  size_t len;
  int r = -1;

  if (type == NULL || strcasecmp ((const char *) type, "sha-256") != 0) {
    xmlFree (type);
    return 0;
  }
  if (node_text (node, &text, &s, &len, err) == -1)
    goto out;
  for (size_t i = 0; i < len && len == 2 * sizeof h; i += 2) {
    int hi = hex_value (s[i]), lo = hex_value (s[i + 1]);
    if (hi < 0 || lo < 0)
      len = 0;                  /* not hex: fails the test below */
    else
      h[i / 2] = hi << 4 | lo;
  }
  if (len != 2 * sizeof h) {
    cloop_err_set (err, EINVAL, "%s:%u: <hash type=\"sha-256\">: not 64 "
                   "hexadecimal digits", name, line);
    goto out;
  }
  if (out->have_sha256 && memcmp (out->sha256, h, sizeof h) != 0) {
    cloop_err_set (err, EINVAL, "%s:%u: a second, different sha-256 hash",
                   name, line);
    goto out;
  }
  out->have_sha256 = true;
  memcpy (out->sha256, h, sizeof h);
  r = 0;
 out:
  xmlFree (type);
  xmlFree (text);
  return r;
}

/* The <file> element to use: the first, or the one named file_name. */
static xmlNodePtr
pick_file (xmlNodePtr root, const char *name, const char *file_name,
           struct cloop_err *err)
{
  for (xmlNodePtr c = root->children; c != NULL; c = c->next) {
    xmlChar *fname;
    bool match;

    if (!is_ml (c, "file"))
      continue;
    if (file_name == NULL)
      return c;
    fname = xmlGetNoNsProp (c, BAD_CAST "name");
    match = fname != NULL && strcmp ((const char *) fname, file_name) == 0;
    xmlFree (fname);
    if (match)
      return c;
  }
  if (file_name != NULL)
    cloop_err_set (err, EINVAL, "%s: no <file name=\"%s\">", name, file_name);
  else
    cloop_err_set (err, EINVAL, "%s: no <file> in the metalink", name);
  return NULL;
}

/* Check the root element: metalink in the Metalink 4 namespace. */
static int
check_root (xmlNodePtr root, const char *name, struct cloop_err *err)
{
  const char *href;

  if (root == NULL)
    return cloop_err_set (err, EINVAL, "%s: no root element", name);
  href = root->ns && root->ns->href ? (const char *) root->ns->href : NULL;
  if (strcmp ((const char *) root->name, "metalink") != 0)
    return cloop_err_set (err, EINVAL, "%s:%u: the root element is <%.40s>, "
                          "not a Metalink 4 <metalink>", name,
                          line_of (root), (const char *) root->name);
  if (href != NULL && strcmp (href, METALINK3_NS) == 0)
    return cloop_err_set (err, EINVAL, "%s:%u: a Metalink 3 document (%s); "
                          "only Metalink 4 (RFC 5854, %s) is read", name,
                          line_of (root), METALINK3_NS, METALINK_NS);
  if (href == NULL || strcmp (href, METALINK_NS) != 0)
    return cloop_err_set (err, EINVAL, "%s:%u: <metalink> is not in the "
                          "namespace %s", name, line_of (root), METALINK_NS);
  return 0;
}

static int
parse_metalink (const void *buf, size_t len, const char *name,
                const char *file_name, struct mirror_list *out,
                struct cloop_err *err)
{
  xmlDocPtr doc;
  xmlNodePtr root, file;
  xmlChar *fname;
  int r = -1;

  mirrorlist_global_init ();
  if ((doc = read_xml (buf, len, name, err)) == NULL)
    return -1;
  root = xmlDocGetRootElement (doc);
  if (check_root (root, name, err) == -1 ||
      (file = pick_file (root, name, file_name, err)) == NULL)
    goto out;
  out->is_metalink = true;
  if ((fname = xmlGetNoNsProp (file, BAD_CAST "name")) != NULL) {
    out->file_name = strdup ((const char *) fname);
    xmlFree (fname);
    if (out->file_name == NULL) {
      cloop_err_set (err, ENOMEM, "out of memory");
      goto out;
    }
  }
  for (xmlNodePtr c = file->children; c != NULL; c = c->next) {
    int cr = 0;
    if (is_ml (c, "url"))
      cr = file_url (c, name, out, err);
    else if (is_ml (c, "size"))
      cr = file_size (c, name, out, err);
    else if (is_ml (c, "hash"))
      cr = file_hash (c, name, out, err);
    if (cr == -1)
      goto out;
  }
  r = 0;
 out:
  xmlFreeDoc (doc);
  return r;
}

/* ------------------------------------------------------------------ */

/* A metalink starts with '<' (after a UTF-8 byte-order mark and
 * blanks) or with a UTF-16/32 byte-order mark or '<' in UTF-16/32. */
static bool
looks_like_xml (const unsigned char *b, size_t len)
{
  if (len >= 2 && ((b[0] == 0xfe && b[1] == 0xff) ||
                   (b[0] == 0xff && b[1] == 0xfe) ||
                   (b[0] == '<' && b[1] == 0) || (b[0] == 0 && b[1] == '<')))
    return true;
  if (len >= 4 && b[0] == 0 && b[1] == 0 && (b[2] == 0 || b[2] == 0xfe))
    return true;
  if (len >= 3 && b[0] == 0xef && b[1] == 0xbb && b[2] == 0xbf)
    b += 3, len -= 3;
  while (len > 0 && is_blank (*b))
    b++, len--;
  return len > 0 && *b == '<';
}

int
mirrorlist_parse_file (const void *buf, size_t len, const char *name,
                       const char *file_name, struct mirror_list *out,
                       struct cloop_err *err)
{
  const unsigned char *b = buf;
  int r;

  memset (out, 0, sizeof *out);
  if (len > MIRRORLIST_MAX_BYTES)
    return cloop_err_set (err, EINVAL, "%s: %zu bytes is larger than the "
                          "limit of %u for a mirror list", name, len,
                          MIRRORLIST_MAX_BYTES);
  if (len == 0)
    return cloop_err_set (err, EINVAL, "%s: an empty mirror list", name);
  if (looks_like_xml (b, len))
    r = parse_metalink (buf, len, name, file_name, out, err);
  else {
    if (len >= 3 && b[0] == 0xef && b[1] == 0xbb && b[2] == 0xbf)
      b += 3, len -= 3;
    r = parse_plain ((const char *) b, len, name, out, err);
  }
  if (r == 0) {
    sort_and_dedup (out);
    if (out->n == 0)
      r = no_mirror (out, name, err);
  }
  if (r == -1)
    mirror_list_free (out);
  return r;
}

int
mirrorlist_parse (const void *buf, size_t len, const char *name,
                  struct mirror_list *out, struct cloop_err *err)
{
  return mirrorlist_parse_file (buf, len, name, NULL, out, err);
}
