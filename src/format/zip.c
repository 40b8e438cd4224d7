/* zip.c - minimal read-only ZIP reader (stored entries, zip64) for torch.save archives. */
#include "format/zip.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "util/util.h"

#define SIG_LOCAL 0x04034b50u
#define SIG_CENTRAL 0x02014b50u
#define SIG_EOCD 0x06054b50u
#define SIG_EOCD64 0x06064b50u
#define SIG_LOC64 0x07064b50u

#define EOCD_SIZE 22u
#define LOC64_SIZE 20u
#define EOCD64_MIN 56u
#define CENTRAL_SIZE 46u
#define LOCAL_SIZE 30u

/* General-purpose flag bits that mean the data is encrypted. */
#define FLAG_ENCRYPTED 0x0001u
#define FLAG_STRONG_ENCRYPTION 0x0040u
#define FLAG_MASKED_HEADERS 0x2000u

struct lp__zip {
    lp__zip_entry *entries;      /* [n] central-directory order */
    const lp__zip_entry **sorted; /* [n] by name, for lookup */
    char *names;                 /* arena of NUL-terminated names */
    size_t n;
};

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static uint32_t rd32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
           ((uint32_t)p[3] << 24);
}
static uint64_t rd64(const uint8_t *p) { return (uint64_t)rd32(p) | ((uint64_t)rd32(p + 4) << 32); }

/* True iff [off, off+n) lies within [0, limit). */
static bool in_range(uint64_t off, uint64_t n, uint64_t limit) {
    uint64_t end;
    return !__builtin_add_overflow(off, n, &end) && end <= limit;
}

/* Copy a name for an error message: printable ASCII only, bounded. */
static void safe_name(const char *s, size_t n, char *out, size_t cap) {
    size_t k = 0, i = 0;
    for (; i < n && k + 4 < cap; i++)
        out[k++] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
    if (i < n) {
        memcpy(out + k, "...", 3);
        k += 3;
    }
    out[k] = '\0';
}

/* Locate the end-of-central-directory record: the last signature whose
 * comment runs exactly to the end of the archive. */
static bool find_eocd(const uint8_t *buf, size_t len, size_t *pos) {
    if (len < EOCD_SIZE)
        return false;
    size_t lo = len - EOCD_SIZE > 65535u ? len - EOCD_SIZE - 65535u : 0;
    for (size_t p = len - EOCD_SIZE + 1; p-- > lo;) {
        if (rd32(buf + p) == SIG_EOCD && p + EOCD_SIZE + rd16(buf + p + 20) == len) {
            *pos = p;
            return true;
        }
    }
    return false;
}

static int cmp_entry_ptr(const void *a, const void *b) {
    const lp__zip_entry *x = *(const lp__zip_entry *const *)a;
    const lp__zip_entry *y = *(const lp__zip_entry *const *)b;
    return strcmp(x->name, y->name);
}

/* Read the zip64 extended-information extra field (id 1) for the values
 * that are saturated in the central record. */
