#!/usr/bin/env bash
# test_cli.sh - the loraplex binary as a user runs it: generate (text, ids,
# json, logprobs, sampling determinism, adapters), inspect, merge, synth, and
# clear errors (exit 2 for usage, 1 for bad input) on bad arguments.
# usage: test_cli.sh LORAPLEX_BIN REPO_DIR
set -u
bin=$1; repo=$2
cd "$repo"
pass=0; fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*" >&2; }
check() { local name=$1; shift; if "$@"; then ok; else bad "$name"; fi; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT

# generate: text and json
out=$("$bin" generate --prompt "The computer" --max-tokens 12 2>&1)
check "generate prints text" test -n "$out"
j=$("$bin" generate --prompt "The computer" --max-tokens 12 --json --logprobs 2)
check "json has fields" grep -q '"prompt_tokens":\[.*"tokens":\[.*"text":.*"finish_reason":"length".*"logprobs":\[{"id":' <<<"$j"
check "json top_logprobs has 2" grep -q '"top_logprobs":\[{"id":[0-9]*,"logprob":[-0-9.e]*},{"id"' <<<"$j"
# the chosen greedy token is the top logprob
check "greedy = top1" bash -c "grep -o '\"logprobs\":\[{\"id\":[0-9]*,\"logprob\":[^,]*,\"top_logprobs\":\[{\"id\":[0-9]*' <<<'$j' | awk -F'\"id\":' '{split(\$2,a,\",\"); split(\$3,b,\",\"); exit !(a[1]==b[1])}'"
# prompt ids give the same result as the text
ids=$(grep -o '"prompt_tokens":\[[0-9,]*\]' <<<"$j" | grep -o '[0-9,]*[0-9]')
j2=$("$bin" generate --prompt-ids "$ids" --max-tokens 12 --json)
check "ids = text" test "$(grep -o '"tokens":\[[0-9,]*\]' <<<"$j")" = "$(grep -o '"tokens":\[[0-9,]*\]' <<<"$j2")"
# sampling: same seed same output; different seed different (very likely)
s1=$("$bin" generate --prompt "The computer" --max-tokens 24 --temperature 1.0 --top-p 0.95 --seed 11 --json)
s2=$("$bin" generate --prompt "The computer" --max-tokens 24 --temperature 1.0 --top-p 0.95 --seed 11 --json)
s3=$("$bin" generate --prompt "The computer" --max-tokens 24 --temperature 1.0 --top-p 0.95 --seed 12 --json)
check "same seed same output" test "$s1" = "$s2"
check "other seed other output" test "$s1" != "$s3"
# adapters
m=$("$bin" generate --lora models/tinylm-adapters/math --prompt $'Q: What is 153 + 612?\nA:' --max-tokens 8 --json)
check "math adapter answers 765" grep -q '"text":" 765\\n"' <<<"$m"
check "stops at eos" grep -q '"finish_reason":"stop"' <<<"$m"
m=$("$bin" generate --lora a=models/tinylm-adapters/math --lora b=models/tinylm-adapters/sort --adapter b \
      --prompt $'Sort: 9 1 3 3\nSorted:' --max-tokens 12 --json)
check "named adapter selection" grep -q '"text":" 1 3 3 9' <<<"$m"
m=$("$bin" generate --lora models/tinylm-adapters/math --adapter base --prompt $'Q: What is 153 + 612?\nA:' --max-tokens 8 --json)
check "--adapter base" bash -c "! grep -q '\" 765' <<<'$m'"
m=$("$bin" generate --lora models/tinylm-adapters/math-bin --prompt $'Q: What is 153 + 612?\nA:' --max-tokens 8 --json)
check "adapter_model.bin works" grep -q '"text":" 765\\n"' <<<"$m"
m=$("$bin" generate --lora models/tinylm-adapters/math --lora-scale 0 --prompt $'Q: What is 153 + 612?\nA:' --max-tokens 8 --json)
b=$("$bin" generate --prompt $'Q: What is 153 + 612?\nA:' --max-tokens 8 --json)
check "scale 0 = base" test "$(grep -o '"tokens":\[[0-9,]*\]' <<<"$m")" = "$(grep -o '"tokens":\[[0-9,]*\]' <<<"$b")"

# usage errors: exit 2 with a message naming the flag
"$bin" generate --max-tokens abc --prompt x >/dev/null 2>"$tmp/e"; rc=$?
check "bad int exit 2" test $rc -eq 2
check "bad int names flag" grep -q -- "--max-tokens" "$tmp/e"
"$bin" generate --prompt x --bogus 1 >/dev/null 2>"$tmp/e"; rc=$?
check "unknown flag exit 2" test $rc -eq 2
"$bin" generate >/dev/null 2>&1; rc=$?
check "no prompt exit 2" test $rc -eq 2
"$bin" frobnicate >/dev/null 2>&1; rc=$?
check "unknown command exit 2" test $rc -eq 2
"$bin" generate --prompt-ids 1,99999 >/dev/null 2>"$tmp/e"; rc=$?
check "id out of range exit 1" test $rc -eq 1
check "id out of range message" grep -q "out of range" "$tmp/e"
"$bin" generate --model /nonexistent --prompt x >/dev/null 2>"$tmp/e"; rc=$?
check "missing model exit 1" test $rc -eq 1
check "missing model message" grep -q "/nonexistent" "$tmp/e"
"$bin" generate --prompt x --max-tokens 5000 >/dev/null 2>"$tmp/e"; rc=$?
check "too long exit 1" test $rc -eq 1
"$bin" generate --lora tests/data/conform/llama/adapters/r8-all --prompt x >/dev/null 2>"$tmp/e"; rc=$?
check "adapter for another model refused" test $rc -eq 1
check "adapter mismatch names the shape" grep -q "another model" "$tmp/e"

# --device: cpu works; an unknown name is a usage error naming it; cuda on a
# build without the CUDA backend (or a machine without a GPU) says so
d=$("$bin" generate --device cpu --prompt "The computer" --max-tokens 12 --json); rc=$?
check "--device cpu works" test $rc -eq 0
check "--device cpu generates" grep -q '"finish_reason":"length"' <<<"$d"
"$bin" --version >"$tmp/v"; rc=$?
check "--version" test $rc -eq 0
check "--version lists backends" grep -q "^loraplex .*(backends: cpu" "$tmp/v"
if grep -q "(backends: cpu)" "$tmp/v"; then
  check "--device cpu = auto without CUDA" test "$(grep -o '"tokens":\[[0-9,]*\]' <<<"$d")" = "$(grep -o '"tokens":\[[0-9,]*\]' <<<"$j")"
fi
"$bin" generate --device bogus --prompt x >/dev/null 2>"$tmp/e"; rc=$?
check "unknown device exit 2" test $rc -eq 2
check "unknown device named" grep -q "unknown device 'bogus'" "$tmp/e"
"$bin" serve --device bogus >/dev/null 2>"$tmp/e"; rc=$?
check "serve unknown device exit 2" test $rc -eq 2
check "serve unknown device named" grep -q "unknown device 'bogus'" "$tmp/e"
if grep -q "(backends: cpu)" "$tmp/v"; then
  "$bin" generate --device cuda --prompt x >/dev/null 2>"$tmp/e"; rc=$?
  check "cuda without the CUDA backend exit 1" test $rc -eq 1
  check "cuda without the CUDA backend says so" grep -q "no CUDA backend" "$tmp/e"
elif ! command -v nvidia-smi >/dev/null 2>&1; then
  "$bin" generate --device cuda --prompt x >/dev/null 2>"$tmp/e"; rc=$?
  check "cuda without a GPU exit 1" test $rc -eq 1
  check "cuda without a GPU says so" grep -Eq "no CUDA (backend|device)" "$tmp/e"
fi
for c in generate merge inspect synth serve; do
  "$bin" $c --help >/dev/null 2>&1; check "$c --help" test $? -eq 0
done

# inspect
i=$("$bin" inspect models/tinylm-adapters/sort --model models/tinylm)
check "inspect rank" grep -q "r=32" <<<"$i"
check "inspect rslora" grep -q "rsLoRA" <<<"$i"
check "inspect fits" grep -q "fits models/tinylm: yes" <<<"$i"
"$bin" inspect tests/data/conform/llama/adapters/r8-all --model models/tinylm >/dev/null 2>&1; rc=$?
check "inspect does not fit exit 1" test $rc -eq 1
i=$("$bin" inspect models/tinylm-adapters/math --json)
check "inspect json" grep -q '"r":16' <<<"$i"
check "inspect model" bash -c "'$bin' inspect models/tinylm | grep -q LlamaForCausalLM"

# merge -> a model that answers without --lora
"$bin" merge --model models/tinylm --lora models/tinylm-adapters/math --out "$tmp/merged" --dtype f32 >/dev/null
check "merged dir complete" test -f "$tmp/merged/config.json" -a -f "$tmp/merged/tokenizer.json" -a -f "$tmp/merged/model.safetensors"
m=$("$bin" generate --model "$tmp/merged" --prompt $'Q: What is 153 + 612?\nA:' --max-tokens 8 --json)
check "merged model answers 765" grep -q '"text":" 765\\n"' <<<"$m"
"$bin" merge --model models/tinylm --lora models/tinylm-adapters/math --out "$tmp/merged" >/dev/null 2>"$tmp/e"; rc=$?
check "merge into non-empty dir refused" test $rc -eq 1

# synth: a model and an adapter that load and generate
"$bin" synth --preset tiny --layers 2 --out "$tmp/syn" --tokenizer models/tinylm >/dev/null
check "synth model generates" bash -c "'$bin' generate --model '$tmp/syn' --prompt hello --max-tokens 4 >/dev/null"
"$bin" synth --adapter --model "$tmp/syn" --rank 4 --targets q,v --out "$tmp/syn-lora" >/dev/null
check "synth adapter generates" bash -c "'$bin' generate --model '$tmp/syn' --lora '$tmp/syn-lora' --prompt hello --max-tokens 4 >/dev/null"
check "synth adapter inspect" bash -c "'$bin' inspect '$tmp/syn-lora' --model '$tmp/syn' | grep -q 'q_proj,v_proj'"

# template: exactly the fixture's rendering, no newline added; a raising template fails
python_free_case='{"messages":[{"role":"user","content":"Tell me a fortune about cats."}],"add_generation_prompt":true}'
printf '%s' "$python_free_case" | "$bin" template --model models/tinylm >"$tmp/t.out"
printf '<|im_start|>user\nTell me a fortune about cats.<|im_end|>\n<|im_start|>assistant\n' >"$tmp/t.want"
check "template renders exactly" cmp -s "$tmp/t.out" "$tmp/t.want"
mkdir -p "$tmp/raise"
cp models/tinylm/config.json models/tinylm/tokenizer.json "$tmp/raise/"
cat >"$tmp/raise/tokenizer_config.json" <<'JSON'
{"chat_template": "{% if messages[0].role != \"user\" %}{{ raise_exception(\"Conversation must start with user\") }}{% endif %}ok"}
JSON
printf '{"messages":[{"role":"assistant","content":"x"}]}' | "$bin" template --model "$tmp/raise" >/dev/null 2>"$tmp/e"; rc=$?
check "raising template exits 1" test $rc -eq 1
check "raising template prints its message" grep -qx "Conversation must start with user" "$tmp/e"
printf 'not json' | "$bin" template >/dev/null 2>&1; rc=$?
check "template bad stdin exits 1" test $rc -eq 1

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
