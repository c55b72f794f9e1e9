#!/bin/bash
# guest-fio.sh — the guest half of bench/vm-fio: serves one same-size backing file per
# system, each file on one shared ext4 filesystem on a RAM disk (brd), each behind its own
# tcm_loop LUN, checks that data written through every LUN lands in its file, then runs
# the fio jobs alternating between systems (job 1 on A B C A B C, then job 2 ...) and
# appends one JSON line per run to $BENCH_OUT/runs.jsonl.
#
# Systems: ietd-fileio-wb, ietd-fileio-wt, ietd-blockio (ietd-datapath, one process each),
# tcmu-runner (Debian package, qcow handler serving a raw file), kernel-fileio
# (target_core_file). Why ext4 on brd: blockio needs O_DIRECT, which tmpfs lacks, and every
# system should see the same filesystem; brd keeps it in RAM like the reference's tmpfs.
#
# Environment (set by bench/vm-fio): BENCH_OUT (host directory shared into the guest),
# DP (ietd-datapath binary), RUNTIME (seconds per run), ROUNDS, SIZE_MB, JOBS, SYSTEMS,
# HW_MAX_SECTORS, DATA_AREA_MB, DP_WORKERS (empty = datapath default), STRACE (1 = count
# the datapath's syscalls with strace -c -f during each ietd run; slows it down).
# vm: --mem 4G --cpus 2
# shellcheck source=../tests/vm/lib.sh
. "$(dirname "$0")/../tests/vm/lib.sh"

: "${BENCH_OUT:?}" "${DP:?}"
RUNTIME=${RUNTIME:-3}
ROUNDS=${ROUNDS:-2}
SIZE_MB=${SIZE_MB:-256}
HW_MAX_SECTORS=${HW_MAX_SECTORS:-2048}
DATA_AREA_MB=${DATA_AREA_MB:-256}
DP_WORKERS=${DP_WORKERS:-}
STRACE=${STRACE:-0}
ALL_SYSTEMS="ietd-fileio-wb ietd-fileio-wt ietd-blockio tcmu-runner kernel-fileio"
ALL_JOBS="4k-randread-qd1 4k-randread-qd32 4k-randwrite-qd1 4k-randwrite-qd32 1m-read-qd16 1m-write-qd16 4k-mixed-qd32"
SYSTEMS=${SYSTEMS:-$ALL_SYSTEMS}
JOBS=${JOBS:-$ALL_JOBS}
SIZE=$((SIZE_MB << 20))
RUNS=$BENCH_OUT/runs.jsonl
FS=/bench

for t in fio jq mkfs.ext4; do command -v $t > /dev/null || die "missing $t (install it on the host)"; done
[ -x "$DP" ] || die "no datapath binary at $DP"

declare -A DEV PID FILE
# Cleanup runs in reverse order: lio_teardown unlinks the LUNs while the serving processes
# still answer (a TCMU LUN whose handler is gone makes the kernel wait cmd_time_out per
# command, SYNCHRONIZE CACHE on removal included), then the processes are stopped.
stop_all() {
    local sys
    for sys in "${!PID[@]}"; do
        [ -z "${PID[$sys]}" ] || stop_pid "${PID[$sys]}" 10
    done
}
at_exit stop_all
lio_modules
at_exit lio_teardown

# One RAM disk for every system's file: 5 files plus room for ext4's metadata.
nfiles=$(wc -w <<< "$SYSTEMS")
# ext4 keeps a journal and metadata besides the files: 10% plus 128 MiB covers it.
brd_mb=$((nfiles * SIZE_MB * 11 / 10 + 128))
rmmod brd 2> /dev/null
modprobe brd rd_nr=1 rd_size=$((brd_mb * 1024)) max_part=0 || die "cannot load brd"
mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 /dev/ram0 > /dev/null || die "mkfs.ext4 /dev/ram0"
mkdir -p "$FS" || die "mkdir $FS"
mount -t ext4 /dev/ram0 "$FS" || die "mount /dev/ram0"
ok "ext4 on a $brd_mb MiB RAM disk at $FS"

TARGET=iqn.2024-01.org.ietd.bench:fio
TPG=$(loop_target naa.5001405000000b01 naa.5001405000000b02) || die "tcm_loop target"

# Written data (not holes) so reads go through the filesystem like on a real disk.
mkfile() {
    dd if=/dev/zero of="$1" bs=1M count="$SIZE_MB" status=none conv=fsync || die "fill $1"
}

