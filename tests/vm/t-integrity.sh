#!/bin/bash
# t-integrity.sh — what was acknowledged is never silently lost. A wb fileio LUN on a
# device-mapper device: data written through iSCSI, the device starts failing, SYNCHRONIZE
# CACHE fails; the device recovers, SYNCHRONIZE CACHE and writes still fail (the store
# error is latched: the kernel reports lost write-back data only once), the datapath logs
# it and shows it in its stats, ietd in ietadm and the volume view (state:2, problem:); a
# killed datapath's successor keeps refusing (the latch is recorded under /run/ietd);
# removing the LUN and adding it again (ietadm delete + new) clears it.
# A VERIFY longer than MAXIMUM TRANSFER LENGTH is refused at once. The datapath stopped
# for longer than the initiator's command timeout under a writer: no error, data intact
# (no kernel cmd_time_out: the initiator's abort waits for the datapath). The control
# socket refuses a peer that is neither root nor ietd's user.
# Measured 44 s in a TCG guest (12 s of it the deliberate stall) before the datapath-kill
# check, 122 s with it on a loaded host (the VM's boot included); the timeout leaves 2x.
# vm: --mem 2G --disk 64M --timeout 240
. "$(dirname "$0")/lib.sh"

private_bins
command -v dmsetup > /dev/null || die "dmsetup (package dmsetup) is not installed"
command -v sg_sync > /dev/null || die "sg_sync (package sg3-utils) is not installed"

T=iqn.2024-01.org.ietd.vm:integrity
P=127.0.0.1:3260
[ -b /dev/vda ] || die "no virtio disk (/dev/vda)"
dm_prepare
SECTORS=$(blockdev --getsz /dev/vda)
DM=ietdflaky
# dm_table linear|error: swap the device's table (suspend, load, resume).
dm_table() {
    local t
    case $1 in
        linear) t="0 $SECTORS linear /dev/vda 0" ;;
        error) t="0 $SECTORS error" ;;
    esac
    # --nolockfs: a plain suspend syncs the device's page cache first (freeze_bdev),
    # which would make the write-back data durable before the failure.
    dmsetup suspend --nolockfs "$DM" && dmsetup load "$DM" --table "$t" && dmsetup resume "$DM"
}
dmsetup create "$DM" --table "0 $SECTORS linear /dev/vda 0" || die "dmsetup create"
at_exit dmsetup remove -f "$DM"

cat > /tmp/ietd.conf << EOF
Target $T
	Lun 0 Path=/dev/mapper/$DM,Type=fileio,IOMode=wb
EOF

# dp_stats: the datapath's stats reply (JSON) from its control socket.
dp_stats() {
    local sock
    sock=$(pgrep -a -x ietd-datapath | sed -n 's/.*--control \([^ ]*\).*/\1/p' | head -1)
    python3 - "$sock" << 'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(b'{"op":"stats"}\n')
print(s.makefile().readline().strip())
PY
}

iscsi_modules
ietd_start /tmp/ietd.conf --allow-dir /tmp/none || die "ietd did not start"
iscsi_start
iscsi_connect "$P" "$T"
iscsi_disks "$T" d0=0
ok "LUN 0 (fileio wb on /dev/mapper/$DM) is $d0"

# MAXIMUM TRANSFER LENGTH: VERIFY(16) of one block more is refused at once.
mtl=$(sg_inq -p 0xb0 "$d0" | sed -n 's/.*Maximum transfer length: \([0-9]*\).*/\1/p')
[ -n "$mtl" ] && [ "$mtl" -gt 0 ] && ok "MAXIMUM TRANSFER LENGTH $mtl blocks" || fail "no MTL in VPD B0"
# --bpc: one command for the whole count (sg_verify splits into 128-block commands).
check "VERIFY(16) of MTL blocks" sg_verify --16 --lba=0 --count="$mtl" --bpc="$mtl" "$d0"
t0=$(now_ms)
out=$(sg_verify --16 --lba=0 --count=$((mtl + 1)) --bpc=$((mtl + 1)) "$d0" 2>&1)
rc=$?
t1=$(now_ms)
check_fails "VERIFY(16) of MTL+1 blocks is refused" test "$rc" = 0
check_grep "... as INVALID FIELD IN CDB" "bad field in VERIFY\(16\) cdb" "$out"
[ $((t1 - t0)) -lt 2000 ] && ok "refused in $((t1 - t0)) ms" || fail "refusal took $((t1 - t0)) ms"

# Acknowledged write-back data, then the device fails under it.
head -c 1M /dev/urandom > /tmp/p1
check "1 MiB written (GOOD)" dd if=/tmp/p1 of="$d0" bs=64k oflag=direct status=none
check "device fails" dm_table error
out=$(sg_sync "$d0" 2>&1)
rc=$?
check_fails "SYNCHRONIZE CACHE fails while the device fails" test "$rc" = 0
check_grep "... with HARDWARE ERROR (not retried into success)" "Hardware Error" "$out"
check "device recovers" dm_table linear
out=$(sg_sync "$d0" 2>&1)
rc=$?
check_fails "SYNCHRONIZE CACHE still fails after the device recovered (latched)" test "$rc" = 0
check_grep "... with HARDWARE ERROR" "Hardware Error" "$out"
check_fails "a write fails too" dd if=/tmp/p1 of="$d0" bs=64k count=1 seek=100 oflag=direct status=none
check "reads still work" dd if="$d0" of=/dev/null bs=64k count=4 iflag=direct status=none
check_grep "the datapath logged the latched error" "backing store failed a flush" "$(cat /tmp/ietd.log)"
check_grep "the datapath's stats show it" '"store_error":"flush failed' "$(dp_stats)"
# ietd's health check: the LUN is failed in the views and ietadm, logged once.
lun_failed() { run_ietadm --op show --tid=1 --lun=0 | grep -q "lun:0 state:2 "; }
if wait_until 10 lun_failed; then ok "ietadm shows the LUN failed (state:2)"; else fail "ietadm: $(run_ietadm --op show --tid=1 --lun=0)"; fi
check_grep "ietadm names the store error" "problem:backing store failed a flush or durable write" \
    "$(run_ietadm --op show --tid=1 --lun=0)"
