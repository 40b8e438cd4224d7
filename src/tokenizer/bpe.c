/* bpe.c - the BPE model: vocab and merge hash maps, and the merge loop of
 * HF tokenizers' Word::merge_all (lowest rank first, then leftmost) with a
 * binary heap, so one word costs O(n log n). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tokenizer-impl.h"
#include "util/util.h"

/* ---- string -> id map: open addressing over ids, keys live elsewhere ---- */

static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 0x100000001b3ull;
    }
    return h ^ (h >> 29);
}

int lp__strmap_init(lp__strmap *m, size_t n_items) {
    size_t cap = 16;
    while (cap < n_items * 2) {
        if (cap > ((size_t)1 << 40))
            return LP_ERR_NOMEM;
        cap *= 2;
    }
    m->slots = lp__malloc_array(cap, sizeof *m->slots);
    if (!m->slots)
        return LP_ERR_NOMEM;
    for (size_t i = 0; i < cap; i++)
        m->slots[i] = -1;
    m->mask = cap - 1;
    return LP_OK;
}

void lp__strmap_free(lp__strmap *m) {
    free(m->slots);
    m->slots = NULL;
    m->mask = 0;
}

int32_t lp__strmap_find(const lp__strmap *m, const char *s, size_t n,
                        lp__strmap_get_fn get, const void *ctx) {
    if (!m->slots)
        return -1;
    size_t i = (size_t)hash_bytes(s, n) & m->mask;
    for (;;) {
        int32_t id = m->slots[i];
        if (id < 0)
            return -1;
        size_t len;
        const char *k = get(ctx, id, &len);
        if (len == n && memcmp(k, s, n) == 0)
            return id;
        i = (i + 1) & m->mask;
    }
}

int32_t lp__strmap_insert(lp__strmap *m, int32_t id, lp__strmap_get_fn get,
                          const void *ctx) {
    size_t n;
    const char *s = get(ctx, id, &n);
    size_t i = (size_t)hash_bytes(s, n) & m->mask;
    for (;;) {
        int32_t cur = m->slots[i];
        if (cur < 0) {
            m->slots[i] = id;
            return -1;
        }
        size_t len;
        const char *k = get(ctx, cur, &len);
        if (len == n && memcmp(k, s, n) == 0)
            return cur;
        i = (i + 1) & m->mask;
    }
}

const char *lp__vocab_get(const void *ctx, int32_t id, size_t *len) {
    const lp_tokenizer *t = ctx;
    *len = t->vocab_len[id];
    return t->strs + t->vocab_off[id];
}

const char *lp__added_get(const void *ctx, int32_t id, size_t *len) {
    const lp_tokenizer *t = ctx;
    const lp__added *a = &t->added[t->added_of_id[id]];
    *len = a->len;
    return a->content;
}

int32_t lp__vocab_find(const lp_tokenizer *t, const char *s, size_t n) {
    return lp__strmap_find(&t->vocab, s, n, lp__vocab_get, t);
}

/* ---- (a, b) -> (rank, new id) ---- */

static uint64_t mix64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

int lp__mergemap_init(lp__mergemap *m, size_t n_items) {
    size_t cap = 16;
    while (cap < n_items * 2) {
        if (cap > ((size_t)1 << 40))
            return LP_ERR_NOMEM;
        cap *= 2;
    }
    m->slots = lp__calloc_array(cap, sizeof *m->slots);
    if (!m->slots)
        return LP_ERR_NOMEM;
    m->mask = cap - 1;
    m->n = 0;
    return LP_OK;
}

void lp__mergemap_free(lp__mergemap *m) {
    free(m->slots);
    m->slots = NULL;
    m->mask = m->n = 0;
}

static uint64_t pair_key(int32_t a, int32_t b) {
    return (((uint64_t)(uint32_t)a << 32) | (uint32_t)b) + 1;
}

void lp__mergemap_put(lp__mergemap *m, int32_t a, int32_t b, uint32_t rank,
                      int32_t new_id) {
    uint64_t key = pair_key(a, b);
    size_t i = (size_t)mix64(key) & m->mask;
    while (m->slots[i].key && m->slots[i].key != key)
        i = (i + 1) & m->mask;
    if (!m->slots[i].key)
        m->n++;
    m->slots[i].key = key;
    m->slots[i].rank = rank;
    m->slots[i].new_id = new_id;
}

