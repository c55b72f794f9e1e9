#!/bin/bash
# t-soak.sh — the soak of issue 12: fio --verify=crc32c (verify_backlog: read back while
# writing) on two LUNs of one target for SOAK_S (600) seconds, while the datapath is
# kill -9'd every KILL_EVERY (30) seconds and the store of LUN 1 (a dm-linear device) is
# suspended once for STALL_S (40) seconds: longer than the initiator's 30 s command
# timeout and TCMU's qfull_time_out (docs/command-lifetime.md). Passes with 0 verify
# errors, every fio round ending in time (no hung session), no I/O error in the kernel
# log, the session still logged in, and a verify-only pass of both LUNs at the end.
# Not in the default run (632 s of VM time measured); run it with
#     tests/run --vm-only --only soak
# suite: manual
# vm: --mem 2G --disk 256M --timeout 1500
. "$(dirname "$0")/lib.sh"

private_bins
command -v dmsetup > /dev/null || die "dmsetup (package dmsetup) is not installed"
cd /tmp || die "cd /tmp"

SOAK_S=${SOAK_S:-600}
KILL_EVERY=${KILL_EVERY:-30}
STALL_AT=${STALL_AT:-100}
STALL_S=${STALL_S:-40}
ROUND_SIZE=${ROUND_SIZE:-16M}
# One fio round may not take longer than this (a hung session ends the test here).
ROUND_MAX_S=300

T=iqn.2024-01.org.ietd.vm:soak
P=127.0.0.1:3260
[ -b /dev/vda ] || die "no virtio disk (/dev/vda)"
dm_prepare
DM=ietdsoak
dmsetup create "$DM" --table "0 $(blockdev --getsz /dev/vda) linear /dev/vda 0" || die "dmsetup create"
at_exit dmsetup remove -f "$DM"
at_exit dmsetup resume "$DM"
truncate -s 128M /var/tmp/soak0.img
cat > /tmp/ietd.conf << EOF
Target $T
	Lun 0 Path=/var/tmp/soak0.img,Type=fileio,IOMode=wt
	Lun 1 Path=/dev/mapper/$DM,Type=fileio,IOMode=wt
EOF