# N counts systems; system N is HBA 10+N and LUN N-1 (a lone LUN 1 without a LUN 0 is
# never scanned by tcm_loop's host).
N=0
serve_ietd() {  # SYSTEM TYPE IOMODE
    local sys=$1 type=$2 mode=$3 bs uio f=$FS/$1.img wargs=()
    N=$((N + 1))
    mkfile "$f"
    bs=$(lio_user_backstore "$((10 + N))" "$sys" "$SIZE" "ietd/$sys" 512 \
        nl_reply_supported=-1 "hw_max_sectors=$HW_MAX_SECTORS" "max_data_area_mb=$DATA_AREA_MB") \
        || die "backstore $sys"
    uio=$(uio_by_name "tcm-user/$((10 + N))/$sys/ietd/$sys") || die "no uio device for $sys"
    [ -z "$DP_WORKERS" ] || wargs=(--workers "$DP_WORKERS")
    "$DP" --attach "$uio" --target "$TARGET" --lun "$((N - 1))" \
        --params "Path=$f,Type=$type,IOMode=$mode,BlockSize=512" \
        --max-transfer-blocks "$HW_MAX_SECTORS" "${wargs[@]}" > "/tmp/dp-$sys.log" 2>&1 &
    PID[$sys]=$!
    show_log_on_failure "/tmp/dp-$sys.log"
    DEV[$sys]=$(loop_lun "$TPG" "$((N - 1))" "$bs" 30) || die "LUN over $sys did not appear"
    FILE[$sys]=$f
}

serve_tcmu_runner() {
    local sys=tcmu-runner bs f=$FS/tcmu-runner.img
    N=$((N + 1))
    mkfile "$f"
    mkdir -p /var/log
    tcmu-runner > /tmp/tcmu-runner.out 2>&1 &
    PID[$sys]=$!
    show_log_on_failure /var/log/tcmu-runner.log
    wait_until 20 grep -q 'Handler qcow is registered' /var/log/tcmu-runner.log \
        || die "tcmu-runner did not register its qcow handler"
    # Same transfer size and data area as ours: the comparison is of the handlers.
    bs=$(lio_user_backstore "$((10 + N))" "$sys" "$SIZE" "qcow/$f" 512 \
        "hw_max_sectors=$HW_MAX_SECTORS" "max_data_area_mb=$DATA_AREA_MB") || die "backstore $sys"
    DEV[$sys]=$(loop_lun "$TPG" "$((N - 1))" "$bs" 30) || die "LUN over $sys did not appear"
    FILE[$sys]=$f
}

serve_kernel_fileio() {
    local sys=kernel-fileio bs f=$FS/kernel-fileio.img
    N=$((N + 1))
    mkfile "$f"
    bs=$(lio_fileio_backstore "$((10 + N))" "$sys" "$f" "$SIZE") || die "backstore $sys"
    DEV[$sys]=$(loop_lun "$TPG" "$((N - 1))" "$bs" 30) || die "LUN over $sys did not appear"
    PID[$sys]=
    FILE[$sys]=$f
}

for sys in $SYSTEMS; do
    case $sys in
        ietd-fileio-wb) serve_ietd "$sys" fileio wb ;;
        ietd-fileio-wt) serve_ietd "$sys" fileio wt ;;
        ietd-blockio) serve_ietd "$sys" blockio wt ;;
        tcmu-runner) serve_tcmu_runner ;;
        kernel-fileio) serve_kernel_fileio ;;
        *) die "unknown system $sys (known: $ALL_SYSTEMS)" ;;
    esac
    ok "$sys served as ${DEV[$sys]} (max_sectors_kb $(cat "/sys/block/${DEV[$sys]#/dev/}/queue/max_sectors_kb"))"
done

# Integrity: 8 MiB of random data written through each LUN must be in its backing file
# and read back the same through the LUN; a fast system that loses data is not a result.
head -c 8M /dev/urandom > /tmp/pattern
for sys in $SYSTEMS; do
    d=${DEV[$sys]} f=${FILE[$sys]}
    dd if=/tmp/pattern of="$d" bs=1M seek=3 oflag=direct status=none || die "$sys: write"
    sg_sync "$d" > /dev/null 2>&1 || true
    check "$sys: data written through the LUN is in its file" \
        cmp /tmp/pattern <(dd if="$f" bs=1M skip=3 count=8 iflag=direct status=none)
    check "$sys: and reads back through the LUN" \
        cmp /tmp/pattern <(dd if="$d" bs=1M skip=3 count=8 iflag=direct status=none)
done

# cpu_ticks PID: utime+stime of a process and all its threads, in clock ticks.
cpu_ticks() {
    [ -n "$1" ] || { echo null; return; }
    local s
    s=$(< "/proc/$1/stat") || { echo null; return; }
    s=${s##*) }
    # shellcheck disable=SC2086 # split into fields on purpose
    set -- $s
    # after "pid (comm) ", field 3 (state) is $1: utime is field 14 -> $12, stime $13
    echo $((${12} + ${13}))
}

# sys_ticks: busy and total ticks of every CPU from /proc/stat.
sys_ticks() {
    local _ user nice system idle iowait irq softirq steal
    read -r _ user nice system idle iowait irq softirq steal _ < /proc/stat
    echo "$((user + nice + system + irq + softirq + steal)) $((user + nice + system + idle + iowait + irq + softirq + steal))"
}

# disk_ios DEV: completed reads + writes of a block device.
disk_ios() {
    local r w s
    s=$(< "/sys/block/${1#/dev/}/stat")
    # shellcheck disable=SC2086 # split into fields on purpose
    set -- $s
    r=$1 w=$5
    echo $((r + w))
}

fio_args() {  # JOB -> fio options
    case $1 in
        4k-randread-qd1) echo "--rw=randread --bs=4k --iodepth=1" ;;
        4k-randread-qd32) echo "--rw=randread --bs=4k --iodepth=32" ;;
        4k-randwrite-qd1) echo "--rw=randwrite --bs=4k --iodepth=1" ;;
        4k-randwrite-qd32) echo "--rw=randwrite --bs=4k --iodepth=32" ;;
        1m-read-qd16) echo "--rw=read --bs=1M --iodepth=16" ;;
        1m-write-qd16) echo "--rw=write --bs=1M --iodepth=16" ;;
        4k-mixed-qd32) echo "--rw=randrw --rwmixread=70 --bs=4k --iodepth=32" ;;
        *) return 1 ;;
    esac
}

