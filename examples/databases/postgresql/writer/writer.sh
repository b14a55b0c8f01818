#!/bin/sh
# Commits rows 1, 2, 3, ... one transaction each. With synchronous_standby_names set on
# the primary, a commit returns only once the standby has flushed it; the script prints
# "ack N UNIX_NANOS LATENCY_MICROS" then. A commit that fails or takes over 5 s is
# abandoned unacknowledged and the next number is tried.
set -u
export PGPASSWORD="$POSTGRES_PASSWORD"
n=0
while :; do
  n=$((n + 1))
  start=$(date +%s%N)
  if timeout 5 psql -qAtX -h "$PGHOST" -U postgres -d postgres -c "INSERT INTO rows (n) VALUES ($n)" >/dev/null 2>/tmp/err; then
    end=$(date +%s%N)
    echo "ack $n $end $(((end - start) / 1000))"
  else
    echo "fail $n $(date +%s%N) $(head -c 160 /tmp/err | tr '\n' ' ')"
    sleep 0.2
  fi
done
