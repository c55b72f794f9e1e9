#!/bin/bash
# t-ietd-basic.sh — ietd on the real kernel with its datapath: boots from an ietd.conf with
# two targets and five LUNs (fileio wt/wb/ro, 512 and 4096-byte blocks, nullio); SendTargets
# lists both, login works, each LUN has the right size, logical block size, vendor/product,
# serial and write-cache bit; ext4 mkfs + mount + write + umount + remount + checksum;
# raw dd round trip; a ro LUN reads but refuses writes and its backing file is unchanged;
# ietadm shows the session; ietd SIGTERM leaves no object of ours in configfs.
# vm: --mem 2G --timeout 400
. "$(dirname "$0")/lib.sh"

private_bins

T1=iqn.2024-01.org.ietd.vm:one
T2=iqn.2024-01.org.ietd.vm:two
P=127.0.0.1:3260

truncate -s 64M /var/tmp/wt.img
truncate -s 32M /var/tmp/wb4k.img
head -c 8M /dev/urandom > /var/tmp/ro.img
truncate -s 16M /var/tmp/two.img
ro_sum=$(md5sum < /var/tmp/ro.img)
cat > /tmp/ietd.conf << EOF
Target $T1
	Lun 0 Path=/var/tmp/wt.img,Type=fileio,IOMode=wt
	Lun 1 Path=/var/tmp/wb4k.img,Type=fileio,IOMode=wb,BlockSize=4096,ScsiSN=VMSN-WB4K
	Lun 2 Path=/var/tmp/ro.img,Type=fileio,IOMode=ro
Target $T2
	Lun 0 Path=/var/tmp/two.img,Type=fileio,IOMode=wb
	Lun 3 Type=nullio,Blocks=20480
EOF

iscsi_modules
ietd_start /tmp/ietd.conf --allow-dir /tmp/none || die "ietd did not start"
dp=$(pgrep -x ietd-datapath | head -1)
[ -n "$dp" ] && ok "ietd started its datapath (pid $dp)" || fail "no datapath process"

iscsi_start
iscsi_connect "$P" "$T1" "$T2"
iscsi_disks "$T1" a=0 b=1 r=2
iscsi_disks "$T2" c=0 n=3
ok "disks: $a $b $r $c $n"

check_eq "$T1/0 size" $((64 << 20)) "$(blockdev --getsize64 "$a")"
check_eq "$T1/1 size" $((32 << 20)) "$(blockdev --getsize64 "$b")"
check_eq "$T1/2 size" $((8 << 20)) "$(blockdev --getsize64 "$r")"
check_eq "$T2/0 size" $((16 << 20)) "$(blockdev --getsize64 "$c")"
check_eq "$T2/3 size (nullio 20480 blocks)" $((20480 * 512)) "$(blockdev --getsize64 "$n")"
check_eq "$T1/0 logical block size" 512 "$(blockdev --getss "$a")"
check_eq "$T1/1 logical block size" 4096 "$(blockdev --getss "$b")"
inq=$(sg_inq "$a")
check_grep "vendor IET" "Vendor identification: IET" "$inq"
check_grep "product VIRTUAL-DISK" "Product identification: VIRTUAL-DISK" "$inq"
check_grep "ScsiSN in VPD 0x80" "VMSN-WB4K" "$(sg_inq -p 0x80 "$b")"
cache() { cat /sys/block/"${1#/dev/}"/device/scsi_disk/*/cache_type; }
check_eq "wt LUN: write cache off" "write through" "$(cache "$a")"
check_eq "wb LUN: write cache on" "write back" "$(cache "$b")"
check_eq "ro LUN is write protected" 1 "$(cat /sys/block/"${r#/dev/}"/ro)"

# filesystem round trip on the 4096-byte LUN
check "mkfs.ext4 on $b" mkfs.ext4 -q -F "$b"
mkdir -p /mnt/b
check "mount" mount "$b" /mnt/b
head -c 3M /dev/urandom > /mnt/b/f1
head -c 200K /dev/urandom > /mnt/b/f2
sums=$(cd /mnt/b && md5sum f1 f2)
check "umount" umount /mnt/b
check "remount" mount "$b" /mnt/b
check_eq "files survive remount" "$sums" "$(cd /mnt/b && md5sum f1 f2)"
check "umount" umount /mnt/b

# raw round trip, O_DIRECT, on the write-through LUN, checked in the backing file too
head -c 1M /dev/urandom > /tmp/pat
check "raw write" dd if=/tmp/pat of="$a" bs=64k seek=100 oflag=direct status=none
check "raw read back" cmp /tmp/pat <(dd if="$a" bs=64k skip=100 count=16 iflag=direct status=none)
check "backing file has it" cmp /tmp/pat <(dd if=/var/tmp/wt.img bs=64k skip=100 count=16 status=none)

# read-only LUN
check_eq "ro LUN reads the backing data" "$ro_sum" "$(dd if="$r" bs=1M iflag=direct status=none | md5sum)"
blockdev --setrw "$r" 2> /dev/null
check_fails "writing the ro LUN fails" dd if=/tmp/pat of="$r" bs=64k count=1 oflag=direct status=none
check_eq "ro backing file unchanged" "$ro_sum" "$(md5sum < /var/tmp/ro.img)"

# nullio reads zeros
check_eq "nullio reads zeros" "$(head -c 1M /dev/zero | md5sum)" "$(dd if="$n" bs=1M count=1 iflag=direct status=none | md5sum)"

# the session view (IET's /proc/net/iet/session) reads LIO: demo-mode sessions are
# listed by initiator name
sessions=$(python3 - "$IETD_SOCKET" << 'PY'
import json, socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
s.sendall(b'{"op":"sessions"}\n')
buf = b""
while not buf.endswith(b"\n"):
    buf += s.recv(65536)
r = json.loads(buf)
for t in r["data"]["targets"]:
    for x in t["sessions"]:
        print(t["tid"], x["initiator"])
PY
)
check_grep "session view lists our initiator on tid 1" "^1 $INITIATOR_IQN\$" "$sessions"
check_grep "session view lists our initiator on tid 2" "^2 $INITIATOR_IQN\$" "$sessions"

check "logout $T1" iscsi_logout "$T1" "$P"
check "logout $T2" iscsi_logout "$T2" "$P"
rc=0
ietd_stop || rc=$?
check_eq "ietd exits 0 on SIGTERM" 0 "$rc"
check_eq "configfs has none of our objects" "" "$(lio_objects)"
check_fails "the datapath is gone" pgrep -x ietd-datapath
check_eq "no uio device left" "" "$(ls /sys/class/uio)"
