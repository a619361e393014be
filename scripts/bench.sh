#!/usr/bin/env bash
# Benchmark: import N confirmed subscribers, then send one digest to all of them through
# postfix's smtp-sink (a fast SMTP server that discards mail). Prints the import time, the send
# rate and the peak memory of `bulletin digest send`.
#
#   scripts/bench.sh [N] [sqlite|postgres]
#
# Needs: postfix's smtp-sink (apt-get install postfix), GNU time (/usr/bin/time), and for
# postgres a server at 127.0.0.1:5432 (trust auth, user postgres).
set -euo pipefail
N=${1:-100000}
BACKEND=${2:-sqlite}
source "$(dirname "$0")/bench-env.sh"
export BULLETIN_POSTAL_ADDRESS="1 Bench Street"

python3 - "$N" > "$WORK/subscribers.csv" <<'PY'
import sys
print("email,name")
for i in range(int(sys.argv[1])):
    print(f"reader{i}@news{i % 97}.example,Reader {i}")
PY

$BIN lists create daily --name "Daily Briefing" > /dev/null
echo "== import of $N confirmed subscribers ($BACKEND)"
/usr/bin/time -f "import: %e s wall, %M KiB peak RSS" \
  $BIN subscribers import daily "$WORK/subscribers.csv" --confirmed --consent "benchmark"

# Ten items pushed through the API of a short-lived server.
BULLETIN_ADMIN_TOKEN=bench serve_api
python3 - > "$WORK/items.json" <<'PY'
import json, datetime
now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
items = [{"guid": f"story-{i}", "title": f"Story {i}: council votes on the new budget",
          "url": f"https://news.example/story-{i}",
          "summary": "<p>The council voted on Tuesday. <strong>Here is what changes</strong> for readers.</p>" * 3,
          "published_at": (now - datetime.timedelta(minutes=i)).isoformat()} for i in range(10)]
print(json.dumps({"items": items}))
PY
curl -sf -H "Authorization: Bearer bench" -H 'content-type: application/json' \
  --data-binary @"$WORK/items.json" "http://127.0.0.1:$API_PORT/api/lists/daily/items" > /dev/null
kill -TERM $SERVE; wait $SERVE || true

echo "== digest to $N recipients through smtp-sink (BULLETIN_SMTP_POOL=${BULLETIN_SMTP_POOL:-8})"
START=$(date +%s.%N)
/usr/bin/time -f "send: %e s wall, %M KiB peak RSS" $BIN digest send daily | tail -n 1
END=$(date +%s.%N)
python3 -c "print(f'rate: {$N / ($END - $START):.0f} messages/s')"
$BIN digest status | head -3

