#!/bin/bash
# try-it-guest.sh — the guest half of tests/vm/try-it: runs the sample conf/ietd.conf,
# unmodified, on the real kernel and uses its disks through open-iscsi, checking each step.
#
#   1. formats the VM's virtio disk as ext4 at the directory of the sample's backing files
#      (blockio needs O_DIRECT, which the guest's tmpfs/overlay root lacks) and creates
#      every Path= the sample names (64 MiB, the first MiB random so reads can be checked);
#   2. starts `ietd -f -c conf/ietd.conf --allow-dir conf` and shows its warnings;
#   3. shows `ietadm --op show --tid=1` and the volume view `ietadm --op show`;
#   4. discovers the targets, logs in (CHAP with the account ietadm reports, after showing
#      that a wrong password is refused), lists the disks;
#   5. per LUN: writable ones get data written and read back (and found in the backing
#      file), the ro LUN reads its backing file and refuses a write, nullio reads zeros;
#   6. logs out, stops ietd with SIGTERM, checks configfs has nothing of ours left;
#   7. prints a summary table.
#
# Usage (inside tests/vm/run-in-vm, which tests/vm/try-it does for you):
#     bash tests/vm/try-it-guest.sh           # for people: sections, views and tables
#     bash tests/vm/try-it-guest.sh --check   # for CI (t-tryit.sh): the same checks, the
#                                             # summary table, none of the views
# Every step is a lib.sh check either way; exit status 0 only if all of them passed.
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

SHOW=1
case ${1:-} in
    --check) SHOW=0 ;;
    '') ;;
    *) die "unknown option: $1 (usage: try-it-guest.sh [--check])" ;;
esac

cd "$IETD_ROOT" || die "cannot cd to $IETD_ROOT"
CONF=conf/ietd.conf
ALLOW_DIR=conf
PORTAL=127.0.0.1:3260
BACKING_SIZE=64M
[ -r "$CONF" ] || die "$CONF not found in $IETD_ROOT"

# section TITLE: a heading between steps.
section() { printf '\n== %s  [%ss]\n' "$*" "$(elapsed_s)"; }
# elapsed_s: seconds since the script started, one decimal (no fork: TCG makes those slow).
T0_MS=$(now_ms)
elapsed_s() {
    local ms=$(($(now_ms) - T0_MS))
    echo "$((ms / 1000)).$((ms % 1000 / 100))"
}
# display: indent stdin, only for people (SHOW=1).
display() {
    if [ "$SHOW" = 1 ]; then sed 's/^/    /'; else cat > /dev/null; fi
}
# table: align '|'-separated rows from stdin into columns (column(1) is in
# bsdextrautils, which minimal Debian installs lack).
table() {
    awk -F'|' '{ for (i = 1; i <= NF; i++) { c[NR, i] = $i; if (length($i) > w[i]) w[i] = length($i) }
                 if (NF > nf) nf = NF; n = NR }
        END { for (r = 1; r <= n; r++) { line = ""
                  for (i = 1; i <= nf; i++) line = line sprintf(i < nf ? "%-" w[i] "s  " : "%s", c[r, i])
                  print line } }'
}
# human BYTES: 64 MiB, 8 GiB, 512 KiB (bash arithmetic: forks are slow under TCG).
human() {
    local b=$1 u=(B KiB MiB GiB TiB) i=0
    while [ "$b" -ge 1024 ] && [ $((b % 1024)) -eq 0 ] && [ "$i" -lt 4 ]; do
        b=$((b / 1024))
        i=$((i + 1))
    done
    echo "$b ${u[$i]}"
}
# sysfs_word FILE: the file's content without surrounding blanks (SCSI vendor and model
# are space padded).
sysfs_word() {
    local w
    read -r w < "$1" || return 1
    echo "$w"
}