static int parse_zip64_extra(const uint8_t *ex, size_t exlen, uint64_t *usize, uint64_t *csize,
                             uint64_t *local, uint32_t *disk, const char *label,
                             const char *name, lp_error *err) {
    bool need_u = *usize == 0xffffffffu, need_c = *csize == 0xffffffffu;
    bool need_l = *local == 0xffffffffu, need_d = *disk == 0xffffu;
    size_t q = 0;
    bool seen = false;
    while (q < exlen) {
        if (exlen - q < 4)
            return lp_error_set(err, LP_ERR_FORMAT, "%s: entry '%s': truncated extra field",
                                label, name);
        uint16_t id = rd16(ex + q), sz = rd16(ex + q + 2);
        q += 4;
        if (sz > exlen - q)
            return lp_error_set(err, LP_ERR_FORMAT,
                                "%s: entry '%s': extra field 0x%04x runs past its record",
                                label, name, id);
        if (id == 0x0001 && !seen) {
            seen = true;
            const uint8_t *f = ex + q;
            size_t left = sz;
            if (need_u) {
                if (left < 8)
                    goto short_z64;
                *usize = rd64(f), f += 8, left -= 8;
            }
            if (need_c) {
                if (left < 8)
                    goto short_z64;
                *csize = rd64(f), f += 8, left -= 8;
            }
            if (need_l) {
                if (left < 8)
                    goto short_z64;
                *local = rd64(f), f += 8, left -= 8;
            }
            if (need_d) {
                if (left < 4)
                    goto short_z64;
                *disk = rd32(f);
            }
        }
        q += sz;
    }
    if ((need_u || need_c || need_l || need_d) && !seen)
        return lp_error_set(err, LP_ERR_FORMAT,
                            "%s: entry '%s': zip64 sizes without a zip64 extra field", label,
                            name);
    return LP_OK;
short_z64:
    return lp_error_set(err, LP_ERR_FORMAT, "%s: entry '%s': zip64 extra field too short",
                        label, name);
}

/* Find the central directory (offset, size, entry count), zip64 aware.
 * `cd_limit` is where the central directory must end. */
static int read_eocd(const uint8_t *buf, size_t len, const char *label, uint64_t *cd_off,
                     uint64_t *cd_size, uint64_t *count, uint64_t *cd_limit, lp_error *err) {
    size_t e;
    if (!find_eocd(buf, len, &e))
        return lp_error_set(err, LP_ERR_FORMAT,
                            "%s: not a zip archive (no end-of-central-directory record)",
                            label);
    const uint8_t *r = buf + e;
    uint16_t disk = rd16(r + 4), cd_disk = rd16(r + 6);
    uint16_t n_disk = rd16(r + 8), n_total = rd16(r + 10);
    uint32_t size32 = rd32(r + 12), off32 = rd32(r + 16);

    if (e >= LOC64_SIZE && rd32(buf + e - LOC64_SIZE) == SIG_LOC64) {
        const uint8_t *l = buf + e - LOC64_SIZE;
        uint64_t z_off = rd64(l + 8);
        uint64_t limit = e - LOC64_SIZE;
        if (rd32(l + 4) != 0 || rd32(l + 16) > 1)
            return lp_error_set(err, LP_ERR_UNSUPPORTED,
                                "%s: multi-disk zip archives are not supported", label);
        if (!in_range(z_off, EOCD64_MIN, limit) || rd32(buf + z_off) != SIG_EOCD64)
            return lp_error_set(err, LP_ERR_FORMAT,
                                "%s: zip64 end-of-central-directory record missing or out "
                                "of the archive",
                                label);
        const uint8_t *z = buf + z_off;
        uint64_t rec = rd64(z + 4);
        if (rec < EOCD64_MIN - 12 || !in_range(z_off + 12, rec, limit))
            return lp_error_set(err, LP_ERR_FORMAT,
                                "%s: zip64 end-of-central-directory record has a bad size",
                                label);
        if (rd32(z + 16) != 0 || rd32(z + 20) != 0)
            return lp_error_set(err, LP_ERR_UNSUPPORTED,
                                "%s: multi-disk zip archives are not supported", label);
        if (rd64(z + 24) != rd64(z + 32))
            return lp_error_set(err, LP_ERR_FORMAT,
                                "%s: zip64 entry counts disagree", label);
        *count = rd64(z + 32);
        *cd_size = rd64(z + 40);
        *cd_off = rd64(z + 48);
        *cd_limit = z_off;
    } else {
        if (disk == 0xffff || cd_disk == 0xffff || n_disk == 0xffff || n_total == 0xffff ||
            size32 == 0xffffffffu || off32 == 0xffffffffu)
            return lp_error_set(err, LP_ERR_FORMAT,
                                "%s: zip64 values in the end-of-central-directory record "
                                "but no zip64 locator",
                                label);
        *count = n_total;
        *cd_size = size32;
        *cd_off = off32;
        *cd_limit = e;
    }
    if (disk != 0 && disk != 0xffff)
        return lp_error_set(err, LP_ERR_UNSUPPORTED,
                            "%s: multi-disk zip archives are not supported", label);
    if (cd_disk != 0 && cd_disk != 0xffff)
        return lp_error_set(err, LP_ERR_UNSUPPORTED,
                            "%s: multi-disk zip archives are not supported", label);
    if (n_disk != n_total)
        return lp_error_set(err, LP_ERR_UNSUPPORTED,
                            "%s: multi-disk zip archives are not supported", label);
    if (!in_range(*cd_off, *cd_size, *cd_limit))
        return lp_error_set(err, LP_ERR_FORMAT,
                            "%s: central directory (offset %llu, %llu bytes) lies outside "
                            "the archive",
                            label, (unsigned long long)*cd_off, (unsigned long long)*cd_size);
    return LP_OK;
}

