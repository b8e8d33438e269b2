#!/usr/bin/env bash
# Fails if a test run left mounts, cgroups, containers or state behind.
set -u
work=/var/tmp/lodge-tests
bad=0
if grep -q " $work" /proc/self/mountinfo; then
    echo "residue: mounts under $work:"; grep " $work" /proc/self/mountinfo | awk '{print "  " $5}'; bad=1
fi
for dir in /sys/fs/cgroup/*/lodge /sys/fs/cgroup/lodge /sys/fs/cgroup/*/lodge-test /sys/fs/cgroup/lodge-test; do
    [ -d "$dir" ] || continue
    left=$(find "$dir" -mindepth 1 -maxdepth 1 -type d 2>/dev/null)
    if [ -n "$left" ]; then echo "residue: cgroups left in $dir:"; echo "$left" | sed 's/^/  /'; bad=1; fi
done
if [ -d "$work/roots" ] && [ -n "$(ls -A "$work/roots")" ]; then
    echo "residue: container state left in $work/roots: $(ls "$work/roots")"; bad=1
fi
if [ -d "$work/bundles" ] && [ -n "$(ls -A "$work/bundles")" ]; then
    echo "residue: bundles left in $work/bundles: $(ls "$work/bundles" | head)"; bad=1
fi
if pgrep -f "lodge-fs keeper --keeper-socket $work" >/dev/null; then
    echo "residue: lodge-fs keepers left:"; pgrep -af "lodge-fs keeper --keeper-socket $work" | sed 's/^/  /'; bad=1
fi
if [ $bad = 0 ]; then echo "no residue"; fi
exit $bad
