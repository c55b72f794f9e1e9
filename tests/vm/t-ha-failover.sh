#!/bin/bash
# t-ha-failover.sh — the ocf:ietd: agents (conf/ocf) as a cluster drives them: ocf-tester
# passes both (the target's first stop with an open-iscsi initiator logged in), then a
# failover under fio --verify: target + blockio LUN on a virtio disk (the shared disk)
# made by the agents, the address the initiator uses (the cluster's virtual IP) taken
# away, the agents stop the resources with the session live and start them again with
# the same parameters (as the surviving node would), the address comes back: fio ends
# with no error and the disk keeps its device, serial (VPD 0x80) and identifiers (0x83).
# vm: --mem 2G --disk 256M --timeout 400
# (measured 110-157 s under TCG, the longest on a loaded host; the timeout leaves 2.5
# times the longest, since fio's pace and the relogin depend on the host's load)
. "$(dirname "$0")/lib.sh"

# The binaries and the agents as installed on a node: ietadm on PATH, the agents under
# the OCF root as provider "ietd".
private_bins
export PATH=/tmp/bin:$PATH
export OCF_ROOT=/usr/lib/ocf
RA=$OCF_ROOT/resource.d/ietd
[ -r "$OCF_ROOT/lib/heartbeat/ocf-shellfuncs" ] || die "resource-agents is not installed on the host"
command -v ocf-tester > /dev/null || die "ocf-tester missing (resource-agents)"
mkdir -p "$RA"
install -m 755 "$IETD_ROOT/conf/ocf/iSCSITarget" "$IETD_ROOT/conf/ocf/iSCSILogicalUnit" "$RA/"

IQN=iqn.2024-01.org.ietd.vm:ha
VIP=10.99.0.1 # stands in for the cluster's IPaddr2 resource
P=$VIP:3260
DISK=/dev/vda

# ra AGENT ACTION NAME PARAM=VALUE...: one agent call as Pacemaker makes it.
ra() {
    local agent=$1 action=$2 name=$3 kv
    shift 3
    (
        export OCF_RESOURCE_INSTANCE=$name __OCF_ACTION=$action OCF_RESKEY_CRM_meta_interval=0
        for kv in "$@"; do export "OCF_RESKEY_$kv"; done
        "$RA/$agent" "$action"
    )
}
TGT=(iSCSITarget p_target "iqn=$IQN")
LU=(iSCSILogicalUnit p_lun0 "target_iqn=$IQN" lun=0 "path=$DISK")
ra_target() { ra "${TGT[0]}" "$1" "${TGT[@]:1}"; }
ra_lun() { ra "${LU[0]}" "$1" "${LU[@]:1}"; }
conn_errors() { dmesg | grep -c 'detected conn error'; }
vpd() { sg_vpd --page="$1" --hex "$2" 2> /dev/null; }

iscsi_modules
: > /tmp/ietd.conf # a cluster node: every target comes from the agents
ietd_start /tmp/ietd.conf || die "ietd did not start"
ip addr add "$VIP/32" dev lo || die "cannot add $VIP"
iscsi_start

# ---- ocf-tester, the target's first stop with a session live
check "the target agent starts the target" ra_target start
check "the LU agent adds the LUN" ra_lun start
check_eq "discovery through the virtual IP" "$IQN" "$(iscsi_discover "$P" | xargs)"
check "login" iscsi_login "$IQN" "$P"
check "a disk appears" iscsi_wait_disk "$IQN" 0
check "a session is listed (the view is refreshed every 3 s)" wait_until 10 grep -q "^	sid:" /run/ietd/session
e0=$(conn_errors)
ocf-tester -n p_target -o iqn="$IQN" "$RA/iSCSITarget" > /tmp/ocf-tester-target.txt 2>&1
rc=$?
sed 's/^/# /' /tmp/ocf-tester-target.txt
check_eq "ocf-tester passes iSCSITarget (stopped with an initiator logged in)" 0 "$rc"
check "the initiator's connection was closed by the stop" test "$(conn_errors)" -gt "$e0"
check "iscsiadm logs out (the target is gone)" iscsi_logout "$IQN" "$P"

check "the target agent starts the target again" ra_target start
ocf-tester -n p_lun0 -o target_iqn="$IQN" -o lun=0 -o path="$DISK" "$RA/iSCSILogicalUnit" \
    > /tmp/ocf-tester-lun.txt 2>&1
