#!/bin/bash
# guest-fio.sh — the guest half of bench/vm-fio: serves one same-size backing file per
# system, each file on one shared ext4 filesystem on a RAM disk (brd), each behind its own
# tcm_loop LUN, checks that data written through every LUN lands in its file, then runs
# the fio jobs alternating between systems (job 1 on A B C A B C, then job 2 ...), keeping
# each run's fio JSON in $BENCH_OUT/fio/ and its counters in $BENCH_OUT/runs.tsv.
#
# Systems: ietd-fileio-wb, ietd-fileio-wt, ietd-blockio (ietd-datapath, one process each),
# ietd-nullio (ietd-datapath answering without backing I/O: the TCMU ceiling),
# ietd-base-wb / ietd-base-wt (fileio wb / wt served by another datapath binary, $BASE_DP,
# for A/B runs),
# tcmu-runner (Debian package, qcow handler serving a raw file), kernel-fileio
# (target_core_file). Why ext4 on brd: blockio needs O_DIRECT, which tmpfs lacks, and every
# system should see the same filesystem; brd keeps it in RAM like the reference's tmpfs.
#
# Environment (set by bench/vm-fio): BENCH_OUT (host directory shared into the guest),
# DP (ietd-datapath binary), RUNTIME (seconds per run), ROUNDS, SIZE_MB, JOBS, SYSTEMS,
# HW_MAX_SECTORS, DATA_AREA_MB, DP_WORKERS (empty = datapath default), DP_ARGS (more
# ietd-datapath options, not for ietd-base-wb), STRACE (1 = count
# the datapath's syscalls with strace -c -f during each ietd run; slows it down), PERF (1 =
# sample the whole guest with perf during every run and keep a flat profile of each).
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
PERF=${PERF:-0}
ALL_SYSTEMS="ietd-fileio-wb ietd-fileio-wt ietd-blockio ietd-nullio tcmu-runner kernel-fileio"
ALL_JOBS="4k-randread-qd1 4k-randread-qd32 4k-randwrite-qd1 4k-randwrite-qd32 1m-read-qd16 1m-write-qd16 4k-mixed-qd32"
SYSTEMS=${SYSTEMS:-$ALL_SYSTEMS}
JOBS=${JOBS:-$ALL_JOBS}
SIZE=$((SIZE_MB << 20))
RUNS=$BENCH_OUT/runs.tsv
FS=/bench

for t in fio mkfs.ext4; do command -v $t > /dev/null || die "missing $t (install it on the host)"; done
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
serve_ietd() {  # SYSTEM TYPE IOMODE [DATAPATH-BINARY]
    local sys=$1 type=$2 mode=$3 dp=${4:-$DP} bs uio f=$FS/$1.img wargs=() store
    N=$((N + 1))
    if [ "$type" = nullio ]; then
        f=
        store="Type=nullio,Blocks=$((SIZE / 512))"
    else
        mkfile "$f"
        store="Path=$f,Type=$type,IOMode=$mode"
    fi
    bs=$(lio_user_backstore "$((10 + N))" "$sys" "$SIZE" "ietd/$sys" 512 \
        nl_reply_supported=-1 "hw_max_sectors=$HW_MAX_SECTORS" "max_data_area_mb=$DATA_AREA_MB") \
        || die "backstore $sys"
    uio=$(uio_by_name "tcm-user/$((10 + N))/$sys/ietd/$sys") || die "no uio device for $sys"
    [ -z "$DP_WORKERS" ] || wargs=(--workers "$DP_WORKERS")
    # shellcheck disable=SC2206 # DP_ARGS is a list of options
    [ -n "${4-}" ] || wargs+=(${DP_ARGS:-})
    "$dp" --attach "$uio" --target "$TARGET" --lun "$((N - 1))" \
        --params "$store,BlockSize=512" \
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
        ietd-nullio) serve_ietd "$sys" nullio - ;;
        ietd-base-wb) serve_ietd "$sys" fileio wb "${BASE_DP:?ietd-base-wb needs BASE_DP}" ;;
        ietd-base-wt) serve_ietd "$sys" fileio wt "${BASE_DP:?ietd-base-wt needs BASE_DP}" ;;
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
    [ -n "$f" ] || continue  # nullio keeps nothing
    dd if=/tmp/pattern of="$d" bs=1M seek=3 oflag=direct status=none || die "$sys: write"
    sg_sync "$d" > /dev/null 2>&1 || true
    check "$sys: data written through the LUN is in its file" \
        cmp /tmp/pattern <(dd if="$f" bs=1M skip=3 count=8 iflag=direct status=none)
    check "$sys: and reads back through the LUN" \
        cmp /tmp/pattern <(dd if="$d" bs=1M skip=3 count=8 iflag=direct status=none)
done

# Process spawning costs about 25 ms under TCG, so the helpers below read /proc and
# /sys with builtins only and store into the named variable instead of printing.

