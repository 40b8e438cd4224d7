/* text.c - byte buffers, strict and lossy UTF-8, and the few Unicode
 * character classes the tokenizer needs (whitespace, word, numeric). */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "tokenizer/tokenizer-impl.h"
#include "util/util.h"

int lp__tbuf_reserve(lp__tbuf *b, size_t extra) {
    size_t need;
    if (!lp__add_size(b->n, extra, &need) || !lp__add_size(need, 1, &need))
        return LP_ERR_NOMEM;
    if (need <= b->cap)
        return LP_OK;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need) {
        if (!lp__mul_size(cap, 2, &cap))
            return LP_ERR_NOMEM;
    }
    char *p = realloc(b->p, cap);
    if (!p)
        return LP_ERR_NOMEM;
    b->p = p;
    b->cap = cap;
    return LP_OK;
}

int lp__tbuf_put(lp__tbuf *b, const void *s, size_t n) {
    if (lp__tbuf_reserve(b, n) != LP_OK)
        return LP_ERR_NOMEM;
    if (n)
        memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
    return LP_OK;
}

void lp__tbuf_free(lp__tbuf *b) {
    free(b->p);
    b->p = NULL;
    b->n = b->cap = 0;
}

/* Length of the sequence a lead byte announces (0: not a lead byte), and the
 * allowed range of the second byte (Unicode Table 3-7). */
static size_t lead_info(unsigned char c, unsigned char *lo, unsigned char *hi) {
    *lo = 0x80;
    *hi = 0xBF;
    if (c < 0x80)
        return 1;
    if (c < 0xC2)
        return 0;
    if (c < 0xE0)
        return 2;
    if (c < 0xF0) {
        if (c == 0xE0)
            *lo = 0xA0;
        else if (c == 0xED)
            *hi = 0x9F;
        return 3;
    }
    if (c < 0xF5) {
        if (c == 0xF0)
            *lo = 0x90;
        else if (c == 0xF4)
            *hi = 0x8F;
        return 4;
    }
    return 0;
}

int lp__utf8_lossy_step(const unsigned char *s, size_t n, size_t *len) {
    unsigned char lo, hi;
    size_t need = lead_info(s[0], &lo, &hi);
    if (need == 0) {
        *len = 1;
        return 0;
    }
    for (size_t i = 1; i < need; i++) {
        if (i >= n) {
            *len = n;
            return -1;
        }
        unsigned char c = s[i];
        bool ok = i == 1 ? (c >= lo && c <= hi) : (c >= 0x80 && c <= 0xBF);
        if (!ok) {
            *len = i;
            return 0;
        }
    }
    *len = need;
    return 1;
}

size_t lp__utf8_check(const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        if (u[i] < 0x80) {
            i++;
            continue;
        }
        size_t len;
        if (lp__utf8_lossy_step(u + i, n - i, &len) != 1)
            return i;
        i += len;
    }
    return n;
}

int lp__utf8_lossy_append(lp__tbuf *out, const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        size_t run = i;
        while (run < n && u[run] < 0x80)
            run++;
        if (run > i && lp__tbuf_put(out, s + i, run - i) != LP_OK)
            return LP_ERR_NOMEM;
        i = run;
        if (i >= n)
            break;
        size_t len;
        int r = lp__utf8_lossy_step(u + i, n - i, &len);
        int rc = r == 1 ? lp__tbuf_put(out, s + i, len)
                        : lp__tbuf_put(out, "\xEF\xBF\xBD", 3);
        if (rc != LP_OK)
            return rc;
        i += len;
    }
    return LP_OK;
}

size_t lp__utf8_len(const char *s, size_t n) {
    unsigned char lo, hi;
    size_t need = lead_info((unsigned char)s[0], &lo, &hi);
    if (need == 0 || need > n)
        return 1;
    return need;
}

size_t lp__utf8_dec(const char *s, size_t n, uint32_t *cp) {
    const unsigned char *u = (const unsigned char *)s;
    size_t len = lp__utf8_len(s, n);
    uint32_t c;
    switch (len) {
    case 2:
        c = ((uint32_t)(u[0] & 0x1F) << 6) | (u[1] & 0x3F);
        break;
    case 3:
        c = ((uint32_t)(u[0] & 0x0F) << 12) | ((uint32_t)(u[1] & 0x3F) << 6) |
            (u[2] & 0x3F);
        break;
    case 4:
        c = ((uint32_t)(u[0] & 0x07) << 18) | ((uint32_t)(u[1] & 0x3F) << 12) |
            ((uint32_t)(u[2] & 0x3F) << 6) | (u[3] & 0x3F);
        break;
    default:
        c = u[0];
        break;
    }
    *cp = c;
    return len;
}

size_t lp__utf8_enc(uint32_t cp, char out[4]) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

bool lp__uni_is_space(uint32_t c) {
    return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 ||
           c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 ||
           c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

bool lp__uni_is_word(uint32_t c) {
    if (c < 0x80)
        return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
               (c >= 'A' && c <= 'Z') || c == '_';
    if (c == 0x200C || c == 0x200D)
        return true;
    switch (utf8proc_category((utf8proc_int32_t)c)) {
    case UTF8PROC_CATEGORY_LU:
    case UTF8PROC_CATEGORY_LL:
    case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO:
    case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_MN:
    case UTF8PROC_CATEGORY_MC:
    case UTF8PROC_CATEGORY_ME:
    case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_PC:
        return true;
    default:
        return false;
    }
}

bool lp__uni_is_numeric(uint32_t c) {
    if (c < 0x80)
        return c >= '0' && c <= '9';
    switch (utf8proc_category((utf8proc_int32_t)c)) {
    case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_NO:
        return true;
    default:
        return false;
    }
}

/* ---- GPT-2 byte <-> unicode tables (built once) ---- */

static char g_bl_utf8[256][2];
static unsigned char g_bl_len[256];
static int16_t g_bl_byte[512]; /* code point -> byte, -1 if none */
static pthread_once_t g_bl_once = PTHREAD_ONCE_INIT;

static void bl_init(void) {
    unsigned extra = 0;
    for (unsigned i = 0; i < 512; i++)
        g_bl_byte[i] = -1;
    for (unsigned c = 0; c < 256; c++) {
        bool keep = (c >= '!' && c <= '~') || (c >= 0xA1 && c <= 0xAC) ||
                    (c >= 0xAE && c <= 0xFF);
        uint32_t cp = keep ? c : 256 + extra++;
        char enc[4];
        size_t l = lp__utf8_enc(cp, enc);
        memcpy(g_bl_utf8[c], enc, l);
        g_bl_len[c] = (unsigned char)l;
        g_bl_byte[cp] = (int16_t)c;
    }
}

const char *lp__bytelevel_utf8(unsigned char b, size_t *len) {
    pthread_once(&g_bl_once, bl_init);
    *len = g_bl_len[b];
    return g_bl_utf8[b];
}

int lp__bytelevel_byte(uint32_t cp) {
    pthread_once(&g_bl_once, bl_init);
    return cp < 512 ? g_bl_byte[cp] : -1;
}
