#!/usr/bin/env bash
# prepare.sh - runs HERE (the Debian machine without a GPU): builds the CUDA
# binaries in build-gpu (Release, LORAPLEX_CUDA=ON) and packs what the bare
# device machine needs to run them into .devcarry/, which the device tool
# carries (`carry: [".devcarry"]`):
#   .devcarry/devcarry.tar.gz  bin/: loraplex, gpu_bench, test_cuda,
#                              test_task_eval, test_conform_llama (the CPU
#                              conformance test, for fixtures made there),
#                              bench_lora_kernels (stripped; those that exist
#                              and build); lib/: the shared libraries they load
#                              that are not glibc, the GCC runtime or CUDA's
#                              own (the device has those): jansson, pcre2,
#                              utf8proc, microhttpd, curl and its dependencies,
#                              libgomp. Packed because unpacked it is ~31 MiB
#                              (the CUDA code in each binary compresses 20:1)
#                              and the device tool carries 64 MiB with the tree.
#   .devcarry/glibc-required   the newest GLIBC_ symbol version they need
# The unpacked copy stays in build-gpu/devcarry/. On the device,
# `. bench/gpu/env.sh` unpacks it into .devcarry/{bin,lib} and sets
# LD_LIBRARY_PATH; bench/gpu/run.sh does that itself.
# Exit status: 0 when loraplex and gpu_bench were built and packed, else 1
# (whatever did build is packed all the same).
#   bench/gpu/prepare.sh [-j N]
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
jobs=$(nproc)
[ "${1:-}" = -j ] && jobs=${2:-$jobs}
build="build-gpu"
stage="$build/devcarry"
carry=".devcarry"
targets=(loraplex gpu_bench test_cuda test_task_eval test_conform_llama bench_lora_kernels)
required=(loraplex gpu_bench)

# never committed: the build and the carried folder
for p in /.devcarry/ /build-gpu/; do
  grep -qxF "$p" .git/info/exclude 2>/dev/null || echo "$p" >>.git/info/exclude
done

mkdir -p "$build"
echo "== configure $build (LORAPLEX_CUDA=ON, Release)"
if ! cmake -S . -B "$build" -DLORAPLEX_CUDA=ON -DCMAKE_BUILD_TYPE=Release >"$build/prepare-configure.log" 2>&1; then
  tail -n 30 "$build/prepare-configure.log"
  echo "prepare: configure failed (full log: $build/prepare-configure.log)" >&2
  exit 1
fi
grep -i 'warning' -A2 "$build/prepare-configure.log" | head -n 20

known=$(cmake --build "$build" --target help 2>/dev/null | sed -n 's/^\.\.\. \([^ ]*\).*/\1/p')
built=()
failed=()
for t in "${targets[@]}"; do
  if ! grep -qxF "$t" <<<"$known"; then
    echo "WARNING: target $t does not exist in this tree (yet): skipped"
    continue
  fi
  echo "== build $t"
  if cmake --build "$build" -j"$jobs" --target "$t" >"$build/prepare-$t.log" 2>&1; then
    built+=("$t")
    grep -E 'warning:' "$build/prepare-$t.log" | sort -u | head -n 10
  else
    grep -E 'error|Error' "$build/prepare-$t.log" | head -n 20
    echo "WARNING: $t failed to build (full log: $build/prepare-$t.log)"
    failed+=("$t")
  fi
done

rm -rf "$stage" "$carry"
mkdir -p "$stage/bin" "$stage/lib" "$carry"
for t in "${built[@]}"; do
  f=$(find "$build" -path "$build/devcarry" -prune -o -type f -name "$t" -perm -u+x -print | head -n 1)
  if [ -z "$f" ]; then
    echo "WARNING: built $t but found no binary of that name under $build"
    continue
  fi
  cp "$f" "$stage/bin/$t"
  strip "$stage/bin/$t"
done

# Shared libraries: everything ldd resolves except glibc, the GCC runtime and
# CUDA's libraries (the device has its own, matching its driver).
skip='^(linux-vdso|ld-linux|libc|libm|libpthread|libdl|librt|libresolv|libutil|libstdc\+\+|libgcc_s|libcublas|libcublasLt|libcudart|libcuda)\.so'
for b in "$stage"/bin/*; do
  [ -e "$b" ] || continue
  ldd "$b" | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}'
done | sort -u | while read -r name path; do
  [[ "$name" =~ $skip ]] && continue
  cp -L "$path" "$stage/lib/$name"
done
missing=$(for b in "$stage"/bin/*; do [ -e "$b" ] && ldd "$b" | grep 'not found'; done | sort -u)
[ -n "$missing" ] && echo "WARNING: unresolved here too:" && echo "$missing"

# the newest glibc symbol version anything carried needs (env.sh compares it
# with the device's glibc)
for f in "$stage"/bin/* "$stage"/lib/*; do
  [ -e "$f" ] && objdump -T "$f" 2>/dev/null | grep -o 'GLIBC_[0-9][0-9.]*'
done | sed 's/GLIBC_//' | sort -uV | tail -n 1 >"$carry/glibc-required"
tar -czf "$carry/devcarry.tar.gz" -C "$stage" bin lib

echo "== $carry (packed from $stage)"
echo "  bin: $(cd "$stage/bin" && echo *) ($(du -sh "$stage/bin" | cut -f1))"
echo "  lib: $(find "$stage/lib" -type f | wc -l) libraries ($(du -sh "$stage/lib" | cut -f1))"
echo "  needs glibc >= $(cat "$carry/glibc-required")"
echo "  $carry: $(du -sh "$carry" | cut -f1) (unpacked $(du -sh "$stage" | cut -f1))"
if [ "$(du -sk "$carry" | cut -f1)" -gt $((30 * 1024)) ]; then
  echo "WARNING: $carry is over 30 MiB; the device tool carries at most 64 MiB with the tree"
fi

rc=0
for t in "${required[@]}"; do
  if [ ! -e "$stage/bin/$t" ]; then
    echo "prepare: $t is missing" >&2
    rc=1
  fi
done
[ ${#failed[@]} -gt 0 ] && echo "prepare: failed to build: ${failed[*]}"
echo "prepare: packed ${built[*]:-nothing}"
exit $rc
