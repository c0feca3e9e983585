#!/usr/bin/env bash
# What one process per request costs: ferry with `--max-requests 1` (every request
# in a fresh process, started ahead as a spare) against the same pool of long-lived
# workers, same handler (ferry-testbed's GET /), driven by wrk:
#
#     bash bench/fresh.sh [ROUNDS] [SECS]        (defaults: 3 rounds of 5 s)
#
# Prints req/s and p50 latency at 1 and 16 connections for each (saturated: wrk sends
# the next request at once, so with --max-requests 1 requests wait for processes to
# start and the rate is the start rate), rounds interleaved, as min-max over the
# rounds; then the p50 of 100 requests paced 50 ms apart (below the start rate: the
# latency one request pays when a spare is ready). Needs wrk and curl.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
secs=${2:-5}
command -v wrk >/dev/null || { echo "bench/fresh.sh: wrk is required" >&2; exit 1; }
cargo build --release -q -p ferry -p ferry-testbed
bin=${CARGO_TARGET_DIR:-target}/release
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"' EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start() { # name, ferry options...
    local name=$1 p
    shift
    p=$(port)
    RUST_LOG=warn "$bin/ferry" --listen "127.0.0.1:$p" --control-socket off --workers 2 "$@" \
        -- "$bin/ferry-testbed" >"$work/$name.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 100); do
        curl -sf "http://127.0.0.1:$p/" >/dev/null 2>&1 && break
        sleep 0.1
    done
    echo "$p"
}

pooled=$(start pooled)
fresh=$(start fresh --max-requests 1)

for r in $(seq "$rounds"); do
    for c in 1 16; do
        for name in pooled fresh; do
            p=${!name}
            out=$(wrk -t1 -c"$c" -d"${secs}s" --latency "http://127.0.0.1:$p/")
            rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
            p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
            errs=$(awk '/Non-2xx|Socket errors/' <<<"$out")
            echo "$name c=$c $rps $p50 ${errs:+($errs)}" | tee -a "$work/results"
        done
    done
done

paced() { # port: p50 of 100 requests 50 ms apart, in ms, one connection each (as a browser's first)
    for _ in $(seq 100); do
        curl -s -o /dev/null -w '%{time_total}\n' "http://127.0.0.1:$1/"
        sleep 0.05
    done | sort -n | awk '{ a[NR] = $1 } END { printf "%.3f", a[int(NR / 2)] * 1000 }'
}
paced_pooled=$(paced "$pooled")
paced_fresh=$(paced "$fresh")

echo
echo "over $rounds round(s) of ${secs}s, min-max:"
printf '%-8s %4s %22s %22s\n' system conns "req/s" "p50"
for c in 1 16; do
    for name in pooled fresh; do
        awk -v n="$name" -v c="c=$c" '$1 == n && $2 == c {
            rps = $3 + 0; lat = $4
            ms = lat ~ /us$/ ? lat / 1000 : (lat ~ /ms$/ ? lat + 0 : lat * 1000)
            if (!seen++ || rps < rmin) rmin = rps; if (rps > rmax) rmax = rps
            if (seen == 1 || ms < lmin) lmin = ms; if (ms > lmax) lmax = ms
        } END { printf "%-8s %4s %10.0f-%-10.0f %9.3f-%-9.3f ms\n", n, substr(c, 3), rmin, rmax, lmin, lmax }' "$work/results"
    done
done
echo "paced (100 requests, 50 ms apart, new connection each): p50 pooled ${paced_pooled} ms, fresh ${paced_fresh} ms"