# cpu_ticks PID VAR: utime+stime of a process and all its threads, in clock ticks ("null"
# without a process).
cpu_ticks() {
    local s f
    if [ -z "$1" ] || ! read -r s < "/proc/$1/stat"; then
        printf -v "$2" null
        return
    fi
    # after "pid (comm) " the fields start at state; utime and stime are the 12th, 13th
    read -r -a f <<< "${s##*) }"
    printf -v "$2" %d $((f[11] + f[12]))
}

# sys_ticks BUSY_VAR TOTAL_VAR: busy and total ticks of every CPU from /proc/stat.
sys_ticks() {
    local _ user nice system idle iowait irq softirq steal
    read -r _ user nice system idle iowait irq softirq steal _ < /proc/stat
    printf -v "$1" %d $((user + nice + system + irq + softirq + steal))
    printf -v "$2" %d $((user + nice + system + idle + iowait + irq + softirq + steal))
}

# disk_ios DEV VAR: completed reads + writes of a block device.
disk_ios() {
    local f
    read -r -a f < "/sys/block/${1#/dev/}/stat"
    printf -v "$2" %d $((f[0] + f[4]))
}

# fio_args JOB: sets FIO_ARGS to the job's fio options.
fio_args() {
    case $1 in
        4k-randread-qd1) FIO_ARGS="--rw=randread --bs=4k --iodepth=1" ;;
        4k-randread-qd32) FIO_ARGS="--rw=randread --bs=4k --iodepth=32" ;;
        4k-randwrite-qd1) FIO_ARGS="--rw=randwrite --bs=4k --iodepth=1" ;;
        4k-randwrite-qd32) FIO_ARGS="--rw=randwrite --bs=4k --iodepth=32" ;;
        1m-read-qd16) FIO_ARGS="--rw=read --bs=1M --iodepth=16" ;;
        1m-write-qd16) FIO_ARGS="--rw=write --bs=1M --iodepth=16" ;;
        4k-mixed-qd32) FIO_ARGS="--rw=randrw --rwmixread=70 --bs=4k --iodepth=32" ;;
        *) return 1 ;;
    esac
}

# run_one JOB SYSTEM ROUND: one fio run; its JSON goes to $BENCH_OUT/fio/ and a line of
# counters (tab-separated, see the header written below) to $RUNS. bench/vm-fio joins
# them on the host, where jq is fast.
run_one() {
    local job=$1 sys=$2 round=$3 dev=${DEV[$2]} pid=${PID[$2]} st=
    local c0 c1 b0 b1 t0 t1 i0 i1 json=$BENCH_OUT/fio/$1.$2.$3.json
    fio_args "$job" || die "unknown job $job"
    if [ "$STRACE" = 1 ] && [ -n "$pid" ]; then
        strace -c -f -p "$pid" -o "$BENCH_OUT/strace-$sys-$job-$round.txt" &
        st=$!
        sleep 1
    fi
    local pdata=/tmp/perf-$sys-$job-$round.data wrap=()
    # cpu-clock: TCG has no hardware counters. The whole guest for fio's lifetime, so the
    # kernel's share of each system (copies into and out of the data area) shows too.
    [ "$PERF" = 1 ] && wrap=(perf record -q -a -e cpu-clock -F 499 -o "$pdata" --)
    cpu_ticks "$pid" c0
    sys_ticks b0 t0
    disk_ios "$dev" i0
    # shellcheck disable=SC2086 # FIO_ARGS is a list of options
    "${wrap[@]}" fio --name="$job" --filename="$dev" $FIO_ARGS --direct=1 --ioengine=libaio \
        --time_based --runtime="$RUNTIME" --ramp_time=1 --numjobs=1 --randrepeat=0 \
        --norandommap --output-format=json --output="$json" 2> "/tmp/fio-$sys-$job.err" \
        || { cat "/tmp/fio-$sys-$job.err" >&2; fail "fio $job on $sys"; return; }
    disk_ios "$dev" i1
    sys_ticks b1 t1
    cpu_ticks "$pid" c1
    if [ -n "$st" ]; then
        kill -INT "$st" 2> /dev/null
        wait "$st" 2> /dev/null
    fi
    if [ "$PERF" = 1 ]; then
        { perf report -i "$pdata" --stdio --sort comm --percent-limit 0.5
          perf report -i "$pdata" --stdio --sort comm,dso,sym --percent-limit 0.5
        } > "$BENCH_OUT/perf-$sys-$job-$round.txt" 2> /dev/null
        rm -f "$pdata"
    fi
    local proc=null
    [ "$c0" = null ] || [ "$c1" = null ] || proc=$((c1 - c0))
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$job" "$sys" "$round" $((i1 - i0)) "$proc" \
        $((b1 - b0)) $((t1 - t0)) >> "$RUNS"
    echo "$job $sys r$round: $((i1 - i0)) I/Os"
}

note "fio: ${RUNTIME}s (+1s ramp) per run, $ROUNDS rounds, libaio direct=1, $(nproc) vCPUs, ${SIZE_MB} MiB files on ext4/brd"
mkdir -p "$BENCH_OUT/fio"
printf 'job\tsystem\tround\tios\tproc_ticks\tsys_busy_ticks\tsys_total_ticks\tclk_tck=%s\n' \
    "$(getconf CLK_TCK)" > "$RUNS"
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
