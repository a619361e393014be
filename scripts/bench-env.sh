# Shared set-up of the benchmark scripts (sourced, with BACKEND set to sqlite or postgres): a
# release build, postfix's smtp-sink on a free port, and a fresh database of that backend, all
# removed on exit. Sets BIN, WORK, PORT, API_PORT, DATABASE_URL and BULLETIN_SMTP_URL.
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --release --quiet
BIN=$PWD/target/release/bulletin
WORK=$(mktemp -d)
PORT=$((20000 + RANDOM % 20000))
API_PORT=$((PORT + 1))
trap 'kill ${SERVE:-} ${SINK:-} 2>/dev/null || true; rm -rf "$WORK"; [ -z "${DB:-}" ] || psql -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)"' EXIT

smtp-sink -u nobody 127.0.0.1:$PORT 1024 &
SINK=$!

if [ "$BACKEND" = postgres ]; then
  DB=bulletin_bench_$$
  psql -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB"
  export DATABASE_URL=postgres://postgres@127.0.0.1:5432/$DB
else
  export DATABASE_URL=sqlite://$WORK/bench.db
fi
export BULLETIN_SMTP_URL=smtp://127.0.0.1:$PORT RUST_LOG=warn BULLETIN_PUBLIC_URL=https://news.example

# Starts `bulletin serve` on API_PORT in the background (SERVE) and waits until it answers.
# Variables given before the call (`BULLETIN_ADMIN_TOKEN=x serve_api`) reach it.
serve_api() {
  BULLETIN_LISTEN=127.0.0.1:$API_PORT "$BIN" serve 2> "$WORK/serve.log" &
  SERVE=$!
  for _ in $(seq 1 50); do curl -sf "http://127.0.0.1:$API_PORT/healthz" > /dev/null && break; sleep 0.1; done
}
