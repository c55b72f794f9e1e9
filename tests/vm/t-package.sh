#!/bin/bash
# t-package.sh — the Debian package on a host that ran IET, under systemd as init: an
# IET /etc/iet/ietd.conf is in place, `dpkg -i` keeps it and the service starts from
# /usr/sbin serving it (CHAP login, data read); `systemctl status`, `reload` (SIGHUP: a
# LUN added to the file appears), a crash (kill -9 of ietd: Restart= brings it back and it
# adopts the running datapath, the session survives), `stop` (LIO clean); the journal has
# one line per event, in the shared log format, with priorities, and no CHAP secret;
# `systemd-analyze verify` and `security` on the installed unit; every manual page renders
# without warnings; `dpkg -r` stops the service and leaves LIO clean.
# The package comes from tests/vm/build-deb (tests/run and tests/vm/suite build it).
# vm: --init systemd --mem 2G --timeout 420
. "$(dirname "$0")/lib.sh"

DEB=${IETD_DEB:-}
if [ -z "$DEB" ]; then
    DEB=$(ls -t "$IETD_BIN"/../debian/ietd_*.deb 2> /dev/null | head -n 1)
fi
[ -n "$DEB" ] && [ -f "$DEB" ] || die "no ietd_*.deb next to $IETD_BIN (run tests/vm/build-deb on the host)"
note "package: $DEB; test started at $(cut -d' ' -f1 /proc/uptime) s of guest uptime"
[ "$(ps -p 1 -o comm=)" = systemd ] || die "PID 1 is not systemd (run with --init systemd)"

T=iqn.2001-04.com.example:migrated.disk1
P=127.0.0.1:3260
USER=migrated
SECRET=mig-chap-secret-1234
CONF=/etc/iet/ietd.conf

# phase NAME: note how long the previous phase took (the VM budget is watched)
PHASE=setup PHASE_T0=$(now_ms)
phase() {
    note "phase $PHASE: $(($(now_ms) - PHASE_T0)) ms (at $(cut -d' ' -f1 /proc/uptime) s uptime)"
    PHASE=$1 PHASE_T0=$(now_ms)
}

# ---------------------------------------------------------------- an IET host
# What an IET 1.4.20 host had: its ietd.conf, with a target CHAP account and a file LUN.
truncate -s 32M /var/tmp/mig0.img
printf 'migrated-data-%s\n' "$(seq 1 200)" | dd of=/var/tmp/mig0.img conv=notrunc status=none
truncate -s 8M /var/tmp/mig1.img
mkdir -p /etc/iet
cat > "$CONF" << EOF
# ietd.conf of an IET host
Target $T
	IncomingUser $USER $SECRET
	Lun 0 Path=/var/tmp/mig0.img,Type=fileio
	MaxConnections 1
EOF
conf_md5=$(md5sum < "$CONF")

# The host's root may be a container image whose policy-rc.d forbids service starts;
# the guest is a machine of its own, where installing a package starts its service.
rm -f /usr/sbin/policy-rc.d
# man-db's trigger re-indexes every page over 9p: 60 s under TCG for nothing we test
# (man finds a page without its index).
rm -f /var/lib/man-db/auto-update
lio_modules
at_exit lio_teardown
phase install
out=$(dpkg -i --force-confold "$DEB" 2>&1)
rc=$?
check_eq "dpkg -i installs the package" 0 "$rc" || printf '%s\n' "$out" | tail -n 20 | sed 's/^/       | /'
# On a failure midway: stop the service and remove the package (dpkg reads its whole
# database, seconds under TCG: only when the test did not get to remove it).
at_exit sh -c 'systemctl stop ietd; dpkg-query -W -f="\${Status}" ietd 2>/dev/null | grep -q " installed" && dpkg -r ietd'
check_eq "IET's ietd.conf is kept as it was" "$conf_md5" "$(md5sum < "$CONF")"
conffiles=$(dpkg-query -W -f='${Conffiles}\n' ietd)
for f in /etc/iet/ietd.conf /etc/iet/initiators.allow /etc/iet/targets.allow; do
    check_grep "$f is a conffile" "^ $f " "$conffiles"