rc=$?
sed 's/^/# /' /tmp/ocf-tester-lun.txt
check_eq "ocf-tester passes iSCSILogicalUnit" 0 "$rc"
check_fails "the target agent refuses allowed_initiators (access comes from initiators.allow)" \
    ra "${TGT[0]}" validate-all "${TGT[@]:1}" "allowed_initiators=iqn.x"
check "the target agent stops the target" ra_target stop

# The README's migration note: heartbeat's own agent, with our ietadm on PATH, picks
# implementation=iet and fails for want of /proc/net/iet.
rc=0
(
    export OCF_RESOURCE_INSTANCE=p_old __OCF_ACTION=start OCF_RESKEY_iqn=iqn.2024-01.org.ietd.vm:old
    "$OCF_ROOT/resource.d/heartbeat/iSCSITarget" start
) > /tmp/heartbeat.txt 2>&1 || rc=$?
sed 's/^/# /' /tmp/heartbeat.txt
check_eq "ocf:heartbeat:iSCSITarget fails on an ietd node (OCF_ERR_INSTALLED)" 5 "$rc"

# ---- failover under fio --verify
check "start: target" ra_target start
check "start: LUN (blockio on the shared disk)" ra_lun start
check_grep "the LUN is blockio on $DISK" "lun:0 .*iotype:blockio .*path:$DISK\$" "$(run_ietadm --op show)"
check "node settings: replacement_timeout 120 s (queue I/O through a failover)" \
    iscsi_node_set "$IQN" "$P" node.session.timeo.replacement_timeout 120
check "login" iscsi_login "$IQN" "$P"
iscsi_disks "$IQN" dev=0
sn0=$(vpd 0x80 "$dev")
di0=$(vpd 0x83 "$dev")
note "VPD 0x80: $(echo $sn0)"
[ -n "$sn0" ] && [ -n "$di0" ] && ok "VPD 0x80 and 0x83 read" || fail "VPD pages not read"
sid0=$(awk '/^\tsid:/ {sub("sid:", "", $1); print $1; exit}' /run/ietd/session)

fio --name=failover --filename="$dev" --ioengine=libaio --direct=1 --iodepth=8 \
    --rw=randwrite --bs=4k --size=48M --rate_iops=400 --verify=crc32c --verify_fatal=1 \
    --verify_state_save=0 \
    --output=/tmp/fio.txt > /dev/null 2>&1 &
FIO=$!
at_exit kill "$FIO"
sleep 8
e0=$(conn_errors)
t0=$(now_ms)
# The failing node: the virtual IP goes first (constraints: IP after the LUN after the
# target), then the LUN and the target, the session still logged in.
ip addr del "$VIP/32" dev lo
check "failing node: the LU agent stops the LUN" ra_lun stop
check "failing node: the target agent stops the target, session live" ra_target stop
check_eq "failing node: no target left" "" "$(run_ietadm --op show)"
# The surviving node: same parameters, same shared disk, then the address.
check "surviving node: the target agent starts the target" ra_target start
check "surviving node: the LU agent starts the LUN" ra_lun start
ip addr add "$VIP/32" dev lo
note "resources moved in $(($(now_ms) - t0)) ms"
new_sid() { awk -v o="$sid0" '/^\tsid:/ {sub("sid:", "", $1); if ($1 != o) f = 1} END {exit !f}' /run/ietd/session; }
check "the initiator logged in again" wait_until 60 new_sid
note "relogin $(($(now_ms) - t0)) ms after the stop began"
check "the initiator had lost its connection" test "$(conn_errors)" -gt "$e0"
rc=0
wait "$FIO" || rc=$?
sed 's/^/# /' /tmp/fio.txt
check_eq "fio --verify exits 0 across the failover" 0 "$rc"
check_grep "fio reports no error" "err= 0" "$(cat /tmp/fio.txt)"
check_grep "fio read back and verified all it wrote" "READ: bw=.*io=48.0MiB" "$(cat /tmp/fio.txt)"
check_eq "same disk device after the failover" "$dev" "$(iscsi_disk "$IQN" 0)"
check_eq "same unit serial (VPD 0x80)" "$sn0" "$(vpd 0x80 "$dev")"
check_eq "same device identifiers (VPD 0x83)" "$di0" "$(vpd 0x83 "$dev")"
check_fails "no I/O error in the kernel log" sh -c "dmesg | grep -q 'I/O error.*$(basename "$dev")'"

check "logout" iscsi_logout "$IQN" "$P"
check "stop: LUN" ra_lun stop
check "stop: target" ra_target stop
rc=0
ietd_stop || rc=$?
check_eq "ietd exits 0 on SIGTERM" 0 "$rc"
check_eq "configfs has none of our objects" "" "$(lio_objects)"