const lp__merge_slot *lp__mergemap_get(const lp__mergemap *m, int32_t a, int32_t b) {
    if (!m->slots)
        return NULL;
    uint64_t key = pair_key(a, b);
    size_t i = (size_t)mix64(key) & m->mask;
    while (m->slots[i].key) {
        if (m->slots[i].key == key)
            return &m->slots[i];
        i = (i + 1) & m->mask;
    }
    return NULL;
}

int lp__ids_push(lp__ids *ids, int32_t id) {
    if (ids->n == ids->cap) {
        size_t cap = ids->cap ? ids->cap * 2 : 64;
        int32_t *v = lp__malloc_array(cap, sizeof *v);
        if (!v)
            return LP_ERR_NOMEM;
        if (ids->n)
            memcpy(v, ids->v, ids->n * sizeof *v);
        free(ids->v);
        ids->v = v;
        ids->cap = cap;
    }
    ids->v[ids->n++] = id;
    return LP_OK;
}

void lp__bpe_scratch_free(lp__bpe_scratch *s) {
    free(s->sym);
    free(s->heap);
    lp__tbuf_free(&s->tmp);
    memset(s, 0, sizeof *s);
}

/* ---- the merge loop ---- */

/* Heap order: lower rank first, then lower position (HF's Merge Ord). */
static bool item_less(const lp__bpe_item *a, const lp__bpe_item *b) {
    return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos;
}

static void heap_push(lp__bpe_item *h, size_t *n, lp__bpe_item it) {
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!item_less(&it, &h[p]))
            break;
        h[i] = h[p];
        i = p;
    }
    h[i] = it;
}

static lp__bpe_item heap_pop(lp__bpe_item *h, size_t *n) {
    lp__bpe_item top = h[0];
    lp__bpe_item last = h[--(*n)];
    size_t i = 0, cnt = *n;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        const lp__bpe_item *best = &last;
        if (l < cnt && item_less(&h[l], best)) {
            m = l;
            best = &h[l];
        }
        if (r < cnt && item_less(&h[r], best))
            m = r;
        if (m == i)
            break;
        h[i] = h[m];
        i = m;
    }
    if (cnt)
        h[i] = last;
    return top;
}

static int add_sym(lp__bpe_scratch *sc, size_t *n, int32_t id, size_t len) {
    if (*n == sc->sym_cap) {
        size_t cap = sc->sym_cap ? sc->sym_cap * 2 : 64;
        lp__bpe_sym *v = lp__malloc_array(cap, sizeof *v);
        if (!v)
            return LP_ERR_NOMEM;
        if (*n)
            memcpy(v, sc->sym, *n * sizeof *v);
        free(sc->sym);
        sc->sym = v;
        sc->sym_cap = cap;
    }
    lp__bpe_sym *s = &sc->sym[*n];
    s->id = id;
    s->len = (uint32_t)len;
    s->prev = (int32_t)*n - 1;
    s->next = (int32_t)*n + 1;
    (*n)++;
    return LP_OK;
}

static int32_t unk_id(const lp_tokenizer *t, lp_error *err) {
    int32_t id = lp__vocab_find(t, t->unk_token, strlen(t->unk_token));
    if (id < 0)
        lp_error_set(err, LP_ERR_FORMAT,
                     "model.unk_token: '%s' is not in the vocab", t->unk_token);
    return id;
}

