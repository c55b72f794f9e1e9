#!/bin/bash
# t-ietd-live.sh — ietd on a live system: a blockio LUN on a real block device (O_DIRECT
# path, data checked on the device), `ietadm --op new` of a 4096-byte wb LUN on a target
# in use (appears after a rescan, the other LUN's running I/O is undisturbed) and `--op
# delete` of it, a backstore removed behind ietd's back (as targetcli would) is detached
# and dropped from ietd's state, and kill -9 of the datapath during a write: ietd restarts
# it, re-attaches the rings, and the write completes with the right data.
# vm: --mem 2G --disk 256M --timeout 400
. "$(dirname "$0")/lib.sh"

private_bins

T=iqn.2024-01.org.ietd.vm:live
P=127.0.0.1:3260
CFS=${CFS:-/sys/kernel/config/target}
[ -b /dev/vda ] || die "no virtio disk (/dev/vda)"

truncate -s 48M /var/tmp/l0.img
cat > /tmp/ietd.conf << EOF
Target $T
	Lun 0 Path=/var/tmp/l0.img,Type=fileio,IOMode=wb
	Lun 1 Path=/dev/vda,Type=blockio,IOMode=wt
EOF

iscsi_modules
ietd_start /tmp/ietd.conf --allow-dir /tmp/none || die "ietd did not start"
iscsi_start
iscsi_connect "$P" "$T"
iscsi_disks "$T" d0=0 d1=1
ok "LUN 0 is $d0, LUN 1 (blockio) is $d1"

# blockio: sizes and an O_DIRECT round trip that lands on the device itself
check_eq "blockio LUN size" "$(blockdev --getsize64 /dev/vda)" "$(blockdev --getsize64 "$d1")"
head -c 2M /dev/urandom > /tmp/pb
check "blockio write" dd if=/tmp/pb of="$d1" bs=128k seek=10 oflag=direct status=none
check "blockio read back" cmp /tmp/pb <(dd if="$d1" bs=128k skip=10 count=16 iflag=direct status=none)
check "data is on /dev/vda" cmp /tmp/pb <(dd if=/dev/vda bs=128k skip=10 count=16 iflag=direct status=none)
# Those reads and writes were io_uring transfers of the datapath's event loop, not worker jobs.
check_grep "the datapath set up its io_uring for blockio" "io_uring set up" "$(cat /tmp/ietd.log)"
# excl_open DEV: open DEV with O_EXCL (fails with EBUSY while someone claims it)
excl_open() { python3 -c 'import os,sys; os.close(os.open(sys.argv[1], os.O_RDONLY | os.O_EXCL))' "$1"; }
check_fails "the device is claimed exclusively while exported" excl_open /dev/vda
check_grep "datapath is told MAXIMUM TRANSFER LENGTH" "Maximum transfer length: [1-9]" "$(sg_inq -p 0xb0 "$d1" 2>&1)"

# live LUN add while LUN 0 is busy
head -c 8M /dev/urandom > /tmp/p0
dd if=/tmp/p0 of="$d0" bs=64k oflag=direct status=none &
bgdd=$!
truncate -s 24M /var/tmp/l5.img
check "ietadm --op new --lun=5 on the live target" run_ietadm --op new --tid=1 --lun=5 \
    --params Path=/var/tmp/l5.img,Type=fileio,IOMode=wb,Sector=4096
check "rescan" iscsi_rescan "$T" "$P"
d5=$(iscsi_wait_disk "$T" 5) || die "LUN 5 did not appear after a rescan"
ok "LUN 5 appeared as $d5"
check_eq "LUN 5 block size" 4096 "$(blockdev --getss "$d5")"
check_eq "LUN 5 size" $((24 << 20)) "$(blockdev --getsize64 "$d5")"
check_eq "LUN 5 write cache" "write back" "$(cat /sys/block/"${d5#/dev/}"/device/scsi_disk/*/cache_type)"
rc=0
wait "$bgdd" || rc=$?
check_eq "LUN 0 writes meanwhile finished fine" 0 "$rc"
check "LUN 0 data intact" cmp /tmp/p0 <(dd if="$d0" bs=64k count=128 iflag=direct status=none)
head -c 256K /dev/urandom > /tmp/p5
check "LUN 5 round trip" sh -c "dd if=/tmp/p5 of=$d5 bs=64k oflag=direct status=none && cmp /tmp/p5 /var/tmp/l5.img -n 262144"
check_grep "ietadm lists LUN 5" "lun:5 " "$(run_ietadm --op show)"
check "ietadm --op delete --lun=5" run_ietadm --op delete --tid=1 --lun=5
check_fails "LUN 5 is gone from ietadm's view" grep -q "lun:5 " <<< "$(run_ietadm --op show)"
check_fails "LUN 5 is gone from configfs" test -e "$CFS/iscsi/$T/tpgt_1/lun/lun_5"
check "LUN 0 still serves reads" dd if="$d0" of=/dev/null bs=64k count=16 iflag=direct status=none

# a LUN whose backstore someone else removes (what targetcli does: LUN link, then the
# backstore): ietd detaches it from the datapath and drops it from its state
truncate -s 8M /var/tmp/l6.img
check "ietadm --op new --lun=6" run_ietadm --op new --tid=1 --lun=6 --params Path=/var/tmp/l6.img
lun6=$CFS/iscsi/$T/tpgt_1/lun/lun_6
bs6=$(readlink -f "$lun6"/*/ 2> /dev/null | head -1)
for l in "$lun6"/*; do [ -L "$l" ] && bs6=$(readlink -f "$l") && rm "$l"; done
rmdir "$lun6" && rmdir "$bs6"
check_fails "backstore of LUN 6 removed by hand" test -e "$bs6"
check "ietd noticed and dropped LUN 6" wait_until 10 sh -c "! $IETD_BIN/ietadm --op show | grep -q 'lun:6 '"
check_grep "ietd logged it" "behind ietd's back" "$(cat /tmp/ietd.log)"
check "ietd still answers" run_ietadm --op show --tid=1

# kill -9 of the datapath during a write: ietd restarts it and re-attaches every ring
old=$(pgrep -x ietd-datapath)
head -c 16M /dev/urandom > /tmp/pk
dd if=/tmp/pk of="$d0" bs=64k oflag=direct status=none &
bgdd=$!
sleep 1
kill -KILL "$old"
ok "killed datapath $old during a write"
rc=0
wait "$bgdd" || rc=$?
check_eq "the write completes without error" 0 "$rc"
check "the data is all there" cmp /tmp/pk <(dd if="$d0" bs=64k count=256 iflag=direct status=none)
new=$(pgrep -x ietd-datapath)
[ -n "$new" ] && [ "$new" != "$old" ] && ok "ietd restarted the datapath ($new)" || fail "no new datapath (old $old, now '$new')"
check_grep "ietd re-attached the rings" "device re-attached" "$(cat /tmp/ietd.log)"
check "blockio LUN works after the restart" cmp /tmp/pb <(dd if="$d1" bs=128k skip=10 count=16 iflag=direct status=none)

check "logout" iscsi_logout "$T" "$P"
rc=0
ietd_stop || rc=$?
check_eq "ietd exits 0 on SIGTERM" 0 "$rc"
check_eq "configfs has none of our objects" "" "$(lio_objects)"
check_fails "the datapath is gone" pgrep -x ietd-datapath
check "/dev/vda is free again" excl_open /dev/vda
