#!/bin/bash
# t-ops-adopt.sh — kill -9 of ietd: the datapath (a process of its own) keeps serving, a
# write in flight completes; a new ietd with the same config adopts the LUNs as they are
# (LUN and backstore configfs inodes unchanged, the iSCSI session never dropped, the same
# datapath process); a restart with LUN 1 dropped from the config removes LUN 1 and keeps
# LUN 0; the adopted datapath killed -9 is restarted with the adopted ring re-opened; a
# clean stop leaves configfs clean.
# vm: --mem 2G --timeout 400
. "$(dirname "$0")/lib.sh"

private_bins

T=iqn.2024-01.org.ietd.vm:adopt
P=127.0.0.1:3260
CFS=${CFS:-/sys/kernel/config/target}
TPG=$CFS/iscsi/$T/tpgt_1

truncate -s 64M /var/tmp/a0.img
truncate -s 16M /var/tmp/a1.img
cat > /tmp/ietd.conf << EOF
Target $T
	Lun 0 Path=/var/tmp/a0.img,Type=fileio,IOMode=wb
	Lun 1 Path=/var/tmp/a1.img,Type=fileio,IOMode=wt
EOF

# identity LUN: inode of the LUN directory and of the backstore it links to
identity() {
    local l=$TPG/lun/lun_$1 bs
    bs=$(readlink -f "$l"/*/ 2> /dev/null | head -1)
    for e in "$l"/*; do [ -L "$e" ] && bs=$(readlink -f "$e"); done
    echo "$(stat -c %i "$l") $(stat -c %i "$bs")"
}
# sessions: the open-iscsi session list (sid and target), which changes on a relogin
sessions() { iscsiadm -m session 2> /dev/null | sort; }
# kill_ietd: SIGKILL ietd (no cleanup at all) and keep its log
kill_ietd() {
    kill -KILL "$IETD_PID"
    wait "$IETD_PID" 2> /dev/null
    cat /tmp/ietd.log >> /tmp/ietd-all.log
    show_log_on_failure /tmp/ietd-all.log
}

iscsi_modules
ietd_start /tmp/ietd.conf --allow-dir /tmp/none || die "ietd did not start"
iscsi_start
iscsi_connect "$P" "$T"
iscsi_disks "$T" d0=0 d1=1
ok "LUN 0 is $d0, LUN 1 is $d1"
id0=$(identity 0)
id1=$(identity 1)
sess=$(sessions)
dp=$(pgrep -x ietd-datapath)
[ -n "$dp" ] || die "no datapath"

# 1. kill -9 of ietd during a write: the write completes, the data is there
head -c 24M /dev/urandom > /tmp/p0
dd if=/tmp/p0 of="$d0" bs=64k oflag=direct status=none &
bgdd=$!
sleep 0.5
kill_ietd
ok "killed ietd during a write"
rc=0
wait "$bgdd" || rc=$?
check_eq "the write completes without error" 0 "$rc"
check "the data is all there" cmp /tmp/p0 <(dd if="$d0" bs=64k count=384 iflag=direct status=none)
check_eq "the datapath outlived ietd" "$dp" "$(pgrep -x ietd-datapath)"
check "LUN 1 still serves I/O" dd if=/tmp/p0 of="$d1" bs=64k count=16 oflag=direct status=none

# 2. a new ietd with the same config adopts everything as it is
ietd_start /tmp/ietd.conf --allow-dir /tmp/none || die "second ietd did not start"
log=$(cat /tmp/ietd.log)
check_grep "ietd adopted the running datapath" "adopted the running datapath" "$log"
check_eq "LUN 0 keeps its configfs identity" "$id0" "$(identity 0)"
check_eq "LUN 1 keeps its configfs identity" "$id1" "$(identity 1)"
check_eq "the iSCSI session was never dropped" "$sess" "$(sessions)"
check_eq "the same datapath serves" "$dp" "$(pgrep -x ietd-datapath)"
check_eq "both LUNs adopted, none re-made" 2 "$(grep -c "lun adopted" /tmp/ietd.log)"
show=$(run_ietadm --op show)
check_grep "ietadm shows LUN 0" "lun:0 " "$show"
check_grep "ietadm shows LUN 1" "lun:1 " "$show"
check_grep "/run/ietd/volume shows LUN 1" "lun:1 " "$(cat /run/ietd/volume 2> /dev/null)"
head -c 4M /dev/urandom > /tmp/p1
check "LUN 0 I/O after adoption" bash -c "dd if=/tmp/p1 of=$d0 bs=64k oflag=direct status=none && cmp /tmp/p1 <(dd if=$d0 bs=64k count=64 iflag=direct status=none)"
check "LUN 1 I/O after adoption" bash -c "dd if=/tmp/p1 of=$d1 bs=64k oflag=direct status=none && cmp -n 4194304 /tmp/p1 /var/tmp/a1.img"

# 3. config without LUN 1, kill -9 + restart: LUN 1 removed, LUN 0 adopted
sed -i '/Lun 1/d' /tmp/ietd.conf
kill_ietd
ietd_start /tmp/ietd.conf --allow-dir /tmp/none || die "third ietd did not start"
log=$(cat /tmp/ietd.log)
check_fails "LUN 1 is gone from configfs" test -e "$TPG/lun/lun_1"
check_eq "one backstore of ours left" 1 "$(ls -d "$CFS"/core/user_*/ietd_* 2> /dev/null | wc -l)"
check_grep "LUN 1 removal logged" "removed .no longer in the configuration" "$log"
check_eq "LUN 0 still keeps its identity" "$id0" "$(identity 0)"
check_eq "the session survived" "$sess" "$(sessions)"
check "LUN 0 I/O" cmp /tmp/p1 <(dd if="$d0" bs=64k count=64 iflag=direct status=none)
check_fails "ietadm no longer shows LUN 1" grep -q "lun:1 " <<< "$(run_ietadm --op show)"

# 4. the adopted datapath dies: ietd starts a new one and re-opens the adopted ring
head -c 8M /dev/urandom > /tmp/p2
dd if=/tmp/p2 of="$d0" bs=64k oflag=direct status=none &
bgdd=$!
sleep 0.3
kill -KILL "$dp"
rc=0
wait "$bgdd" || rc=$?
check_eq "a write across the adopted datapath's death completes" 0 "$rc"
check "its data is there" cmp /tmp/p2 <(dd if="$d0" bs=64k count=128 iflag=direct status=none)
new=$(pgrep -x ietd-datapath)
[ -n "$new" ] && [ "$new" != "$dp" ] && ok "ietd started a new datapath ($new)" || fail "no new datapath (old $dp, now '$new')"
check_grep "the adopted ring was re-opened" "adopted device re-opened" "$(cat /tmp/ietd.log)"

# 5. clean stop
check "logout" iscsi_logout "$T" "$P"
rc=0
ietd_stop || rc=$?
check_eq "ietd exits 0 on SIGTERM" 0 "$rc"
check_eq "configfs has none of our objects" "" "$(lio_objects)"
check_fails "the datapath is gone" pgrep -x ietd-datapath
