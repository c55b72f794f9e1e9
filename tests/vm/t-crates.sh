#!/bin/bash
# t-crates.sh — the crate tests that need the real kernel, run here instead of being
# skipped on the host (they are #[ignore]d there): iomodes on a virtio disk, a loop device
# with 4096-byte sectors, the 9p share and tmpfs (iomodes/tests/vm.rs); the configfs
# provisioner and its reload against LIO + TCMU without a datapath
# (ietd/tests/provision_kernel.rs, ietd/tests/reload_kernel.rs). A test that skips
# itself here counts as a failure: in this guest everything it needs exists.
# Measured: 10 s for the tests, 16 s with the boot, on a loaded host; 120 s allows 7x.
# vm: --mem 1G --disk 64M --timeout 120
. "$(dirname "$0")/lib.sh"

# crate_test NAME MIN: run every ignored test of NAME; at least MIN must pass, none skip
crate_test() {
    local name=$1 min=$2 bin out rc passed
    bin=$(need_test_bin "$name") || { fail "$name: no test executable"; return; }
    out=/tmp/crate-$name.log
    rc=0
    # from the repository root: the 9p test needs its current directory on the share
    (cd "$IETD_ROOT" && "$bin" --ignored --test-threads=1 --nocapture) > "$out" 2>&1 || rc=$?
    sed 's/^/    | /' "$out"
    check_eq "$name: exit status" 0 "$rc"
    passed=$(sed -n 's/^test result: .* \([0-9]*\) passed;.*/\1/p' "$out" | tail -n 1)
    [ "${passed:-0}" -ge "$min" ] && ok "$name: $passed passed" ||
        fail "$name: ${passed:-no} tests passed, expected at least $min"
    check_fails "$name: nothing skipped itself" grep -q '^SKIP' "$out"
}

lio_modules
crate_test vm 4
crate_test provision_kernel 1
crate_test reload_kernel 1
check_eq "configfs clean after the crate tests" "" "$(lio_objects)"
