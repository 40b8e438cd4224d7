/* cuda-impl.h - what the CUDA backend's translation units share: the element
 * types, the adapter descriptor table the multi-LoRA kernels read, and the
 * kernel launchers (all asynchronous on the given stream; they return
 * cudaGetLastError() of the launch).
 *
 * Activations between layers use the compute type `ct` of the model: fp32
 * for fp32 checkpoints, fp16 for fp16, bf16 otherwise. The KV cache is fp32
 * for fp32 checkpoints and fp16 otherwise (lp_cu_kv_type). The residual
 * stream, the projection outputs and all accumulation are fp32, and so is
 * what the LoRA shrink reads (an fp32 copy of its input beside the ct one). */
#ifndef LP_CUDA_IMPL_H
#define LP_CUDA_IMPL_H

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

extern "C" {
#include "backend/backend.h"
}

typedef enum { LP_CT_F32 = 0, LP_CT_F16 = 1, LP_CT_BF16 = 2 } lp_cu_type;

static inline size_t lp_cu_type_size(lp_cu_type t) { return t == LP_CT_F32 ? 4 : 2; }

/* The KV cache's type for compute type ct: fp16 for 16-bit models, bf16
 * included - the same bytes as bf16 with 8x finer rounding (3 more mantissa
 * bits), which halves the adapters' error against the fp32 reference
 * (bench/bf16-emulation); K and V sit far inside fp16's range, and a store
 * saturates rather than overflows. */
static inline lp_cu_type lp_cu_kv_type(lp_cu_type ct) { return ct == LP_CT_F32 ? LP_CT_F32 : LP_CT_F16; }

/* One adapted projection of one adapter in the device tier: delta(x) =
 * scaling * Bt^T (A x); A (rank, in) and Bt (rank, out) row-major, bf16 or,
 * for adapters whose file holds fp32 (`f32`), fp32.
 * DoRA: dora (out) = magnitude / ||W + scaling B A||_row, else NULL. */
typedef struct lp_cu_lora_desc {
    const void *A;
    const void *Bt;
    const float *dora;
    float scaling;
    int32_t rank; /* 0: this (layer, module) is not adapted by the adapter */
    int32_t f32;  /* A and Bt are fp32 */
    int32_t pad;
} lp_cu_lora_desc;

/* The modules one LoRA launch handles (q,k,v fused, gate,up fused, or one):
 * their module ids, output widths and column offsets in the fused output. */
#define LP_CU_MAX_MODS 3
typedef struct lp_cu_mods {
    int n;
    int mod[LP_CU_MAX_MODS];
    int out[LP_CU_MAX_MODS];
    int col[LP_CU_MAX_MODS];
} lp_cu_mods;

/* A tile of at most LP_CU_LORA_TILE tokens that share an adapter slot: the
 * tokens at places p0 .. p0+n of the call (lp__lora_group_fill in
 * src/backend/common.h: a place is an adapter token's index in the call's
 * grouping). */
#define LP_CU_LORA_TILE 8
typedef struct lp_cu_lora_item {
    int32_t slot, p0, n, pad;
} lp_cu_lora_item;

/* The call's LoRA buffers - the shrink's fp32 input and the deltas the expand
 * writes beside the GEMM - hold one row per place, so base-model tokens in a
 * mixed call cost them neither bytes nor blocks. `lrow` (T), in device
 * memory, gives each token's row there (its place), -1 for base tokens; the
 * kernels that write the input or add the deltas take it beside the buffer. */

/* Everything a multi-LoRA launch over one call needs. `desc` is indexed
 * [(slot * n_layers + layer) * 7 + module]. V holds the shrink's split-K
 * partial sums, (ksplit, T, LP_CU_MAX_MODS, rmax) fp32 by place, each written
 * once; the last split block of a (tile, module) to finish adds them up into
 * split 0, which the expand reads - so V needs no zeroing. `counters`
 * (n_items, LP_CU_MAX_MODS) count finished split blocks; zero before the first
 * launch, the kernel leaves them zero. */
typedef struct lp_cu_lora_call {
    const lp_cu_lora_desc *desc;
    int n_layers, layer;
    const lp_cu_lora_item *items;
    int n_items;
    const int32_t *perm; /* (places) the token at each place */
    const float *alpha;  /* (T) the row's adapter_scale for each token */
    float *V;
    int rmax;
    int T;      /* V's rows between splits: >= the call's places */
    int ksplit; /* from lp_cu_lora_ksplit for this launch's K */
    unsigned *counters;
    /* expand: 0 adds into Y, whose rows are the call's tokens (the GEMM
     * output: DoRA); 1 writes Y = the delta, rows by place, zeros for the
     * modules an adapter leaves alone (Y then needs no zeroing) */
    int overwrite;
} lp_cu_lora_call;