iscsi_modules
ietd_start /tmp/ietd.conf --allow-dir /tmp/none || die "ietd did not start"
iscsi_start
check_eq "discovery" "$T" "$(iscsi_discover "$P" | xargs)"
check "login" iscsi_login "$T" "$P"
d0=$(iscsi_wait_disk "$T" 0) || die "no disk for LUN 0"
d1=$(iscsi_wait_disk "$T" 1) || die "no disk for LUN 1"
ok "LUN 0 (file) is $d0, LUN 1 (/dev/mapper/$DM) is $d1"
sess=$(iscsi_session "$T") || die "no iSCSI session in sysfs"
sid0=${sess##*session}
dmesg_mark=$(dmesg | wc -l)

# fio_job DEV ROUND: one round's job: random 4k writes at QD 8, verified as it goes. fio
# does not check the seed in a block's header, so a block left over from an earlier round
# (a lost write) would pass: odd rounds are shifted by 2 KiB, which makes every block of
# the previous round fail the header check at the current round's offsets.
fio_job() {
    echo --name=soak --filename="$1" --direct=1 --ioengine=libaio --rw=randwrite --bs=4k \
        --iodepth=8 --size="$ROUND_SIZE" --offset=$((($2 % 2) * 2048)) --randseed="$2" \
        --verify=crc32c --verify_fatal=1 \
        --verify_backlog=1024 --verify_state_save=0 --randrepeat=1
}

# rounds LUN DEV: fio rounds until SOAK_S has passed; one line per round in
# /tmp/rounds.LUN: "round rc seconds write_bytes read_bytes write_iops".
t_start=$(now_ms)
rounds() {
    local lun=$1 dev=$2 r=0 rc t0
    while [ $(($(now_ms) - t_start)) -lt $((SOAK_S * 1000)) ]; do
        r=$((r + 1))
        t0=$(now_ms)
        rc=0
        # shellcheck disable=SC2046
        timeout "$ROUND_MAX_S" fio $(fio_job "$dev" $((lun * 1000 + r))) \
            --output-format=json --output="/tmp/fio.$lun.$r.json" > "/tmp/fio.$lun.$r.out" 2>&1 || rc=$?
        echo "$r $rc $((($(now_ms) - t0) / 1000)) $(jq -r '[.jobs[0].write.io_bytes, .jobs[0].read.io_bytes, (.jobs[0].write.iops | floor)] | @tsv' "/tmp/fio.$lun.$r.json" 2> /dev/null || echo "0 0 0")" >> "/tmp/rounds.$lun"
        [ "$rc" = 0 ] || { cat "/tmp/fio.$lun.$r.out" > "/tmp/fio.$lun.failed"; break; }
    done
}
rounds 0 "$d0" &
r0=$!
rounds 1 "$d1" &
r1=$!

dp_pid() { pgrep -x ietd-datapath | head -1; }
kills=0
restarted=0
restart_ms=()
stalled=0
stall_ms=0
next_kill=$KILL_EVERY
stall_pid=
while [ $(($(now_ms) - t_start)) -lt $((SOAK_S * 1000)) ]; do
    el=$((($(now_ms) - t_start) / 1000))
    if [ "$stalled" = 0 ] && [ "$el" -ge "$STALL_AT" ]; then
        stalled=1
        ( t0=$(now_ms)
          dmsetup suspend "$DM" && sleep "$STALL_S" && dmsetup resume "$DM"
          echo "$? $(($(now_ms) - t0))" > /tmp/stall.rc ) &
        stall_pid=$!
        note "t=${el}s: LUN 1's store suspended for ${STALL_S} s"
    fi
    if [ "$el" -ge "$next_kill" ]; then
        next_kill=$((next_kill + KILL_EVERY))
        old=$(dp_pid)
        if [ -z "$old" ]; then
            fail "t=${el}s: no datapath to kill"
            continue
        fi
        t_kill=$(now_ms)
        kill -KILL "$old"
        kills=$((kills + 1))
        # A datapath with a thread in the suspended store exits only once it resumes.
        if wait_until 90 sh -c "p=\$(pgrep -x ietd-datapath | head -1); [ -n \"\$p\" ] && [ \"\$p\" != $old ]"; then
            restarted=$((restarted + 1))
            restart_ms+=($(($(now_ms) - t_kill)))
        else
            fail "t=${el}s: no new datapath 90 s after kill $kills"
        fi
    fi
    sleep 1
done
note "kills: $kills, new datapath after each (ms): ${restart_ms[*]:-none}"
check_eq "every kill was followed by a new datapath" "$kills" "$restarted"
[ "$kills" -ge $((SOAK_S / KILL_EVERY - 1)) ] && ok "$kills kills in $SOAK_S s" || fail "only $kills kills"

# Both writers end their round within ROUND_MAX_S of the end.
wait "$r0"
wait "$r1"
[ -n "$stall_pid" ] && wait "$stall_pid"
if [ -s /tmp/stall.rc ]; then
    read -r stall_rc stall_ms < /tmp/stall.rc
    check_eq "the stall of LUN 1's store ended (suspend, sleep, resume)" 0 "$stall_rc"
    note "stall: $stall_ms ms"
else
    fail "the stall did not happen"
fi
for lun in 0 1; do
    [ -s "/tmp/rounds.$lun" ] || { fail "LUN $lun: no fio round"; continue; }
    n=$(wc -l < "/tmp/rounds.$lun")
    bad=$(awk '$2 != 0' "/tmp/rounds.$lun" | wc -l)
    check_eq "LUN $lun: every fio round ($n) ended with status 0" 0 "$bad"
    read -r wb rb maxs < <(awk '{w += $4; r += $5; if ($3 > m) m = $3} END {print w, r, m}' "/tmp/rounds.$lun")
    note "LUN $lun: $n rounds, $((wb >> 20)) MiB written, $((rb >> 20)) MiB read back and verified, longest round ${maxs} s, write IOPS per round: $(awk '{printf "%s ", $6}' "/tmp/rounds.$lun")"
    [ -s "/tmp/fio.$lun.failed" ] && note "LUN $lun failed round: $(tail -n 5 "/tmp/fio.$lun.failed" | tr '\n' ' ')"
done
verr=$(cat /tmp/fio.*.out 2> /dev/null | grep -ciE "verify.*(fail|bad)|crc32c.*wanted|bad magic|bad header")
check_eq "verify errors" 0 "$verr"

# After the last restart: a verify-only pass of each LUN's last round.
for lun in 0 1; do
    r=$(wc -l < "/tmp/rounds.$lun")
    dev=$d0
    [ "$lun" = 1 ] && dev=$d1
    # shellcheck disable=SC2046
    check "LUN $lun: verify-only pass of its last round" \
        timeout "$ROUND_MAX_S" fio $(fio_job "$dev" $((lun * 1000 + r))) --verify_only --output=/tmp/fio.$lun.final.out
done

k=$(dmesg | tail -n +"$((dmesg_mark + 1))")
check_fails "no I/O error for ${d0#/dev/} or ${d1#/dev/} in the kernel log" \
    grep -qE "(I/O error|critical (target|medium) error|Buffer I/O error).*(${d0#/dev/}|${d1#/dev/})" <<< "$k"
note "kernel: $(grep -cE 'abort|Abort|ABORT' <<< "$k") abort lines, $(grep -cE 'conn error|recovery' <<< "$k") connection error/recovery lines"
grep -E "abort|Abort|conn error|recovery|reset" <<< "$k" | tail -n 6 | sed 's/^/#     /'
check_eq "the session (sid $sid0) is still logged in" "$sid0 LOGGED_IN" \
    "$(for s in /sys/class/iscsi_session/session*; do
        [ "$(cat "$s/targetname" 2> /dev/null)" = "$T" ] && echo "${s##*session} $(cat "$s/state")"
    done | xargs)"
check "ietd still answers" run_ietadm --op show --tid=1
note "ietd: $(grep -c 'device re-attached' /tmp/ietd.log) re-attaches, $(grep -c 'LUN not served' /tmp/ietd.log) 'not served' reports"

iscsi_logout "$T" "$P" > /dev/null 2>&1 || note "logout failed"
rc=0
ietd_stop || rc=$?
check_eq "ietd exits 0 on SIGTERM" 0 "$rc"
