# shellcheck shell=bash
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
