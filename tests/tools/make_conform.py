#!/usr/bin/env python3
"""make_conform.py - numerical conformance fixtures for one model family, made by
the reference stack itself (torch + transformers + PEFT), in the layout of
tests/data/conform/<family>/ that tests/unit/model/conform.c reads:

  base/                      a tiny random-weight model saved by transformers (bf16)
  adapters/<tag>/            PEFT adapters with random A and B (none is a no-op)
  reference.json             {"family", "architecture", "prompts": 3 id lists
                              (lengths 7, 19, 45), "greedy": {tag: 16 greedy
                              tokens per prompt}}, tag = "base" or an adapter
  reference.safetensors      fp32 logits of every prompt position,
                             "{tag}.p{i}.logits" [len, vocab]

computed in fp32 on the CPU from the bf16 weights (eager attention), like the
llama and qwen2 fixtures (norm weights randomised around 1 so a missing norm
shows). Families:
  qwen3    q/k RMSNorm, head_dim (32) != hidden / heads (16), tied embeddings
  mistral  a sliding window of 16 tokens (the prompts are up to 45 long)

There is no torch on the development machines: this runs on the GPU machine
(bench/gpu/run.sh, stage "reference"), and the fixtures it writes are copied into
tests/data/conform/ and committed.

usage: make_conform.py FAMILY OUT_DIR
"""
import json
import os
import sys

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, MistralConfig, Qwen3Config

VOCAB = 512
PROMPT_LENS = (7, 19, 45)
N_GREEDY = 16
ALL7 = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# the same adapter set as the llama and qwen2 fixtures
ADAPTERS = {
    "r8-all": dict(r=8, lora_alpha=16, target_modules=ALL7),
    "r4-qv": dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
    "r16-rslora-attn": dict(r=16, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                            use_rslora=True),
    "pattern-mlp": dict(r=8, lora_alpha=8, target_modules=["o_proj", "gate_proj", "up_proj", "down_proj"],
                        rank_pattern={"down_proj": 2, "o_proj": 12}, alpha_pattern={"up_proj": 32}),
    "layers-1": dict(r=8, lora_alpha=16, target_modules=ALL7, layers_to_transform=[1]),
    "dora-r8": dict(r=8, lora_alpha=16, target_modules=ALL7, use_dora=True),
}


def base_config(family):
    # transformers 5 spells the rotary settings rope_parameters; the thetas
    # are the families' defaults, so older versions agree
    common = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                  rms_norm_eps=1e-5, initializer_range=0.02)
    if family == "qwen3":
        return Qwen3Config(head_dim=32, tie_word_embeddings=True,
                           rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}, **common)
    if family == "mistral":
        return MistralConfig(head_dim=16, sliding_window=16, tie_word_embeddings=False,
                             rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, **common)
    sys.exit(f"make_conform.py: unknown family {family!r} (qwen3, mistral)")


def load_fp32(base_dir):
    try:
        m = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32, attn_implementation="eager")
    except TypeError:  # transformers before 4.56 spells it torch_dtype
        m = AutoModelForCausalLM.from_pretrained(base_dir, torch_dtype=torch.float32, attn_implementation="eager")
    return m.eval()


@torch.no_grad()
def run(model, prompts):
    logits, greedy = [], []
    for p in prompts:
        ids = torch.tensor([p], dtype=torch.long)
        logits.append(model(input_ids=ids).logits[0].float().contiguous())
        seq, out = list(p), []
        for _ in range(N_GREEDY):
            nxt = int(model(input_ids=torch.tensor([seq], dtype=torch.long)).logits[0, -1].argmax())
            out.append(nxt)
            seq.append(nxt)
        greedy.append(out)
    return logits, greedy


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__.strip().splitlines()[-1])
    family, out = sys.argv[1], sys.argv[2]
    torch.manual_seed(1234)
    base_dir = os.path.join(out, "base")
    cfg = base_config(family)
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
    model.to(torch.bfloat16).save_pretrained(base_dir)

    g = torch.Generator().manual_seed(99)
    prompts = [torch.randint(3, VOCAB, (n,), generator=g).tolist() for n in PROMPT_LENS]
    ref = {"family": family, "architecture": type(model).__name__, "prompts": prompts, "greedy": {}}
    tensors = {}

    def record(tag, model):
        logits, greedy = run(model, prompts)
        ref["greedy"][tag] = greedy
        for i, lg in enumerate(logits):
            tensors[f"{tag}.p{i}.logits"] = lg
        print(f"{family} {tag}: greedy {greedy[0][:6]}...", flush=True)

    record("base", load_fp32(base_dir))
    for k, (tag, spec) in enumerate(ADAPTERS.items()):
        torch.manual_seed(100 + k)
        m = get_peft_model(load_fp32(base_dir), LoraConfig(init_lora_weights=False, lora_dropout=0.0, **spec))
        adir = os.path.join(out, "adapters", tag)
        m.save_pretrained(adir)
        # the reference reads the adapter back as a user's server would
        record(tag, PeftModel.from_pretrained(load_fp32(base_dir), adir).eval())

    with open(os.path.join(out, "reference.json"), "w") as f:
        json.dump(ref, f)
    save_file(tensors, os.path.join(out, "reference.safetensors"))
    print(f"make_conform.py: {family} fixtures in {out}")


if __name__ == "__main__":
    main()