/* Validate one entry's local header and find its data. */
static int read_local(const uint8_t *buf, uint64_t cd_off, uint64_t local, lp__zip_entry *ent,
                      const char *label, const char *shown, lp_error *err) {
    if (!in_range(local, LOCAL_SIZE, cd_off) || rd32(buf + local) != SIG_LOCAL)
        return lp_error_set(err, LP_ERR_FORMAT,
                            "%s: entry '%s': local header at offset %llu is missing or out "
                            "of the archive",
                            label, shown, (unsigned long long)local);
    const uint8_t *h = buf + local;
    uint16_t flags = rd16(h + 6), method = rd16(h + 8);
    uint16_t nlen = rd16(h + 26), elen = rd16(h + 28);
    if (flags & (FLAG_ENCRYPTED | FLAG_STRONG_ENCRYPTION))
        return lp_error_set(err, LP_ERR_UNSUPPORTED, "%s: entry '%s' is encrypted", label,
                            shown);
    if (method != 0)
        return lp_error_set(err, LP_ERR_UNSUPPORTED,
                            "%s: entry '%s' is compressed (method %u); only stored entries "
                            "are supported",
                            label, shown, method);
    if (!in_range(local + LOCAL_SIZE, (uint64_t)nlen + elen, cd_off))
        return lp_error_set(err, LP_ERR_FORMAT,
                            "%s: entry '%s': local header runs past the entries", label,
                            shown);
    if (nlen != ent->name_len || memcmp(h + LOCAL_SIZE, ent->name, nlen) != 0)
        return lp_error_set(err, LP_ERR_FORMAT,
                            "%s: entry '%s': local header names a different file", label,
                            shown);
    uint64_t data = local + LOCAL_SIZE + nlen + elen;
    if (!in_range(data, ent->size, cd_off))
        return lp_error_set(err, LP_ERR_FORMAT,
                            "%s: entry '%s': %llu bytes at offset %llu run past the "
                            "entries",
                            label, shown, (unsigned long long)ent->size,
                            (unsigned long long)data);
    ent->data = buf + data;
    return LP_OK;
}

