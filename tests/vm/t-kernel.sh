#!/bin/bash
# t-kernel.sh — the guest kernel has what ietd needs: configfs, the LIO core, TCMU with
# its UIO device, tcm_loop and the iSCSI target fabric, and LIO's db_root.
# vm: --mem 1G --timeout 120
. "$(dirname "$0")/lib.sh"

note "kernel $(uname -r)"
check "configfs is mounted at /sys/kernel/config" grep -q ' /sys/kernel/config configfs ' /proc/mounts
for m in configfs target_core_mod target_core_user target_core_file target_core_iblock \
    tcm_loop iscsi_target_mod iscsi_tcp sd_mod sg; do
    check "modprobe $m" modprobe "$m"
done
for m in target_core_user tcm_loop iscsi_target_mod; do
    check "module $m is loaded" test -d "/sys/module/$m"
done
check "configfs $CFS/core exists" test -d "$CFS/core"
# fabric directories appear on first mkdir (LIO registers the fabric then)
for d in iscsi loopback; do
    check "mkdir $CFS/$d registers the fabric" mkdir -p "$CFS/$d"
done
check "iscsi fabric has discovery_auth" test -d "$CFS/iscsi/discovery_auth"
check "/etc/target/pr exists (LIO writes APTPL reservations there)" test -d /etc/target/pr
check "kernel modprobe helper is /sbin/modprobe" test "$(cat /proc/sys/kernel/modprobe)" = /sbin/modprobe

# A TCMU backstore that does not wait for netlink replies (nl_reply_supported=-1): with
# nothing listening on the TCM-USER family, enable must still return.
HBA=31
NAME=tk0
CFG=ietdtest/kernel
bs=$(lio_user_backstore $HBA $NAME $((64 << 20)) "$CFG" 4096 nl_reply_supported=-1) ||
    die "user backstore with nl_reply_supported=-1 could not be enabled"
ok "user backstore $bs enabled with nl_reply_supported=-1"
at_exit lio_teardown
check_eq "attrib/nl_reply_supported" -1 "$(cat "$bs/attrib/nl_reply_supported")"
check_eq "attrib/hw_block_size (set through control)" 4096 "$(cat "$bs/attrib/hw_block_size")"
check_fails "attrib/hw_block_size is read-only for TCMU" sh -c "echo 512 > $bs/attrib/hw_block_size"
check_grep "info reports the device size" "Size: $((64 << 20))|dev_size: $((64 << 20))" "$(cat "$bs/info")"

uio=$(uio_by_name "tcm-user/$HBA/$NAME/$CFG") || die "no uio device named tcm-user/$HBA/$NAME/$CFG"
ok "uio device $uio is named tcm-user/$HBA/$NAME/$CFG"
check "/dev/$uio is a character device" test -c "/dev/$uio"
size=$(cat "/sys/class/uio/$uio/maps/map0/size")
check_grep "map0 size is hexadecimal" '^0x[0-9a-f]+$' "$size"
# the command ring alone is 8 MiB; the data area comes after it
check "map0 size $size holds more than the 8 MiB command ring" test "$((size))" -gt $((8 << 20))
check_eq "uio (TCMU mailbox) version" 2 "$(cat "/sys/class/uio/$uio/version")"

check "rmdir removes the backstore" rmdir "$bs"
check "its uio device is gone" sh -c "! test -e /sys/class/uio/$uio"
check "the HBA directory is removable" rmdir "$CFS/core/user_$HBA"

# tcm_loop: a target with an I_T nexus exposes the SCSI address its LUNs will get.
tpg=$(loop_target) || die "tcm_loop target with nexus"
ok "tcm_loop target $tpg with nexus $(cat "$tpg/nexus")"
check_grep "tcm_loop address is H:C:T" '^[0-9]+:0:[0-9]+$' "$(cat "$tpg/address")"
lio_teardown
check_eq "LIO objects left after teardown" "" "$(lio_objects)"