/* K splits a shrink over n_items tiles and n_mods modules uses so the launch
 * fills the GPU (each split a multiple of 256 columns, at most 1024). */
int lp_cu_lora_ksplit(int n_items, int n_mods, int K, int n_sm);
/* Floats of V a call with T rows of V (lp_cu_lora_call.T) needs at this ksplit. */
static inline size_t lp_cu_lora_v_floats(int T, int ksplit, int rmax) {
    return (size_t)ksplit * (size_t)T * LP_CU_MAX_MODS * (size_t)rmax;
}
/* Segmented shrink: V[split, p, z, :rank] = X[p, split's columns] . A^T for
 * every place p of every item and every module z; X's rows are places. */
cudaError_t lp_cu_lora_shrink(const lp_cu_lora_call *c, const lp_cu_mods *mods, const void *X,
                              lp_cu_type xt, int ldx, int K, cudaStream_t s);
/* Segmented expand: Y[t, col_z + o] += alpha_t * scaling * V[0, p, z] . Bt[:, o]
 * for the token t at place p (DoRA: Y = y + alpha_t ((g_o - 1) y + g_o scaling
 * V.Bt[:, o])); overwriting, Y[p, col_z + o] = the delta. */
cudaError_t lp_cu_lora_expand(const lp_cu_lora_call *c, const lp_cu_mods *mods, float *Y, int ldy,
                              cudaStream_t s);

/* Per-token metadata of a call, in device memory. */
typedef struct lp_cu_toks {
    const int32_t *id;     /* (T) token ids */
    const int32_t *pos;    /* (T) positions */
    const int32_t *blkoff; /* (T) offset of the token's row block table in `blocks` */
    const int32_t *blocks; /* block tables of all rows, concatenated */
} lp_cu_toks;

/* dst (n) in type dt = src (n) in file dtype `src_dt` (LP_DTYPE_F32/F16/BF16 values). */
cudaError_t lp_cu_convert(void *dst, lp_cu_type dt, const void *src, int src_dt, size_t n, cudaStream_t s);
/* x[t] = embed[id[t]] as fp32. */
cudaError_t lp_cu_embed(float *x, const void *embed, lp_cu_type et, const int32_t *ids, int T, int D,
                        cudaStream_t s);
/* For each output row i (token idx ? idx[i] : i): if add, x[t] += add[t]
 * (+ the LoRA delta lora[lrow[t]] when lora is not NULL and lrow[t] >= 0)
 * (+ bias); out[i] = rmsnorm(x[t]) * w, in type ot, and in fp32 to
 * out32[lrow[t]] when out32 is not NULL and lrow[t] >= 0 (only with idx NULL). */
cudaError_t lp_cu_add_rmsnorm(float *x, const float *add, const float *lora, const float *bias, const float *w,
                              void *out, lp_cu_type ot, float *out32, const int32_t *lrow, const int32_t *idx,
                              int n_out, int D, float eps, cudaStream_t s);
/* q/k/v of a fused projection output (T, qdim + 2 kvdim): + bias, q/k norm,
 * rotary embedding; q to qout (T, qdim) fp32, k and v into the paged cache. */
typedef struct lp_cu_rope {
    int H, KVH, hd, bs, layer;
    size_t block_elems; /* elements per KV block: layers * 2 * KVH * bs * hd */
    const float *inv_freq;
    const float *bias;          /* (qdim + 2 kvdim) or NULL */
    const float *lora;          /* (places, qdim + 2 kvdim) LoRA deltas to add, or NULL */
    const int32_t *lrow;        /* (T) each token's row in lora, -1: none */
    const float *q_norm, *k_norm; /* (hd) or NULL */
    float eps;
} lp_cu_rope;
cudaError_t lp_cu_qkv_rope(const float *qkv, float *qout, void *kv, lp_cu_type kt, const lp_cu_rope *r,
                           const lp_cu_toks *tk, int T, cudaStream_t s);
/* Paged attention for every token (prefill and decode alike): causal over
 * the token's own sequence, GQA, optional sliding window, split along the
 * sequence in `splits` equal parts per token (partials in part, combined by a
 * second kernel). Two kernels: `few` (a call of a few decode tokens, whose
 * blocks alone cannot fill the GPU) takes a warp per position group with
 * every lane on a slice of the head dimension and many short splits - the
 * least latency per token; otherwise lanes own positions for the scores,
 * which sustains the KV read rate over many rows. */
/* Most parts one token's attention range is split into. */
#define LP_CU_ATT_MAX_SPLITS 32
/* Query heads of one KV head an attention block handles (more: more blocks). */
#define LP_CU_ATT_HEADS 4
/* Least positions per split: the `few` kernel reads 32 per round of its 8
 * warps, the other kernel a 32-position tile per warp. */
