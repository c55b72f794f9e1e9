#!/bin/bash
# t-ha-pacemaker.sh — Pacemaker itself runs the ocf:ietd: agents on a one-node cluster
# (Debian's corosync + pacemaker, started without systemd): a group of a target and a
# blockio LUN starts, is monitored, recovers when the target is deleted behind the
# cluster's back (the initiator gets its disk back with its data), and stops cleanly
# while an initiator is logged in.
# Not in the default run (about 3 minutes of VM time); run it with
#     tests/vm/suite --only ha-pacemaker
# suite: manual
# vm: --mem 2G --disk 128M --timeout 600
# (measured 163 s under TCG; the timeout leaves more than three times that)
. "$(dirname "$0")/lib.sh"

# Installed as on a node: the binaries in /usr/sbin (Pacemaker runs agents with its own
# PATH), the agents as provider "ietd". The guest's root is a throw-away overlay.
private_bins /usr/sbin
mkdir -p /usr/lib/ocf/resource.d/ietd
install -m 755 "$IETD_ROOT/conf/ocf/iSCSITarget" "$IETD_ROOT/conf/ocf/iSCSILogicalUnit" \
    /usr/lib/ocf/resource.d/ietd/
for c in corosync pacemakerd cibadmin crm_mon crm_resource crm_attribute; do
    command -v "$c" > /dev/null || die "$c missing (corosync, pacemaker, pacemaker-cli-utils)"
done

IQN=iqn.2024-01.org.ietd.vm:pcmk
P=127.0.0.1:3260
NODE=$(uname -n)

iscsi_modules
: > /tmp/ietd.conf
ietd_start /tmp/ietd.conf || die "ietd did not start"
iscsi_start

# ---- a one-node cluster
mkdir -p /etc/corosync /var/log/corosync /var/log/pacemaker
cat > /etc/corosync/corosync.conf << EOF
totem {
    version: 2
    cluster_name: ietdtest
    crypto_cipher: none
    crypto_hash: none
}
nodelist {
    node {
        name: $NODE
        nodeid: 1
        ring0_addr: 127.0.0.1
    }
}
quorum {
    provider: corosync_votequorum
}
logging {
    to_stderr: yes
    to_syslog: no
    to_logfile: no
}
EOF
export PCMK_logfile=/tmp/pacemaker.log PCMK_logfacility=none
show_log_on_failure /tmp/pacemaker.log
start_bg corosync corosync -f
check "corosync is up" wait_until 30 corosync-cfgtool -s
start_bg pacemaker pacemakerd
PCMK_PID=$BG_PID
online() { crm_mon -1 2> /dev/null | grep -q "Online: \[ $NODE \]"; }
check "Pacemaker sees the node online" wait_until 120 online
# One node: no fencing, no quorum, and a failed start is retried in place (with two
# nodes the default, a failed start bans the node, moves the group instead).
check "cluster properties for one node" sh -c \
    'crm_attribute -t crm_config -n stonith-enabled -v false &&
     crm_attribute -t crm_config -n no-quorum-policy -v ignore &&
     crm_attribute -t crm_config -n start-failure-is-fatal -v false'

# ---- the resources: a group is "target, then LUN, on the same node"
check "resources added to the CIB" cibadmin --create -o resources --xml-text "
<group id='g_iscsi'>
  <primitive id='p_target' class='ocf' provider='ietd' type='iSCSITarget'>
    <instance_attributes id='p_target-ia'>
      <nvpair id='p_target-iqn' name='iqn' value='$IQN'/>
    </instance_attributes>
    <operations>
      <op id='p_target-mon' name='monitor' interval='5s' timeout='10s'/>
      <op id='p_target-stop' name='stop' interval='0' timeout='30s'/>
    </operations>
  </primitive>
  <primitive id='p_lun0' class='ocf' provider='ietd' type='iSCSILogicalUnit'>
    <instance_attributes id='p_lun0-ia'>
      <nvpair id='p_lun0-iqn' name='target_iqn' value='$IQN'/>
      <nvpair id='p_lun0-lun' name='lun' value='0'/>
      <nvpair id='p_lun0-path' name='path' value='/dev/vda'/>
    </instance_attributes>
    <operations>
      <op id='p_lun0-mon' name='monitor' interval='5s' timeout='10s'/>
    </operations>
  </primitive>
