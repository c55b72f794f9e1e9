#!/bin/bash
# t-lib.sh — lib.sh's own reporting and process helpers behave as the other tests rely
# on: failures are counted and fail the test, a test without checks fails, cleanups run
# last-registered first, daemons are stopped, waits time out.
# vm: --mem 512M --timeout 60
. "$(dirname "$0")/lib.sh"

LIB=$(dirname "$0")/lib.sh
mkdir -p /tmp/tl

# run_case NAME BODY: a throw-away test script using lib.sh; echoes its output and
# "rc=N" as the last line.
run_case() {
    printf '. %q\n%s\n' "$LIB" "$2" > "/tmp/tl/$1.sh"
    local out rc=0
    out=$(bash "/tmp/tl/$1.sh" 2>&1) || rc=$?
    printf '%s\nrc=%s\n' "$out" "$rc"
}

out=$(run_case t-pass 'check "true" true; check_eq "eq" a a')
check_grep "passing case: summary" '^t-pass: 2 passed, 0 failed$' "$out"
check_grep "passing case: exit 0" '^rc=0$' "$out"

out=$(run_case t-fail 'check "true" true; check "false" false; check_eq "eq" a b; check_fails "refusal" false')
check_grep "failing case: summary counts the failures" '^t-fail: 2 passed, 2 failed$' "$out"
check_grep "failing case: exit 1" '^rc=1$' "$out"
check_grep "check_eq shows both values" "expected 'a', got 'b'" "$out"

out=$(run_case t-empty 'true')
check_grep "a test without checks fails" '^FAIL - no checks ran$' "$out"
check_grep "... with exit 1" '^rc=1$' "$out"

out=$(run_case t-die 'at_exit sh -c "echo first >> /tmp/tl/order"
at_exit sh -c "echo last >> /tmp/tl/order"
ok "before"; die "fatal"; ok "never reached"')
check_grep "die stops the test" '^t-die: 1 passed, 1 failed$' "$out"
check_eq "cleanups ran last-registered first" "last first" "$(xargs < /tmp/tl/order)"

out=$(run_case t-crash 'ok "fine"; exit 3')
check_grep "an exit outside a check is a failure" 'exited with status 3 outside a check' "$out"

start_bg sleeper sleep 300
pid=$BG_PID
check "start_bg started the daemon" kill -0 "$pid"
rc=0
stop_pid "$pid" || rc=$?
check_eq "stop_pid reports death by SIGTERM" 143 "$rc"
check "the daemon is gone" sh -c "! kill -0 $pid 2>/dev/null"

t0=$(date +%s)
check_fails "wait_until gives up" wait_until 1 false
check "... after about its timeout" test $(($(date +%s) - t0)) -le 3
check "wait_until returns when the condition holds" wait_until 5 test -d /tmp/tl
check_fails "need_bin refuses a missing binary" need_bin no-such-binary

# iscsi_disks with a stand-in finder: each VAR gets its LUN's disk, a missing LUN dies.
out=$(run_case t-disks 'iscsi_wait_disk() { [ "$2" != 9 ] && echo "/dev/sd-$1-$2"; }
iscsi_disks iqn.x a=0 b=3; check_eq "a" /dev/sd-iqn.x-0 "$a"; check_eq "b" /dev/sd-iqn.x-3 "$b"
iscsi_disks iqn.x c=9; ok "never reached"')
check_grep "iscsi_disks sets each variable" '^ok   - b \(/dev/sd-iqn.x-3\)$' "$out"
check_grep "iscsi_disks dies on a missing LUN" '^FAIL - no disk for iqn.x LUN 9$' "$out"
check_grep "... and stops the test" '^t-disks: 2 passed, 1 failed$' "$out"