#define LP_CU_ATT_SPLIT_MIN_FEW 32
#define LP_CU_ATT_SPLIT_MIN 128
/* Prefill on tensor cores: a row of at least LP_CU_ATT_TC_MIN tokens, with
 * fp16 KV and a head_dim that is a multiple of 16 (at most 256), has its
 * queries cut into tiles of LP_CU_ATT_TC_ROWS consecutive tokens (head
 * sizes: lp_cu_att_tc_ok); a block per
 * (tile, KV head) computes Q K^T and P V with fp16 WMMA products and fp32
 * accumulation (FlashAttention-2's online softmax over 16-position tiles of
 * the paged cache). The other tokens go through the per-token kernels. */
#define LP_CU_ATT_TC_ROWS 16
#define LP_CU_ATT_TC_MIN 16
typedef struct lp_cu_attn {
    int H, KVH, hd, bs, layer, window, splits;
    int few; /* the kernel for a few tokens (see above) */
    size_t block_elems;
    float scale;
    float *part;  /* (per-token tokens, H, splits, hd + 2) fp32 when splits > 1 */
    float *out32; /* (places, H hd): the output of tokens with lrow[t] >= 0 in fp32 as well, or NULL */
    const int32_t *lrow; /* (T) with out32 */
    const int32_t *tok; /* (n_tok) the tokens the per-token kernels take; NULL: all T */
    int n_tok;
    const int32_t *qt;  /* (n_qt, 2) {first token, tokens} of each tensor-core query tile */
    int n_qt;
} lp_cu_attn;
/* Whether the tensor-core kernel takes a head size (it is compiled for
 * these) and KV type. */
/* Dynamic shared memory the tensor-core kernel takes at head size hd
 * (SIZE_MAX: not compiled for it); a GPU whose opt-in limit is smaller
 * (sm_86/sm_89 at hd 256) leaves prefill to the per-token kernels. */
size_t lp_cu_att_tc_smem(int hd);
static inline int lp_cu_att_tc_ok(int hd, lp_cu_type kt) {
    return kt == LP_CT_F16 && lp_cu_att_tc_smem(hd) != SIZE_MAX;
}
/* out (T, H hd) in type ot; kt and ot as the backend pairs them (fp32 and
 * fp32, fp16 KV with fp16 or bf16 out), others fail. */
cudaError_t lp_cu_attention(const float *q, const void *kv, lp_cu_type kt, void *out, lp_cu_type ot,
                            const lp_cu_attn *a, const lp_cu_toks *tk, int T, cudaStream_t s);
/* out (T, F) = silu(gu[:, :F] + bg) * (gu[:, F:] + bu), in type ot; with
 * lrow[t] >= 0, the LoRA deltas lora[lrow[t]] (2F) are added to gu first
 * when lora is not NULL, and out32[lrow[t]] gets the output in fp32 when
 * out32 is not NULL. */
cudaError_t lp_cu_silu_mul(const float *gu, const float *lora, const float *bias, void *out, lp_cu_type ot,
                           float *out32, const int32_t *lrow, int T, int F, cudaStream_t s);

/* ---- sampling (sample.cu): the backend's lp_backend_sample ---- */
/* One spec as the kernels read it: its adjustments at adj[adj_off ..). */
typedef struct lp_cu_sample_spec {
    int32_t row, k, n_logprobs, n_adj, adj_off, probe;
    float T;
} lp_cu_sample_spec;
/* What comes back per spec (the candidate and logprob types of backend.h). */
typedef struct lp_cu_sample_out {
    double total, raw_lse;
    float max, probe_raw;
    int32_t n_cand;
    lp_candidate cand[LP_SAMPLE_MAX_CAND];
    lp_token_logprob top[LP_SAMPLE_MAX_LOGPROBS];
} lp_cu_sample_out;
/* Specs one launch takes; the scratch is sized for this many. */
#define LP_CU_SAMPLE_CHUNK 256
/* Tiles of the selection over a vocabulary. */
int lp_cu_sample_tiles(int vocab);
/* Select for n_specs (<= LP_CU_SAMPLE_CHUNK) specs over logits (rows of
 * vocab): tile_keys (n_specs, tiles, LP_SAMPLE_MAX_CAND) and tile_stat
 * (n_specs, 2, tiles) are scratch; `logprobs`: some spec has
 * n_logprobs >= 0 (a second selection over the raw logits). */
cudaError_t lp_cu_sample(const float *logits, int vocab, const lp_cu_sample_spec *specs, int n_specs,
                         const lp_logit_adjust *adj, int logprobs, uint64_t *tile_keys, double *tile_stat,
                         lp_cu_sample_out *out, cudaStream_t s);

#endif
