#!/usr/bin/env bash
# Keeps one daemon running on a host whose PID 1 is not systemd:
#   supervise PIDBASE LOG COMMAND...
# writes PIDBASE.supervisor.pid (itself) and PIDBASE.pid (the daemon), appends the daemon's
# output to LOG, restarts it a second after it dies, and on SIGTERM stops it and exits.
set -u
base=$1 log=$2
shift 2
echo $$ > "$base.supervisor.pid"
child=""
stop() {
    [ -n "$child" ] && kill -TERM "$child" 2>/dev/null && wait "$child" 2>/dev/null
    rm -f "$base.pid" "$base.supervisor.pid"
    exit 0
}
trap stop TERM INT
while true; do
    "$@" >>"$log" 2>&1 &
    child=$!
    echo "$child" > "$base.pid"
    wait "$child"
    echo "supervise: $1 exited ($?), restarting in 1 s" >>"$log"
    sleep 1 &
    wait $!
done
