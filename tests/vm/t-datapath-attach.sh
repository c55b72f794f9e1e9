#!/bin/bash
# t-datapath-attach.sh — ietd-datapath standalone (`--attach`, no ietd) on a real TCMU
# ring: a user_N backstore made by hand, the datapath started on its uio device, a
# tcm_loop LUN over it; sg_inq / sg_readcap / sg_modes see IET's disk with the right
# geometry and cache mode, data round-trips with O_DIRECT, a read-only LUN refuses writes
# and leaves its file unchanged, and a datapath killed with SIGKILL mid-I/O is replaced by
# a new one that finishes the I/O.
# vm: --mem 1G --timeout 240
. "$(dirname "$0")/lib.sh"

DP=$(need_bin ietd-datapath) || die "no datapath binary"
lio_modules
at_exit lio_teardown
TARGET=iqn.2024-01.org.ietd.test:smoke

# serve NAME BS PARAMS: backstore + datapath + LUN; sets DISK, PID, BSTORE, TPG
N=0
serve() {
    local name=$1 bs=$2 params=$3 uio
    N=$((N + 1))
    BSTORE=$(lio_user_backstore "$((70 + N))" "$name" $((32 << 20)) "ietd/$name" "$bs" \
        nl_reply_supported=-1 hw_max_sectors=256) || die "backstore $name"
    echo -n 10 > "$BSTORE/attrib/cmd_time_out"
    uio=
    for u in /sys/class/uio/uio*; do
        case $(cat "$u/name") in */"$name"/ietd/"$name") uio=${u##*/} ;; esac
    done
    [ -n "$uio" ] || die "no uio device for $name"
    start_bg "dp-$name" "$DP" --attach "$uio" --params "$params" --target "$TARGET" --lun "$N" \
        --max-transfer-blocks 256
    PID=$BG_PID
    TPG=$(loop_target) || die "tcm_loop target"
    DISK=$(loop_lun "$TPG" 0 "$BSTORE" 30) || die "LUN over $name did not appear"
    ok "$name served as $DISK by pid $PID ($uio)"
}

unserve() {
    loop_unlink "$TPG" 0
    stop_pid "$PID" 10
    check_eq "datapath for $1 exits 0 on SIGTERM" 0 "$?"
}

for cfg in "d512 512 wb" "d4096 4096 wt"; do
    set -- $cfg
    img=/tmp/$1.img
    truncate -s 32M "$img"
    serve "$1" "$2" "Path=$img,Type=fileio,IOMode=$3,BlockSize=$2,ScsiSN=SMOKE-$1"
    inq=$(sg_inq "$DISK" 2>&1)
    check_grep "$1: vendor IET" 'Vendor identification: IET' "$inq"
    check_grep "$1: product VIRTUAL-DISK" 'Product identification: VIRTUAL-DISK' "$inq"
    check_grep "$1: unit serial" 'SMOKE-'"$1" "$(sg_inq -p 0x80 "$DISK" 2>&1)"
    cap=$(sg_readcap -l "$DISK" 2>&1)
    check_grep "$1: block length $2" "Logical block length=$2 bytes" "$cap"
    check_grep "$1: last LBA" "Last LBA=$(((32 << 20) / $2 - 1))" "$cap"
    check_eq "$1: kernel sees the size" $((32 << 20)) "$(blockdev --getsize64 "$DISK")"
    # sg_modes prints pages in hex: byte 2 of the caching page holds WCE (bit 2).
    wce=$([ "$3" = wb ] && echo 04 || echo 00)
    check_grep "$1: caching page WCE for $3" "^ 00 *08 12 $wce" "$(sg_modes -p 8 "$DISK" 2>&1)"
    check "$1: sg_opcodes lists supported commands" sg_opcodes "$DISK"
    head -c 4M /dev/urandom > /tmp/pattern
    check "$1: write 4 MiB (O_DIRECT)" dd if=/tmp/pattern of="$DISK" bs=64k seek=16 oflag=direct status=none
    check "$1: read back" cmp /tmp/pattern <(dd if="$DISK" bs=64k skip=16 count=64 iflag=direct status=none)
    check "$1: sync cache" sg_sync "$DISK"
    check "$1: backing file holds the data" \
        cmp /tmp/pattern <(dd if="$img" bs=64k skip=16 count=64 status=none)
    unserve "$1"
done

# Read-only: writes fail, the file does not change.
img=/tmp/dro.img
head -c 32M /dev/urandom > "$img"
sum=$(md5sum < "$img")
serve dro 512 "Path=$img,Type=fileio,IOMode=ro"
check_grep "ro: mode sense WP" "WP=1" "$(sg_modes "$DISK" 2>&1)"
check_fails "ro: writes are refused" dd if=/dev/zero of="$DISK" bs=4k count=1 oflag=direct status=none
check "ro: reads work" dd if="$DISK" of=/dev/null bs=64k count=16 iflag=direct status=none
check_eq "ro: backing file unchanged" "$sum" "$(md5sum < "$img")"
unserve dro

# kill -9 mid-I/O, then a new datapath resumes from cmd_tail.
img=/tmp/dkill.img
truncate -s 32M "$img"
serve dkill 512 "Path=$img,Type=fileio,IOMode=wb"
head -c 16M /dev/urandom > /tmp/pattern
dd if=/tmp/pattern of="$DISK" bs=64k oflag=direct status=none &
ddpid=$!
sleep 0.3
kill -KILL "$PID"
wait "$PID" 2> /dev/null
sleep 0.5
start_bg dp-dkill2 "$DP" --attach "$(basename "$(dirname "$(grep -l '/dkill/ietd/dkill$' /sys/class/uio/uio*/name)")")" \
    --params "Path=$img,Type=fileio,IOMode=wb" --target "$TARGET" --lun 9
PID=$BG_PID
wait "$ddpid"
check_eq "dd survives the datapath restart" 0 "$?"
check "data intact after restart" cmp /tmp/pattern <(dd if="$DISK" bs=64k count=256 iflag=direct status=none)
unserve dkill
