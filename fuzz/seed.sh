#!/usr/bin/env bash
# Seeds fuzz/corpus/<target>/ from protocol/vectors/*.hex (one framed message each;
# '#' comments and whitespace are ignored). corpus/ is gitignored: rerun at will.
#   decode_worker: each w*.hex frame, its payload alone (no length prefix), and all
#                  worker frames back to back as one stream;
#   decode_master: the same from m*.hex;
#   roundtrip:     every frame (raw bytes only: a starting point for the mutator).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
vectors="$here/../protocol/vectors"
corpus="$here/corpus"
mkdir -p "$corpus/decode_worker" "$corpus/decode_master" "$corpus/roundtrip"

hex_to_bin() { # file.hex -> raw bytes on stdout (xxd, or python3 without it)
    if command -v xxd > /dev/null; then
        sed 's/#.*//' "$1" | tr -d ' \t\r\n' | xxd -r -p
    else
        python3 -c 'import sys, re; t = re.sub(r"#.*", "", open(sys.argv[1]).read()); sys.stdout.buffer.write(bytes.fromhex("".join(t.split())))' "$1"
    fi
}

n=0
for side in w m; do
    case $side in w) target=decode_worker ;; m) target=decode_master ;; esac
    stream="$corpus/$target/all_frames"
    : > "$stream"
    for f in "$vectors"/${side}*.hex; do
        stem="$(basename "$f" .hex)"
        hex_to_bin "$f" > "$corpus/$target/$stem"
        tail -c +5 "$corpus/$target/$stem" > "$corpus/$target/$stem.payload"
        cat "$corpus/$target/$stem" >> "$stream"
        cp "$corpus/$target/$stem" "$corpus/roundtrip/$stem"
        n=$((n + 1))
    done
done
echo "seeded $n vectors into $corpus/{decode_worker,decode_master,roundtrip}"