int lp__bpe_word(const lp_tokenizer *t, lp__bpe_scratch *sc, const char *w,
                 size_t n, lp__ids *out, lp_error *err) {
    if (n == 0)
        return LP_OK;
    if (t->ignore_merges) {
        int32_t id = lp__vocab_find(t, w, n);
        if (id >= 0)
            return lp__ids_push(out, id) == LP_OK
                       ? LP_OK
                       : lp_error_set(err, LP_ERR_NOMEM, "out of memory");
    }
    if (n > INT32_MAX / 2)
        return lp_error_set(err, LP_ERR_LIMIT, "text: pre-token of %zu bytes is too long", n);

    /* 1. one symbol per character (with prefix/suffix, byte fallback, unk) */
    size_t ns = 0;
    int32_t unk = -1;
    size_t unk_len = 0;
    for (size_t i = 0; i < n;) {
        size_t clen = lp__utf8_len(w + i, n - i);
        bool first = i == 0, last = i + clen >= n;
        const char *s = w + i;
        size_t slen = clen;
        if ((!first && t->cont_prefix) || (last && t->eow_suffix)) {
            sc->tmp.n = 0;
            if ((!first && t->cont_prefix &&
                 lp__tbuf_put(&sc->tmp, t->cont_prefix, t->cont_prefix_len)) ||
                lp__tbuf_put(&sc->tmp, w + i, clen) ||
                (last && t->eow_suffix &&
                 lp__tbuf_put(&sc->tmp, t->eow_suffix, t->eow_suffix_len)))
                goto nomem;
            s = sc->tmp.p;
            slen = sc->tmp.n;
        }
        int32_t id = lp__vocab_find(t, s, slen);
        if (id >= 0) {
            if (unk >= 0) {
                if (add_sym(sc, &ns, unk, unk_len))
                    goto nomem;
                unk = -1;
            }
            if (add_sym(sc, &ns, id, clen))
                goto nomem;
        } else {
            bool done = false;
            if (t->byte_fallback) {
                bool all = true;
                for (size_t k = 0; k < slen; k++)
                    if (t->byte_ids[(unsigned char)s[k]] < 0)
                        all = false;
                if (all) {
                    /* HF does not flush a pending unk here: the bytes go
                     * first and the unk is added at the next known char. */
                    for (size_t k = 0; k < slen; k++)
                        if (add_sym(sc, &ns, t->byte_ids[(unsigned char)s[k]], 1))
                            goto nomem;
                    done = true;
                }
            }
            if (!done && t->unk_token) {
                if (unk >= 0 && t->fuse_unk) {
                    unk_len += clen;
                } else {
                    if (unk >= 0 && add_sym(sc, &ns, unk, unk_len))
                        goto nomem;
                    unk = unk_id(t, err);
                    if (unk < 0)
                        return LP_ERR_FORMAT;
                    unk_len = clen;
                }
            }
        }
        i += clen;
    }
    if (unk >= 0 && add_sym(sc, &ns, unk, unk_len))
        goto nomem;
    if (ns == 0)
        return LP_OK;
    sc->sym[ns - 1].next = -1;

    /* 2. merge by rank; the heap grows on demand (each merge pops one entry
     * and pushes at most two) */
    if (sc->heap_cap < ns) {
        free(sc->heap);
        sc->heap = lp__malloc_array(ns, sizeof *sc->heap);
        if (!sc->heap) {
            sc->heap_cap = 0;
            goto nomem;
        }
        sc->heap_cap = ns;
    }
    size_t hn = 0;
    lp__bpe_sym *sym = sc->sym;
    for (size_t i = 0; i + 1 < ns; i++) {
        const lp__merge_slot *m = lp__mergemap_get(&t->merges, sym[i].id, sym[i + 1].id);
        if (m)
            heap_push(sc->heap, &hn, (lp__bpe_item){m->rank, (uint32_t)i, m->new_id});
    }
    while (hn) {
        lp__bpe_item top = heap_pop(sc->heap, &hn);
        lp__bpe_sym *cur = &sym[top.pos];
        if (cur->len == 0 || cur->next < 0)
            continue;
        lp__bpe_sym *right = &sym[cur->next];
        const lp__merge_slot *m = lp__mergemap_get(&t->merges, cur->id, right->id);
        if (!m || m->new_id != top.new_id)
            continue; /* stale entry */
        cur->id = top.new_id;
        cur->len += right->len;
        cur->next = right->next;
        right->len = 0;
        if (cur->next >= 0)
            sym[cur->next].prev = (int32_t)top.pos;
        if (hn + 2 > sc->heap_cap) {
            size_t cap = sc->heap_cap * 2;
            lp__bpe_item *h = lp__malloc_array(cap, sizeof *h);
            if (!h)
                goto nomem;
            memcpy(h, sc->heap, hn * sizeof *h);
            free(sc->heap);
            sc->heap = h;
            sc->heap_cap = cap;
        }
        if (cur->prev >= 0) {
            const lp__merge_slot *pm = lp__mergemap_get(&t->merges, sym[cur->prev].id, cur->id);
            if (pm)
                heap_push(sc->heap, &hn,
                          (lp__bpe_item){pm->rank, (uint32_t)cur->prev, pm->new_id});
        }
        if (cur->next >= 0) {
            const lp__merge_slot *nm = lp__mergemap_get(&t->merges, cur->id, sym[cur->next].id);
            if (nm)
                heap_push(sc->heap, &hn, (lp__bpe_item){nm->rank, top.pos, nm->new_id});
        }
    }
    for (size_t i = 0; i < ns; i++)
        if (sym[i].len && lp__ids_push(out, sym[i].id))
            goto nomem;
    return LP_OK;
nomem:
    return lp_error_set(err, LP_ERR_NOMEM, "out of memory");
}