done
for b in ietd ietd-datapath ietadm; do
    check "/usr/sbin/$b installed" test -x /usr/sbin/$b
done
check "the unit is installed and enabled" systemctl is-enabled ietd

# ---------------------------------------------------------------- start (by postinst)
phase start
export IETD_SOCKET=/run/ietd/ietadm.sock
ietd_answers() { /usr/sbin/ietadm --op show > /dev/null 2>&1; }
wait_until 60 ietd_answers
check "the package started the service (systemctl is-active)" systemctl is-active ietd
status=$(systemctl status ietd --no-pager 2>&1)
check_grep "systemctl status: active (running)" 'Active: active \(running\)' "$status"
main_pid=$(systemctl show -p MainPID --value ietd)
check_eq "the service runs /usr/sbin/ietd" /usr/sbin/ietd "$(readlink /proc/"$main_pid"/exe)"
dp_pid=$(pgrep -x ietd-datapath | head -n 1)
check_eq "its datapath is /usr/sbin/ietd-datapath" /usr/sbin/ietd-datapath "$(readlink /proc/"$dp_pid"/exe 2> /dev/null)"
check_grep "ietadm shows the migrated target" "name:$T" "$(/usr/sbin/ietadm --op show)"

# The migrated target serves: CHAP login, the data written before the install reads back.
iscsi_start
at_exit iscsi_logout "$T" "$P"
check "discovery finds the migrated target" sh -c "iscsiadm -m discovery -t st -p $P | grep -q '$T'"
iscsi_chap "$T" "$P" "$USER" "$SECRET"
check "CHAP login with the migrated account" iscsi_login "$T" "$P"
disk=$(iscsi_wait_disk "$T" 0) || fail "no disk for LUN 0"
check_grep "LUN 0 serves the file's data" '^migrated-data-1$' "$(dd if="$disk" bs=4096 count=1 iflag=direct status=none | head -n 1)"

# ---------------------------------------------------------------- reload
phase reload
journal() { journalctl -u ietd -o cat --no-pager; }
echo "	Lun 1 Path=/var/tmp/mig1.img,Type=fileio,IOMode=wb" >> "$CONF"
check "systemctl reload ietd" systemctl reload ietd
lun1_up() { /usr/sbin/ietadm --op show | grep -q 'lun:1 '; }
check "the reload applied the file: LUN 1 exists" wait_until 30 lun1_up
conf_md5=$(md5sum < "$CONF")
check_grep "the journal says the configuration was reloaded" 'configuration reloaded' "$(journal)"
check_eq "the reload did not restart ietd" "$main_pid" "$(systemctl show -p MainPID --value ietd)"

# ---------------------------------------------------------------- crash and restart
phase crash
kill -KILL "$main_pid"
restarted() {
    local p
    p=$(systemctl show -p MainPID --value ietd)
    [ "$p" != 0 ] && [ "$p" != "$main_pid" ] && ietd_answers
}
check "after kill -9, Restart= brings ietd back" wait_until 60 restarted
new_pid=$(systemctl show -p MainPID --value ietd)
check_eq "the running datapath was adopted, not replaced" "$dp_pid" "$(pgrep -x ietd-datapath | head -n 1)"
check_grep "the journal says so" 'adopted the running datapath' "$(journal)"
check_eq "systemd counted one restart" 1 "$(systemctl show -p NRestarts --value ietd)"
check_grep "the session survived: LUN 0 still reads" '^migrated-data-1$' "$(dd if="$disk" bs=4096 count=1 iflag=direct status=none | head -n 1)"
check_grep "ietadm shows both LUNs after the restart" 'lun:1 ' "$(/usr/sbin/ietadm --op show)"
iscsi_logout "$T" "$P" > /dev/null

# ---------------------------------------------------------------- stop
phase stop
check "systemctl stop ietd" systemctl stop ietd
check_eq "the stopped service is inactive" inactive "$(systemctl is-active ietd)"
check_eq "stop leaves LIO clean" "" "$(lio_objects)"
check_eq "stop ends the datapath" "" "$(pgrep -x ietd-datapath)"

