#!/bin/bash
# t-ietd-lifecycle.sh — ietd against the real kernel, start to stop: from an ietd.conf it
# creates one TCMU backstore per LUN and one iSCSI target per Target, SendTargets
# discovery lists the targets, ietadm talks to it, SIGTERM removes every object it made,
# and a second start on the same machine works again.
# vm: --mem 1G --timeout 180
. "$(dirname "$0")/lib.sh"

T1=iqn.2024-01.org.ietd.test:life.one
T2=iqn.2024-01.org.ietd.test:life.two
iscsi_modules
mkdir -p /tmp/life
truncate -s 32M /tmp/life/a.img /tmp/life/b.img /tmp/life/c.img
cat > /tmp/life/ietd.conf << EOF
Target $T1
	Lun 0 Path=/tmp/life/a.img,Type=fileio,IOMode=wb
	Lun 1 Path=/tmp/life/b.img,Type=fileio,IOMode=wt,BlockSize=4096
Target $T2
	Lun 0 Path=/tmp/life/c.img,Type=fileio,IOMode=ro
EOF
IETD=$(need_bin ietd) || die "ietd is not built"
check "ietd --check accepts the configuration" "$IETD" -c /tmp/life/ietd.conf --check

ietd_start /tmp/life/ietd.conf || die "ietd did not start"
ok "ietd started (pid $IETD_PID)"
objs=$(lio_objects)
check_eq "one TCMU backstore per LUN" 3 "$(grep -c '^backstore user_' <<< "$objs")"
check_grep "target one exists in configfs" "^iscsi $T1\$" "$objs"
check_grep "target two exists in configfs" "^iscsi $T2\$" "$objs"
check "ietadm --op show --tid=1" run_ietadm --op show --tid=1
check_fails "ietadm --op show --tid=9 (no such target)" run_ietadm --op show --tid=9

iscsi_start
check_eq "discovery lists both targets" "$T1 $T2" "$(iscsi_discover 127.0.0.1:3260 | xargs)"

rc=0
ietd_stop || rc=$?
check_eq "ietd exits 0 on SIGTERM" 0 "$rc"
check_eq "no LIO objects left after ietd stopped" "" "$(lio_objects)"

ietd_start /tmp/life/ietd.conf || die "ietd did not start a second time"
check_eq "a second start recreates the targets" "$T1 $T2" "$(iscsi_discover 127.0.0.1:3260 | xargs)"
rc=0
ietd_stop || rc=$?
check_eq "second stop exits 0" 0 "$rc"
check_eq "no LIO objects left after the second stop" "" "$(lio_objects)"
