# shellcheck shell=bash
# lib.sh — guest-side helpers shared by the VM tests (tests/vm/t-*.sh): reporting,
# cleanup, kernel modules, LIO configfs objects, tcm_loop and open-iscsi initiator helpers.
#
# Source it from a test that runs inside tests/vm/run-in-vm (tests/vm/suite does that):
#
#     . "$(dirname "$0")/lib.sh"
#     check "configfs is mounted" grep -q ' /sys/kernel/config configfs ' /proc/mounts
#     ...
#     (no explicit end: the EXIT trap prints the summary and sets the exit status)
#
# Conventions:
#   * lib.sh turns on `set -u -o pipefail` but NOT `set -e`: a failed check is recorded and
#     the test goes on, so one run reports every broken thing.  Use `die` when the rest of
#     the test cannot make sense (it records a failure and exits through the EXIT trap).
#   * Output lines: "ok   - what", "FAIL - what", "# note".  The last line is
#     "t-NAME: N passed, M failed".  Exit status 0 only if at least one check ran and none
#     failed (a test that checked nothing has not tested anything).
#   * `at_exit CMD ARGS...` registers cleanup, run in reverse order before the summary.
#     Tear down what a test built (log out, unlink LUNs, stop daemons) in that order: a
#     TCMU disk whose handler died makes any later I/O hang for cmd_time_out.
#   * Functions that create or find something echo it and return 0, or explain on stderr
#     and return 1, so they work inside $(...):  bs=$(lio_fileio_backstore ...) || die ...
#     (`die` inside $(...) would only leave the subshell).
#   * `check` runs its command in a subshell: variables set there do not survive.
#   * Functions named lio_* write configfs directly; they are for building reference
#     objects and fixtures.  The product's own provisioning is done by ietd.

set -u -o pipefail