# ---------------------------------------------------------------- the journal
phase journal
j=$(journal)
count() { printf '%s\n' "$j" | grep -c -- "$1"; }
# Two starts: the first creates the target, the restart adopts it (the state model logs
# "target created" for both, the provisioner says "target adopted" for the second).
check_eq "one 'target created' line per start" 2 "$(count "INFO target created name=$T tid=1")"
check_eq "one 'target adopted' line" 1 "$(count "INFO target adopted tid=1 target=$T ")"
check_eq "one 'lun adopted' line per LUN" 2 "$(count "INFO lun adopted ")"
check_eq "one 'LUN 1 added' line" 1 "$(count 'reload: target 1 LUN 1 added')"
check_eq "one 'configuration reloaded' line" 1 "$(count 'configuration reloaded')"
check_eq "one 'adopted the running datapath' line" 1 "$(count 'adopted the running datapath')"
check_eq "one 'ietd stopped' line" 1 "$(count 'ietd stopped')"
check_grep "datapath lines name the LUN as ietd does" \
    "^ietd-datapath\[$dp_pid\] INFO attached .*lun=0 target=$T " "$j"
check_grep "ietd lines: PROG[PID] LEVEL message key=value" "^ietd\[$main_pid\] INFO target created name=$T tid=1\$" "$j"
check_grep "ietd names the LUN the same way" "^ietd\[$main_pid\] INFO device attached to the datapath lun=0 target=$T " "$j"
check_eq "no line carries a time stamp of ours (the journal has its own)" 0 \
    "$(count '^[0-9]\{4\}-[0-9][0-9]-[0-9][0-9]T')"
check_eq "no line shows the CHAP secret" 0 "$(count "$SECRET")"
prio=$(journalctl -u ietd -o json --no-pager | jq -r 'select(.MESSAGE | test(" WARN ")) | .PRIORITY' | sort -u)
[ -z "$prio" ] || check_eq "WARN lines have the journal priority warning" 4 "$prio"
prio=$(journalctl -u ietd -o json --no-pager | jq -r 'select(.MESSAGE | test("INFO target created")) | .PRIORITY' | sort -u)
check_eq "INFO lines have the journal priority info" 6 "$prio"
note "journal of the run (journalctl -u ietd -o cat):"
printf '%s\n' "$j" | sed 's/^/#   /'

# ---------------------------------------------------------------- the unit, the pages
phase unit-and-pages
v=$(systemd-analyze verify /lib/systemd/system/ietd.service 2>&1)
check_eq "systemd-analyze verify finds nothing" "" "$v"
sec=$(systemd-analyze security --no-pager ietd.service 2>&1)
score=$(printf '%s\n' "$sec" | grep -o 'Overall exposure level for ietd.service: .*')
check_grep "systemd-analyze security gives a score" 'Overall exposure level' "$score"
note "$score"
for p in /usr/share/man/man8/ietd.8.gz /usr/share/man/man8/ietadm.8.gz /usr/share/man/man5/ietd.conf.5.gz; do
    err=$(MANWIDTH=80 man --warnings -l "$p" 2>&1 > /dev/null)
    check_eq "man --warnings -l ${p##*/}: no warnings" "" "$err"
done
check "man ietd finds the installed page" sh -c 'MANWIDTH=80 man ietd 2>/dev/null | grep -q "IET-compatible iSCSI target daemon"'

# ---------------------------------------------------------------- removal
phase removal
check "systemctl start ietd (again)" systemctl start ietd
wait_until 60 ietd_answers
check "ietd serves again before the removal" sh -c "/usr/sbin/ietadm --op show | grep -q 'name:$T'"
check "dpkg -r ietd" dpkg -r ietd
check_eq "removal stops the service" "" "$(pgrep -x ietd; pgrep -x ietd-datapath)"
check_eq "removal leaves LIO clean" "" "$(lio_objects)"
check "the binaries are gone" sh -c '! test -e /usr/sbin/ietd && ! test -e /usr/sbin/ietadm'
check_eq "the administrator's ietd.conf stays (remove, not purge)" "$conf_md5" "$(md5sum < "$CONF")"
phase end