int lp__zip_open(const uint8_t *buf, size_t len, const char *label, size_t max_entries,
                 lp__zip **out, lp_error *err) {
    *out = NULL;
    uint64_t cd_off = 0, cd_size = 0, count = 0, cd_limit = 0;
    int rc = read_eocd(buf, len, label, &cd_off, &cd_size, &count, &cd_limit, err);
    if (rc)
        return rc;
    if (count > max_entries)
        return lp_error_set(err, LP_ERR_LIMIT, "%s: %llu zip entries, limit is %zu", label,
                            (unsigned long long)count, max_entries);
    if (count > cd_size / CENTRAL_SIZE)
        return lp_error_set(err, LP_ERR_FORMAT,
                            "%s: central directory of %llu bytes cannot hold %llu entries",
                            label, (unsigned long long)cd_size, (unsigned long long)count);

    lp__zip *z = calloc(1, sizeof *z);
    if (!z)
        return lp_error_set(err, LP_ERR_NOMEM, "%s: out of memory", label);
    size_t n = (size_t)count;
    z->entries = lp__calloc_array(n ? n : 1, sizeof *z->entries);
    z->sorted = lp__calloc_array(n ? n : 1, sizeof *z->sorted);
    /* names fit in the central directory, plus one NUL each */
    z->names = malloc((size_t)cd_size + n + 1);
    if (!z->entries || !z->sorted || !z->names) {
        rc = lp_error_set(err, LP_ERR_NOMEM, "%s: out of memory", label);
        goto fail;
    }

    const uint8_t *cd = buf + cd_off;
    size_t pos = 0, name_pos = 0;
    for (size_t i = 0; i < n; i++) {
        if (cd_size - pos < CENTRAL_SIZE || rd32(cd + pos) != SIG_CENTRAL) {
            rc = lp_error_set(err, LP_ERR_FORMAT,
                              "%s: central directory entry %zu is truncated or has a bad "
                              "signature",
                              label, i);
            goto fail;
        }
        const uint8_t *c = cd + pos;
        uint16_t flags = rd16(c + 8), method = rd16(c + 10);
        uint32_t crc = rd32(c + 16);
        uint64_t csize = rd32(c + 20), usize = rd32(c + 24);
        size_t nlen = rd16(c + 28), elen = rd16(c + 30), clen = rd16(c + 32);
        uint32_t disk = rd16(c + 34);
        uint64_t local = rd32(c + 42);
        if (cd_size - pos - CENTRAL_SIZE < nlen + elen + clen) {
            rc = lp_error_set(err, LP_ERR_FORMAT,
                              "%s: central directory entry %zu runs past the directory",
                              label, i);
            goto fail;
        }
        const uint8_t *nm = c + CENTRAL_SIZE;
        char shown[96];
        safe_name((const char *)nm, nlen, shown, sizeof shown);
        if (nlen == 0 || memchr(nm, 0, nlen)) {
            rc = lp_error_set(err, LP_ERR_FORMAT,
                              "%s: central directory entry %zu has an empty name or a NUL "
                              "in its name ('%s')",
                              label, i, shown);
            goto fail;
        }
        lp__zip_entry *ent = &z->entries[i];
        memcpy(z->names + name_pos, nm, nlen);
        z->names[name_pos + nlen] = '\0';
        ent->name = z->names + name_pos;
        ent->name_len = nlen;
        name_pos += nlen + 1;

        rc = parse_zip64_extra(nm + nlen, elen, &usize, &csize, &local, &disk, label,
                               shown, err);
        if (rc)
            goto fail;
        if (flags & (FLAG_ENCRYPTED | FLAG_STRONG_ENCRYPTION | FLAG_MASKED_HEADERS)) {
            rc = lp_error_set(err, LP_ERR_UNSUPPORTED, "%s: entry '%s' is encrypted", label,
                              shown);
            goto fail;
        }
        if (method != 0) {
            rc = lp_error_set(err, LP_ERR_UNSUPPORTED,
                              "%s: entry '%s' is compressed (method %u); only stored "
                              "entries are supported",
                              label, shown, method);
            goto fail;
        }
        if (csize != usize) {
            rc = lp_error_set(err, LP_ERR_FORMAT,
                              "%s: entry '%s' is stored but its sizes differ (%llu vs %llu)",
                              label, shown, (unsigned long long)csize,
                              (unsigned long long)usize);
            goto fail;
        }
        if (disk != 0) {
            rc = lp_error_set(err, LP_ERR_UNSUPPORTED,
                              "%s: entry '%s' is on another disk (multi-disk archives are "
                              "not supported)",
                              label, shown);
            goto fail;
        }
        ent->size = usize;
        ent->crc32 = crc;
        rc = read_local(buf, cd_off, local, ent, label, shown, err);
        if (rc)
            goto fail;
        z->sorted[i] = ent;
        pos += CENTRAL_SIZE + nlen + elen + clen;
    }
    if (pos != cd_size) {
        rc = lp_error_set(err, LP_ERR_FORMAT,
                          "%s: central directory is %llu bytes but its %zu entries use %zu",
                          label, (unsigned long long)cd_size, n, pos);
        goto fail;
    }
    z->n = n;
    if (n > 1)
        qsort(z->sorted, n, sizeof *z->sorted, cmp_entry_ptr);
    for (size_t i = 1; i < n; i++) {
        if (!strcmp(z->sorted[i - 1]->name, z->sorted[i]->name)) {
            rc = lp_error_set(err, LP_ERR_FORMAT, "%s: duplicate zip entry '%s'", label,
                              z->sorted[i]->name);
            goto fail;
        }
    }
    *out = z;
    return LP_OK;
fail:
    lp__zip_close(z);
    return rc;
}

