#!/usr/bin/env bash
# peer_curl_cli.sh: N create_or_update upserts with the curl command line, one process (and so
# one connection) per request, the same headers as the module, the whole body read.
#   bench/peer_curl_cli.sh URL N [PREFIX]   (prints "requests N seconds S rps R")
set -euo pipefail
url=${1:?usage: peer_curl_cli.sh URL N [PREFIX]}
n=${2:?usage: peer_curl_cli.sh URL N [PREFIX]}
prefix=${3:-cli}
failed=0
t0=$(date +%s.%N)
for ((i = 1; i <= n; i++)); do
  code=$(curl -s -o /dev/null -w '%{http_code}' --compressed -u 'admin@example.com/token:stand-in-token' \
    -H 'Accept: application/json' -H 'Content-Type: application/json' \
    -d "{\"user\":{\"email\":\"$prefix-$i@example.com\",\"name\":\"Bench User $i\"}}" \
    "$url/api/v2/users/create_or_update.json") || code=000
  if [ "$code" != 201 ] && [ "$code" != 200 ]; then
    [ "$failed" = 0 ] && echo "peer_curl_cli: request $i: HTTP $code" >&2
    failed=$((failed + 1))
  fi
done
t1=$(date +%s.%N)
awk -v n="$n" -v a="$t0" -v b="$t1" -v f="$failed" \
  'BEGIN { printf "requests %d seconds %.6f rps %.1f failed %d\n", n, b - a, n / (b - a), f }'
[ "$failed" = 0 ]
