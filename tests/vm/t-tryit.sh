#!/bin/bash
# t-tryit.sh — keeps the README's "try it" path (tests/vm/try-it) working: runs its guest
# half, try-it-guest.sh, in check mode: the unmodified sample conf/ietd.conf served by
# ietd, open-iscsi login (CHAP), every LUN's size, block size and serial, data round trip,
# ro refusal, nullio zeros, clean stop.  Same VM as try-it uses.
# vm: --mem 2G --disk 512M --timeout 300
exec bash "$(dirname "$0")/try-it-guest.sh" --check
