#!/bin/bash
# t-netlink.sh — the TCM-USER netlink listener (ietd::netlink, driven by the nl-listen
# example) against the real kernel: events for added/removed/reconfigured devices with the
# right UIO name and minor, replies that release a waiting configfs write (reply mode is
# turned on with SET_FEATURES here only because the VM is thrown away), foreign devices
# left unanswered, and stuck writes broken by the block/reset_netlink dance.
# vm: --mem 1G --timeout 240
. "$(dirname "$0")/lib.sh"

[ -x "$IETD_BIN/examples/nl-listen" ] ||
    die "$IETD_BIN/examples/nl-listen missing: run 'cargo build -p ietd --examples' on the host first"
# A private copy: a host-side rebuild during the run must not swap the binary under us.
NL=/tmp/nl-listen
cp "$IETD_BIN/examples/nl-listen" "$NL" || die "cannot copy nl-listen"
HBA=9
LOG=/tmp/nl.log
PARAMS=/sys/module/target_core_user/parameters

# write_bounded FILE VALUE [SECS]: writes VALUE to FILE with one write(2) in the
# background and waits at most SECS (default 10) for it to return.  Returns the write's
# status, or 124 when it is still blocked: a netlink wait is uninterruptible, so `timeout`
# could not end it; the writer is left behind in WB_PID for the caller to deal with.
# Not printf: shells and coreutils retry a write that failed with EINTR, which is exactly
# how reset_netlink fails a stuck write, and the retried `enable` would wait again.
write_bounded() {
    local f=$1 v=$2 t=${3:-10}
    "$NL" write-once "$f" "$v" > /dev/null &
    WB_PID=$!
    if ! wait_until "$t" sh -c "! kill -0 $WB_PID 2>/dev/null || grep -q '^State:.*Z' /proc/$WB_PID/status"; then
        return 124
    fi
    wait "$WB_PID"
}

# mkdev NAME DEV_CONFIG [CONTROL...]: an unconfigured TCMU device (not enabled); echoes it.
mkdev() {
    local d=$CFS/core/user_$HBA/$1 opt
    shift
    mkdir -p "$d" || lib_err "mkdir $d" || return 1
    printf %s "dev_size=1048576" > "$d/control" || lib_err "dev_size" || return 1
    printf %s "dev_config=$1" > "$d/control" || lib_err "dev_config" || return 1
    shift
    for opt in "$@"; do printf %s "$opt" > "$d/control" || lib_err "control $opt" || return 1; done
    echo "$d"
}

# jsonl JQ-ARGS...: jq over the JSON lines of the listener's log (log lines are skipped).
jsonl() { jq -R "${@:1:$#-1}" "fromjson? | ${!#}" "$LOG"; }

# event_line KIND DEVICE: the listener's JSON line for that event (last one), or fail.
event_line() {
    jsonl -c --arg k "$1" --arg d "$2" 'select(.event.kind.type == $k and .event.device == $d)' \
        | tail -n 1 | grep .
}

# expect_event WHAT KIND DEVICE MINOR RESPONSE_JQ: waits for the event and checks the
# minor and the listener's response (a jq expression over .response).
expect_event() {
    local what=$1 kind=$2 dev=$3 minor=$4 resp=$5 line
    if ! wait_until 10 event_line "$kind" "$dev"; then
        fail "$what: no $kind event for $dev"
        return 1
    fi
    line=$(event_line "$kind" "$dev")
    check_eq "$what: minor of the $kind event" "$minor" "$(jq -r .event.minor <<< "$line")"
    check_eq "$what: $kind response" true "$(jq -r ".response | $resp" <<< "$line")"
    check "$what: DEVICE_ID present, version 2" \
        jq -e '.event.device_id != null and .event.version == 2' <<< "$line"
}

# ---------------------------------------------------------------- module not loaded
out=$("$NL" listen --timeout-secs 1 2> /dev/null)
check_grep "without target_core_user, open fails with a typed error naming the module" \
    'TCM-USER not found.*modprobe target_core_user' "$out"