T_NAME=${0##*/}
T_NAME=${T_NAME%.sh}
T_PASS=0
T_FAIL=0
T_CLEANUP=()
T_LOGS=()
read -r T_START _ < /proc/uptime
CFS=/sys/kernel/config/target
_lib_dir=${BASH_SOURCE[0]%/*}
[ "$_lib_dir" != "${BASH_SOURCE[0]}" ] || _lib_dir=.
IETD_ROOT=$(cd "$_lib_dir/../.." && pwd)
IETD_BIN=${IETD_BIN_DIR:-$IETD_ROOT/target/debug}
# The guest's default initiator name; tests that need another one pass it explicitly.
INITIATOR_IQN=${INITIATOR_IQN:-iqn.2024-01.org.ietd.test:initiator}

# ---------------------------------------------------------------- reporting

ok() {
    T_PASS=$((T_PASS + 1))
    echo "ok   - $*"
}

fail() {
    T_FAIL=$((T_FAIL + 1))
    echo "FAIL - $*"
}

note() { echo "# $*"; }

# die MSG: record a failure and stop the test (cleanup and summary still run).
die() {
    fail "$*"
    exit 1
}

# check WHAT CMD [ARG...]: runs CMD; ok when it exits 0.  On failure the command's output
# (stdout and stderr, last 20 lines) is shown indented under the FAIL line.
check() {
    local what=$1 out rc
    shift
    out=$("$@" 2>&1)
    rc=$?
    if [ "$rc" -eq 0 ]; then
        ok "$what"
    else
        fail "$what (exit $rc: $*)"
        [ -z "$out" ] || printf '%s\n' "$out" | tail -n 20 | sed 's/^/       | /'
    fi
    return "$rc"
}

# check_fails WHAT CMD [ARG...]: ok when CMD exits non-zero (an expected refusal).
check_fails() {
    local what=$1 out rc
    shift
    out=$("$@" 2>&1)
    rc=$?
    if [ "$rc" -ne 0 ]; then
        ok "$what (refused, exit $rc)"
        return 0
    fi
    fail "$what (succeeded but should have failed: $*)"
    [ -z "$out" ] || printf '%s\n' "$out" | tail -n 20 | sed 's/^/       | /'
    return 1
}

# check_eq WHAT EXPECTED ACTUAL
check_eq() {
    if [ "$2" = "$3" ]; then
        ok "$1 ($3)"
        return 0
    fi
    fail "$1: expected '$2', got '$3'"
    return 1
}

# check_grep WHAT PATTERN TEXT: ok when TEXT has a line matching the extended regexp.
check_grep() {
    if printf '%s\n' "$3" | grep -qE -- "$2"; then
        ok "$1"
        return 0
    fi
    fail "$1: no line matches /$2/ in:"
    printf '%s\n' "$3" | tail -n 20 | sed 's/^/       | /'
    return 1
}

# at_exit CMD [ARG...]: register a cleanup step (run last-registered first).
at_exit() {
    local q
    q=$(printf '%q ' "$@")
    T_CLEANUP+=("$q")
}

# show_log_on_failure FILE: print the tail of FILE in the summary if the test failed
# (daemon logs: what ietd or the datapath said is usually the fastest diagnosis).
show_log_on_failure() { T_LOGS+=("$1"); }

_t_exit() {
    local rc=$? i
    trap - EXIT
    set +e
    for ((i = ${#T_CLEANUP[@]} - 1; i >= 0; i--)); do
        eval "${T_CLEANUP[$i]}" > /dev/null 2>&1
    done
    if [ "$rc" -ne 0 ] && [ "$T_FAIL" -eq 0 ]; then
        fail "test script exited with status $rc outside a check"
    fi
    if [ $((T_PASS + T_FAIL)) -eq 0 ]; then
        fail "no checks ran"
    fi
    if [ "$T_FAIL" -gt 0 ]; then
        for f in "${T_LOGS[@]}"; do
            [ -e "$f" ] || continue
            echo "# ---- last lines of $f"
            tail -n 40 "$f" | sed 's/^/#   /'
        done
        echo "# ---- kernel messages since the test started (last 40)"
        dmesg 2> /dev/null | awk -v t0="$T_START" '
            { s = $0; sub(/^\[ */, "", s); sub(/\].*/, "", s) }
            s + 0 >= t0 + 0' | tail -n 40 | sed 's/^/#   /'
    fi
    echo "$T_NAME: $T_PASS passed, $T_FAIL failed"
    [ "$T_FAIL" -eq 0 ] && exit 0
    exit 1
}
trap _t_exit EXIT

# Outside the VM the kernel objects these tests create do not exist (and on a real host
# they must not be created by a test: the helpers rewrite /etc/iscsi and tear down LIO
# objects), so refuse early unless this is run-in-vm's guest (its run directory exists).
if [ "${IETD_VM:-}" != 1 ] || [ ! -e /run/ietd-vm/config ]; then
    echo "$T_NAME: must run inside tests/vm/run-in-vm (use tests/vm/suite --only ${T_NAME#t-})" >&2
    trap - EXIT
    exit 2
fi

# ---------------------------------------------------------------- small utilities

