#!/bin/bash
# Increments the key "counter" with compare-and-swap transactions through etcd's JSON
# gateway (/v3/kv/range, /v3/kv/txn), one member of $ETCD_ENDPOINTS (comma-separated
# client URLs) at a time, moving to the next when a request fails. Each transaction also
# writes inc/<new value>, so every increment leaves a key behind. It prints
# "ack VALUE UNIX_NANOS LATENCY_MICROS" for each transaction etcd reported succeeded,
# and nothing for one whose outcome it did not learn.
set -u
IFS=, read -ra eps <<<"$ETCD_ENDPOINTS"
b64() { printf %s "$1" | base64 -w0; }
key=$(b64 counter)
i=0
while :; do
  ep=${eps[$((i % ${#eps[@]}))]}
  # A range is linearizable unless asked otherwise: it sees every earlier commit.
  if ! r=$(curl -sf -m 2 "$ep/v3/kv/range" -d "{\"key\":\"$key\"}"); then
    i=$((i + 1))
    sleep 0.1
    continue
  fi
  v=$(sed -n 's/.*"value":"\([^"]*\)".*/\1/p' <<<"$r")
  if [ -n "$v" ]; then
    cur=$(base64 -d <<<"$v")
    cmp="{\"key\":\"$key\",\"target\":\"VALUE\",\"value\":\"$v\"}"
  else
    cur=0
    cmp="{\"key\":\"$key\",\"target\":\"CREATE\",\"create_revision\":\"0\"}"
  fi
  next=$((cur + 1))
  start=$(date +%s%N)
  put="{\"request_put\":{\"key\":\"$key\",\"value\":\"$(b64 $next)\"}},{\"request_put\":{\"key\":\"$(b64 inc/$next)\",\"value\":\"$(b64 $start)\"}}"
  if ! r=$(curl -sf -m 2 "$ep/v3/kv/txn" -d "{\"compare\":[$cmp],\"success\":[$put]}"); then
    i=$((i + 1))
    continue
  fi
  end=$(date +%s%N)
  if grep -q '"succeeded":true' <<<"$r"; then
    echo "ack $next $end $(((end - start) / 1000))"
  fi
done
