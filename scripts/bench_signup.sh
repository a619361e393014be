#!/usr/bin/env bash
# Benchmark: signups per second through the public HTTP endpoint, each a new address (so each is
# a write transaction and a queued confirmation email), with the sender delivering those emails
# to postfix's smtp-sink at the same time. The rate limit is off, as for any load test.
#
#   scripts/bench_signup.sh [sqlite|postgres] [seconds] [connections]
#
# Needs: wrk, postfix's smtp-sink (apt-get install wrk postfix), and for postgres a server at
# 127.0.0.1:5432 (trust auth, user postgres).
set -euo pipefail
BACKEND=${1:-sqlite}
SECONDS_TO_RUN=${2:-20}
CONNECTIONS=${3:-32}
source "$(dirname "$0")/bench-env.sh"
export BULLETIN_RATE_LIMIT=0

$BIN lists create daily --name "Daily Briefing" > /dev/null
serve_api

cat > "$WORK/signup.lua" <<'LUA'
-- Every request a new address: thread number and a counter within the thread.
local threads = 0
function setup(thread) threads = threads + 1; thread:set("id", threads) end
local n = 0
function request()
  n = n + 1
  local body = string.format('{"email":"r%d.%d@news%d.example","lists":["daily"]}', id, n, n % 97)
  return wrk.format("POST", "/subscriptions", {["Content-Type"] = "application/json"}, body)
end
LUA

echo "== signups for ${SECONDS_TO_RUN} s over $CONNECTIONS connections ($BACKEND)"
wrk -t2 -c"$CONNECTIONS" -d"${SECONDS_TO_RUN}s" --latency -s "$WORK/signup.lua" "http://127.0.0.1:$API_PORT" \
  | grep -E "Requests/sec|Latency|50%|99%|Non-2xx|requests in|errors"
if [ "$BACKEND" = postgres ]; then
  # wrk hangs up on requests in flight when it ends: none may leave a session inside a transaction.
  sleep 5
  psql -Atq -h 127.0.0.1 -U postgres -d "$DB" -c "SELECT 'sessions inside a transaction for over 5 s: ' || COUNT(*)
    FROM pg_stat_activity WHERE datname = current_database() AND now() - xact_start > interval '5 seconds'
    AND pid <> pg_backend_pid()"
fi
# The queued confirmations drain into smtp-sink meanwhile; what was stored:
$BIN lists | head -3
