# shellcheck shell=bash
# SPDX-License-Identifier: BSD-3-Clause
# nbdkit-cloop: helpers for scripts/bench-local (sourced, not run).
# Pure bash + awk; no state other than what the caller passes in.

# now: wall clock in seconds with nanoseconds.
now ()
{
    date +%s.%N
}

# fsub A B: A - B (floats), printed with 6 decimals.
fsub ()
{
    awk -v a="$1" -v b="$2" 'BEGIN { printf "%.6f\n", a - b }'
}

# median X...: median of the numbers given (mean of the two middle ones
# for an even count); prints "nan" if none.
median ()
{
    if [ $# -eq 0 ]; then echo nan; return; fi
    printf '%s\n' "$@" | sort -g | awk '
        { v[NR] = $1 }
        END {
            if (NR % 2) printf "%.6f\n", v[(NR + 1) / 2]
            else printf "%.6f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2
        }'
}

# mibps BYTES SECONDS: throughput in MiB/s.
mibps ()
{
    awk -v b="$1" -v s="$2" 'BEGIN {
        if (s == "nan" || s <= 0) print "nan"; else printf "%.1f\n", b / 1048576 / s }'
}

# ratio A B: A / B with 2 decimals ("nan" if either is missing).
ratio ()
{
    awk -v a="$1" -v b="$2" 'BEGIN {
        if (a == "nan" || b == "nan" || b <= 0) print "nan"; else printf "%.2f\n", a / b }'
}

# ge A B: true if A >= B (floats); false if either is "nan".
ge ()
{
    awk -v a="$1" -v b="$2" 'BEGIN { exit !(a != "nan" && b != "nan" && a + 0 >= b + 0) }'
}

# passmiss A B: PASS if A >= B, else MISS.
passmiss ()
{
    if ge "$1" "$2"; then echo PASS; else echo MISS; fi
}

# human_mib BYTES: bytes as MiB with one decimal.
human_mib ()
{
    awk -v b="$1" 'BEGIN { printf "%.1f\n", b / 1048576 }'
}

