#!/bin/bash
# t-ops-stress.sh — datapath crash under load (issue 6 item 2): one fileio wt LUN served
# by ietd over open-iscsi, `fio --verify=crc32c` random writes with interleaved and final
# verification, while the datapath is kill -9'd every few seconds (paced to stay within
# ietd's restart limit of 5 per minute).  Each kill is followed by a new datapath pid;
# fio ends with status 0, no verify error, every block read back; the kernel logs no I/O
# error for the disk; the iSCSI session is the same one, never recovered or re-logged in;
# a second verify-only pass over the whole region after the last restart passes too.
# Then, for the report only (notes, not checks): quick kills until ietd's restart limit is
# exceeded; the test measures how long the LUN stays without a datapath and what a read
# issued meanwhile gets.
# vm: --mem 2G --timeout 420
. "$(dirname "$0")/lib.sh"

private_bins
# OPS_LOG_DIR (a run-in-vm --share): where ietd's and fio's logs are copied at the end.
# fio runs in /tmp so its verify state files never land in the (shared) source tree.
cd /tmp || die "cd /tmp"
[ -z "${OPS_LOG_DIR:-}" ] || at_exit sh -c 'cp /tmp/ietd.log /tmp/fio*.out /tmp/fio*.json "$0"/' "$OPS_LOG_DIR"

T=iqn.2024-01.org.ietd.vm:stress
P=127.0.0.1:3260
# Kills during fio: ietd allows 5 restarts per 60 s window (supervise.rs), so 5 kills, one
# every KILL_EVERY seconds, bounded by STRESS_S.
KILLS=5
KILL_EVERY=${KILL_EVERY:-4}
STRESS_S=${STRESS_S:-40}
FIO_SIZE=${FIO_SIZE:-32M}

truncate -s 128M /var/tmp/s0.img
cat > /tmp/ietd.conf << EOF
Target $T
	Lun 0 Path=/var/tmp/s0.img,Type=fileio,IOMode=wt
EOF

iscsi_modules
ietd_start /tmp/ietd.conf --allow-dir /tmp/none || die "ietd did not start"
iscsi_start
iscsi_connect "$P" "$T"
iscsi_disks "$T" dev=0
ok "LUN 0 is $dev"

