#!/usr/bin/env bash
# File transfer throughput: one file filer -> filer over loopback, against socat
# copying the same file disk to disk over loopback, in the same run.
#
#   cargo build --release && scripts/bench_file.sh
#
# Environment:
#   SIZE_MIB  file size in MiB (default 1024)
#   RUNS      runs of each contender, interleaved (default 3)
#   CHUNKS    sender chunk sizes to try (default: the built-in one), e.g.
#             CHUNKS="64KiB 256KiB 1MiB" (sets SOCKMOD_CHUNK_SIZE for the sender)
#   SOCAT_BUF socat's buffer size in bytes (default: socat's own, 8192)
#   BIN       the sockmod binary (default target/release/sockmod)
#   WORKDIR   where the files go (default: a new directory under target/)
#
# Prints one line per run and a summary with the best and median times. Dirty
# pages are synced before every run so that no run pays for the previous one's
# writeback.
set -euo pipefail

cd "$(dirname "$0")/.."
SIZE_MIB=${SIZE_MIB:-1024}
RUNS=${RUNS:-3}
CHUNKS=${CHUNKS:-default}
BIN=${BIN:-target/release/sockmod}
command -v socat >/dev/null || { echo "error: socat is not installed (apt-get install -y socat)" >&2; exit 1; }
[ -x "$BIN" ] || { echo "error: $BIN missing: run cargo build --release" >&2; exit 1; }