# proc_cpu_s PID: user+system CPU seconds of PID (all its threads, not
# its children) from /proc/PID/stat.
proc_cpu_s ()
{
    local stat rest tck
    stat=$(cat "/proc/$1/stat") || return 1
    rest=${stat##*) }           # comm may contain spaces; fields after it
    tck=$(getconf CLK_TCK)
    # rest: field 3 (state) onwards; utime/stime are fields 14/15.
    echo "$rest" | awk -v t="$tck" '{ printf "%.2f\n", ($12 + $13) / t }'
}

# proc_hwm_kb PID: peak resident set size (VmHWM) of PID in KiB.
proc_hwm_kb ()
{
    awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"
}

# proc_ppid PID: the parent of PID.
proc_ppid ()
{
    awk '/^PPid:/ { print $2 }' "/proc/$1/status"
}

# spread X...: "MIN-MAX" of the numbers given, 2 decimals ("-" if none).
spread ()
{
    if [ $# -eq 0 ]; then echo -; return; fi
    printf '%s\n' "$@" | sort -g | awk '
        NR == 1 { lo = $1 } { hi = $1 }
        END { printf "%.2f-%.2f\n", lo, hi }'
}

# busy_ticks: CPU time the whole machine has spent busy since boot, in
# clock ticks (user + nice + system + irq + softirq, all CPUs).
busy_ticks ()
{
    awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8; exit }' /proc/stat
}

# own_cpu_s TMPFILE: set OWN_CPU to the user+sys CPU seconds of this
# shell and all its reaped descendants.  bash's "times" must run in this
# shell, not in a subshell (a pipeline or $(...)): call it plainly.
own_cpu_s ()
{
    times > "$1"
    # shellcheck disable=SC2034  # read by the caller
    OWN_CPU=$(awk '
        function s(t,  m) { m = t; sub(/m.*/, "", m); sub(/^[0-9]+m/, "", t); sub(/s$/, "", t); return m * 60 + t }
        { tot += s($1) + s($2) }
        END { printf "%.2f\n", tot }' "$1")
}

# The benchmark image, shared by the bench-* scripts that source this:
# an ext4 of a deterministic sample of this machine's /usr, compressed
# by create_compressed_fs.  The same names and recipe as bench-local's
# own copy, so every benchmark measures (and reuses) the same files.

# bench_stage_usr DIR BUDGET: copy a deterministic (path-hash ordered)
# sample of /usr files into DIR, at most BUDGET bytes counted in 4 KiB
# blocks (files and directories); prints "ENTRIES BYTES".
bench_stage_usr ()
{
    /usr/bin/python3 - "$1" "$2" <<'PY'
import hashlib, os, stat, sys
dest, budget = sys.argv[1], int(sys.argv[2])
roots = ["/usr/bin", "/usr/sbin", "/usr/lib", "/usr/libexec",
         "/usr/share", "/usr/include"]
files = []
for root in roots:
    for d, dirs, names in os.walk(root):
        dirs.sort()
        for n in names:
            p = os.path.join(d, n)
            try:
                st = os.lstat(p)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode) and st.st_size <= budget // 8:
                files.append((hashlib.sha1(p.encode("utf-8", "surrogateescape")).digest(),
                              p, st.st_size, st.st_mode))
files.sort()
blk = lambda n: (n + 4095) // 4096 * 4096
used, entries, made = 0, 0, set()
for _, p, size, mode in files:
    if budget - used < 65536:
        break
    rel = os.path.relpath(p, "/")
    newdirs = []
    d = os.path.dirname(rel)
    while d and d not in made:
        newdirs.append(d)
        d = os.path.dirname(d)
    cost = blk(size) + 4096 * len(newdirs)
    if used + cost > budget:
        continue
    try:
        with open(p, "rb") as f:
            data = f.read()
    except OSError:
        continue
    for nd in reversed(newdirs):
        os.makedirs(os.path.join(dest, nd), exist_ok=True)
        made.add(nd)
    out = os.path.join(dest, rel)
    with open(out, "wb") as f:
        f.write(data)
    os.chmod(out, stat.S_IMODE(mode))
    used += cost
    entries += 1 + len(newdirs)
print(entries, used)
PY
}

# bench_make_image RAW SIZE_MB LOGDIR: build RAW (SIZE_MB MiB, dense)
# unless it exists.  Staging happens in RAW.staging (removed after).
# Exits the script on failure.
bench_make_image ()
{
    local raw=$1 size_mb=$2 logdir=$3 stage=$1.staging
    local frac=80 res entries bytes inodes t0 t1 tries
    [ -s "$raw" ] && return 0
    echo "# building $raw (${size_mb} MiB ext4 of /usr content, once)..."
    t0=$(now)
    # Leave room for ext4's own metadata; if the data still does not
    # fit, retry with less.
    for tries in 1 2 3 4; do
        rm -rf "$stage"
        mkdir -p "$stage"
        res=$(bench_stage_usr "$stage" $((size_mb * 1048576 * frac / 100)))
        read -r entries bytes <<<"$res"
        # mkfs.ext4 -d into a nearly full image needs an explicit inode count.
        inodes=$((entries + entries / 4 + 1024))
        rm -f "$raw.tmp"
        truncate -s "${size_mb}M" "$raw.tmp"
        if mkfs.ext4 -q -F -b 4096 -m 0 -N "$inodes" -L bench-usr \
                -U c1005e7e-bead-4a11-8b1d-00000000be4c \
                -E root_owner=0:0,hash_seed=c1005e7e-bead-4a11-8b1d-00000000be4c \
                -d "$stage" "$raw.tmp" >"$logdir/mkfs.log" 2>&1; then
            break
        fi
        echo "# mkfs.ext4 did not fit ${bytes} bytes in ${size_mb} MiB; retrying with less" >&2
        tail -n 3 "$logdir/mkfs.log" >&2
        frac=$((frac - 8))
        [ "$tries" -lt 4 ] || { echo "could not build $raw" >&2; rm -rf "$stage"; exit 1; }
    done
    rm -rf "$stage"
    # Allocate every block, so the raw image is a plain file for nbdkit
    # file as well.
    cp --sparse=never "$raw.tmp" "$raw.tmp2"
    rm -f "$raw.tmp"
    mv "$raw.tmp2" "$raw"
    t1=$(now)
    printf '# built %s: %s entries, %s MiB of /usr data, %.1f s\n' \
        "$raw" "$entries" "$(human_mib "$bytes")" "$(fsub "$t1" "$t0")"
}

# bench_compress RAW BS CLOOP LOGDIR: make CLOOP from RAW at block size
# BS with create_compressed_fs -L 9 unless it is there and newer; its
# time goes to CLOOP.ctime, "fresh" or "cached" to CLOOP.cnote.
bench_compress ()
{
    local raw=$1 bs=$2 c=$3 logdir=$4 t0 t1
    if [ ! -s "$c" ] || [ ! -s "$c.ctime" ] || [ "$c" -ot "$raw" ]; then
        echo "# create_compressed_fs -B $bs -L 9 $raw ..." >&2
        rm -f "$c" "$c.tmp" "$c.ctime"
        t0=$(now)
        if ! create_compressed_fs -q -B "$bs" -L 9 "$raw" "$c.tmp" >"$logdir/ccfs.log" 2>&1; then
            tail -n 5 "$logdir/ccfs.log" >&2
            echo "create_compressed_fs failed" >&2
            exit 1
        fi
        t1=$(now)
        mv "$c.tmp" "$c"
        fsub "$t1" "$t0" > "$c.ctime"
        echo fresh > "$c.cnote"
    else
        echo cached > "$c.cnote"
    fi
}

# Comparison with a baseline build of the plugin (BASELINE_PLUGIN), for
# before/after figures of one change measured in the same run.

# bench_snapshot SO COPY: copy the plugin file SO to COPY (so that a
# rebuild during the run cannot swap it halfway) and print its label:
# path, build time and the start of its md5.
bench_snapshot ()
{
    printf '%s (built %s, md5 %s)\n' "$1" "$(date -r "$1" '+%Y-%m-%d %H:%M:%S')" \
        "$(md5sum < "$1" | cut -c1-12)"
    cp "$1" "$2"
}

# ab_order RUN SLOT: "new base" or "base new", the order in which to
# measure the two builds: it alternates from run to run, and between
# consecutive measurements (SLOT 0, 1, ...) of one run, so that a drift
# of the machine's load hits both builds alike.
ab_order ()
{
    if [ $(( ($1 + $2) % 2 )) -eq 1 ]; then echo "new base"; else echo "base new"; fi
}

# serial_mibps BYTES_A R_A BYTES_B R_B: the MiB/s of reading BYTES_A at
# R_A MiB/s, then BYTES_B at R_B ("nan" if a rate is missing).
serial_mibps ()
{
    awk -v a="$1" -v ra="$2" -v b="$3" -v rb="$4" 'BEGIN {
        if (ra == "nan" || rb == "nan" || ra <= 0 || rb <= 0) print "nan"
        else printf "%.1f\n", (a + b) / 1048576 / (a / 1048576 / ra + b / 1048576 / rb) }'
}

# two_copies SOCK NAME_A NAME_B OUT FLAGS: read the exports NAME_A and
# NAME_B of the NBD server on the Unix socket SOCK at once, by two
# "nbdcopy FLAGS nbd+unix:///NAME?socket=SOCK null:" processes; append
# "end_a T" and "end_b T" (wall clock when each finished) to OUT.
# False if either failed.
two_copies ()
{
    local sock=$1 a=$2 b=$3 out=$4 flags=$5 pa pb rc=0
    rm -f "$out.a" "$out.b"
    # shellcheck disable=SC2086  # FLAGS is a list of options
    { nbdcopy $flags "nbd+unix:///$a?socket=$sock" null: && echo "end_a $(now)" > "$out.a"; } &
    pa=$!
    # shellcheck disable=SC2086
    { nbdcopy $flags "nbd+unix:///$b?socket=$sock" null: && echo "end_b $(now)" > "$out.b"; } &
    pb=$!
    wait "$pa" || rc=1
    wait "$pb" || rc=1
    [ "$rc" = 0 ] || return 1
    cat "$out.a" "$out.b" >> "$out"
    rm -f "$out.a" "$out.b"
}