# now_ms: wall clock in milliseconds, without spawning date(1) (~0.2 s under TCG).
now_ms() {
    local t=${EPOCHREALTIME//[!0-9]/}
    echo $((10#$t / 1000))
}

# wait_until TIMEOUT_S CMD [ARG...]: poll CMD every 0.1 s until it succeeds.  Polling is
# coarse on purpose: under TCG every fork+exec costs ~25 ms.
wait_until() {
    local deadline=$(($(now_ms) + $1 * 1000))
    shift
    while ! "$@" > /dev/null 2>&1; do
        [ "$(now_ms)" -lt "$deadline" ] || return 1
        sleep 0.1
    done
}

# lib_err MSG: explain a helper's failure on stderr and return 1.
lib_err() {
    echo "lib.sh: ${FUNCNAME[1]}: $*" >&2
    return 1
}

# need_bin NAME: the path of a project binary built on the host (cargo build).
need_bin() {
    local p=$IETD_BIN/$1
    [ -x "$p" ] || lib_err "binary $p missing: run 'cargo build --workspace' on the host first" || return 1
    echo "$p"
}

# private_bins [DIR]: copy ietd, ietd-datapath and ietadm to DIR (default /tmp/bin) and
# point IETD_BIN there, so a host-side rebuild during the run cannot swap a binary under
# a running test.
private_bins() {
    local b dir=${1:-/tmp/bin}
    mkdir -p "$dir"
    for b in ietd ietd-datapath ietadm; do
        install -m 755 "$(need_bin $b)" "$dir/" || die "binary $b"
    done
    IETD_BIN=$dir
}

# need_test_bin NAME: the executable of the workspace's integration test NAME (e.g.
# provision_kernel), from the list tests/vm/suite writes after `cargo test --no-run`.
need_test_bin() {
    local list=${IETD_TEST_BINS:-$IETD_ROOT/target/vm-test-bins.list} p
    [ -r "$list" ] || lib_err "no test list $list: run the test through tests/vm/suite" || return 1
    p=$(awk -v n="$1" '$1 == n { print $2 }' "$list" | tail -n 1)
    [ -n "$p" ] && [ -x "$p" ] || lib_err "test executable $1 not in $list" || return 1
    echo "$p"
}

# start_bg NAME CMD [ARG...]: start a daemon with its output in /tmp/NAME.log; sets
# BG_PID.  It is killed (TERM, then KILL after 5 s) at exit, and its log is shown if the
# test fails.
start_bg() {
    local name=$1
    shift
    "$@" > "/tmp/$name.log" 2>&1 &
    BG_PID=$!
    at_exit stop_pid "$BG_PID"
    show_log_on_failure "/tmp/$name.log"
}

# stop_pid PID [TIMEOUT_S]: SIGTERM, wait, then SIGKILL.  Returns the process's exit
# status when it is our child (so a test can check a clean stop), else 0.
stop_pid() {
    local pid=$1 t=${2:-5} rc=0
    kill -0 "$pid" 2> /dev/null || { wait "$pid" 2> /dev/null; return $?; }
    kill -TERM "$pid" 2> /dev/null
    if ! wait_until "$t" sh -c "! kill -0 $pid 2>/dev/null || grep -q '^State:.*Z' /proc/$pid/status"; then
        kill -KILL "$pid" 2> /dev/null
    fi
    wait "$pid" 2> /dev/null || rc=$?
    return "$rc"
}

# ---------------------------------------------------------------- ietd

# ietd_start CONF [IETD_OPTION...]: start ietd in the foreground with its control socket
# and pid file under /run (an AF_UNIX socket on a 9p share cannot be connected), export
# IETD_SOCKET for ietadm, and wait until ietd is ready.  Sets IETD_PID.  ietd is stopped
# at exit and its log (/tmp/ietd.log) shown if the test fails.  Returns 1 if ietd exits
# or is not ready within 60 s.
# Ready means `ietadm --op show` is answered: the socket file alone is no sign, ietd
# binds it before it provisions the configured targets, and serves requests only after.
ietd_start() {
    local conf=$1 bin
    shift
    bin=$(need_bin ietd) || return 1
    export IETD_SOCKET=/run/ietd/ietadm.sock
    mkdir -p /run/ietd
    start_bg ietd "$bin" -f -c "$conf" --socket "$IETD_SOCKET" --pid-file /run/ietd.pid "$@"
    IETD_PID=$BG_PID
    wait_until 60 ietd_ready_or_dead
    kill -0 "$IETD_PID" 2> /dev/null || lib_err "ietd exited at start (see /tmp/ietd.log)" || return 1
    run_ietadm --op show > /dev/null 2>&1 ||
        lib_err "ietd does not answer 'ietadm --op show' after 60 s" || return 1
}

ietd_ready_or_dead() {
    ! kill -0 "$IETD_PID" 2> /dev/null && return 0
    [ -S "$IETD_SOCKET" ] && run_ietadm --op show > /dev/null 2>&1
}

# ietd_stop [TIMEOUT_S]: SIGTERM ietd and return its exit status (0 = clean stop).
ietd_stop() {
    stop_pid "$IETD_PID" "${1:-30}"
}

# run_ietadm ARG...: the project's ietadm, talking to the ietd of ietd_start.
run_ietadm() {
    "$IETD_BIN/ietadm" "$@"
}

# ---------------------------------------------------------------- kernel modules

# lio_modules: LIO core, TCMU, fileio/iblock, tcm_loop, and the SCSI disk drivers.  There
# is no udev in the guest, so sd_mod and sg are not loaded when a disk appears.
lio_modules() {
    modprobe -a configfs target_core_mod target_core_user target_core_file target_core_iblock \
        tcm_loop sd_mod sg || die "modprobe of the LIO modules failed"
    grep -q " /sys/kernel/config configfs " /proc/mounts \
        || mount -t configfs configfs /sys/kernel/config || die "cannot mount configfs"
    [ -d "$CFS/core" ] || die "$CFS/core missing after loading target_core_mod"
    # LIO writes persistent-reservation (APTPL) state under its db_root
    mkdir -p /etc/target/pr /etc/target/alua
}

# iscsi_modules: the iSCSI target fabric and the open-iscsi initiator transport.
iscsi_modules() {
    lio_modules
    modprobe -a iscsi_target_mod iscsi_tcp || die "modprobe iscsi_target_mod iscsi_tcp failed"
}

# ---------------------------------------------------------------- LIO objects (fixtures)

# lio_serial DIR [SERIAL]: set a backstore's VPD unit serial (LIO sets none by default;
# disk_by_serial finds disks by it) and echo it.
lio_serial() {
    local sn=${2:-$(cat /proc/sys/kernel/random/uuid)}
    echo -n "$sn" > "$1/wwn/vpd_unit_serial" || lib_err "cannot set vpd_unit_serial of $1" || return 1
    echo "$sn"
}

# lio_backstore_serial DIR: the VPD unit serial of a backstore ("T10 VPD Unit Serial
# Number: X" in configfs).
lio_backstore_serial() {
    sed -n 's/^T10 VPD Unit Serial Number: *//p' "$1/wwn/vpd_unit_serial"
}

# lio_user_backstore HBA NAME SIZE_BYTES DEV_CONFIG [BLOCK_SIZE [CONTROL_OPTION...]]:
# a TCMU backstore core/user_HBA/NAME, enabled; echoes its configfs path.  Control options
# (e.g. nl_reply_supported=-1, hw_max_sectors=1024) must be written before enable;
# attrib/hw_block_size is read-only for TCMU, the block size goes through control too.
lio_user_backstore() {
    local d=$CFS/core/user_$1/$2 opt
    mkdir -p "$d" || lib_err "mkdir $d" || return 1
    lio_serial "$d" > /dev/null || return 1
    echo -n "dev_size=$3" > "$d/control" || lib_err "$d: dev_size" || return 1
    echo -n "dev_config=$4" > "$d/control" || lib_err "$d: dev_config" || return 1
    if [ -n "${5:-}" ]; then
        echo -n "hw_block_size=$5" > "$d/control" || lib_err "$d: hw_block_size" || return 1
    fi
    shift 5 2> /dev/null || shift $#
    for opt in "$@"; do echo -n "$opt" > "$d/control" || lib_err "$d: control $opt" || return 1; done
    echo -n 1 > "$d/enable" || lib_err "enable $d" || return 1
    echo "$d"
}

# lio_fileio_backstore HBA NAME FILE SIZE_BYTES: a kernel fileio backstore (a reference
# LUN that needs no user-space handler); echoes its configfs path.
lio_fileio_backstore() {
    local d=$CFS/core/fileio_$1/$2
    mkdir -p "$d" || lib_err "mkdir $d" || return 1
    lio_serial "$d" > /dev/null || return 1
    echo -n "fd_dev_name=$3,fd_dev_size=$4" > "$d/control" || lib_err "$d: fileio control" || return 1
    echo -n 1 > "$d/enable" || lib_err "enable $d" || return 1
    echo "$d"
}

# uio_by_name NAME: the uioN whose name is NAME (TCMU: tcm-user/HBA/DEV/DEV_CONFIG).
uio_by_name() {
    local u
    for u in /sys/class/uio/uio*; do
        [ -e "$u/name" ] || continue
        if [ "$(cat "$u/name")" = "$1" ]; then
            echo "${u##*/}"
            return 0
        fi
    done
    return 1
}

# lio_iscsi_target IQN PORTAL BACKSTORE...: a demo-mode (no auth, any initiator) LIO
# iSCSI target with the backstores as LUN 0, 1, ...; echoes the TPG path.  A reference
# fixture for testing initiator-side helpers without ietd.
lio_iscsi_target() {
    local iqn=$1 portal=$2 t lun=0 bs
    shift 2
    t=$CFS/iscsi/$iqn/tpgt_1
    mkdir -p "$t/np/$portal" || lib_err "cannot create portal $portal on $iqn" || return 1
    for bs in "$@"; do
        mkdir -p "$t/lun/lun_$lun" || lib_err "mkdir lun_$lun" || return 1
        ln -s "$bs" "$t/lun/lun_$lun/${bs##*/}" || lib_err "link $bs as LUN $lun" || return 1
        lun=$((lun + 1))
    done
    # demo mode: no authentication, any initiator, writable
    { echo 0 > "$t/attrib/authentication" &&
        echo 1 > "$t/attrib/generate_node_acls" &&
        echo 1 > "$t/attrib/cache_dynamic_acls" &&
        echo 0 > "$t/attrib/demo_mode_write_protect" &&
        echo 1 > "$t/enable"; } || lib_err "cannot set up and enable $t" || return 1
    echo "$t"
}

# lio_teardown: remove every LIO object (fabrics, then backstores, then HBAs), the reverse
# of creation.  For fixtures; a test of ietd's own shutdown must not call this before
# checking what ietd left behind (see lio_objects).
lio_teardown() {
    local t l m a
    for t in "$CFS"/iscsi/*/tpgt_* "$CFS"/loopback/*/tpgt_*; do
        [ -d "$t" ] || continue
        [ -e "$t/enable" ] && echo 0 > "$t/enable" 2> /dev/null
        for a in "$t"/acls/*/; do
            [ -d "$a" ] || continue
            for m in "$a"lun_*/; do
                [ -d "$m" ] || continue
                find "$m" -maxdepth 1 -type l -delete
                rmdir "$m"
            done
            rmdir "$a"
        done
        for l in "$t"/lun/lun_*/; do
            [ -d "$l" ] || continue
            find "$l" -maxdepth 1 -type l -delete
            rmdir "$l"
        done
        for a in "$t"/np/*/; do [ -d "$a" ] && rmdir "$a"; done
        rmdir "$t"
    done
    for t in "$CFS"/iscsi/*/ "$CFS"/loopback/*/; do
        case $t in */discovery_auth/) continue ;; esac
        [ -d "$t" ] && rmdir "$t"
    done
    for t in "$CFS"/core/*_*/*/; do [ -d "$t" ] && rmdir "$t"; done
    for t in "$CFS"/core/*_*/; do [ -d "$t" ] && rmdir "$t"; done
    true
}

# lio_objects: list the LIO objects that exist, one per line ("backstore user_1/d0",
# "iscsi iqn...", "loopback naa..."); empty output means a clean configfs.
lio_objects() {
    local d
    for d in "$CFS"/core/*_*/*/; do
        [ -d "$d" ] || continue
        d=${d%/}
        echo "backstore ${d#"$CFS"/core/}"
    done
    for d in "$CFS"/iscsi/*/ "$CFS"/loopback/*/; do
        [ -d "$d" ] || continue
        d=${d%/}
        case ${d##*/} in discovery_auth) continue ;; esac
        d=${d#"$CFS"/}
        echo "${d%%/*} ${d#*/}"
    done
}

# ---------------------------------------------------------------- SCSI disks

# disk_by_serial SERIAL: the /dev/sdX whose VPD page 0x80 (unit serial) contains SERIAL.
disk_by_serial() {
    local d sn
    for d in /sys/block/sd*; do
        [ -e "$d/device/vpd_pg80" ] || continue
        # VPD page 0x80: 4-byte header, then the serial (maybe space padded)
        sn=$(tail -c +5 "$d/device/vpd_pg80" 2> /dev/null | tr -d '\000')
        case $sn in *"$1"*) echo "/dev/${d##*/}"; return 0 ;; esac
    done
    return 1
}

# disk_by_hctl H:C:T:L: the /dev/sdX of a SCSI address.
disk_by_hctl() {
    local b
    for b in /sys/class/scsi_device/"$1"/device/block/*; do
        [ -e "$b" ] || continue
        echo "/dev/${b##*/}"
        return 0
    done
    return 1
}

# wait_disk TIMEOUT_S FINDER [ARG...]: poll a finder (disk_by_serial, iscsi_disk, ...)
# until it names a block device node that exists; echo it.
wait_disk() {
    local t=$1 dev
    shift
    local deadline=$(($(now_ms) + t * 1000))
    while :; do
        if dev=$("$@") && [ -b "$dev" ]; then
            echo "$dev"
            return 0
        fi
        [ "$(now_ms)" -lt "$deadline" ] || return 1
        sleep 0.1
    done
}

# ---------------------------------------------------------------- tcm_loop

# loop_target [WWN [INITIATOR_WWN]]: a tcm_loop target with its I_T nexus; echoes the
# TPG path.  The nexus must exist before LUNs are linked: a LUN linked without one is
# scanned, fails, and is not rescanned when the nexus appears.
loop_target() {
    local wwn=${1:-naa.5001405$(printf '%09x' $((RANDOM * 32768 + RANDOM)))}
    local ini=${2:-naa.5001405$(printf '%09x' $((RANDOM * 32768 + RANDOM)))}
    local t=$CFS/loopback/$wwn/tpgt_1
    mkdir -p "$t" || lib_err "mkdir $t" || return 1
    echo -n "$ini" > "$t/nexus" || lib_err "cannot create the tcm_loop nexus on $wwn" || return 1
    echo "$t"
}

# loop_hctl TPG LUN: the H:C:T:L SCSI address of a tcm_loop LUN (from the TPG's address
# attribute, so it works even when the device reports no serial).
loop_hctl() {
    local a
    a=$(cat "$1/address" 2> /dev/null) || return 1
    echo "$a:$2"
}

# loop_lun TPG LUN BACKSTORE_PATH [TIMEOUT_S]: export BACKSTORE as LUN through tcm_loop and
# wait for its /dev/sdX, which is echoed.  The ln blocks while the kernel scans the LUN:
# INQUIRY goes to the handler (for TCMU, to the datapath), so without one it blocks for
# attrib/cmd_time_out seconds.
loop_lun() {
    local t=$1 lun=$2 bs=$3 to=${4:-30} l hctl
    l=$t/lun/lun_$lun
    mkdir -p "$l" || lib_err "mkdir $l" || return 1
    ln -s "$bs" "$l/${bs##*/}" || lib_err "link $bs as LUN $lun" || return 1
    hctl=$(loop_hctl "$t" "$lun") || lib_err "no address in $t" || return 1
    wait_disk "$to" disk_by_hctl "$hctl" || lib_err "no disk for $hctl ($bs) after ${to}s" || return 1
}

# loop_unlink TPG LUN: remove a tcm_loop LUN (the disk goes away first).
loop_unlink() {
    local l=$1/lun/lun_$2
    [ -d "$l" ] || return 0
    find "$l" -maxdepth 1 -type l -delete && rmdir "$l"
}

# ---------------------------------------------------------------- open-iscsi initiator

ISCSI_PORTAL_DEFAULT=127.0.0.1:3260

# iscsi_start [INITIATOR_IQN]: load iscsi_tcp, name the initiator, make failures fast
# (one login attempt, 10 s timeouts: a refused login in a test must not retry for
# minutes) and start iscsid.  The guest's /etc is a throw-away overlay, so editing
# iscsid.conf there touches nothing on the host.
iscsi_start() {
    local ini=${1:-$INITIATOR_IQN}
    modprobe -a iscsi_tcp || die "modprobe iscsi_tcp"
    command -v iscsiadm > /dev/null || die "iscsiadm missing (apt-get install open-iscsi on the host)"
    mkdir -p /etc/iscsi /run/lock/iscsi /var/lib/iscsi
    echo "InitiatorName=$ini" > /etc/iscsi/initiatorname.iscsi
    rm -rf /etc/iscsi/nodes /etc/iscsi/send_targets
    cat > /etc/iscsi/iscsid.conf << 'EOF'
node.startup = manual
node.session.initial_login_retry_max = 1
node.conn[0].timeo.login_timeout = 10
node.conn[0].timeo.logout_timeout = 10
node.session.timeo.replacement_timeout = 20
node.conn[0].timeo.noop_out_interval = 5
node.conn[0].timeo.noop_out_timeout = 10
EOF
    if ! iscsid_up; then
        iscsid || die "iscsid did not start"
        at_exit iscsi_stop
    fi
    wait_until 10 iscsid_up || die "iscsid does not listen for iscsiadm"
}

# iscsid_up: iscsid listens on its abstract socket.  (`iscsiadm -m session` is no probe:
# it reads sessions from sysfs and answers without iscsid.)
iscsid_up() {
    grep -q '@ISCSIADM_ABSTRACT_NAMESPACE' /proc/net/unix
}

# iscsi_stop: log out of everything and stop iscsid.
iscsi_stop() {
    iscsiadm -m node --logoutall=all > /dev/null 2>&1
    iscsiadm -k 0 > /dev/null 2>&1 ||
        { [ -s /run/iscsid.pid ] && kill "$(cat /run/iscsid.pid)" 2> /dev/null; }
    true
}

# iscsi_discover [PORTAL [USER PASS]]: SendTargets discovery (with discovery CHAP when
# USER/PASS are given); echoes the target names found, one per line.  Returns iscsiadm's
# status (non-zero when discovery is refused).
iscsi_discover() {
    local p=${1:-$ISCSI_PORTAL_DEFAULT} out rc
    iscsiadm -m discoverydb -t st -p "$p" -o delete > /dev/null 2>&1
    iscsiadm -m discoverydb -t st -p "$p" -o new > /dev/null || return 1
    if [ -n "${2:-}" ]; then
        iscsiadm -m discoverydb -t st -p "$p" -o update -n discovery.sendtargets.auth.authmethod -v CHAP &&
            iscsiadm -m discoverydb -t st -p "$p" -o update -n discovery.sendtargets.auth.username -v "$2" &&
            iscsiadm -m discoverydb -t st -p "$p" -o update -n discovery.sendtargets.auth.password -v "$3" \
            || return 1
    fi
    out=$(iscsiadm -m discoverydb -t st -p "$p" --discover 2>&1)
    rc=$?
    if [ "$rc" -ne 0 ]; then
        printf '%s\n' "$out" >&2
        return "$rc"
    fi
    # lines look like "127.0.0.1:3260,1 iqn.2001-04.com.example:disk1"
    printf '%s\n' "$out" | awk '{print $2}' | sort -u
}

# iscsi_node_set IQN PORTAL NAME VALUE: update one node record setting.
iscsi_node_set() {
    iscsiadm -m node -T "$1" -p "$2" -o update -n "$3" -v "$4" > /dev/null
}

# iscsi_chap IQN PORTAL USER PASS [USER_IN PASS_IN]: use CHAP for the node's logins
# (mutual CHAP when USER_IN/PASS_IN, the target's OutgoingUser, are given).
# iscsi_chap IQN PORTAL none: back to no authentication.
iscsi_chap() {
    local t=$1 p=$2
    if [ "$3" = none ]; then
        iscsi_node_set "$t" "$p" node.session.auth.authmethod None
        return
    fi
    iscsi_node_set "$t" "$p" node.session.auth.authmethod CHAP &&
        iscsi_node_set "$t" "$p" node.session.auth.username "$3" &&
        iscsi_node_set "$t" "$p" node.session.auth.password "$4" || return 1
    if [ -n "${5:-}" ]; then
        iscsi_node_set "$t" "$p" node.session.auth.username_in "$5" &&
            iscsi_node_set "$t" "$p" node.session.auth.password_in "$6" || return 1
    fi
}

# iscsi_login IQN [PORTAL]: log in (the node must have been discovered).  Returns
# iscsiadm's status: 0 logged in, 24 authentication failure, 19/8 unreachable, ...
iscsi_login() {
    iscsiadm -m node -T "$1" -p "${2:-$ISCSI_PORTAL_DEFAULT}" --login
}

# iscsi_logout IQN [PORTAL]
iscsi_logout() {
    iscsiadm -m node -T "$1" -p "${2:-$ISCSI_PORTAL_DEFAULT}" --logout
}

# iscsi_session IQN: the sysfs class directory of the (first) session to IQN: its name
# ends in the session id, and it holds `state` and `targetname`.
iscsi_session() {
    local s
    for s in /sys/class/iscsi_session/session*; do
        if [ "$(cat "$s/targetname" 2> /dev/null)" = "$1" ]; then
            echo "$s"
            return 0
        fi
    done
    return 1
}

# iscsi_session_dir IQN: the sysfs device directory of the (first) session to IQN.
iscsi_session_dir() {
    local s
    s=$(iscsi_session "$1") || return 1
    readlink -f "$s/device"
}

# dm_prepare: device-mapper in a guest without udev (dmsetup makes the /dev/mapper nodes).
dm_prepare() {
    modprobe dm_mod || die "dm_mod"
    export DM_DISABLE_UDEV=1
    dmsetup mknodes > /dev/null 2>&1
}

# iscsi_disk IQN LUN: the /dev/sdX of LUN in the session to IQN (found through sysfs:
# session -> SCSI target -> H:C:T:LUN -> block).
iscsi_disk() {
    local s b
    s=$(iscsi_session_dir "$1") || return 1
    for b in "$s"/target*/*:*:*:"$2"/block/*; do
        [ -e "$b" ] || continue
        echo "/dev/${b##*/}"
        return 0
    done
    return 1
}

# iscsi_wait_disk IQN LUN [TIMEOUT_S]: wait for and echo the /dev/sdX of a LUN.
iscsi_wait_disk() {
    wait_disk "${3:-20}" iscsi_disk "$1" "$2"
}

# iscsi_connect PORTAL IQN...: a test's usual start as an initiator: SendTargets
# discovery on PORTAL lists exactly IQN... (give them sorted, as discovery lists them),
# then a login to each.  Each step is a check.
iscsi_connect() {
    local _p=$1 _t
    shift
    check_eq "discovery lists $*" "$*" "$(iscsi_discover "$_p" | xargs)"
    for _t; do
        check "login to $_t" iscsi_login "$_t" "$_p"
    done
}

# iscsi_disks IQN VAR=LUN...: wait for the /dev/sdX of each LUN of the session to IQN
# and store it in VAR; dies naming the first LUN that does not appear (no test can go
# on without its disks).
iscsi_disks() {
    local _t=$1 _a _d
    shift
    for _a; do
        _d=$(iscsi_wait_disk "$_t" "${_a#*=}") || die "no disk for $_t LUN ${_a#*=}"
        printf -v "${_a%%=*}" '%s' "$_d"
    done
}

# iscsi_luns IQN: the LUN numbers the session to IQN exposes, one per line, sorted.
iscsi_luns() {
    local s d
    s=$(iscsi_session_dir "$1") || return 1
    for d in "$s"/target*/*:*:*:*; do
        [ -d "$d" ] || continue
        echo "${d##*:}"
    done | sort -n
}

# iscsi_rescan IQN: rescan the session's LUNs (after a LUN was added on the target).
iscsi_rescan() {
    iscsiadm -m node -T "$1" -p "${2:-$ISCSI_PORTAL_DEFAULT}" --rescan > /dev/null
}
