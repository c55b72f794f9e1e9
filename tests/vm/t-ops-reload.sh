#!/bin/bash
# t-ops-reload.sh — SIGHUP reload under load (issue 6 item 1): targets A, B (LUNs 0 and 2)
# and D, A and B logged in, fio crc32c verify running on A's LUN; ietd.conf is edited (add
# target C, add LUN 1 to B, remove B's LUN 2, change B's MaxRecvDataSegmentLength, remove
# target D) and ietd gets SIGHUP.  Then: fio on A passes its verify, A's session is the
# same one and A's backstore the same configfs object; B's LUN 1 appears after a rescan
# and works, LUN 2 and D are gone, B's parameter is the new value, C is discoverable and
# takes a login.  Target F, made through ietadm with a LUN and a logged-in session, is
# in no file: it survives the reload with the same session and backstore (issue 13 item
# 3).  Last, a configuration with errors + SIGHUP: refused whole (the target it adds is
# not created, nothing else changes) and ietd's log names file:line.
# vm: --mem 2G --timeout 420
. "$(dirname "$0")/lib.sh"

private_bins
# OPS_LOG_DIR (a run-in-vm --share): where ietd's and fio's logs are copied at the end.
# fio runs in /tmp so its verify state files never land in the (shared) source tree.
cd /tmp || die "cd /tmp"
[ -z "${OPS_LOG_DIR:-}" ] || at_exit sh -c 'cp /tmp/ietd.log /tmp/fio*.out /tmp/fio*.json "$0"/' "$OPS_LOG_DIR"

A=iqn.2024-01.org.ietd.vm:reload-a
B=iqn.2024-01.org.ietd.vm:reload-b
C=iqn.2024-01.org.ietd.vm:reload-c
D=iqn.2024-01.org.ietd.vm:reload-d
E=iqn.2024-01.org.ietd.vm:reload-e
F=iqn.2024-01.org.ietd.vm:reload-f
P=127.0.0.1:3260
FIO_SIZE=${FIO_SIZE:-24M}

truncate -s 64M /var/tmp/a0.img
truncate -s 16M /var/tmp/b0.img
truncate -s 12M /var/tmp/b1.img
truncate -s 8M /var/tmp/b2.img
truncate -s 8M /var/tmp/c0.img
truncate -s 8M /var/tmp/d0.img
truncate -s 8M /var/tmp/f0.img

cat > /tmp/ietd.conf << EOF
Target $A
	Lun 0 Path=/var/tmp/a0.img,Type=fileio,IOMode=wt
Target $B
	Lun 0 Path=/var/tmp/b0.img,Type=fileio,IOMode=wb
	Lun 2 Path=/var/tmp/b2.img,Type=fileio,IOMode=wb
Target $D
	Lun 0 Path=/var/tmp/d0.img,Type=fileio
EOF

iscsi_modules
ietd_start /tmp/ietd.conf --allow-dir /tmp/none || die "ietd did not start"
iscsi_start
check_eq "discovery" "$A $B $D" "$(iscsi_discover "$P" | xargs)"
check "login to A" iscsi_login "$A" "$P"
check "login to B" iscsi_login "$B" "$P"
iscsi_disks "$A" da=0
iscsi_disks "$B" db0=0 db2=2
ok "A/0 is $da, B/0 is $db0, B/2 is $db2"