# session identity: the sysfs session (sid) and its state; a dropped and re-established
# session would get a new sid, a recovered connection shows up in dmesg
sess_dir=$(iscsi_session "$T") || die "no iSCSI session for $T in sysfs"
sid0=${sess_dir##*session}
check_eq "session state" LOGGED_IN "$(cat "$sess_dir/state")"
dmesg_mark=$(dmesg | wc -l)
new_dmesg() { dmesg | tail -n +"$((dmesg_mark + 1))"; }

dp_pid() { pgrep -x ietd-datapath | head -1; }
# wait_new_dp OLD TIMEOUT_S: wait for a datapath whose pid differs from OLD; echo it.
wait_new_dp() {
    local old=$1 deadline=$(($(now_ms) + $2 * 1000)) p
    while :; do
        p=$(dp_pid)
        if [ -n "$p" ] && [ "$p" != "$old" ]; then
            echo "$p"
            return 0
        fi
        [ "$(now_ms)" -lt "$deadline" ] || return 1
        sleep 0.1
    done
}
pid=$(dp_pid)
[ -n "$pid" ] || die "no datapath process"
ok "datapath running (pid $pid)"

# fio: random 4k writes, QD 8, each block carries a crc32c and a header (offset, job
# seed); verify_backlog makes fio read back and check written blocks while it still
# writes (so reads run through the kills too), and the final verify phase reads back all.
FIO_JOB=(--name=stress --filename="$dev" --direct=1 --ioengine=libaio --rw=randwrite
    --bs=4k --iodepth=8 --size="$FIO_SIZE" --verify=crc32c --verify_fatal=1
    --verify_backlog=2048 --verify_state_save=0 --randrepeat=1 --randseed=4242 --group_reporting)
t_fio=$(now_ms)
fio "${FIO_JOB[@]}" --output-format=json --output=/tmp/fio1.json > /tmp/fio1.out 2>&1 &
fio_pid=$!
show_log_on_failure /tmp/fio1.out

# kill loop: bounded in kills and time; each kill must lead to a new datapath
sleep 2
t_stress=$(now_ms)
kills=0
restarts=0
restart_ms=()
while [ "$kills" -lt "$KILLS" ] && kill -0 "$fio_pid" 2> /dev/null &&
    [ $(($(now_ms) - t_stress)) -lt $((STRESS_S * 1000)) ]; do
    old=$(dp_pid)
    [ -n "$old" ] || { fail "no datapath before kill $((kills + 1))"; break; }
    t_kill=$(now_ms)
    kill -KILL "$old"
    kills=$((kills + 1))
    if new=$(wait_new_dp "$old" 20); then
        restarts=$((restarts + 1))
        restart_ms+=($(($(now_ms) - t_kill)))
        pid=$new
    else
        fail "kill $kills: no new datapath within 20 s (old pid $old)"
        break
    fi
    # sleep the rest of the period, in steps, so a finished fio ends the loop early
    while kill -0 "$fio_pid" 2> /dev/null && [ $(($(now_ms) - t_kill)) -lt $((KILL_EVERY * 1000)) ]; do
        sleep 0.2
    done
done
note "kills during fio: $kills, restarts seen: $restarts, kill-to-new-pid ms: ${restart_ms[*]:-none}"
fio_running_after_kills=0
kill -0 "$fio_pid" 2> /dev/null && fio_running_after_kills=1
rc=0
wait "$fio_pid" || rc=$?
t_fio_end=$(now_ms)
note "fio ran $(((t_fio_end - t_fio) / 1000)) s (still running after the kill loop: $fio_running_after_kills)"
check_eq "every kill was followed by a restarted datapath" "$kills" "$restarts"
[ "$kills" -ge 3 ] && ok "at least 3 kills landed while fio ran ($kills)" ||
    fail "only $kills kills while fio ran: fio finished too fast (raise FIO_SIZE)"
check_eq "fio exit status" 0 "$rc"
if jq -e . /tmp/fio1.json > /dev/null 2>&1; then
    check_eq "fio job error" 0 "$(jq '.jobs[0].error' /tmp/fio1.json)"
    wbytes=$(jq '.jobs[0].write.io_bytes' /tmp/fio1.json)
    rbytes=$(jq '.jobs[0].read.io_bytes' /tmp/fio1.json)
    size_b=$(numfmt --from=iec "$FIO_SIZE")
    check_eq "fio wrote the whole region" "$size_b" "$wbytes"
    [ "$rbytes" -ge "$size_b" ] && ok "fio verified by reading back $rbytes bytes" ||
        fail "fio read back only $rbytes of $size_b bytes (verify incomplete)"
    note "fio: write $(jq '.jobs[0].write.iops | floor' /tmp/fio1.json) IOPS, max write latency $(jq '.jobs[0].write.clat_ns.max / 1e6 | floor' /tmp/fio1.json) ms"
else
    fail "fio wrote no JSON result"
    cat /tmp/fio1.out
fi
check_fails "no verify error reported by fio" grep -qiE "verify.*(fail|bad)|crc32c.*wanted" /tmp/fio1.out /tmp/fio1.json

# second pass after the last restart: verify-only over the same region (same seed)
check "verify-only pass over the whole region" fio "${FIO_JOB[@]}" --verify_only --output=/tmp/fio2.out

# the initiator saw nothing go wrong
k=$(new_dmesg)
check_fails "no I/O error for ${dev#/dev/} in the kernel log" \
    grep -qE "(I/O error|blk_update_request|critical (target|medium) error|Buffer I/O error).*${dev#/dev/}|${dev#/dev/}.*(FAILED Result|Sense Key)" <<< "$k"
check_fails "no iSCSI connection error or session recovery" \
    grep -qE "detected conn error|session recovery timed out|iscsi: (session|conn) .*(error|failed)|rejecting I/O" <<< "$k"
check_eq "same iSCSI session (sid $sid0), still logged in" "$sid0 LOGGED_IN" \
    "$(for s in /sys/class/iscsi_session/session*; do
        [ "$(cat "$s/targetname" 2> /dev/null)" = "$T" ] && echo "${s##*session} $(cat "$s/state")"
    done | xargs)"