run_one() {  # JOB SYSTEM ROUND
    local job=$1 sys=$2 round=$3 dev=${DEV[$2]} pid=${PID[$2]} args out c0 c1 s0 s1 i0 i1 st=
    args=$(fio_args "$job") || die "unknown job $job"
    if [ "$STRACE" = 1 ] && [ -n "$pid" ]; then
        strace -c -f -p "$pid" -o "$BENCH_OUT/strace-$sys-$job-$round.txt" &
        st=$!
        sleep 1
    fi
    c0=$(cpu_ticks "$pid")
    s0=$(sys_ticks)
    i0=$(disk_ios "$dev")
    # shellcheck disable=SC2086
    out=$(fio --name="$job" --filename="$dev" $args --direct=1 --ioengine=libaio \
        --time_based --runtime="$RUNTIME" --ramp_time=1 --numjobs=1 --randrepeat=0 \
        --norandommap --output-format=json 2> "/tmp/fio-$sys-$job.err") \
        || { cat "/tmp/fio-$sys-$job.err" >&2; fail "fio $job on $sys"; return; }
    i1=$(disk_ios "$dev")
    s1=$(sys_ticks)
    c1=$(cpu_ticks "$pid")
    if [ -n "$st" ]; then
        kill -INT "$st" 2> /dev/null
        wait "$st" 2> /dev/null
    fi
    jq -c --arg sys "$sys" --arg job "$job" --argjson round "$round" \
        --argjson c0 "$c0" --argjson c1 "$c1" --argjson ios $((i1 - i0)) \
        --argjson sbusy $(($(cut -d' ' -f1 <<< "$s1") - $(cut -d' ' -f1 <<< "$s0"))) \
        --argjson stotal $(($(cut -d' ' -f2 <<< "$s1") - $(cut -d' ' -f2 <<< "$s0"))) \
        --argjson hz "$(getconf CLK_TCK)" '
        .jobs[0] as $j
        | {system: $sys, job: $job, round: $round,
           iops: ($j.read.iops + $j.write.iops),
           mb_s: (($j.read.bw_bytes + $j.write.bw_bytes) / 1000000),
           p99_us: ([$j.read, $j.write | select(.total_ios > 0)
                     | .clat_ns.percentile["99.000000"]] | max / 1000),
           ios: $ios,
           proc_cpu_us: (if $c0 == null or $c1 == null then null else ($c1 - $c0) * 1000000 / $hz end),
           sys_busy_us: ($sbusy * 1000000 / $hz),
           sys_total_us: ($stotal * 1000000 / $hz)}' <<< "$out" >> "$RUNS" \
        || { fail "cannot parse fio output for $job on $sys"; return; }
    printf '%-18s %-15s r%s  %s\n' "$job" "$sys" "$round" \
        "$(tail -n 1 "$RUNS" | jq -r '"iops=\(.iops|floor) MB/s=\(.mb_s*10|floor/10) p99=\(.p99_us|floor)us"')"
}

note "fio: ${RUNTIME}s (+1s ramp) per run, $ROUNDS rounds, libaio direct=1, $(nproc) vCPUs, ${SIZE_MB} MiB files on ext4/brd"
: > "$RUNS"
for job in $JOBS; do
    for round in $(seq 1 "$ROUNDS"); do
        for sys in $SYSTEMS; do
            run_one "$job" "$sys" "$round"
        done
    done
done
ok "all runs recorded in $RUNS"

# LUNs first, while their handlers still answer, then the handlers.
lio_teardown
stop_all