check_grep "the volume view shows it" "lun:0 state:2 " "$(cat /run/ietd/volume)"
check_eq "ietd logged it once" 1 "$(grep -c 'LUN failed: its backing store failed' /tmp/ietd.log)"
check "the datapath recorded the latch" ls /run/ietd/store-error.*
# A killed datapath (ietd starts another, which opens the store afresh and would not see
# the old write-back error): the LUN keeps refusing writes and flushes.
dp=$(pgrep -x ietd-datapath)
kill -KILL "$dp"
new_dp() { p=$(pgrep -x ietd-datapath) && [ "$p" != "$dp" ] && dp_stats | grep -q '"uio"'; }
check "ietd restarted the datapath" wait_until 20 new_dp
check_grep "the new datapath's stats show the latched error" '"store_error":"flush failed' "$(dp_stats)"
out=$(sg_sync "$d0" 2>&1)
rc=$?
check_fails "SYNCHRONIZE CACHE fails after the datapath restart" test "$rc" = 0
check_grep "... with HARDWARE ERROR" "Hardware Error" "$out"
check_fails "a write fails after the datapath restart" dd if=/tmp/p1 of="$d0" bs=64k count=1 seek=100 oflag=direct status=none
sleep 3
check_grep "ietadm still shows it failed" "lun:0 state:2 " "$(run_ietadm --op show --tid=1 --lun=0)"
check_eq "ietd logged it only once" 1 "$(grep -c 'LUN failed: its backing store failed' /tmp/ietd.log)"
if cmp -s /tmp/p1 <(dd if=/dev/vda bs=64k count=16 iflag=direct status=none); then
    note "the data reached the device after all"
else
    ok "the data is not on the device, and no flush said it was"
fi

# The administrator's action: detach and re-attach the LUN.
check "ietadm --op delete --lun=0" run_ietadm --op delete --tid=1 --lun=0
check "ietadm --op new --lun=0" run_ietadm --op new --tid=1 --lun=0 \
    --params "Path=/dev/mapper/$DM,Type=fileio,IOMode=wb"
check "rescan" iscsi_rescan "$T" "$P"
d0=$(iscsi_wait_disk "$T" 0) || die "LUN 0 did not come back"
check "SYNCHRONIZE CACHE works after the re-attach" sg_sync "$d0"
check "writes work after the re-attach" dd if=/tmp/p1 of="$d0" bs=64k oflag=direct status=none
check "and reach the device on a flush" bash -c "sg_sync $d0 && cmp /tmp/p1 <(dd if=/dev/vda bs=64k count=16 iflag=direct status=none)"
check_fails "the stats show no error" grep -q store_error <<< "$(dp_stats)"
check_fails "the record is gone" ls /run/ietd/store-error.*
check_grep "ietadm shows the LUN running" "lun:0 state:0 " "$(run_ietadm --op show --tid=1 --lun=0)"

# A stalled datapath (SIGSTOP) for longer than the initiator's command timeout (set to
# 4 s here) while a writer writes: the kernel fails nothing behind our back, the
# initiator's abort waits, and after SIGCONT the write completes with the right data.
echo 4 > /sys/block/"${d0#/dev/}"/device/timeout
head -c 4M /dev/urandom > /tmp/p2
dp=$(pgrep -x ietd-datapath)
dd if=/tmp/p2 of="$d0" bs=256k seek=64 oflag=direct status=none &
bgdd=$!
sleep 0.3
kill -STOP "$dp"
sleep 12
kill -CONT "$dp"
rc=0
wait "$bgdd" || rc=$?
check_eq "the write outlived a 12 s stall without an error" 0 "$rc"
check "the data is the writer's" cmp /tmp/p2 <(dd if="$d0" bs=256k skip=64 count=16 iflag=direct status=none)
check_eq "the same datapath serves on" "$dp" "$(pgrep -x ietd-datapath)"

# The control socket: a process of another user is refused even when the file lets it in.
sock=$(pgrep -a -x ietd-datapath | sed -n 's/.*--control \([^ ]*\).*/\1/p' | head -1)
chmod 666 "$sock"
out=$(setpriv --reuid=65534 --regid=65534 --clear-groups /usr/bin/python3 - "$sock" 2>&1 << 'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
try:
    s.sendall(b'{"op":"ping"}\n')
    line = s.makefile().readline().strip()
except ConnectionError:  # closed with our ping unread: a reset
    line = ""
print("reply:", line or "none")
PY
)
check_grep "nobody's ping gets no answer" "reply: none" "$out"
check_grep "the datapath logged the refusal" "control connection refused" "$(cat /tmp/ietd.log)"

check "logout" iscsi_logout "$T" "$P"
rc=0
ietd_stop || rc=$?
check_eq "ietd exits 0 on SIGTERM" 0 "$rc"
