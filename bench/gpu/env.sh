# shellcheck shell=bash
# env.sh - source on the device machine (bash) to run the binaries that
# bench/gpu/prepare.sh built here and packed into .devcarry/devcarry.tar.gz:
#
#   . bench/gpu/env.sh && "$LP_BIN/loraplex" generate --device cuda ...
#
# It unpacks the tarball under /tmp (once per tarball) and links
# .devcarry/bin and .devcarry/lib to it, puts the folders holding CUDA 13's cuBLAS and runtime on
# LD_LIBRARY_PATH (the toolkit's, or the python wheels' that torch uses), and
# makes the libraries that this machine lacks, or has too old ("version ...
# not found"), come from .devcarry/lib through a folder of symlinks: only
# those, since carried copies of libraries the system has could clash with it.
# Sets LP_BIN (the binaries), LP_CARRIED (the carried libraries in use),
# LP_CUDA_LIBS, LP_UNRESOLVED (ldd's "not found" lines; empty when all is
# well) and LP_ENV_OK (1 or 0). Quiet with LP_ENV_QUIET=1.

_lp_env() {
    local root say=echo
    [ "${LP_ENV_QUIET:-0}" = 1 ] && say=:
    root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
    local carry=$root/.devcarry
    LP_BIN=$carry/bin
    LP_ENV_OK=0
    if [ -e "$carry/devcarry.tar.gz" ]; then
        # unpacked outside the tree (so that carrying .devcarry again sends
        # only the tarball and two symlinks), once per tarball
        local key dest
        key=$(stat -c %s-%Y "$carry/devcarry.tar.gz")
        dest=/tmp/loraplex-devcarry-$key
        if [ ! -x "$dest/bin/loraplex" ]; then
            rm -rf "$dest"
            mkdir -p "$dest"
            if ! tar -xzf "$carry/devcarry.tar.gz" -C "$dest"; then
                echo "env.sh: cannot unpack $carry/devcarry.tar.gz" >&2
                return 1
            fi
        fi
        local d
        for d in bin lib; do
            [ -L "$carry/$d" ] || rm -rf "${carry:?}/$d"
            ln -sfn "$dest/$d" "$carry/$d"
        done
    fi
    if [ ! -x "$LP_BIN/loraplex" ]; then
        echo "env.sh: no $LP_BIN/loraplex: run bench/gpu/prepare.sh on the build machine and carry .devcarry" >&2
        return 1
    fi

    # CUDA 13 libraries (libcudart is linked statically into loraplex, not into bench_lora_kernels)
    local lib d c f dirs="" site
    for lib in libcublas.so.13 libcublasLt.so.13 libcudart.so.13; do
        d=""
        for c in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda-*/lib64; do
            [ -e "$c/$lib" ] && d=$c && break
        done
        if [ -z "$d" ]; then
            read -r -a site <<<"$(python3 -c 'import site; print(" ".join(site.getsitepackages()))' 2>/dev/null)"
            f=$(find "${site[@]}" /opt /usr/local /usr/lib -name "$lib" 2>/dev/null | head -n 1)
            [ -n "$f" ] && d=$(dirname "$f")
        fi
        if [ -n "$d" ]; then
            [[ ":$dirs:" == *":$d:"* ]] || dirs=${dirs:+$dirs:}$d
        else
            echo "env.sh: WARNING: $lib not found on this machine" >&2
        fi
    done
    LP_CUDA_LIBS=$dirs

    local shim=${LP_LIBSHIM:-/tmp/loraplex-libshim}
    rm -rf "$shim"
    mkdir -p "$shim"
    case ":${LD_LIBRARY_PATH:-}:" in
    *":$shim:"*) ;;
    *) LD_LIBRARY_PATH=$shim${dirs:+:$dirs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} ;;
    esac
    export LD_LIBRARY_PATH

    local report need l linked _
    for _ in 1 2 3 4; do
        report=$(for f in "$LP_BIN"/*; do [ -x "$f" ] && ldd "$f" 2>&1; done)
        need=$( (awk '$2 == "=>" && $3 == "not" {print $1}' <<<"$report"
            sed -n "s#.*: \(/[^:]*\): version .* not found.*#\1#p" <<<"$report" | xargs -r -n1 basename) | sort -u)
        [ -z "$need" ] && break
        linked=0
        for l in $need; do
            if [ ! -e "$shim/$l" ] && [ -e "$carry/lib/$l" ]; then
                ln -s "$carry/lib/$l" "$shim/$l"
                linked=1
            fi
        done
        [ $linked = 0 ] && break
    done
    LP_CARRIED=$(cd "$shim" && echo *)
    [ "$LP_CARRIED" = "*" ] && LP_CARRIED=""
    LP_UNRESOLVED=$(for f in "$LP_BIN"/*; do [ -x "$f" ] && ldd "$f" 2>&1 | grep 'not found'; done | sort -u)

    local need_glibc have_glibc
    need_glibc=$(cat "$carry/glibc-required" 2>/dev/null)
    have_glibc=$(ldd --version 2>&1 | head -n 1 | grep -o '[0-9][0-9.]*$')
    if [ -n "$need_glibc" ] && [ -n "$have_glibc" ] &&
        [ "$(printf '%s\n%s\n' "$need_glibc" "$have_glibc" | sort -V | head -n 1)" != "$need_glibc" ]; then
        LP_UNRESOLVED="${LP_UNRESOLVED:+$LP_UNRESOLVED
}glibc: the binaries need $need_glibc, this machine has $have_glibc"
    fi
    $say "env.sh: binaries in $LP_BIN; CUDA libraries: ${dirs:-NOT FOUND}; from .devcarry/lib: ${LP_CARRIED:-none}"
    if [ -n "$LP_UNRESOLVED" ]; then
        echo "env.sh: ERROR: unresolved:" >&2
        sed 's/^/  /' <<<"$LP_UNRESOLVED" >&2
    else
        LP_ENV_OK=1
    fi
    export LP_BIN LP_CARRIED LP_CUDA_LIBS LP_UNRESOLVED LP_ENV_OK
    return 0
}
_lp_env