check_eq "ietd re-attached the ring after each restart" "$restarts" \
    "$(grep -c 'device re-attached' /tmp/ietd.log)"
check "ietd still answers" run_ietadm --op show --tid=1

# ---- beyond the restart limit (5 restarts in 60 s): kill the datapath again as soon as
# each new one appears.  ietd must keep restarting it at its crash-loop pace (every 5 s),
# never leaving the LUN without a datapath for as long as TCMU's 30 s cmd_time_out.
# Bounded: at most 6 kills, 8 s wait each.  Should it ever stop, the notes below say how
# long the LUN had no datapath and what a read issued in that gap got.
limit_kills=0
limit_hit=0
while [ "$limit_kills" -lt 6 ]; do
    old=$(dp_pid)
    [ -n "$old" ] || break
    t_kill=$(now_ms)
    kill -KILL "$old"
    limit_kills=$((limit_kills + 1))
    if ! new=$(wait_new_dp "$old" 8); then
        limit_hit=1
        break
    fi
done
check_eq "past the restart limit the datapath still comes back within 8 s ($limit_kills kills)" 0 "$limit_hit"
check_grep "ietd reported the crash loop once" "keeps dying" "$(grep -m1 'keeps dying' /tmp/ietd.log)"
if [ "$limit_hit" = 1 ]; then
    note "restart limit: reached after $limit_kills quick kills"
    ( t0=$(now_ms)
      dd if="$dev" of=/dev/null bs=4k count=1 skip=77 iflag=direct status=none 2> /tmp/limit-dd.err
      echo "$? $(($(now_ms) - t0))" > /tmp/limit-dd.rc ) &
    dd_pid=$!
    if new=$(wait_new_dp "$old" 75); then
        note "restart limit: the LUN had no datapath for $(($(now_ms) - t_kill)) ms, then ietd restarted it (pid $new)"
    else
        note "restart limit: no datapath within 75 s of the last kill"
    fi
    wait_until 60 test -s /tmp/limit-dd.rc
    if [ -s /tmp/limit-dd.rc ]; then
        read -r dd_rc dd_ms < /tmp/limit-dd.rc
        note "restart limit: a 4k read issued in the gap ended with status $dd_rc after $dd_ms ms $(head -c 160 /tmp/limit-dd.err | tr '\n' ' ')"
    else
        note "restart limit: the read issued in the gap has not ended"
    fi
    kill "$dd_pid" 2> /dev/null
    note "restart limit: kernel messages about the disk, session or TCMU since the stress phase:"
    new_dmesg | grep -E "${dev#/dev/}|connection|session|tcmu|TCMU|iscsi|ABORT|TMR" | tail -n 12 | sed 's/^/#     /'
    note "restart limit: session now: $(cat "$sess_dir/state" 2> /dev/null || echo gone) (sid $sid0)"
    if [ -n "$(dp_pid)" ]; then
        dd if="$dev" of=/dev/null bs=4k count=16 iflag=direct status=none 2> /dev/null &&
            note "restart limit: the LUN serves reads again" ||
            note "restart limit: reads still fail after the datapath came back"
    fi
else
    note "restart limit: not reached after $limit_kills quick kills"
fi

# clean stop (log out first: a TCMU disk without a handler makes any later I/O wait)
iscsi_logout "$T" "$P" > /dev/null 2>&1 || note "logout failed"
rc=0
ietd_stop || rc=$?
check_eq "ietd exits 0 on SIGTERM" 0 "$rc"
check_eq "configfs has none of our objects" "" "$(lio_objects)"
check_fails "the datapath is gone" pgrep -x ietd-datapath
