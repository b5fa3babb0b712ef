#!/usr/bin/env bash
# Token endpoint throughput (POST /.portcullis/token, client_credentials, client_secret_basic):
#
#   cold: the first request of each of BENCH_CLIENTS clients, each paying one argon2id
#         verification of its secret (m=19456 KiB, t=2, p=1: OWASP's parameters, the ones
#         `portcullis hash-password` writes);
#   warm: one returning client for BENCH_DURATION seconds (its secret remembered as an HMAC
#         after the first verification), BENCH_CONNS keep-alive connections.
#
# Reports tokens/s and the server's CPU time per token (steadier on a shared machine). Uses
# wrk when installed (apt-get install -y wrk), else a Python load generator. A script, not a
# test: nothing fails when numbers are low. See bench/README.md.
set -euo pipefail

CLIENTS=${BENCH_CLIENTS:-40}
DURATION=${BENCH_DURATION:-10}
CONNS=${BENCH_CONNS:-16}
THREADS=${BENCH_THREADS:-2}
PORT=${BENCH_PORT:-19580}
SKIP_BUILD=${BENCH_SKIP_BUILD:-0}
PROFILE=${BENCH_PROFILE:-release}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
PORTCULLIS=$TARGET_DIR/$PROFILE/portcullis

log() { printf '[tokens] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
command -v python3 >/dev/null || die "python3 not found"

if [[ $SKIP_BUILD != 1 ]]; then
    log "building the $PROFILE binary"
    if [[ $PROFILE == release ]]; then
        (cd "$ROOT" && cargo build --release --locked --bin portcullis >&2)
    else
        (cd "$ROOT" && cargo build --locked --bin portcullis >&2)
    fi
fi
[[ -x $PORTCULLIS ]] || die "$PORTCULLIS not found"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/portcullis-tokens.XXXXXX")
PID=""
cleanup() {
    [[ -n $PID ]] && kill -TERM "$PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

while (echo >"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; do PORT=$((PORT + 1)); done

log "hashing $((CLIENTS + 1)) client secrets (argon2id, m=19456 KiB, t=2, p=1)"
{
    echo "server:"
    echo "  listen: [\"127.0.0.1:$PORT\"]"
    echo "  threads: $THREADS"
    echo "  public_url: http://127.0.0.1:$PORT"
    echo "admin: { listen: off }"
    echo "logging: { level: error, access_log: false, audit: off }"
    # The built-in auth-endpoints limiter (30/m per address) would refuse a benchmark's load
    # from one address: this one admits everything, so every token is issued.
    echo "rate_limits: [{ name: auth-endpoints, key: client_ip, limit: 1000000/s, burst: 1000000 }]"
    echo "issuer:"
    echo "  clients:"
    for i in $(seq 0 "$CLIENTS"); do
        hash=$(printf 'secret-%s\n' "$i" | "$PORTCULLIS" hash-password)
        echo "    - { id: client-$i, secret_hash: \"$hash\", scopes: [api:read] }"
    done
    echo "routes:"
    echo "  - { path: /, upstream: \"static://200\", auth: none }"
} >"$WORK/portcullis.yaml"
"$PORTCULLIS" check --config "$WORK/portcullis.yaml" >/dev/null || die "check failed"
"$PORTCULLIS" serve --config "$WORK/portcullis.yaml" >"$WORK/out.log" 2>&1 &
PID=$!
for _ in $(seq 100); do
    (echo >"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
    sleep 0.1
done

cpu_ticks() { awk '{print $14 + $15}' "/proc/$PID/stat"; }
TICK=$(getconf CLK_TCK)

# Cold: the first token of clients 1..CLIENTS, two at a time (one per core).
log "cold: first request of $CLIENTS clients"
before=$(cpu_ticks)
cold=$(python3 - "$PORT" "$CLIENTS" <<'PY'
import base64, http.client, sys, time, threading
port, n = int(sys.argv[1]), int(sys.argv[2])
ids = list(range(1, n + 1))
lock = threading.Lock()
bad = 0
def work():
    global bad
    c = http.client.HTTPConnection("127.0.0.1", port)
    while True:
        with lock:
            if not ids: return
            i = ids.pop()
        cred = base64.b64encode(f"client-{i}:secret-{i}".encode()).decode()
        c.request("POST", "/.portcullis/token", "grant_type=client_credentials",
                  {"Authorization": "Basic " + cred, "Content-Type": "application/x-www-form-urlencoded"})
        r = c.getresponse(); r.read()
        if r.status != 200:
            with lock: bad += 1
t = time.time()
ts = [threading.Thread(target=work) for _ in range(2)]
[x.start() for x in ts]; [x.join() for x in ts]
el = time.time() - t
print(f"{n / el:.1f} {el:.3f} {bad}")
PY
)
after=$(cpu_ticks)
read -r cold_rate cold_secs cold_bad <<<"$cold"
cold_cpu=$(python3 -c "print(f'{($after - $before) / $TICK / $CLIENTS * 1e6:.0f}')")

# Warm: client-0, verified once first.
CRED=$(printf 'client-0:secret-0' | base64 -w0)
curl -s -o /dev/null -w '%{http_code}' -u client-0:secret-0 -d grant_type=client_credentials \
    "http://127.0.0.1:$PORT/.portcullis/token" | grep -q 200 || die "warm-up token refused"
log "warm: one returning client, ${DURATION}s, $CONNS connections"
before=$(cpu_ticks)
if command -v wrk >/dev/null; then
    cat >"$WORK/token.lua" <<LUA
wrk.method = "POST"
wrk.body = "grant_type=client_credentials"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Authorization"] = "Basic $CRED"
LUA
    out=$(wrk -t 1 -c "$CONNS" -d "${DURATION}s" -s "$WORK/token.lua" "http://127.0.0.1:$PORT/.portcullis/token")
    warm_rate=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    warm_total=$(awk '/requests in/ {print $1}' <<<"$out")
    warm_bad=$(awk '/Non-2xx/ {print $5}' <<<"$out"); warm_bad=${warm_bad:-0}
    tool=wrk
else
    read -r warm_rate warm_total warm_bad < <(python3 - "$PORT" "$CRED" "$DURATION" "$CONNS" <<'PY'
import http.client, sys, time, multiprocessing as mp
port, cred, dur, conns = int(sys.argv[1]), sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
def work(q):
    c = http.client.HTTPConnection("127.0.0.1", port)
    h = {"Authorization": "Basic " + cred, "Content-Type": "application/x-www-form-urlencoded"}
    ok = bad = 0
    end = time.time() + dur
    while time.time() < end:
        c.request("POST", "/.portcullis/token", "grant_type=client_credentials", h)
        r = c.getresponse(); r.read()
        if r.status == 200: ok += 1
        else: bad += 1
    q.put((ok, bad))
q = mp.Queue()
ps = [mp.Process(target=work, args=(q,)) for _ in range(conns)]
t = time.time(); [p.start() for p in ps]; [p.join() for p in ps]; el = time.time() - t
ok = bad = 0
for _ in ps:
    a, b = q.get(); ok += a; bad += b
print(f"{ok / el:.0f} {ok + bad} {bad}")
PY
)
    tool="python3 ($CONNS processes)"
fi
after=$(cpu_ticks)
warm_cpu=$(python3 -c "print(f'{($after - $before) / $TICK / max(1, $warm_total) * 1e6:.1f}')")

cat <<EOF

Token endpoint, client_credentials + client_secret_basic, ES256, argon2id m=19456 KiB t=2 p=1,
$THREADS worker threads ($PROFILE build), load from $tool on the same machine.

| case | tokens/s | server CPU µs/token | errors |
| --- | ---: | ---: | ---: |
| cold (first request of $CLIENTS clients, 2 at a time) | $cold_rate | $cold_cpu | $cold_bad |
| warm (one returning client, $CONNS connections, ${DURATION}s) | $warm_rate | $warm_cpu | $warm_bad |
EOF
