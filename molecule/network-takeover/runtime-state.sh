#!/bin/sh
# The node's network as the kernel has it now, one line per link and per global IPv4
# address: what "nothing changed" (the refusal, the dry run) and "given back" compare at
# run time, beside config-digest.sh's files.
set -eu
ip -o link show | sed -n 's/^[0-9]*: \([^:@]*\)[:@].*/link \1/p' | LC_ALL=C sort
ip -4 -o address show scope global | awk '{print "address", $2, $4}' | LC_ALL=C sort
