#!/bin/bash
# t-ietd-access.sh — who may log in to ietd's targets on the real kernel: target CHAP
# (wrong secret refused, right one accepted), mutual CHAP added live with ietadm, an
# initiator not in initiators.allow refused (and not listed by discovery), a node-ACL
# target whose session ietadm shows by sid from LIO's data, discovery CHAP added live,
# and after SIGTERM no object of ours and no discovery auth left in configfs.
# vm: --mem 2G --timeout 400
. "$(dirname "$0")/lib.sh"

private_bins

TC=iqn.2024-01.org.ietd.vm:chap
TA=iqn.2024-01.org.ietd.vm:acl
TX=iqn.2024-01.org.ietd.vm:closed
P=127.0.0.1:3260

truncate -s 8M /var/tmp/c.img /var/tmp/a.img /var/tmp/x.img
mkdir -p /tmp/allow
cat > /tmp/allow/initiators.allow << EOF
$TA $INITIATOR_IQN
$TX iqn.2024-01.org.ietd.test:someone-else
ALL ALL
EOF
cat > /tmp/ietd.conf << EOF
Target $TC
	IncomingUser alice alice-secret-1
	Lun 0 Path=/var/tmp/c.img
Target $TA
	Lun 0 Path=/var/tmp/a.img,IOMode=wb
Target $TX
	Lun 0 Path=/var/tmp/x.img
EOF

# ietd_sessions: "tid sid initiator" for every session ietd reports (IET's session view)
ietd_sessions() {
    python3 - "$IETD_SOCKET" << 'PY'
import json, socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
s.sendall(b'{"op":"sessions"}\n')
buf = b""
while not buf.endswith(b"\n"):
    buf += s.recv(65536)
for t in json.loads(buf)["data"]["targets"]:
    for x in t["sessions"]:
        print(t["tid"], x["sid"], x["initiator"])
PY
}

iscsi_modules
ietd_start /tmp/ietd.conf --allow-dir /tmp/allow || die "ietd did not start"
iscsi_start
found=$(iscsi_discover "$P" | xargs)
check_eq "discovery lists the targets this initiator may use" "$TA $TC" "$found"

# target CHAP
check_fails "login without CHAP is refused" iscsi_login "$TC" "$P"
check "CHAP settings" iscsi_chap "$TC" "$P" alice wrong-secret-99
check_fails "login with a wrong CHAP secret is refused" iscsi_login "$TC" "$P"
check "CHAP settings" iscsi_chap "$TC" "$P" alice alice-secret-1
check "login with the right CHAP secret" iscsi_login "$TC" "$P"
check "a disk appears" iscsi_wait_disk "$TC" 0
check "logout" iscsi_logout "$TC" "$P"

# mutual CHAP, the target's account added live
check "ietadm adds an OutgoingUser" run_ietadm --op new --tid=1 --user \
    --params OutgoingUser=target-one,Password=target-secret-2
check "mutual CHAP settings" iscsi_chap "$TC" "$P" alice alice-secret-1 target-one target-secret-2
check "login with mutual CHAP" iscsi_login "$TC" "$P"
check "logout" iscsi_logout "$TC" "$P"
check "mutual CHAP with a wrong target secret" iscsi_chap "$TC" "$P" alice alice-secret-1 target-one bad-target-secret
check_fails "the initiator refuses a target that fails mutual CHAP" iscsi_login "$TC" "$P"
check_fails "no password in ietd's log" grep -q "alice-secret-1\|target-secret-2" /tmp/ietd.log

# initiators.allow: not in the list -> no login, even knowing the name
iscsiadm -m node -T "$TX" -p "$P" -o new > /dev/null 2>&1
check_fails "an initiator not in initiators.allow cannot log in" iscsi_login "$TX" "$P"

# node-ACL target: the session is visible with its sid, ietadm shows it from LIO
check "login to the ACL target" iscsi_login "$TA" "$P"
iscsi_disks "$TA" d=0
check "I/O on the ACL target" dd if="$d" of=/dev/null bs=64k count=4 iflag=direct status=none
sess=$(ietd_sessions)
note "sessions: $sess"
sid=$(awk -v i="$INITIATOR_IQN" '$1 == 2 && $3 == i {print $2}' <<< "$sess")
[ -n "$sid" ] && [ "$sid" != 0 ] && ok "the ACL session has sid $sid" || fail "no sid for the ACL session"
show=$(run_ietadm --op show --tid=2 --sid="$sid" 2>&1)
check_grep "ietadm --op show --sid shows the negotiated keys" "^MaxBurstLength=[0-9]" "$show"
check_fails "an unknown sid is an error" run_ietadm --op show --tid=2 --sid=12345
check_fails "ietadm --op delete of a target with a session is refused" run_ietadm --op delete --tid=2
check "logout" iscsi_logout "$TA" "$P"

# discovery CHAP, added live
check "ietadm adds a discovery account" run_ietadm --op new --user \
    --params IncomingUser=disco,Password=disco-secret-3
check_fails "discovery without CHAP is refused" iscsi_discover "$P"
check_eq "discovery with CHAP" "$TA $TC" "$(iscsi_discover "$P" disco disco-secret-3 | xargs)"

rc=0
ietd_stop || rc=$?
check_eq "ietd exits 0 on SIGTERM" 0 "$rc"
check_eq "configfs has none of our objects" "" "$(lio_objects)"
D=$CFS/iscsi/discovery_auth
check_eq "discovery auth is no longer enforced" 0 "$(cat "$D/enforce_discovery_auth" 2> /dev/null || echo 0)"
check_fails "the datapath is gone" pgrep -x ietd-datapath
