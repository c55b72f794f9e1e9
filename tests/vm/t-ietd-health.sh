#!/bin/bash
# t-ietd-health.sh — a LUN never goes dead silently: an adopted LUN whose backing file
# cannot be re-opened when its datapath dies shows as failed (state:2, with the reason)
# in /run/ietd/volume and 'ietadm --op show --tid --lun', and in ietd's log, within a few
# seconds; once the file is back the health check hands it over again and the LUN serves
# I/O over iSCSI.
# vm: --mem 1G --timeout 120
# (measured: 22-25 s passing on a quiet host, 48 s with five helpers' builds and VMs
# competing, 39 s with a failing login that waits out its timeouts; 120 s leaves 2.5
# times the worst)
. "$(dirname "$0")/lib.sh"

private_bins

T=iqn.2024-01.org.ietd.vm:health
P=127.0.0.1:3260

head -c 4M /dev/urandom > /var/tmp/h0.img
cat > /tmp/ietd.conf << EOF
Target $T
	Lun 0 Path=/var/tmp/h0.img,Type=fileio,IOMode=wt
EOF

# lun_state: the state field of LUN 0 in the volume view
lun_state() { sed -n 's/.*lun:0 state:\([0-9a-f]*\) .*/\1/p' /run/ietd/volume 2> /dev/null; }
state_is() { [ "$(lun_state)" = "$1" ]; }

iscsi_modules
ietd_start /tmp/ietd.conf --allow-dir /tmp/none || die "ietd did not start"
check_eq "LUN 0 runs" 0 "$(lun_state)"

# A restarted ietd adopts the running datapath (it cannot hold the ring itself).
kill -KILL "$IETD_PID"
wait "$IETD_PID" 2> /dev/null
cat /tmp/ietd.log >> /tmp/ietd-all.log
show_log_on_failure /tmp/ietd-all.log
ietd_start /tmp/ietd.conf --allow-dir /tmp/none || die "second ietd did not start"
dp=$(pgrep -x ietd-datapath)
[ -n "$dp" ] || die "no datapath"

# The backing file goes away and the datapath dies: the adopted ring cannot be re-opened.
mv /var/tmp/h0.img /var/tmp/h0.away
t0=$(now_ms)
kill -KILL "$dp"
if wait_until 20 state_is 2; then
    ok "volume view says failed after $(($(now_ms) - t0)) ms"
else
    fail "volume view still says state $(lun_state) 20 s after the failure"
fi
show=$(run_ietadm --op show --tid=1 --lun=0)
check_grep "ietadm shows the LUN failed" "lun:0 state:2 " "$show"
check_grep "ietadm says why" "problem:cannot re-open the adopted device" "$show"
check_grep "ietd logged it" "LUN not served by the datapath" "$(cat /tmp/ietd.log)"

# The file is back: handed over again within a health period or two.
mv /var/tmp/h0.away /var/tmp/h0.img
t0=$(now_ms)
if wait_until 20 state_is 0; then
    ok "served again after $(($(now_ms) - t0)) ms"
else
    fail "volume view still says state $(lun_state) 20 s after the file came back"
fi
check_grep "ietd logged the recovery" "LUN served by the datapath again" "$(cat /tmp/ietd.log)"
check_eq "ietadm shows it running, no problem line" 1 \
    "$(run_ietadm --op show --tid=1 --lun=0 | grep -c 'state:0 ')"

iscsi_start
iscsi_connect "$P" "$T"
iscsi_disks "$T" d0=0
check "the LUN serves the file's data" cmp /var/tmp/h0.img <(dd if="$d0" bs=64k iflag=direct status=none)
check "logout" iscsi_logout "$T" "$P"
rc=0
ietd_stop || rc=$?
check_eq "ietd exits 0 on SIGTERM" 0 "$rc"
check_eq "configfs has none of our objects" "" "$(lio_objects)"
