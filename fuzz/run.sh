#!/bin/sh
# Runs every fuzz target for SECONDS each (default 60). Needs cargo-fuzz:
#   cargo install cargo-fuzz --locked
# `-s none`: no sanitizer, so it builds on stable Rust.
set -eu
cd "$(dirname "$0")"
secs="${1:-60}"
for t in header_decode open_image ops_with_crash request_parser; do
    mkdir -p "corpus/$t"
    seeds=""
    [ -d "seeds/$t" ] && seeds="seeds/$t"
    # Images are 32 KiB: let inputs grow that far.
    cargo fuzz run -s none "$t" "corpus/$t" $seeds -- \
        -max_total_time="$secs" -max_len=40000 -print_final_stats=1
done