WORK=${WORKDIR:-$(mktemp -d "$PWD/target/bench-file.XXXXXX")}
mkdir -p "$WORK"
PIDS=()
cleanup() {
    exec 3>&- 2>/dev/null || true
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    [ -n "${KEEP:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT

now_ns() { date +%s%N; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# wait_for FILE PATTERN COUNT: until FILE has COUNT lines matching PATTERN.
wait_for() {
    local deadline=$((SECONDS + 300))
    until [ "$(grep -c -- "$2" "$1" 2>/dev/null || true)" -ge "$3" ]; do
        [ $SECONDS -lt $deadline ] || { echo "error: timed out waiting for $2 in $1" >&2; tail "$1" >&2; exit 1; }
        sleep 0.005
    done
}
secs() { awk -v ns="$1" 'BEGIN { printf "%.3f", ns / 1e9 }'; }
mibps() { awk -v ns="$1" -v mib="$SIZE_MIB" 'BEGIN { printf "%.0f", mib / (ns / 1e9) }'; }

echo "creating a ${SIZE_MIB} MiB file in $WORK"
head -c $((SIZE_MIB << 20)) /dev/urandom >"$WORK/src.bin"
SRC_SUM=$(b3sum --no-names "$WORK/src.bin" 2>/dev/null || sha256sum "$WORK/src.bin" | cut -d' ' -f1)
digest() { b3sum --no-names "$1" 2>/dev/null || sha256sum "$1" | cut -d' ' -f1; }

run_socat() {
    local port t0 t1 rpid
    port=$(free_port)
    rm -f "$WORK/socat.out"
    socat ${SOCAT_BUF:+-b "$SOCAT_BUF"} -u "TCP-LISTEN:$port,bind=127.0.0.1,reuseaddr" "CREATE:$WORK/socat.out" &
    rpid=$!
    until ss -ltn "sport = :$port" | grep -q LISTEN; do sleep 0.005; done
    sync
    t0=$(now_ns)
    socat ${SOCAT_BUF:+-b "$SOCAT_BUF"} -u "OPEN:$WORK/src.bin" "TCP:127.0.0.1:$port"
    wait "$rpid"
    t1=$(now_ns)
    # CPU time of both socat processes (this subshell's children).
    local cpu
    times >"$WORK/times.txt"
    cpu=$(tail -1 "$WORK/times.txt" | awk '{ t = 0; for (i = 1; i <= 2; i++) { split($i, a, "m"); t += a[1] * 60 + a[2] } printf "%.2f", t }')
    [ "$(digest "$WORK/socat.out")" = "$SRC_SUM" ] || { echo "error: socat copy differs" >&2; exit 1; }
    rm -f "$WORK/socat.out"
    echo "$((t1 - t0)) $cpu"
}

# CPU seconds (user + system) a process has used so far.
cpu_of() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat"; }

# The receiving filer runs for the whole benchmark.
mkdir -p "$WORK/inbox"
"$BIN" filer --id bob --bind 127.0.0.1:0 --ipserver 127.0.0.1:1 --report-interval 1h \
    --inbox "$WORK/inbox" --json </dev/null >"$WORK/bob.out" 2>"$WORK/bob.err" &
BOB=$!
PIDS+=("$BOB")
wait_for "$WORK/bob.err" "listening on" 1
BOB_PORT=$(sed -n 's/^listening on [^ ]*:\([0-9]*\).*$/\1/p' "$WORK/bob.err" | head -1)

start_alice() {
    local chunk=$1
    rm -f "$WORK/alice.in" "$WORK/alice.out"
    mkfifo "$WORK/alice.in"
    if [ "$chunk" = default ]; then
        "$BIN" filer --id alice --bind 127.0.0.1:0 --ipserver 127.0.0.1:1 --report-interval 1h \
            --inbox "$WORK/inbox-a" --json <"$WORK/alice.in" >"$WORK/alice.out" 2>"$WORK/alice.err" &
    else
        SOCKMOD_CHUNK_SIZE=$chunk "$BIN" filer --id alice --bind 127.0.0.1:0 --ipserver 127.0.0.1:1 \
            --report-interval 1h --inbox "$WORK/inbox-a" --json \
            <"$WORK/alice.in" >"$WORK/alice.out" 2>"$WORK/alice.err" &
    fi
    ALICE=$!
    PIDS+=("$ALICE")
    exec 3>"$WORK/alice.in"
    echo "connect 127.0.0.1:$BOB_PORT" >&3
    wait_for "$WORK/alice.out" '"event":"identified"' 1
}

stop_alice() {
    echo quit >&3
    exec 3>&-
    wait "$ALICE" 2>/dev/null || true
}

run_sockmod() {
    local t0 t1 seen pattern='"dir":"recv".*"state":"done"' bob0
    seen=$(grep -c -- "$pattern" "$WORK/bob.out" || true)
    bob0=$(cpu_of "$BOB")
    sync
    t0=$(now_ns)
    echo "sendfile bob $WORK/src.bin" >&3
    wait_for "$WORK/bob.out" "$pattern" $((seen + 1))
    t1=$(now_ns)
    [ "$(digest "$WORK/inbox/src.bin")" = "$SRC_SUM" ] || { echo "error: filer copy differs" >&2; exit 1; }
    rm -f "$WORK/inbox/src.bin"
    echo "$((t1 - t0)) $(awk -v a="$(cpu_of "$ALICE")" -v b0="$bob0" -v b1="$(cpu_of "$BOB")" 'BEGIN { printf "%.2f=%.2f+%.2f", a + b1 - b0, a, b1 - b0 }')"
}

hwm() { awk '/VmHWM/ { printf "%d MiB", $2 / 1024 }' "/proc/$1/status"; }

best_socat=
all_socat=
declare -A best all
for chunk in $CHUNKS; do best[$chunk]=; all[$chunk]=; done
for run in $(seq 1 "$RUNS"); do
    read -r ns cpu < <(run_socat)
    echo "run $run  socat              $(secs "$ns") s  $(mibps "$ns") MiB/s  (CPU ${cpu} s)"
    if [ -z "$best_socat" ] || [ "$ns" -lt "$best_socat" ]; then best_socat=$ns; fi
    all_socat="$all_socat $ns"
    for chunk in $CHUNKS; do
        start_alice "$chunk"
        read -r ns cpu < <(run_sockmod)
        echo "run $run  sockmod chunk=$chunk  $(secs "$ns") s  $(mibps "$ns") MiB/s  (CPU ${cpu} s sender+receiver, sender peak RSS $(hwm "$ALICE"))"
        stop_alice
        if [ -z "${best[$chunk]}" ] || [ "$ns" -lt "${best[$chunk]}" ]; then best[$chunk]=$ns; fi
        all[$chunk]="${all[$chunk]} $ns"
    done
done
median() { tr ' ' '\n' | grep . | sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : int((v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
med_socat=$(echo "$all_socat" | median)
echo
echo "${SIZE_MIB} MiB over loopback, $RUNS runs each (receiver peak RSS $(hwm "$BOB")):"
echo "  socat                 best $(secs "$best_socat") s ($(mibps "$best_socat") MiB/s)  median $(secs "$med_socat") s"
for chunk in $CHUNKS; do
    ns=${best[$chunk]}
    med=$(echo "${all[$chunk]}" | median)
    echo "  sockmod chunk=$chunk  best $(secs "$ns") s ($(mibps "$ns") MiB/s, $(ratio "$ns" "$best_socat")x socat)  median $(secs "$med") s ($(ratio "$med" "$med_socat")x socat)"
done
