#!/bin/sh
# Guest (L3) /init for the jail scenario: says it is up, gives the lab host time to look at the
# jailed lguest from outside, and powers off.
export PATH=/bin
mount -t proc proc /proc
echo "LGUEST-JAIL ready cpus=$(grep -c ^processor /proc/cpuinfo)"
sleep 15
echo "LGUEST-JAIL done"
poweroff -f
