#!/bin/bash
# t-ops-coexist.sh — tcmu-runner (Debian, handler qcow on a raw file, behind tcm_loop) and
# ietd on the same kernel: ietd starts and enables its backstores while tcmu-runner
# listens to the same TCM-USER netlink family, tcmu-runner's backstores (which wait for
# its netlink replies) are created while ietd listens and never answers them, both serve
# I/O at the same time with the data intact, ietd's stop leaves tcmu-runner's objects
# alone, and rtslib-fb (targetcli's library) lists both sets of objects.
# vm: --mem 2G --timeout 400
. "$(dirname "$0")/lib.sh"

private_bins
command -v tcmu-runner > /dev/null || die "tcmu-runner is not installed on the host"

T=iqn.2024-01.org.ietd.vm:coexist
P=127.0.0.1:3260
CFS=${CFS:-/sys/kernel/config/target}

lio_modules
iscsi_modules
mkdir -p /var/log /etc/target
start_bg tcmu-runner tcmu-runner
RUNNER=$BG_PID
show_log_on_failure /var/log/tcmu-runner.log
wait_until 20 grep -q 'Handler qcow is registered' /var/log/tcmu-runner.log ||
    die "tcmu-runner did not register its qcow handler"
ok "tcmu-runner running ($RUNNER)"

# elapsed_ms CMD...: run CMD, print how long it took
elapsed_ms() {
    local t0 rc=0
    t0=$(now_ms)
    "$@" > /dev/null || rc=$?
    echo $(($(now_ms) - t0))
    return "$rc"
}