void lp__zip_close(lp__zip *z) {
    if (!z)
        return;
    free(z->entries);
    free(z->sorted);
    free(z->names);
    free(z);
}

size_t lp__zip_count(const lp__zip *z) { return z->n; }

const lp__zip_entry *lp__zip_at(const lp__zip *z, size_t i) {
    return i < z->n ? &z->entries[i] : NULL;
}

long lp__zip_find(const lp__zip *z, const char *name) {
    size_t lo = 0, hi = z->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(z->sorted[mid]->name, name);
        if (c == 0)
            return (long)(z->sorted[mid] - z->entries);
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -1;
}

/* CRC-32 (IEEE 802.3, reflected), slicing by 8. */
static uint32_t g_crc_tab[8][256];
static pthread_once_t g_crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
        g_crc_tab[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++)
            g_crc_tab[t][i] = (g_crc_tab[t - 1][i] >> 8) ^ g_crc_tab[0][g_crc_tab[t - 1][i] & 0xff];
}

uint32_t lp__crc32(const void *data, size_t len) {
    pthread_once(&g_crc_once, crc_init);
    const uint8_t *p = data;
    uint32_t c = 0xffffffffu;
    while (len >= 8) {
        uint32_t a = c ^ rd32(p), b = rd32(p + 4);
        c = g_crc_tab[7][a & 0xff] ^ g_crc_tab[6][(a >> 8) & 0xff] ^
            g_crc_tab[5][(a >> 16) & 0xff] ^ g_crc_tab[4][a >> 24] ^
            g_crc_tab[3][b & 0xff] ^ g_crc_tab[2][(b >> 8) & 0xff] ^
            g_crc_tab[1][(b >> 16) & 0xff] ^ g_crc_tab[0][b >> 24];
        p += 8;
        len -= 8;
    }
    while (len--)
        c = g_crc_tab[0][(c ^ *p++) & 0xff] ^ (c >> 8);
    return c ^ 0xffffffffu;
}

int lp__zip_verify(const lp__zip *z, size_t i, lp_error *err) {
    if (i >= z->n)
        return lp_error_set(err, LP_ERR_INVALID, "zip entry index %zu out of range", i);
    const lp__zip_entry *e = &z->entries[i];
    if (e->crc32 == 0)
        return LP_OK;
    uint32_t got = lp__crc32(e->data, (size_t)e->size);
    if (got != e->crc32) {
        char shown[96];
        safe_name(e->name, e->name_len, shown, sizeof shown);
        return lp_error_set(err, LP_ERR_FORMAT,
                            "entry '%s': CRC-32 mismatch (stored %08x, data %08x): the "
                            "archive is corrupt",
                            shown, e->crc32, got);
    }
    return LP_OK;
}
