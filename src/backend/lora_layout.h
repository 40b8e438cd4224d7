/* lora_layout.h - an adapter laid out for a GPU backend's multi-LoRA kernels
 * (host code, so it is tested without a GPU): one contiguous buffer that is
 * copied to the device as is. Per adapted (layer, module), 256-byte aligned:
 *   A   (rank, in)  as on file,
 *   Bt  (rank, out) B transposed, so a warp of the expand reads a rank's
 *                   outputs contiguously,
 * in bf16, or fp32 when the file holds fp32 (PEFT often saves fp32; rounding
 * those large deltas to bf16 moved the fixtures' logits by ~1e-2), and for
 * DoRA the fp32 scale magnitude / ||W + scaling B A||_row (out).
 * Each piece's size follows its own rank: nothing is padded to a maximum. */
#ifndef LP_BACKEND_LORA_LAYOUT_H
#define LP_BACKEND_LORA_LAYOUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "loraplex/adapter.h"
#include "loraplex/status.h"

#define LP_LORA_LAYOUT_ALIGN 256
#define LP_LORA_LAYOUT_NONE SIZE_MAX /* no DoRA scale */

typedef struct lp_lora_piece {
    int32_t rank; /* 0: this (layer, module) is not adapted; nothing below is set */
    bool f32;     /* A and Bt are fp32 (else bf16) */
    float scaling;
    int64_t in, out;  /* the projection's widths */
    size_t a, bt, dora; /* byte offsets in the buffer (dora: LP_LORA_LAYOUT_NONE without DoRA) */
} lp_lora_piece;

typedef struct lp_lora_layout {
    int n_layers;
    lp_lora_piece *piece; /* (n_layers, LP_MOD_COUNT), module order of lp__module */
    size_t bytes;         /* the whole buffer */
    bool dora;            /* some piece has a DoRA scale */
} lp_lora_layout;

/* Plan the layout of `a` (offsets and sizes only). */
int lp_lora_layout_plan(const lp_adapter *a, lp_lora_layout *out, lp_error *err);
/* Write the adapter into dst (L->bytes, LP_LORA_LAYOUT_ALIGN aligned),
 * pieces in parallel over OpenMP threads. Bytes between pieces are zero. */
void lp_lora_layout_fill(const lp_adapter *a, const lp_lora_layout *L, void *dst);
void lp_lora_layout_free(lp_lora_layout *L);

#endif