# tcmu-runner's first backstore, exported through tcm_loop
truncate -s 32M /var/tmp/r0.raw
RB0=$(lio_user_backstore 7 runner0 $((32 << 20)) qcow//var/tmp/r0.raw 512) || die "tcmu-runner backstore"
LTPG=$(loop_target) || die "tcm_loop target"
rdev0=$(loop_lun "$LTPG" 0 "$RB0") || die "no disk for tcmu-runner's LUN"
ok "tcmu-runner LUN is $rdev0"

# ietd beside it
truncate -s 32M /var/tmp/i0.img
cat > /tmp/ietd.conf << EOF
Target $T
	Lun 0 Path=/var/tmp/i0.img,Type=fileio,IOMode=wb
EOF
t0=$(now_ms)
ietd_start /tmp/ietd.conf --allow-dir /tmp/none || die "ietd did not start beside tcmu-runner"
ok "ietd started beside tcmu-runner in $(($(now_ms) - t0)) ms"
iscsi_start
iscsi_connect "$P" "$T"
iscsi_disks "$T" idev=0
ok "ietd LUN is $idev"
check_eq "ietd left tcmu-runner's backstore alone" "1" "$(cat "$RB0/enable")"

# configfs writes of both sides while the other runs
truncate -s 16M /var/tmp/r1.raw
ms=$(elapsed_ms lio_user_backstore 7 runner1 $((16 << 20)) qcow//var/tmp/r1.raw 512) ||
    fail "tcmu-runner backstore created while ietd runs"
[ "${ms:-99999}" -lt 5000 ] && ok "tcmu-runner's enable (waits for its netlink reply) took $ms ms" ||
    fail "tcmu-runner's enable took $ms ms with ietd listening"
truncate -s 16M /var/tmp/i1.img
ms=$(elapsed_ms run_ietadm --op new --tid=1 --lun=1 --params Path=/var/tmp/i1.img,Type=fileio) ||
    fail "ietadm --op new --lun=1 beside tcmu-runner"
[ "${ms:-99999}" -lt 5000 ] && ok "ietd's LUN add (enable with nl_reply_supported=-1) took $ms ms" ||
    fail "ietd's LUN add took $ms ms with tcmu-runner listening"
rdev1=$(loop_lun "$LTPG" 1 "$CFS/core/user_7/runner1") || fail "no disk for tcmu-runner's second LUN"
note "tcmu-runner's log about our devices: $(grep -ci ietd /var/log/tcmu-runner.log) lines"

# I/O on both at once
head -c 16M /dev/urandom > /tmp/pr
head -c 16M /dev/urandom > /tmp/pi
dd if=/tmp/pr of="$rdev0" bs=64k oflag=direct status=none &
a=$!
dd if=/tmp/pi of="$idev" bs=64k oflag=direct status=none &
b=$!
rca=0 rcb=0
wait "$a" || rca=$?
wait "$b" || rcb=$?
check_eq "tcmu-runner LUN write beside ietd" 0 "$rca"
check_eq "ietd LUN write beside tcmu-runner" 0 "$rcb"
check "tcmu-runner data intact" cmp /tmp/pr <(dd if="$rdev0" bs=64k count=256 iflag=direct status=none)
check "tcmu-runner data in its file" cmp -n $((16 << 20)) /tmp/pr /var/tmp/r0.raw
check "ietd data intact" cmp /tmp/pi <(dd if="$idev" bs=64k count=256 iflag=direct status=none)
check "ietd data in its file" cmp -n $((16 << 20)) /tmp/pi /var/tmp/i0.img
[ -n "${rdev1:-}" ] && check "tcmu-runner's second LUN works" dd if=/tmp/pr of="$rdev1" bs=64k count=64 oflag=direct status=none

# targetcli's library, rtslib-fb (Debian's python3-rtslib-fb, installed by tests/run;
# targetcli itself asks tcmu-runner over D-Bus, which the guest lacks): both sets of
# objects listed sanely. RTSRoot() moves LIO's dbroot to /etc/rtslib-fb-target and
# fails unless that directory exists; targetcli-fb's package creates it, so on a machine
# without that package the guest must.
mkdir -p /etc/rtslib-fb-target
rl=$(timeout 60 /usr/bin/python3 -c '
import rtslib_fb
r = rtslib_fb.RTSRoot()
for so in r.storage_objects:
    print("so", so.plugin, so.name, so.status, getattr(so, "config", ""), so.size)
for t in r.targets:
    for tpg in t.tpgs:
        for lun in tpg.luns:
            print("lun", t.wwn, tpg.tag, lun.lun, lun.storage_object.name)
' 2>&1)
note "rtslib-fb view:"
sed 's/^/#   /' <<< "$rl"
check_grep "rtslib-fb sees ietd's backstore" "^so user ietd_t1_l0 activated ietd//var/tmp/i0.img" "$rl"
check_grep "rtslib-fb sees tcmu-runner's backstore" "^so user runner0 activated qcow//var/tmp/r0.raw" "$rl"
check_grep "rtslib-fb sees ietd's LUN" "^lun $T 1 0 ietd_t1_l0" "$rl"
check_grep "rtslib-fb sees tcmu-runner's tcm_loop LUN" "^lun naa\..* 1 0 runner0" "$rl"

# ietd stops; tcmu-runner's objects are untouched and still serve
check "logout" iscsi_logout "$T" "$P"
rc=0
ietd_stop || rc=$?
check_eq "ietd exits 0" 0 "$rc"
check_fails "none of ietd's backstores left" sh -c "ls -d $CFS/core/user_*/ietd_* 2> /dev/null | grep -q ."
check "tcmu-runner's backstores are still there" test -d "$RB0" -a -d "$CFS/core/user_7/runner1"
check "tcmu-runner LUN still serves" cmp /tmp/pr <(dd if="$rdev0" bs=64k count=256 iflag=direct status=none)

# tidy up tcmu-runner's objects before it goes, so shutdown does not wait on them
loop_unlink "$LTPG" 1 || true
loop_unlink "$LTPG" 0 || true
rm -f "$LTPG"/lun/*/* 2> /dev/null
rmdir "$LTPG"/lun/* "$LTPG" "${LTPG%/*}" 2> /dev/null
rmdir "$CFS/core/user_7/runner1" "$RB0" "$CFS/core/user_7" 2> /dev/null
check_eq "configfs clean" "" "$(lio_objects)"
