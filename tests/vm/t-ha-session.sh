#!/bin/bash
# t-ha-session.sh — `ietadm --op delete --tid --sid [--cid]` closes a live open-iscsi
# session on LIO, for a node-ACL target (CHAP, two mapped LUNs: the ACL is kept exactly)
# and for a demo-mode target (no ACL directory: LIO's dynamic ACL); the initiator logs in
# again by itself and does I/O; `--op delete --tid` stays refused while a session exists.
# vm: --mem 1G --timeout 200
# (measured 70-95 s under TCG; the timeout leaves twice the longest)
. "$(dirname "$0")/lib.sh"

# Private copies: a host-side rebuild during the run must not swap binaries under us.
private_bins

TD=iqn.2024-01.org.ietd.vm:demo
TA=iqn.2024-01.org.ietd.vm:acl
P=127.0.0.1:3260

mkdir -p /tmp/allow
cat > /tmp/allow/initiators.allow << EOF
$TA $INITIATOR_IQN
ALL ALL
EOF
cat > /tmp/ietd.conf << EOF
Target $TD
	Lun 0 Type=nullio,Blocks=32768
Target $TA
	IncomingUser alice alice-secret-1
	QueuedCommands 16
	Lun 0 Type=nullio,Blocks=32768
	Lun 3 Type=nullio,Blocks=32768
EOF

# view_sessions TID: "sid cid" lines of the target in IET's session view (cid "-" for a
# session without connection lines).
view_sessions() {
    awk -v t="$1" '
        /^tid:/ { on = ($1 == "tid:" t); next }
        on && /^\tsid:/ { if (sid != "" && !c) print sid, "-"; sub("sid:", "", $1); sid = $1; c = 0; next }
        on && /^\t\tcid:/ { sub("cid:", "", $1); print sid, $1; c = 1 }
        END { if (sid != "" && !c) print sid, "-" }' /run/ietd/session
}
# conn_errors: how often the initiator saw its connection dropped.
conn_errors() { dmesg | grep -c 'detected conn error'; }
# acl_snapshot: everything a node ACL holds that an initiator depends on.
acl_snapshot() {
    local a=$CFS/iscsi/$TA/tpgt_1/acls/$INITIATOR_IQN f
    (
        cd "$a" || exit 1
        for f in cmdsn_depth attrib/* auth/* lun_*/write_protect; do
            echo "$f=$(cat "$f")"
        done
        for f in lun_*/*; do
            [ -L "$f" ] && echo "$f -> $(readlink "$f")"
        done
    )
}
# same_acl WHAT: the ACL matches the snapshot taken before the first close.
same_acl() {
    local now
    now=$(acl_snapshot)
    if [ "$now" = "$before" ]; then
        ok "$1"
    else
        fail "$1"
        diff <(echo "$before") <(echo "$now") | sed 's/^/# /'
    fi
}
# new_session TID OLD_SID: the view lists a session of TID whose sid is not OLD_SID.
new_session() { view_sessions "$1" | awk -v o="$2" '$1 != o {f = 1} END {exit !f}'; }

iscsi_modules
ietd_start /tmp/ietd.conf --allow-dir /tmp/allow || die "ietd did not start"
iscsi_start
check_eq "discovery" "$TA $TD" "$(iscsi_discover "$P" | xargs)"
check "CHAP settings" iscsi_chap "$TA" "$P" alice alice-secret-1
check "login to the node-ACL target" iscsi_login "$TA" "$P"
check "login to the demo-mode target" iscsi_login "$TD" "$P"
iscsi_disks "$TA" da=3
iscsi_disks "$TD" dd_=0
before=$(acl_snapshot)
check_grep "the snapshot holds the CHAP user and both LUN links" "auth/userid=alice" "$before"

# node-ACL target: close the connection listed in the view
read -r sid cid <<< "$(view_sessions 2)"
note "ACL target session: sid $sid cid $cid"
[ -n "$sid" ] && [ "$cid" = 0 ] && ok "the view lists the session with cid 0" || fail "no session in the view"
check_fails "ietadm --op delete --tid refuses a target with a session" run_ietadm --op delete --tid=2
e0=$(conn_errors)
check "ietadm --op delete --sid --cid answers 0" run_ietadm --op delete --tid=2 --sid="$sid" --cid="$cid"
check "the initiator saw its connection closed" test "$(conn_errors)" -gt "$e0"
check "the initiator logged in again (a new session)" wait_until 30 new_session 2 "$sid"
same_acl "the ACL is as it was (CHAP, depth, mapped LUNs)"
check "I/O on LUN 3 after the new login" dd if="$da" of=/dev/null bs=64k count=8 iflag=direct status=none
check_fails "an unknown cid is refused" run_ietadm --op delete --tid=2 --sid="$sid" --cid=7

# the same target, the whole session (no --cid)
read -r sid2 _ <<< "$(view_sessions 2)"
e0=$(conn_errors)
check "ietadm --op delete --sid (no --cid) answers 0" run_ietadm --op delete --tid=2 --sid="$sid2"
check "the initiator saw its connection closed again" test "$(conn_errors)" -gt "$e0"
check "the initiator logged in again" wait_until 30 new_session 2 "$sid2"
same_acl "the ACL is still as it was"

# demo-mode target: LIO names the initiator only; the sid is derived from the name
read -r dsid dcid <<< "$(view_sessions 1)"
note "demo session: sid $dsid cid $dcid"
[ -n "$dsid" ] && [ "$dsid" != 0 ] && ok "the demo session has a sid" || fail "no sid for the demo session"
e0=$(conn_errors)
check "ietadm --op delete --sid on the demo target answers 0" run_ietadm --op delete --tid=1 --sid="$dsid"
check "the initiator saw the demo connection closed" test "$(conn_errors)" -gt "$e0"
check_eq "no ACL directory is left on the demo target" "" "$(ls "$CFS/iscsi/$TD/tpgt_1/acls")"
check "the demo initiator logged in again (listed with the same sid)" \
    wait_until 30 sh -c "grep -q '^	sid:$dsid ' /run/ietd/session"
check "write on the demo disk after the new login (dynamic ACL read-write again)" \
    dd if=/dev/zero of="$dd_" bs=64k count=8 oflag=direct status=none

check "logout" iscsi_logout "$TA" "$P"
check "logout" iscsi_logout "$TD" "$P"
check "without sessions the target can be deleted" run_ietadm --op delete --tid=2
rc=0
ietd_stop || rc=$?
check_eq "ietd exits 0 on SIGTERM" 0 "$rc"
check_eq "configfs has none of our objects" "" "$(lio_objects)"
