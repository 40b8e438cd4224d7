#!/bin/sh
# transform.sh SRC.cu OUT.cpp - SRC as C++ for tests/cuemu/cuemu.h (transform.sed),
# with #line pointing compiler messages and sanitizer reports at SRC.
set -e
sed -E -e "1i #line 1 \"$1\"" -f "$(dirname "$0")/transform.sed" "$1" > "$2.tmp"
mv "$2.tmp" "$2"
