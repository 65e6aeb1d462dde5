#!/usr/bin/env bash
# Start-to-exit time of a user-namespaced `ctr run ... IMAGE true`, side by side in one run:
#   layermount: ctr run --snapshotter layermount --uidmap M --gidmap M --remap-labels  (composed, idmapped layers)
#   overlayfs:  ctr run --snapshotter overlayfs  --uidmap M --gidmap M                 (containerd chowns a copy)
# for images of 2,000 and 20,000 files (built offline by the mkimage example), with a new mapping for every run
# (containerd caches the chowned copy per mapping only until its collector removes it; a new mapping is the cost
# a new user-namespaced workload pays).
#
# Usage (as root, from the repository): snapshotter/bench/ctr-run.sh [RUNS]   (default 9 runs per cell)
# Everything happens in a private mount namespace on a private tmpfs; both daemons are started with their own
# config, root, state and sockets there and stopped by pid on exit. Set PROFILE=debug to skip the release build.
set -euo pipefail

if [ "${LAYERMOUNT_BENCH_INNER:-}" != 1 ]; then
    cd "$(dirname "$0")/../.."
    profile=${PROFILE:-release}
    flag=--release
    [ "$profile" = debug ] && flag=
    cargo build -q $flag -p layermount-snapshotter --bin layermount-snapshotter --example mkimage
    target=${CARGO_TARGET_DIR:-target}/$profile
    exec unshare -m --propagation private env LAYERMOUNT_BENCH_INNER=1 BIN="$target/layermount-snapshotter" \
        MKIMAGE="$target/examples/mkimage" PROFILE="$profile" "$0" "$@"
fi

runs=${1:-9}
dir=$(mktemp -d /tmp/layermount-bench-XXXXXX)
mount -t tmpfs -o size=8g,mode=0755 tmpfs "$dir"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    umount -l "$dir" && rmdir "$dir"
}
trap cleanup EXIT

"$BIN" --address "$dir/snapshotter.sock" --root "$dir/snapshotter" >"$dir/snapshotter.log" 2>&1 &
pids+=($!)
cat >"$dir/containerd.toml" <<EOF
version = 2
root = "$dir/root"
state = "$dir/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$dir/containerd.sock"
[ttrpc]
  address = "$dir/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$dir/opt"
[plugins."io.containerd.gc.v1.scheduler"]
  deletion_threshold = 1
[proxy_plugins]
  [proxy_plugins.layermount]
    type = "snapshot"
    address = "$dir/snapshotter.sock"
EOF
for _ in $(seq 100); do [ -S "$dir/snapshotter.sock" ] && break; sleep 0.05; done
containerd --config "$dir/containerd.toml" >"$dir/containerd.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do [ -S "$dir/containerd.sock" ] && break; sleep 0.05; done
ctr() { command ctr --address "$dir/containerd.sock" --namespace bench "$@"; }

now_ms() { echo $(($(date +%s%N) / 1000000)); }
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR + 1) / 2] : int((a[NR / 2] + a[NR / 2 + 1]) / 2)}'; }

echo "| files | runs | layermount --remap-labels (ms, median) | overlayfs chowned copy (ms, median) | speed-up | floor: overlayfs, no user namespace (ms) |"
echo "|---:|---:|---:|---:|---:|---:|"
n=0
for files in 2000 20000; do
    image=$("$MKIMAGE" "$dir/image-$files.tar" "$files")
    for s in layermount overlayfs; do
        ctr images import --snapshotter "$s" "$dir/image-$files.tar" >/dev/null
    done
    declare -A times=()
    for s in layermount overlayfs; do
        # One run without user namespaces first, not counted: the shim and runc binaries paged in, the image's
        # snapshots warmed.
        n=$((n + 1))
        ctr run --rm --snapshotter "$s" --runc-root "$dir/runc" --fifo-dir "$dir/fifo" "$image" "w$n" true
        times[$s]=""
        for i in $(seq "$runs"); do
            n=$((n + 1))
            host=$((100000 + n * 65536))
            extra=()
            [ "$s" = layermount ] && extra=(--remap-labels)
            t0=$(now_ms)
            ctr run --rm --snapshotter "$s" --runc-root "$dir/runc" --fifo-dir "$dir/fifo" \
                --uidmap "0:$host:65536" --gidmap "0:$host:65536" "${extra[@]}" "$image" "b$n" true
            t1=$(now_ms)
            times[$s]+="$((t1 - t0))"$'\n'
        done
    done
    floor=""
    for i in $(seq "$runs"); do
        n=$((n + 1))
        t0=$(now_ms)
        ctr run --rm --snapshotter overlayfs --runc-root "$dir/runc" --fifo-dir "$dir/fifo" "$image" "f$n" true
        t1=$(now_ms)
        floor+="$((t1 - t0))"$'\n'
    done
    floor=$(printf '%s' "$floor" | median)
    ours=$(printf '%s' "${times[layermount]}" | median)
    theirs=$(printf '%s' "${times[overlayfs]}" | median)
    echo "| $files | $runs | $ours | $theirs | $(awk -v a="$ours" -v b="$theirs" 'BEGIN {printf "%.1fx", b / a}') | $floor |"
    ctr images rm "$image" >/dev/null
done
echo "(profile: $PROFILE; kernel $(uname -r); $(containerd --version | awk '{print $1, $3}'); $(runc --version | head -1))"