</group>"
running() { crm_resource --locate -r "$1" 2> /dev/null | grep -q "is running on: $NODE"; }
lun_up() { run_ietadm --op show | grep -q "lun:0 .*iotype:blockio .*path:/dev/vda"; }
check "Pacemaker starts the target" wait_until 60 running p_target
check "Pacemaker starts the LUN" wait_until 60 running p_lun0
check "the LUN is in ietd's volume view" wait_until 10 lun_up
monitored() { crm_resource --list-operations -r "$1" 2> /dev/null | grep -q "$1_monitor_5000.*rc=0"; }
check "the target is monitored" wait_until 30 monitored p_target
check "the LUN is monitored" wait_until 30 monitored p_lun0
crm_resource --list-operations -r p_target 2>&1 | sed 's/^/# /'

# ---- an initiator with data on the disk
check_eq "discovery" "$IQN" "$(iscsi_discover "$P" | xargs)"
check "node settings: replacement_timeout 120 s" \
    iscsi_node_set "$IQN" "$P" node.session.timeo.replacement_timeout 120
check "login" iscsi_login "$IQN" "$P"
iscsi_disks "$IQN" dev=0
head -c 4M /dev/urandom > /tmp/data
check "4 MiB written" dd if=/tmp/data of="$dev" bs=1M oflag=direct status=none
sum0=$(md5sum < /tmp/data)

# ---- broken behind the cluster's back: the target deleted with ietadm. Whichever
# monitor notices first, the group ends up restarted: target, then LUN.
tid=$(run_ietadm --op show | awk '/^tid:/ {sub("tid:", "", $1); print $1; exit}')
check "a session is listed" wait_until 10 grep -q "^	sid:" /run/ietd/session
sid=$(awk '/^\tsid:/ {sub("sid:", "", $1); print $1; exit}' /run/ietd/session)
check "session closed by hand" run_ietadm --op delete --tid="$tid" --sid="$sid"
check "target deleted by hand" run_ietadm --op delete --tid="$tid"
failed() { crm_mon -1 2> /dev/null | grep -q "Failed Resource Actions"; }
check "Pacemaker's monitor notices" wait_until 30 failed
crm_mon -1 | sed 's/^/# /'
check "Pacemaker restarts the target and the LUN" wait_until 60 lun_up
check "the group runs again" wait_until 30 running p_lun0
back() { dd if="$dev" of=/dev/null bs=4k count=1 iflag=direct status=none; }
check "the initiator logged in again and reads" wait_until 60 back
check_eq "the data is intact" "$sum0" \
    "$(dd if="$dev" bs=1M count=4 iflag=direct status=none | md5sum)"

# ---- a clean stop with the initiator logged in
check "target-role=Stopped" crm_resource -r g_iscsi --meta -p target-role -v Stopped
stopped() { ! running p_target && ! running p_lun0 && [ -z "$(run_ietadm --op show)" ]; }
check "Pacemaker stops both with the session live" wait_until 60 stopped
crm_mon -1 | sed 's/^/# /'
failed_stop() { crm_mon -1 2> /dev/null | grep -q "stop.*error\|stop.*Timed Out"; }
check_fails "no failed stop" failed_stop
rc=0
stop_pid "$PCMK_PID" 60 || rc=$?
check_eq "pacemakerd exits 0" 0 "$rc"
check "logout" iscsi_logout "$IQN" "$P"
rc=0
ietd_stop || rc=$?
check_eq "ietd exits 0 on SIGTERM" 0 "$rc"
check_eq "configfs has none of our objects" "" "$(lio_objects)"