# Private copies: a host-side rebuild during the run must not swap binaries under us.
# Debug binaries are big and 9p is slow under TCG, so the copy runs while step 1 works.
mkdir -p /tmp/bin
bins=()
for b in ietd ietd-datapath ietadm; do bins+=("$(need_bin $b)") || die "binary $b"; done
cp "${bins[@]}" /tmp/bin/ &
COPY_PID=$!
# Module loading takes seconds under TCG too; start it now (step 2 loads them again
# through lib.sh, which then finds them loaded and reports any that failed).
modprobe -q -a ext4 configfs target_core_mod target_core_user target_core_file \
    target_core_iblock tcm_loop sd_mod sg iscsi_target_mod iscsi_tcp 2> /dev/null &
MODPROBE_PID=$!

# ---------------------------------------------------------------- 1. backing files
section "1. Backing files for $CONF"
# "IQN LUN PATH SCSISN" for each Lun line of the sample ("-" where a field is absent).
# Keywords and parameter names are case-insensitive, as ietd reads them.
conf_luns() {
    awk '$1 ~ /^#/ { next }
        tolower($1) == "target" { t = $2; next }
        tolower($1) == "lun" {
            path = "-"; sn = "-"
            n = split($3, kv, ",")
            for (i = 1; i <= n; i++) {
                k = tolower(substr(kv[i], 1, index(kv[i], "=") - 1))
                v = substr(kv[i], index(kv[i], "=") + 1)
                if (k == "path") path = v
                if (k == "scsisn") sn = v
            }
            print t, $2, path, sn
        }' "$CONF"
}
mapfile -t CONF_LUNS < <(conf_luns)
[ ${#CONF_LUNS[@]} -gt 0 ] || die "$CONF has no Lun lines"
mapfile -t PATHS < <(printf '%s\n' "${CONF_LUNS[@]}" | awk '$3 != "-" { print $3 }' | sort -u)

vd=
for d in /sys/block/vd*; do [ -e "$d" ] && vd=/dev/${d##*/} && break; done
[ -n "$vd" ] || die "no virtio disk: run-in-vm needs --disk 512M (blockio needs O_DIRECT, which tmpfs lacks)"
declare -A HEAD_SUM=()
dirs=$(printf '%s\n' "${PATHS[@]}" | xargs -r -n1 dirname | sort -u)
first_dir=$(printf '%s\n' "$dirs" | head -n 1)
# nodiscard: the fresh sparse disk has nothing to discard, and discarding it is slow
check "mkfs.ext4 $vd" mkfs.ext4 -q -F -E nodiscard "$vd"
mkdir -p "$first_dir"
check "mount $vd at $first_dir" mount "$vd" "$first_dir" || die "cannot mount the backing filesystem"
[ "$(printf '%s\n' "$dirs" | wc -l)" -le 1 ] ||
    note "backing files in other directories than $first_dir are on the guest's root (no O_DIRECT there)"
for p in "${PATHS[@]}"; do
    mkdir -p "$(dirname "$p")"
    if head -c 1M /dev/urandom > "$p" && truncate -s "$BACKING_SIZE" "$p"; then
        HEAD_SUM[$p]=$(head -c 1M "$p" | md5sum)
        ok "created $p ($BACKING_SIZE, first MiB random)"
    else
        fail "cannot create $p"
    fi
done

# ---------------------------------------------------------------- 2. ietd
section "2. ietd -f -c $CONF --allow-dir $ALLOW_DIR"
wait "$COPY_PID" || die "cannot copy the binaries to /tmp/bin"
wait "$MODPROBE_PID"
# shellcheck disable=SC2034  # read by lib.sh (need_bin, run_ietadm, ietd_start)
IETD_BIN=/tmp/bin
iscsi_modules
ietd_start "$CONF" --allow-dir "$ALLOW_DIR" || die "ietd did not start (its log follows)"
ok "ietd is up (pid $IETD_PID) and answers ietadm"
dp=$(pgrep -x ietd-datapath | head -n 1)
if [ -n "$dp" ]; then ok "ietd started its datapath (pid $dp)"; else fail "no ietd-datapath process"; fi
if [ "$SHOW" = 1 ] && grep -q '^[^ ]* ietd\[[0-9]*\] WARN ' /tmp/ietd.log; then
    echo "  what ietd says about the sample (differences from IET are warned, never silent):"
    grep '^[^ ]* ietd\[[0-9]*\] WARN ' /tmp/ietd.log |
        sed 's/^[^ ]* ietd\[[0-9]*\] WARN */  - /; s/ configfs=[^ ]*$//' | display
fi

# ---------------------------------------------------------------- 3. ietadm
section "3. ietadm"
t1=$(run_ietadm --op show --tid=1 2>&1)
check_grep "ietadm --op show --tid=1 answers with the target keys" '^QueuedCommands=[0-9]+$' "$t1"
if [ "$SHOW" = 1 ]; then
    echo "  \$ ietadm --op show --tid=1"
    printf '%s\n' "$t1" | display
fi
vol=$(run_ietadm --op show 2>&1)
check_grep "ietadm --op show lists volumes" '^tid:[0-9]+ name:' "$vol"
if [ "$SHOW" = 1 ]; then
    echo "  \$ ietadm --op show"
    printf '%s\n' "$vol" | display
fi
# The volume view, flattened: "TID IQN LUN IOTYPE IOMODE BLOCKS BLOCKSIZE PATH".
mapfile -t VOLS < <(printf '%s\n' "$vol" | awk '
    /^tid:/ { tid = substr($1, 5); name = substr($2, 6); next }
    /^[ \t]+lun:/ {
        delete f
        for (i = 1; i <= NF; i++) { k = substr($i, 1, index($i, ":") - 1); f[k] = substr($i, index($i, ":") + 1) }
        print tid, name, f["lun"], f["iotype"], f["iomode"], f["blocks"], f["blocksize"], (f["path"] == "" ? "-" : f["path"])
    }' | sort -k1,1n -k3,3n)
check_eq "the volume view has every Lun of $CONF" "${#CONF_LUNS[@]}" "${#VOLS[@]}"
check_eq "the volume view's paths are the sample's" "$(printf '%s\n' "${PATHS[@]}" | xargs)" \
    "$(printf '%s\n' "${VOLS[@]}" | awk '$8 != "-" { print $8 }' | sort -u | xargs)"
mapfile -t TARGETS < <(printf '%s\n' "${VOLS[@]}" | awk '{ print $1, $2 }' | sort -u -k1,1n)

# ---------------------------------------------------------------- 4. initiator
section "4. open-iscsi: discovery and login"
iscsi_start
found=$(iscsi_discover "$PORTAL" | xargs)
check_eq "SendTargets discovery on $PORTAL lists every target" \
    "$(printf '%s\n' "${TARGETS[@]}" | awk '{ print $2 }' | sort | xargs)" "$found"
if [ "$SHOW" = 1 ]; then
    iscsiadm -m node 2> /dev/null | display
fi
LOGGED_IN=()
for tt in "${TARGETS[@]}"; do
    read -r tid iqn <<< "$tt"
    # CHAP: ietd enforces the first IncomingUser ietadm lists (LIO keeps one) and the
    # OutgoingUser (mutual CHAP); the passwords come from ietadm, which shows them to root.
    users=$(run_ietadm --op show --tid="$tid" --user 2>&1) ||
        { fail "ietadm --op show --tid=$tid --user: $users"; continue; }
    in_user=$(printf '%s\n' "$users" | awk '$1 == "IncomingUser" { print $2; exit }')
    out_user=$(printf '%s\n' "$users" | awk '$1 == "OutgoingUser" { print $2; exit }')
    how="no CHAP"
    if [ -n "$in_user" ]; then
        in_pass=$(run_ietadm --op show --tid="$tid" --user --params "IncomingUser=$in_user" | awk '{ print $3 }')
        out_pass=
        [ -z "$out_user" ] ||
            out_pass=$(run_ietadm --op show --tid="$tid" --user --params "OutgoingUser=$out_user" | awk '{ print $3 }')
        check "CHAP settings for $iqn" iscsi_chap "$iqn" "$PORTAL" "$in_user" "wrong-$in_pass"
        check_fails "login to $iqn as $in_user with a wrong password" iscsi_login "$iqn" "$PORTAL"
        if [ -n "$out_user" ]; then
            check "CHAP settings for $iqn" iscsi_chap "$iqn" "$PORTAL" "$in_user" "$in_pass" "$out_user" "$out_pass"
            how="mutual CHAP: $in_user, target proves itself as $out_user"
        else
            check "CHAP settings for $iqn" iscsi_chap "$iqn" "$PORTAL" "$in_user" "$in_pass"
            how="CHAP as $in_user"
        fi
    fi
    if check "login to $iqn ($how)" iscsi_login "$iqn" "$PORTAL"; then
        LOGGED_IN+=("$iqn")
        at_exit iscsi_logout "$iqn" "$PORTAL"
    fi
done

# ---------------------------------------------------------------- 5. disks
section "5. The new disks"
declare -A DEV=() RESULT=()
disk_rows=()
for v in "${VOLS[@]}"; do
    read -r tid iqn lun iotype iomode blocks bs path <<< "$v"
    key="$tid/$lun"
    dev=$(iscsi_wait_disk "$iqn" "$lun" 30) || {
        fail "no disk for $iqn LUN $lun"
        RESULT[$key]="FAIL: no disk"
        continue
    }
    DEV[$key]=$dev
    # sysfs rather than blockdev(8)/lsblk(8): the same numbers without forks
    sysb=/sys/block/${dev#/dev/}
    size=$(($(sysfs_word "$sysb/size") * 512))
    lbs=$(sysfs_word "$sysb/queue/logical_block_size")
    vendor=$(sysfs_word "$sysb/device/vendor")
    model=$(sysfs_word "$sysb/device/model")
    serial=$(sg_inq -p 0x80 "$dev" 2> /dev/null | sed -n 's/^ *Unit serial number: *//p')
    check_eq "$dev ($iqn LUN $lun) size" $((blocks * bs)) "$size" || RESULT[$key]="FAIL: size"
    check_eq "$dev logical block size" "$bs" "$lbs" || RESULT[$key]="FAIL: block size"
    sn=$(printf '%s\n' "${CONF_LUNS[@]}" | awk -v t="$iqn" -v l="$lun" '$1 == t && $2 == l { print $4 }')
    if [ -n "$sn" ] && [ "$sn" != - ]; then
        check_eq "$dev serial is the sample's ScsiSN" "$sn" "$serial" || RESULT[$key]="FAIL: serial"
    elif [ -n "$serial" ]; then
        ok "$dev has a unit serial ($serial)"
    else
        fail "$dev reports no unit serial (VPD page 0x80)"
        RESULT[$key]="FAIL: serial"
    fi
    disk_rows+=("$dev|${iqn##*:}:$lun|$(human "$size")|$lbs|$vendor $model|${serial:-?}")
done
if [ "$SHOW" = 1 ] && [ ${#disk_rows[@]} -gt 0 ]; then
    {
        echo "DEVICE|TARGET:LUN|SIZE|BLOCK|VENDOR PRODUCT|SERIAL (sg_inq -p 0x80)"
        printf '%s\n' "${disk_rows[@]}"
    } | table | display
fi

# ---------------------------------------------------------------- 6. data
section "6. Data"
head -c 4M /dev/urandom > /tmp/pattern
pattern_sum=$(md5sum < /tmp/pattern)
for v in "${VOLS[@]}"; do
    read -r tid iqn lun iotype iomode blocks bs path <<< "$v"
    key="$tid/$lun"
    dev=${DEV[$key]:-}
    [ -n "$dev" ] || continue
    [ -z "${RESULT[$key]:-}" ] || continue
    what="$dev ($iqn LUN $lun, $iotype $iomode)"
    if [ "$iotype" = nullio ]; then
        # the first MiB, or all of a smaller LUN
        n=$((blocks * bs < 1048576 ? blocks * bs : 1048576))
        if check_eq "$what reads zeros" "$(head -c "$n" /dev/zero | md5sum)" \
            "$(dd if="$dev" bs=4096 count=$((n / 4096)) iflag=direct status=none | md5sum)"; then
            RESULT[$key]="reads zeros"
        else
            RESULT[$key]="FAIL: read"
        fi
        continue
    fi
    if ! check_eq "$what reads its backing file" "${HEAD_SUM[$path]:-?}" \
        "$(dd if="$dev" bs=1M count=1 iflag=direct status=none | md5sum)"; then
        RESULT[$key]="FAIL: read"
        continue
    fi
    if [ "$iomode" = ro ]; then
        check_eq "the kernel marks $dev read-only" 1 "$(cat "/sys/block/${dev#/dev/}/ro")"
        # make the block layer pass the write on, so the refusal seen is the target's
        blockdev --setrw "$dev" 2> /dev/null
        before=$(md5sum < "$path")
        if check_fails "$what refuses a write" \
            dd if=/tmp/pattern of="$dev" bs=64k count=16 seek=128 oflag=direct status=none &&
            check_eq "$path unchanged" "$before" "$(md5sum < "$path")"; then
            RESULT[$key]="read ok, write refused"
        else
            RESULT[$key]="FAIL: ro"
        fi
        continue
    fi
    # 4 MiB at 8 MiB, O_DIRECT both ways so the data really crosses iSCSI
    if check "$what: write 4 MiB" dd if=/tmp/pattern of="$dev" bs=64k seek=128 oflag=direct status=none &&
        check_eq "$what: read back" "$pattern_sum" \
            "$(dd if="$dev" bs=64k skip=128 count=64 iflag=direct status=none | md5sum)" &&
        check_eq "$what: the data is in $path" "$pattern_sum" \
            "$(dd if="$path" bs=64k skip=128 count=64 status=none | md5sum)"; then
        RESULT[$key]="4 MiB written, read back, md5 ok"
    else
        RESULT[$key]="FAIL: data"
    fi
done

# ---------------------------------------------------------------- 7. stop
section "7. Log out, stop ietd"
for iqn in "${LOGGED_IN[@]}"; do check "logout $iqn" iscsi_logout "$iqn" "$PORTAL"; done
rc=0
ietd_stop || rc=$?
check_eq "ietd exits 0 on SIGTERM" 0 "$rc"
check_eq "configfs has none of ietd's objects left" "" "$(lio_objects)"
check_fails "the datapath is gone" pgrep -x ietd-datapath
check_eq "no TCMU (uio) device left" "" "$(ls /sys/class/uio)"

# ---------------------------------------------------------------- summary
section "Summary"
{
    echo "TARGET|LUN|DEVICE|SIZE|BLOCK|MODE|RESULT"
    for v in "${VOLS[@]}"; do
        read -r tid iqn lun iotype iomode blocks bs path <<< "$v"
        key="$tid/$lun"
        echo "$iqn|$lun|${DEV[$key]:--}|$(human $((blocks * bs)))|$bs|$iotype $iomode|${RESULT[$key]:-FAIL: not reached}"
    done
} | table | sed 's/^/    /'
echo
if [ "$T_FAIL" -eq 0 ]; then
    echo "All $T_PASS checks passed: ietd served the sample configuration to open-iscsi and left LIO clean."
else
    echo "$T_FAIL of $((T_PASS + T_FAIL)) checks FAILED (see FAIL lines above; ietd's log follows)."
fi
