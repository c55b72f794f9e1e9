#!/bin/bash
# t-loop.sh — the tcm_loop helpers of lib.sh against kernel fileio backstores (no ietd,
# no datapath): LUNs appear as /dev/sdX found both by SCSI address and by VPD serial,
# with the right size and block size, data round-trips, and teardown leaves nothing.
# vm: --mem 1G --timeout 120
. "$(dirname "$0")/lib.sh"

lio_modules
at_exit lio_teardown

truncate -s 32M /tmp/a.img
truncate -s 48M /tmp/b.img
a=$(lio_fileio_backstore 41 la /tmp/a.img $((32 << 20))) || die "fileio backstore la"
b=$(lio_fileio_backstore 41 lb /tmp/b.img $((48 << 20))) || die "fileio backstore lb"
ok "two fileio backstores"

tpg=$(loop_target) || die "tcm_loop target"
ok "tcm_loop target with nexus"
da=$(loop_lun "$tpg" 0 "$a" 20) || die "LUN 0 did not appear as a disk"
ok "LUN 0 is $da"
db=$(loop_lun "$tpg" 3 "$b" 20) || die "LUN 3 did not appear as a disk"
ok "LUN 3 is $db"

check_eq "disk_by_hctl finds LUN 3" "$db" "$(disk_by_hctl "$(loop_hctl "$tpg" 3)")"
sa=$(lio_backstore_serial "$a")
check_eq "disk_by_serial finds LUN 0 by its VPD serial" "$da" "$(disk_by_serial "$sa")"
check_eq "LUN 0 size" $((32 << 20)) "$(blockdev --getsize64 "$da")"
check_eq "LUN 3 size" $((48 << 20)) "$(blockdev --getsize64 "$db")"
check_eq "LUN 0 logical block size" 512 "$(blockdev --getss "$da")"
check_grep "sg_inq reports LIO's vendor" 'Vendor identification: LIO-ORG' "$(sg_inq "$da" 2>&1)"

head -c 1M /dev/urandom > /tmp/pattern
check "write 1 MiB at 4 MiB through the disk (O_DIRECT)" \
    dd if=/tmp/pattern of="$da" bs=64k seek=64 oflag=direct status=none
check "the backing file holds the data" \
    cmp /tmp/pattern <(dd if=/tmp/a.img bs=64k skip=64 count=16 status=none)
check "reading the disk back gives the data" \
    cmp /tmp/pattern <(dd if="$da" bs=64k skip=64 count=16 iflag=direct status=none)

objs=$(lio_objects)
check_grep "lio_objects lists the backstores" '^backstore fileio_41/la$' "$objs"
check_grep "lio_objects lists the tcm_loop target" '^loopback naa\.' "$objs"
check "loop_unlink removes LUN 3" loop_unlink "$tpg" 3
check "its disk disappeared" wait_until 10 sh -c "! test -b $db"
lio_teardown
check_eq "no LIO objects after lio_teardown" "" "$(lio_objects)"
