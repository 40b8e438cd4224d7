/* zip.h - internal: a minimal read-only ZIP reader over an in-memory archive,
 * enough for torch.save files: stored (uncompressed) entries only, zip64
 * end-of-central-directory and extra fields, every offset and size bounds-
 * and overflow-checked. Compressed or encrypted entries, multi-disk archives,
 * duplicate names and entries outside the archive are rejected. */
#ifndef LP_FORMAT_ZIP_H
#define LP_FORMAT_ZIP_H

#include <stddef.h>
#include <stdint.h>

#include "loraplex/status.h"

typedef struct lp__zip_entry {
    const char *name;     /* NUL-terminated, no embedded NUL; owned by the zip */
    size_t name_len;
    const uint8_t *data;  /* into the caller's buffer */
    uint64_t size;        /* bytes at data */
    uint32_t crc32;       /* from the central directory; 0 = not computed */
} lp__zip_entry;

typedef struct lp__zip lp__zip;

/* Parse the central directory of `buf` (not copied: it must outlive the zip)
 * and validate every entry's local header and data range. At most
 * `max_entries` entries. Errors are prefixed with `label`. */
int lp__zip_open(const uint8_t *buf, size_t len, const char *label,
                 size_t max_entries, lp__zip **out, lp_error *err);
void lp__zip_close(lp__zip *z);

size_t lp__zip_count(const lp__zip *z);
/* Entries in central-directory order. */
const lp__zip_entry *lp__zip_at(const lp__zip *z, size_t i);
/* Exact-name lookup (O(log n)); returns the entry index or -1. */
long lp__zip_find(const lp__zip *z, const char *name);

/* Check an entry's data against its CRC-32 (skipped when the stored CRC is 0:
 * torch can save with CRC computation disabled). */
int lp__zip_verify(const lp__zip *z, size_t i, lp_error *err);

uint32_t lp__crc32(const void *data, size_t len);

#endif
