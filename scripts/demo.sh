#!/usr/bin/env bash
# The main job on a built-in default: a throwaway cluster, a local receiver
# on 127.0.0.1, a business table with the callback trigger, events flowing,
# metrics shown.  Everything is removed at the end.
# Usage: scripts/demo.sh [rows]   (default 1000)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/scripts/lib.sh"
rows=${1:-1000}
port=${PGCB_DEMO_PORT:-55433}
receiver_port=${PGCB_DEMO_RECEIVER_PORT:-18099}

bash "$root/scripts/install-deps.sh"
work=$(mktemp -d /tmp/pgcb-demo.XXXXXX)
chmod 755 "$work"
receiver_pid=
cleanup() {
    [ -n "$receiver_pid" ] && kill "$receiver_pid" 2>/dev/null || true
    stop_cluster "$work"
    rm -rf "$work"
}
trap cleanup EXIT

echo "== building and installing pg_callback"
build_and_install "$root" "$work/src"

echo "== starting a throwaway cluster on port $port"
start_cluster "$work" "$port" \
    "shared_preload_libraries = 'pg_callback'" \
    "callback.database_name = 'demo'" \
    "callback.ssrf_allowlist = '127.0.0.0/8'"
psql() { as_postgres "$PGBIN/psql" -h "$work" -p "$port" -U postgres -X -q -v ON_ERROR_STOP=1 "$@"; }
psql -d postgres -c "CREATE DATABASE demo"

echo "== starting the receiver on http://127.0.0.1:$receiver_port"
/usr/bin/python3 "$root/test/receiver.py" --port "$receiver_port" --print --jsonl "$work/requests.jsonl" \
    > "$work/receiver.log" 2>&1 &
receiver_pid=$!
for _ in $(seq 50); do grep -q listening "$work/receiver.log" && break; sleep 0.1; done

echo "== setting up: endpoint, business table, trigger"
psql -d demo <<SQL
CREATE EXTENSION pg_callback;
SELECT callback.create_endpoint('orders-service', 'http://127.0.0.1:$receiver_port/webhooks',
                                event_types => '{order.*}') AS endpoint_id;
CREATE TABLE orders (id serial PRIMARY KEY, customer text, total numeric(10,2), status text);
CREATE TRIGGER orders_callback AFTER INSERT OR UPDATE OR DELETE ON orders
    FOR EACH ROW EXECUTE FUNCTION callback.trigger('order');
SQL

echo "== $rows inserts in one transaction, one rolled-back transaction, an update and a delete"
psql -d demo <<SQL
INSERT INTO orders (customer, total, status)
SELECT 'customer ' || g, round((random() * 100)::numeric, 2), 'new' FROM generate_series(1, $rows) g;
BEGIN;
INSERT INTO orders (customer, total, status) VALUES ('never sent', 1, 'rolled back');
ROLLBACK;
BEGIN;
-- the writer's W3C trace context: the event carries it to the receiver
SET LOCAL callback.traceparent = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
UPDATE orders SET status = 'paid' WHERE id = 1;
COMMIT;
DELETE FROM orders WHERE id = 2;
SQL
expected=$((rows + 2))

echo "== waiting for $expected deliveries"
start=$(date +%s%N)
for _ in $(seq 600); do
    done_count=$(psql -d demo -At -c "SELECT count(*) FROM callback.callback_queue WHERE status = 'delivered'")
    [ "$done_count" -ge "$expected" ] && break
    sleep 0.1
done
elapsed_ms=$((($(date +%s%N) - start) / 1000000))
received=$(grep -c '^[0-9]' "$work/receiver.log" || true)
echo "delivered: $done_count of $expected in about $elapsed_ms ms after the last commit (receiver saw $received POSTs; rolled-back row sent: $(grep -c 'never sent' "$work/receiver.log" || true) times)"

echo "== the first requests the receiver saw"
grep '^[0-9]' "$work/receiver.log" | head -3 || true
echo "== the update and the delete"
grep -E 'order\.(update|delete)' "$work/receiver.log" | head -2 || true

echo "== the update's trace context (same trace id, a new parent id per attempt)"
/usr/bin/python3 - "$work/requests.jsonl" <<'PY' || true
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    if '"order.update"' in r["body"]:
        print("traceparent:", r["headers"].get("traceparent"))
PY

echo "== SELECT * FROM callback.callback_metrics"
psql -d demo -c "SELECT * FROM callback.callback_metrics"
echo "== SELECT * FROM callback.callback_health"
psql -d demo -c "SELECT * FROM callback.callback_health"
echo "== SELECT * FROM callback.callback_worker_stats"
psql -d demo -x -c "SELECT state, inflight, sent, delivered, failed, dead, bytes_sent, batches FROM callback.callback_worker_stats"
[ "$done_count" -ge "$expected" ]
