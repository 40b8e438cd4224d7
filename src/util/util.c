/* util.c - checked allocation, bounded file I/O, paths, half floats. */
#include "util/util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

void *lp__malloc_array(size_t n, size_t size) {
    size_t total;
    if (!lp__mul_size(n, size, &total))
        return NULL;
    return malloc(total ? total : 1);
}

void *lp__calloc_array(size_t n, size_t size) {
    size_t total;
    if (!lp__mul_size(n, size, &total))
        return NULL;
    return calloc(total ? n : 1, total ? size : 1);
}

int lp__array_grow(void **v, size_t n, size_t *cap, size_t elem, size_t min_cap) {
    if (n < *cap)
        return LP_OK;
    size_t nc = *cap ? *cap * 2 : min_cap, bytes;
    if (nc <= n || !lp__mul_size(nc, elem, &bytes))
        return LP_ERR_NOMEM;
    void *p = realloc(*v, bytes);
    if (!p)
        return LP_ERR_NOMEM;
    *v = p;
    *cap = nc;
    return LP_OK;
}

int lp__read_file(const char *path, size_t max_bytes, char **out, size_t *len,
                  lp_error *err) {
    *out = NULL;
    if (len)
        *len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return lp_error_set(err, errno == ENOENT ? LP_ERR_NOT_FOUND : LP_ERR_IO,
                            "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return lp_error_set(err, LP_ERR_IO, "%s: not a regular file", path);
    }
    if ((uint64_t)st.st_size > (uint64_t)max_bytes) {
        close(fd);
        return lp_error_set(err, LP_ERR_LIMIT,
                            "%s: file is %lld bytes, limit is %zu", path,
                            (long long)st.st_size, max_bytes);
    }
    size_t cap = (size_t)st.st_size;
    char *buf = malloc(cap + 1);
    if (!buf) {
        close(fd);
        return lp_error_set(err, LP_ERR_NOMEM, "%s: out of memory", path);
    }
    size_t got = 0;
    while (got < cap) {
        ssize_t r = read(fd, buf + got, cap - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            int e = errno;
            free(buf);
            close(fd);
            return lp_error_set(err, LP_ERR_IO, "%s: read: %s", path, strerror(e));
        }
        if (r == 0)
            break; /* file shrank while reading: use what we have */
        got += (size_t)r;
    }
    close(fd);
    buf[got] = '\0';
    *out = buf;
    if (len)
        *len = got;
    return LP_OK;
}

int lp__write_file_atomic(const char *path, const void *data, size_t len,
                          lp_error *err) {
    size_t n = strlen(path) + 8;
    char *tmp = malloc(n);
    if (!tmp)
        return lp_error_set(err, LP_ERR_NOMEM, "out of memory");
    snprintf(tmp, n, "%s.tmp", path);
    int rc = LP_OK;
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        rc = lp_error_set(err, LP_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
        goto out;
    }
    if (len && fwrite(data, 1, len, f) != len) {
        rc = lp_error_set(err, LP_ERR_IO, "%s: write failed: %s", tmp, strerror(errno));
        fclose(f);
        unlink(tmp);
        goto out;
    }
    if (fflush(f) != 0 || fsync(fileno(f)) != 0) {
        rc = lp_error_set(err, LP_ERR_IO, "%s: flush failed: %s", tmp, strerror(errno));
        fclose(f);
        unlink(tmp);
        goto out;
    }
    fclose(f);
    if (rename(tmp, path) != 0) {
        rc = lp_error_set(err, LP_ERR_IO, "%s: rename failed: %s", path, strerror(errno));
        unlink(tmp);
    }
out:
    free(tmp);
    return rc;
}

int lp__prepare_empty_dir(const char *dir, bool *created, lp_error *err) {
    if (created)
        *created = false;
    if (lp__is_dir(dir)) {
        DIR *d = opendir(dir);
        struct dirent *e;
        bool empty = true;
        while (d && (e = readdir(d)))
            if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
                empty = false;
        if (d)
            closedir(d);
        return empty ? LP_OK : lp_error_set(err, LP_ERR_EXISTS, "%s: output directory exists and is not empty", dir);
    }
    if (mkdir(dir, 0755) != 0)
        return lp_error_set(err, LP_ERR_IO, "%s: cannot create: %s", dir, strerror(errno));
    if (created)
        *created = true;
    return LP_OK;
}

char *lp__path_join(const char *dir, const char *name) {
    size_t a = strlen(dir), b = strlen(name);
    char *p = malloc(a + b + 2);
    if (!p)
        return NULL;
    memcpy(p, dir, a);
    size_t k = a;
    if (a && dir[a - 1] != '/')
        p[k++] = '/';
    memcpy(p + k, name, b + 1);
    return p;
}

bool lp__file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

bool lp__is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

char *lp__strdup(const char *s) {
    if (!s)
        return NULL;
    size_t n = strlen(s) + 1;
    char *p = malloc(n);
    if (p)
        memcpy(p, s, n);
    return p;
}

double lp__now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

float lp__f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    uint32_t u;
    if (exp == 0) {
        if (mant == 0) {
            u = sign;
        } else { /* subnormal: normalise */
            int e = -1;
            do {
                e++;
                mant <<= 1;
            } while (!(mant & 0x400u));
            u = sign | ((uint32_t)(127 - 15 - e) << 23) | ((mant & 0x3ffu) << 13);
        }
    } else if (exp == 31) {
        u = sign | 0x7f800000u | (mant << 13);
    } else {
        u = sign | ((exp + 127 - 15) << 23) | (mant << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t lp__f32_to_f16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    uint32_t sign = (u >> 16) & 0x8000u;
    uint32_t absu = u & 0x7fffffffu;
    if (absu > 0x7f800000u)
        return (uint16_t)(sign | 0x7e00u);
    if (absu >= 0x477ff000u) /* rounds to >= 65520: inf */
        return (uint16_t)(sign | 0x7c00u);
    if (absu < 0x38800000u) { /* subnormal or zero in f16 */
        float af;
        memcpy(&af, &absu, 4);
        /* scale so that the f16 subnormal unit is 1, round to nearest even */
        float scaled = af * 16777216.0f; /* 2^24 */
        uint32_t m = (uint32_t)scaled;
        float rem = scaled - (float)m;
        if (rem > 0.5f || (rem == 0.5f && (m & 1u)))
            m++;
        return (uint16_t)(sign | m);
    }
    uint32_t exp = ((absu >> 23) - 127 + 15);
    uint32_t mant = absu & 0x7fffffu;
    uint32_t h = (exp << 10) | (mant >> 13);
    uint32_t rest = mant & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u)))
        h++;
    return (uint16_t)(sign | h);
}