# session_of IQN: "SID STATE" of the session to IQN (a new login would get a new SID)
session_of() {
    local s
    for s in /sys/class/iscsi_session/session*; do
        [ "$(cat "$s/targetname" 2> /dev/null)" = "$1" ] && echo "${s##*session} $(cat "$s/state")"
    done | xargs
}
# backstore_id IQN LUN: configfs inode of the backstore a LUN links to; a LUN deleted and
# created again gets a new directory, hence a new inode
backstore_id() {
    local l
    for l in "$CFS/iscsi/$1/tpgt_1/lun/lun_$2"/*; do
        [ -L "$l" ] && stat -L -c '%i' "$l" && return 0
    done
    return 1
}
sa=$(session_of "$A")
sb=$(session_of "$B")
check_grep "A's session is logged in" " LOGGED_IN$" "$sa"
ida=$(backstore_id "$A" 0) || die "no backstore behind A LUN 0"
idb0=$(backstore_id "$B" 0) || die "no backstore behind B LUN 0"
# F: made through ietadm only (as a cluster resource agent does), with a live session
t_f=$(now_ms)
check "ietadm makes target F" run_ietadm --op new --tid=0 --params "Name=$F"
tid_f=$(run_ietadm --op show | awk -v n="name:$F" '$2 == n { sub("tid:", "", $1); print $1 }')
check "ietadm gives F a LUN" run_ietadm --op new --tid="$tid_f" --lun=0 --params Path=/var/tmp/f0.img,Type=fileio
check "node record for F" iscsiadm -m node -o new -T "$F" -p "$P"
check "login to F" iscsi_login "$F" "$P"
iscsi_disks "$F" df=0
sf=$(session_of "$F")
idf=$(backstore_id "$F" 0) || die "no backstore behind F LUN 0"
note "F made and logged in in $(($(now_ms) - t_f)) ms"
check_eq "B's MaxRecvDataSegmentLength before" 8192 "$(cat "$CFS/iscsi/$B/tpgt_1/param/MaxRecvDataSegmentLength")"
dmesg_mark=$(dmesg | wc -l)
new_dmesg() { dmesg | tail -n +"$((dmesg_mark + 1))"; }
reloads() { grep -cE 'configuration reloaded|reload refused|reload: configuration not read' /tmp/ietd.log; }

# fio on A: random 4k writes with crc32c + header per block, verified while writing
# (verify_backlog) and all read back at the end
FIO_JOB=(--name=reload-a --filename="$da" --direct=1 --ioengine=libaio --rw=randwrite
    --bs=4k --iodepth=8 --size="$FIO_SIZE" --verify=crc32c --verify_fatal=1
    --verify_backlog=1024 --verify_state_save=0 --randrepeat=1 --randseed=777 --group_reporting)
fio "${FIO_JOB[@]}" --output-format=json --output=/tmp/fio1.json > /tmp/fio1.out 2>&1 &
fio_pid=$!
show_log_on_failure /tmp/fio1.out
sleep 3
kill -0 "$fio_pid" 2> /dev/null && ok "fio running on A" || fail "fio on A ended before the reload"

# ---- the reload: add C, add B/1, remove B/2, change a B parameter, remove D
cat > /tmp/ietd.conf << EOF
Target $A
	Lun 0 Path=/var/tmp/a0.img,Type=fileio,IOMode=wt
Target $B
	MaxRecvDataSegmentLength 65536
	Lun 0 Path=/var/tmp/b0.img,Type=fileio,IOMode=wb
	Lun 1 Path=/var/tmp/b1.img,Type=fileio,IOMode=wb
Target $C
	Lun 0 Path=/var/tmp/c0.img,Type=fileio
EOF
n0=$(reloads)
t0=$(now_ms)
kill -HUP "$IETD_PID"
check "ietd finished the reload" wait_until 60 sh -c "[ \$(grep -cE 'configuration reloaded|reload refused|reload: configuration not read' /tmp/ietd.log) -gt $n0 ]"
note "reload took $(($(now_ms) - t0)) ms (from SIGHUP to the log line)"
kill -0 "$IETD_PID" 2> /dev/null && ok "ietd survived SIGHUP" || die "ietd died on SIGHUP"
log=$(cat /tmp/ietd.log)
check_grep "reload applied everything" "configuration reloaded.*failed=0|configuration reloaded.*\"failed\":0" "$log"
note "the reload's log lines:"
grep -E 'reload' /tmp/ietd.log | sed 's/^/#   /' | tail -n 16
# issue 6 item 7 asks for every state change to be logged once; reported, not checked
note "'target 4 ... added' was logged $(grep -c 'reload: target 4 (.*) added' /tmp/ietd.log) time(s)"
kill -0 "$fio_pid" 2> /dev/null && ok "fio on A still running after the reload" ||
    note "fio on A ended before the reload had finished (the reload was not under load)"

# C: discoverable (without touching the node records of the live sessions), loginable
disc=$(iscsiadm -m discovery -t st -p "$P" -o nonpersistent 2>&1 | awk '{print $2}' | sort -u | xargs)
check_eq "discovery after the reload" "$A $B $C $F" "$disc"
# F is in no file: left alone, session and LUN untouched
check_eq "ietadm-made F kept its tid" "$tid_f" "$(run_ietadm --op show | awk -v n="name:$F" '$2 == n { sub("tid:", "", $1); print $1 }')"
check_eq "F's session never dropped (same sid, logged in)" "$sf" "$(session_of "$F")"
check_eq "F's LUN 0 is the same backstore object" "$idf" "$(backstore_id "$F" 0)"
check "F still serves I/O" dd if="$df" of=/dev/null bs=64k count=16 iflag=direct status=none
check_fails "D is gone from configfs" test -e "$CFS/iscsi/$D"
check "C exists in configfs" test -d "$CFS/iscsi/$C/tpgt_1/lun/lun_0"
check_eq "B's MaxRecvDataSegmentLength after" 65536 "$(cat "$CFS/iscsi/$B/tpgt_1/param/MaxRecvDataSegmentLength")"
check_fails "B's LUN 2 is gone from configfs" test -e "$CFS/iscsi/$B/tpgt_1/lun/lun_2"
check_eq "B's LUN 0 is the same backstore" "$idb0" "$(backstore_id "$B" 0)"
note "B's session before/after the parameter change: '$sb' / '$(session_of "$B")'"

# B/1 appears after a rescan and works
check "rescan B" iscsi_rescan "$B" "$P"
db1=$(iscsi_wait_disk "$B" 1) || fail "B's LUN 1 did not appear after a rescan"
if [ -n "$db1" ]; then
    ok "B's LUN 1 appeared as $db1"
    check_eq "B/1 size" $((12 << 20)) "$(blockdev --getsize64 "$db1")"
    head -c 256K /dev/urandom > /tmp/pb1
    check "B/1 round trip into b1.img" sh -c "dd if=/tmp/pb1 of=$db1 bs=64k oflag=direct status=none && cmp -n 262144 /tmp/pb1 /var/tmp/b1.img"
fi
check "B/0 still serves reads" dd if="$db0" of=/dev/null bs=64k count=16 iflag=direct status=none

# A: fio passes, same session, same backstore, no error in the kernel log
rc=0
wait "$fio_pid" || rc=$?
check_eq "fio on A exit status" 0 "$rc"
if jq -e . /tmp/fio1.json > /dev/null 2>&1; then
    size_b=$(numfmt --from=iec "$FIO_SIZE")
    check_eq "fio on A: job error" 0 "$(jq '.jobs[0].error' /tmp/fio1.json)"
    check_eq "fio on A wrote the whole region" "$size_b" "$(jq '.jobs[0].write.io_bytes' /tmp/fio1.json)"
    rbytes=$(jq '.jobs[0].read.io_bytes' /tmp/fio1.json)
    [ "$rbytes" -ge "$size_b" ] && ok "fio on A verified $rbytes bytes" ||
        fail "fio on A read back only $rbytes of $size_b bytes"
else
    fail "fio on A wrote no JSON result"
    cat /tmp/fio1.out
fi
check "verify-only pass over A's region" fio "${FIO_JOB[@]}" --verify_only --output=/tmp/fio2.out
check_eq "A's session never dropped (same sid, logged in)" "$sa" "$(session_of "$A")"
check_eq "A's LUN 0 is the same backstore object" "$ida" "$(backstore_id "$A" 0)"
k=$(new_dmesg)
check_fails "no I/O error for A's disk" grep -qE "I/O error.*${da#/dev/}|${da#/dev/}.*(FAILED Result|Sense Key)" <<< "$k"
# B's session is allowed to see its LUN 2 go away, not A's
check_fails "no iSCSI connection error or session recovery" \
    grep -qE "detected conn error|session recovery timed out|rejecting I/O" <<< "$k"

# C takes a login (its node record comes from a persistent discovery of C only)
if iscsiadm -m node -o new -T "$C" -p "$P" > /dev/null 2>&1; then
    check "login to C" iscsi_login "$C" "$P"
    dc=$(iscsi_wait_disk "$C" 0) && check_eq "C/0 size" $((8 << 20)) "$(blockdev --getsize64 "$dc")" ||
        fail "no disk for C LUN 0"
else
    fail "cannot create a node record for C"
fi

# ---- a configuration with errors: refused whole, file:line logged, nothing changes
show_before=$(run_ietadm --op show 2>&1)
objs_before=$(lio_objects)
cp /tmp/ietd.conf /tmp/ietd.conf.good
cat > /tmp/ietd.conf << EOF
Target $A
	Lun 0 Path=/var/tmp/a0.img,Type=fileio,IOMode=wt
Target $B
	MaxRecvDataSegmentLength 65536
	Lun 0 Path=/var/tmp/b0.img,Type=fileio,IOMode=wb
	Lun 1 Path=/var/tmp/b1.img,Type=fileio,IOMode=wb
	Lun 3 Path=/var/tmp/b2.img,Type=bogus
Target $C
	Lun 0 Path=/var/tmp/c0.img,Type=fileio
Target $E
	Lun 0 Path=/var/tmp/d0.img,Type=fileio
	MaxRecvDataSegmentLength banana
EOF
n0=$(reloads)
kill -HUP "$IETD_PID"
check "ietd answered the bad reload" wait_until 60 sh -c "[ \$(grep -cE 'configuration reloaded|reload refused|reload: configuration not read' /tmp/ietd.log) -gt $n0 ]"
kill -0 "$IETD_PID" 2> /dev/null && ok "ietd survived the bad reload" || die "ietd died on a bad reload"
log=$(cat /tmp/ietd.log)
check_grep "the log names the bad Type at file:line" "/tmp/ietd.conf:7: error: .*bogus" "$log"
check_grep "the log names the bad value at file:line" "/tmp/ietd.conf:12: error: .*banana" "$log"
check_grep "the log says the reload was refused" "reload refused|configuration not read" "$log"
note "ietd's log for the bad reload:"
grep -E 'ietd\.conf:[0-9]|reload refused|configuration not read' /tmp/ietd.log | tail -n 6 | cut -c1-220 | sed 's/^/#   /'
check_eq "nothing changed in ietadm's view" "$show_before" "$(run_ietadm --op show 2>&1)"
check_eq "nothing changed in configfs" "$objs_before" "$(lio_objects)"
check_fails "E was not created" test -e "$CFS/iscsi/$E"
check_fails "B has no LUN 3" test -e "$CFS/iscsi/$B/tpgt_1/lun/lun_3"
check_eq "A's session still the same" "$sa" "$(session_of "$A")"
check "A still serves I/O" dd if="$da" of=/dev/null bs=64k count=16 iflag=direct status=none

# clean stop
iscsiadm -m node --logoutall=all > /dev/null 2>&1 || note "logout failed"
rc=0
ietd_stop || rc=$?
check_eq "ietd exits 0 on SIGTERM" 0 "$rc"
check_eq "configfs has none of our objects" "" "$(lio_objects)"