check_grep "unblock with the module absent does nothing" '"ModuleNotLoaded"' "$("$NL" unblock 2> /dev/null)"

lio_modules
at_exit lio_teardown
check "block_netlink / reset_netlink exist" test -e "$PARAMS/block_netlink" -a -e "$PARAMS/reset_netlink"

start_bg nl "$NL" listen --timeout-secs 200
NL_PID=$BG_PID
wait_until 10 grep -q '"ready":true' "$LOG" || die "listener did not come up"
ok "listener joined TCM-USER/config ($(head -n 1 "$LOG"))"

# ---------------------------------------------------------------- 1. ours, opted out
DEV=nltest
NAME=tcm-user/$HBA/$DEV/ietd/x
d=$(mkdev $DEV ietd/x nl_reply_supported=-1) || die "mkdev $DEV"
write_bounded "$d/enable" 1
check_eq "opted-out device: enable returns at once" 0 $?
uio=$(uio_by_name "$NAME") || die "no uio device named $NAME"
minor=${uio#uio}
expect_event "opted-out device" Added "$NAME" "$minor" '.Replied.status == 0 and .Replied.outcome == "NotWaiting"'
check "listener marks it ours, hba $HBA, name $DEV" \
    jsonl -e --arg d "$NAME" "select(.event.device == \$d) | .ours and .hba == $HBA and .name == \"$DEV\""
write_bounded "$d/attrib/emulate_write_cache" 1
check_eq "opted-out device: emulate_write_cache write returns" 0 $?
wc_seen() { jsonl -e --arg d "$NAME" 'select(.event.device == $d and .event.kind.change.WriteCache == true) | .response.Replied.status == 0'; }
wait_until 10 wc_seen
check "RECONFIG WriteCache(true) event seen, answered 0" wc_seen
rmdir "$d" &
RM=$!
if wait_until 10 sh -c "! kill -0 $RM 2>/dev/null"; then
    wait $RM
    check_eq "opted-out device: rmdir returns at once" 0 $?
else
    fail "opted-out device: rmdir hung"
fi
expect_event "opted-out device" Removed "$NAME" "$minor" '.Replied.outcome == "NotWaiting"'

# ---------------------------------------------------------------- 2. ours, reply mode
check_grep "SET_FEATURES(SUPP_KERN_CMD_REPLY=1) accepted (test VM only)" '"set_features":"on"' \
    "$("$NL" set-features on 2> /dev/null)"
at_exit "$NL" set-features off
DEV=nlreply
NAME=tcm-user/$HBA/$DEV/ietd/y
d=$(mkdev $DEV ietd/y) || die "mkdev $DEV"
write_bounded "$d/enable" 1
rc=$?
check_eq "reply mode: enable is released by our ADDED_DEVICE_DONE" 0 $rc
[ $rc = 124 ] && die "enable of our own device hung in reply mode"
check_eq "reply mode is in force for this device" 1 "$(cat "$d/attrib/nl_reply_supported")"
uio=$(uio_by_name "$NAME") || die "no uio device named $NAME"
minor=${uio#uio}
expect_event "reply mode" Added "$NAME" "$minor" '.Replied.status == 0 and .Replied.outcome == "Delivered"'
write_bounded "$d/attrib/emulate_write_cache" 1
check_eq "reply mode: write-cache change accepted (reply 0)" 0 $?
check_eq "emulate_write_cache now 1" 1 "$(cat "$d/attrib/emulate_write_cache")"
write_bounded "$d/attrib/dev_size" 2097152
rc=$?
[ $rc = 124 ] && die "dev_size write hung in reply mode"
check "reply mode: size change refused by our -EOPNOTSUPP" test "$rc" -ne 0
check_eq "dev_size unchanged after the refusal" 1048576 "$(cat "$d/attrib/dev_size")"
check "the refusal was delivered" jsonl -e --arg d "$NAME" \
    'select(.event.device == $d and .event.kind.change.DevSize == 2097152) | .response.Replied.status == -95 and .response.Replied.outcome == "Delivered"' 
rmdir "$d" &
RM=$!
if wait_until 10 sh -c "! kill -0 $RM 2>/dev/null"; then
    wait $RM
    check_eq "reply mode: rmdir released by our REMOVED_DEVICE_DONE" 0 $?
else
    die "reply mode: rmdir of our device hung"
fi
expect_event "reply mode" Removed "$NAME" "$minor" '.Replied.outcome == "Delivered"'

# ---------------------------------------------------------------- 3. foreign, reply mode
DEV=nlforeign
NAME=tcm-user/$HBA/$DEV/qcow//tmp/nothing
d=$(mkdev $DEV qcow//tmp/nothing) || die "mkdev $DEV"
write_bounded "$d/enable" 1 3
rc=$?
check_eq "foreign device: its enable stays blocked (we do not answer for its owner)" 124 $rc
if [ $rc = 124 ]; then
    FOREIGN=$WB_PID
    wait_until 10 event_line Added "$NAME"
    line=$(event_line Added "$NAME")
    check_eq "foreign ADDED seen and left unanswered" '"NotOurs"' "$(jq -c .response <<< "$line")"
    check_grep "unblock dance succeeds" '"Reset"' "$("$NL" unblock 2> /dev/null)"
    if wait_until 10 sh -c "! kill -0 $FOREIGN 2>/dev/null"; then
        wait "$FOREIGN"
        rc=$?
        check "stuck foreign enable failed (EINTR) after the unblock" test "$rc" -ne 0
    else
        die "foreign enable still blocked after block/reset_netlink"
    fi
    check_eq "block_netlink back to unblocked" unblocked "$(cat "$PARAMS/block_netlink")"
fi
check "half-made foreign device can be removed" rmdir "$d"

# ---------------------------------------------------------------- 4. listener killed
stop_pid "$NL_PID"
DEV=nlorphan
d=$(mkdev $DEV ietd/w) || die "mkdev $DEV"
write_bounded "$d/enable" 1 3
rc=$?
check_eq "reply mode, nobody listening: enable of a non-opted-out device waits" 124 $rc
if [ $rc = 124 ]; then
    ORPHAN=$WB_PID
    check_grep "a restarted ietd's unblock breaks it" '"Reset"' "$("$NL" unblock 2> /dev/null)"
    if wait_until 10 sh -c "! kill -0 $ORPHAN 2>/dev/null"; then
        wait "$ORPHAN"
        check "the orphaned enable returned with an error" test $? -ne 0
    else
        die "orphaned enable still blocked after the unblock"
    fi
fi
rmdir "$d" 2> /dev/null
check_grep "SET_FEATURES(SUPP_KERN_CMD_REPLY=0) restores the default" '"set_features":"off"' \
    "$("$NL" set-features off 2> /dev/null)"

# ---------------------------------------------------------------- 5. nobody listening, default mode
DEV=nlquiet
d=$(mkdev $DEV ietd/q nl_reply_supported=-1) || die "mkdev $DEV"
write_bounded "$d/enable" 1
check_eq "no listener, opted out: enable returns" 0 $?
write_bounded "$d/attrib/emulate_write_cache" 1 10 2> /tmp/wc.err
rc=$?
[ $rc = 124 ] && die "emulate_write_cache write hung with no listener"
note "no listener: emulate_write_cache write exit status $rc: $(cat /tmp/wc.err)"
check "no listener: a RECONFIG write fails (ESRCH), so ietd must be running for attribute changes" \
    test "$rc" -ne 0
rmdir "$d" &
RM=$!
if wait_until 10 sh -c "! kill -0 $RM 2>/dev/null"; then
    wait $RM
    check_eq "no listener: rmdir returns" 0 $?
else
    die "no listener: rmdir hung"
fi
rmdir "$CFS/core/user_$HBA" 2> /dev/null
dmesg | grep -iE 'tcmu|tcm-user|netlink' | tail -n 15 | sed 's/^/# dmesg: /'
