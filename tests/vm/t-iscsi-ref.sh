#!/bin/bash
# t-iscsi-ref.sh — the open-iscsi helpers of lib.sh against a reference LIO iSCSI target
# built directly in configfs with kernel fileio LUNs (no ietd): discovery, login, finding
# each LUN's /dev/sdX by target and LUN, data round trip, a LUN added on a live target
# after a rescan, logout, CHAP (one-way, mutual, refused) and discovery CHAP.
# vm: --mem 1G --timeout 180
. "$(dirname "$0")/lib.sh"

IQN=iqn.2024-01.org.ietd.test:ref
P=127.0.0.1:3260

iscsi_modules
at_exit lio_teardown
truncate -s 16M /tmp/l0.img /tmp/l2.img
truncate -s 24M /tmp/l1.img
l0=$(lio_fileio_backstore 51 r0 /tmp/l0.img $((16 << 20))) || die "backstore r0"
l1=$(lio_fileio_backstore 51 r1 /tmp/l1.img $((24 << 20))) || die "backstore r1"
tpg=$(lio_iscsi_target "$IQN" "$P" "$l0" "$l1") || die "reference iSCSI target"
ok "reference target $IQN on $P with LUN 0 and 1"

iscsi_start
ok "iscsid is running"
iscsi_connect "$P" "$IQN"
iscsi_disks "$IQN" d0=0 d1=1
ok "LUN 0 is $d0, LUN 1 is $d1"
check_eq "the session exposes LUNs" "0 1" "$(iscsi_luns "$IQN" | xargs)"
check_eq "LUN 1 size" $((24 << 20)) "$(blockdev --getsize64 "$d1")"
check_eq "LUN 0 found by serial too" "$d0" "$(disk_by_serial "$(lio_backstore_serial "$l0")")"

head -c 512K /dev/urandom > /tmp/pattern
check "write through iSCSI (O_DIRECT)" dd if=/tmp/pattern of="$d1" bs=64k seek=16 oflag=direct status=none
check "backing file of LUN 1 has the data" cmp /tmp/pattern <(dd if=/tmp/l1.img bs=64k skip=16 count=8 status=none)
check "read back through iSCSI" cmp /tmp/pattern <(dd if="$d1" bs=64k skip=16 count=8 iflag=direct status=none)

# a LUN added to the live target shows up after a rescan
l2=$(lio_fileio_backstore 51 r2 /tmp/l2.img $((16 << 20))) || die "backstore r2"
mkdir "$tpg/lun/lun_2" && ln -s "$l2" "$tpg/lun/lun_2/r2" || die "link LUN 2"
check "rescan the session" iscsi_rescan "$IQN" "$P"
d2=$(iscsi_wait_disk "$IQN" 2) || die "LUN 2 did not appear after the rescan"
ok "LUN 2 appeared as $d2"
check "LUN 0 still serves reads" dd if="$d0" of=/dev/null bs=64k count=16 iflag=direct status=none

check "logout" iscsi_logout "$IQN" "$P"
check "disks are gone after logout" wait_until 10 sh -c "! test -b $d0 && ! test -b $d2"
if iscsi_disk "$IQN" 0 > /dev/null; then fail "iscsi_disk still names a disk"; else ok "iscsi_disk: no session, no disk"; fi

# CHAP at the TPG (demo mode): wrong secret refused, right one accepted, then mutual
echo 1 > "$tpg/attrib/authentication"
echo -n alice > "$tpg/auth/userid"
echo -n alice-secret-1 > "$tpg/auth/password"
check "CHAP settings on the node" iscsi_chap "$IQN" "$P" alice wrong-secret-99
check_fails "login with a wrong CHAP secret is refused" iscsi_login "$IQN" "$P"
check "CHAP settings on the node" iscsi_chap "$IQN" "$P" alice alice-secret-1
check "login with the right CHAP secret" iscsi_login "$IQN" "$P"
check "logout" iscsi_logout "$IQN" "$P"
echo -n target-user > "$tpg/auth/userid_mutual"
echo -n target-secret-2 > "$tpg/auth/password_mutual"
check "mutual CHAP settings" iscsi_chap "$IQN" "$P" alice alice-secret-1 target-user target-secret-2
check "login with mutual CHAP" iscsi_login "$IQN" "$P"
check "logout" iscsi_logout "$IQN" "$P"
check "mutual CHAP with a wrong target secret" iscsi_chap "$IQN" "$P" alice alice-secret-1 target-user bad-target-secret
check_fails "the initiator refuses a target that fails mutual CHAP" iscsi_login "$IQN" "$P"

# discovery CHAP
D=$CFS/iscsi/discovery_auth
echo -n disco > "$D/userid"
echo -n disco-secret-3 > "$D/password"
echo 1 > "$D/enforce_discovery_auth"
at_exit sh -c "echo 0 > $D/enforce_discovery_auth"
check_fails "discovery without CHAP is refused" iscsi_discover "$P"
check_fails "discovery with a wrong secret is refused" iscsi_discover "$P" disco nope-nope-nope
check_eq "discovery with CHAP lists the target" "$IQN" "$(iscsi_discover "$P" disco disco-secret-3)"
