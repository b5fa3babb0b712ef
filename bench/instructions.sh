#!/usr/bin/env bash
# CPU instructions per request, counted by valgrind's callgrind: repeatable to the instruction
# whatever else the machine does, so two versions can be compared on a noisy machine.
#
# Each server runs alone under callgrind with one worker thread (every thread of the process
# is counted); one client sends identical requests on one keep-alive connection; the counters
# are zeroed after a warm-up and dumped after BENCH_REQUESTS more. The upstream (nginx) is not
# counted. Prints a markdown table; see bench/README.md.
set -euo pipefail

REQUESTS=${BENCH_REQUESTS:-2000}
WARMUP=${BENCH_WARMUP_REQUESTS:-200}
PORT_BASE=${BENCH_PORT_BASE:-19080}
SKIP_BUILD=${BENCH_SKIP_BUILD:-0}
ONLY=${BENCH_ONLY:-}
# BENCH_KEEP=DIR keeps each row's callgrind dump there, for callgrind_annotate.
# Extra rows, as they land: each is "key|label|yaml file relative to bench/instructions/",
# separated by spaces, or by newlines (then a label may hold spaces)
EXTRA=${BENCH_EXTRA:-}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
PORTCULLIS=$TARGET_DIR/release/portcullis
BARE=$TARGET_DIR/release/examples/bare_pingora
MINT=$TARGET_DIR/release/examples/mint_session

log() { printf '[instructions] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

for tool in valgrind callgrind_control nginx redis-server redis-cli python3; do
    command -v "$tool" >/dev/null || die "$tool not found (apt-get install -y valgrind nginx-light redis-server python3)"
done

if [[ $SKIP_BUILD != 1 ]]; then
    log "building release binaries"
    (cd "$ROOT" && cargo build --release --locked --bin portcullis \
        --example bare_pingora --example mint_session >&2)
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/portcullis-instructions.XXXXXX")
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    sleep 0.5
    for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

NEXT_PORT=$PORT_BASE
free_port() {
    local p=$NEXT_PORT
    while (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; do p=$((p + 1)); done
    NEXT_PORT=$((p + 1))
    PORT=$p
}

want() { [[ -z $ONLY || " $ONLY " == *" $1 "* ]]; }

# The client: one keep-alive connection, the same request bytes each time. Reads each answer
# fully (Content-Length or chunked) and fails on any status but the expected one.
cat >"$WORK/client.py" <<'PY'
import socket, sys
port, count, status = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
request = sys.argv[4].encode().decode('unicode_escape').encode('latin-1')
s = socket.create_connection(("127.0.0.1", port))
buf = b""
def read_response():
    global buf
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise SystemExit("connection closed")
        buf += chunk
    head, buf = buf.split(b"\r\n\r\n", 1)
    lines = head.split(b"\r\n")
    code = lines[0].split(b" ")[1].decode()
    if code != status:
        raise SystemExit(f"status {code}, wanted {status}: {head!r}")
    length = 0
    chunked = False
    for l in lines[1:]:
        k, _, v = l.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v.strip())
        if k.strip().lower() == b"transfer-encoding" and b"chunked" in v.lower():
            chunked = True
    if chunked:
        while True:
            while b"\r\n" not in buf:
                buf += s.recv(65536)
            size_line, buf = buf.split(b"\r\n", 1)
            size = int(size_line.split(b";")[0], 16)
            while len(buf) < size + 2:
                buf += s.recv(65536)
            buf = buf[size + 2:]
            if size == 0:
                return
    while len(buf) < length:
        buf += s.recv(65536)
    buf = buf[length:]
for _ in range(count):
    s.sendall(request)
    read_response()
PY

client() { python3 "$WORK/client.py" "$@"; }

# ---- the upstream (not counted) ---------------------------------------------------------------
free_port
UPSTREAM_PORT=$PORT
mkdir -p "$WORK/upstream"
cat >"$WORK/upstream/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
pid $WORK/upstream/nginx.pid;
error_log $WORK/upstream/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $WORK/upstream/tmp;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    server {
        listen 127.0.0.1:$UPSTREAM_PORT;
        location / { default_type text/plain; return 200 "hello from the upstream"; }
    }
}
EOF
nginx -p "$WORK/upstream" -e "$WORK/upstream/error.log" -c "$WORK/upstream/nginx.conf" >/dev/null 2>&1 &
PIDS+=($!)

free_port
REDIS_PORT=$PORT
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$WORK" >/dev/null 2>&1 &
PIDS+=($!)
for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done

# ---- counting ---------------------------------------------------------------------------------
declare -A RESULT
ORDER=()

# Starts "$@" under callgrind, warms it up with the request, zeroes the counters, sends
# REQUESTS more and reads the instructions executed meanwhile.
# $1 key, $2 label, $3 port, $4 expected status, $5 request (with \r\n escapes), rest: command
count() {
    local key=$1 label=$2 port=$3 status=$4 request=$5
    shift 5
    local out=$WORK/$key.callgrind
    valgrind --tool=callgrind --callgrind-out-file="$out.%p" --dump-instr=no \
        --separate-threads=no "$@" >"$WORK/$key.log" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    local up=0
    for _ in $(seq 600); do
        if client "$port" 1 "$status" "$request" 2>/dev/null; then up=1; break; fi
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.2
    done
    ((up)) || { tail -n 30 "$WORK/$key.log" >&2; die "$key did not answer $status"; }
    client "$port" "$WARMUP" "$status" "$request"
    callgrind_control -z "$pid" >/dev/null
    client "$port" "$REQUESTS" "$status" "$request"
    callgrind_control -d "$pid" >/dev/null
    sleep 0.5
    local dump
    dump=$(ls -t "$out.$pid"* 2>/dev/null | grep -v "\.$pid$" | head -n 1 || true)
    [[ -n $dump ]] || dump=$(ls -t "$out.$pid"* | head -n 1)
    local total
    total=$(awk '/^(summary|totals):/ { print $2; exit }' "$dump")
    [[ -n $total ]] || die "$key: no totals in $dump"
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    RESULT[$key]=$((total / REQUESTS))
    if [[ -n ${BENCH_KEEP:-} ]]; then
        mkdir -p "$BENCH_KEEP"
        cp "$dump" "$BENCH_KEEP/$key.callgrind"
    fi
    ORDER+=("$key|$label")
    log "$label: ${RESULT[$key]} instructions/request"
}

GET="GET / HTTP/1.1\\r\\nHost: app.test\\r\\nUser-Agent: bench\\r\\nAccept: */*\\r\\n\\r\\n"

if want bare_pingora; then
    free_port
    count bare_pingora "bare Pingora pass-through" "$PORT" 200 "$GET" \
        "$BARE" "127.0.0.1:$PORT" "127.0.0.1:$UPSTREAM_PORT" 1
fi

# The floor: bare Pingora plus only what the contract puts on every proxied request (four
# forwarding headers, three security headers, Server removed, upstream read and pool idle
# timeouts), written the cheapest way Pingora's API allows. See examples/bare_pingora.rs.
if want bare_contract; then
    free_port
    count bare_contract "bare Pingora + the contract's headers and timeouts (floor)" "$PORT" 200 "$GET" \
        "$BARE" "127.0.0.1:$PORT" "127.0.0.1:$UPSTREAM_PORT" 1 --contract
fi

if want nginx; then
    free_port
    mkdir -p "$WORK/nginx"
    cat >"$WORK/nginx/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $WORK/nginx/tmp-body;
    proxy_temp_path $WORK/nginx/tmp-proxy;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    upstream app { server 127.0.0.1:$UPSTREAM_PORT; keepalive 16; keepalive_requests 1000000; }
    server {
        listen 127.0.0.1:$PORT;
        location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; }
    }
}
EOF
    count nginx "nginx 1.22 proxy_pass" "$PORT" 200 "$GET" \
        nginx -p "$WORK/nginx" -e "$WORK/nginx/error.log" -c "$WORK/nginx/nginx.conf"
fi

SECRET=$("$PORTCULLIS" gen-secret)
# A Portcullis config: the head (one thread, no admin, no access log; $3: more `server:`
# keys), then $2 (more YAML).
portcullis_conf() {
    local file=$1 rest=$2 server=${3:-}
    # Each config in a directory of its own: the reload watcher reads the config again on any
    # change in its directory, and this script writes logs and dumps into $WORK meanwhile.
    mkdir -p "$(dirname "$file")"
    cat >"$file" <<EOF
server:
  listen: ["127.0.0.1:$PORT"]
  threads: 1
  public_url: http://app.test:$PORT
$server
admin:
  listen: off
logging:
  format: json
  level: error
  access_log: false
$rest
EOF
    "$PORTCULLIS" check --config "$file" >/dev/null || die "portcullis check $file"
}

SESSION="session:
  store: redis
  redis: { url: \"redis://127.0.0.1:$REDIS_PORT/0\" }
  secrets: [\"$SECRET\"]
  cookie: { secure: false }
  cache_ttl: 10m
  refresh: false
providers:
  - { id: bench, type: oidc, issuer: \"http://127.0.0.1:9/\", client_id: bench, client_secret: bench }"

COOKIE=""
mint() {
    [[ -n $COOKIE ]] || COOKIE=$("$MINT" "redis://127.0.0.1:$REDIS_PORT/0" "$SECRET" "portcullis:" bench)
}

# A forward-auth check as nginx sends it, for the target $1 (after `mint`): the front proxy's
# description of the original request and the session cookie. The forward-auth row and the
# floor rows under it send the same bytes.
fa_request() {
    printf '%s' "GET $1 HTTP/1.1\\r\\nHost: auth.internal\\r\\nX-Original-URL: http://app.test/\\r\\nX-Original-Method: GET\\r\\nX-Forwarded-For: 203.0.113.7\\r\\nAccept: */*\\r\\nCookie: _portcullis=$COOKIE\\r\\n\\r\\n"
}

if want portcullis_public; then
    free_port
    portcullis_conf "$WORK/conf-public/portcullis.yaml" "routes:
  - { name: public, path: /, upstream: \"http://127.0.0.1:$UPSTREAM_PORT\", auth: none }"
    count portcullis_public "Portcullis, public route (auth: none)" "$PORT" 200 "$GET" \
        "$PORTCULLIS" serve --config "$WORK/conf-public/portcullis.yaml"
fi

if want portcullis_auth; then
    free_port
    mint
    portcullis_conf "$WORK/conf-auth/portcullis.yaml" "$SESSION
routes:
  - { name: private, path: /, upstream: \"http://127.0.0.1:$UPSTREAM_PORT\", auth: required }"
    AUTH_GET="GET / HTTP/1.1\\r\\nHost: app.test\\r\\nUser-Agent: bench\\r\\nAccept: */*\\r\\nCookie: _portcullis=$COOKIE\\r\\n\\r\\n"
    count portcullis_auth "Portcullis, authenticated route (cookie, Redis store, cache hit)" \
        "$PORT" 200 "$AUTH_GET" "$PORTCULLIS" serve --config "$WORK/conf-auth/portcullis.yaml"
fi

if want forward_auth; then
    free_port
    mint
    portcullis_conf "$WORK/conf-fa/portcullis.yaml" "$SESSION
routes:
  - { name: app, host: app.test, path: /, auth: required }" "  trusted_proxies: [127.0.0.1/32]"
    FA_GET=$(fa_request /.portcullis/auth)
    count forward_auth "Portcullis, forward-auth check (logged-in user)" \
        "$PORT" 200 "$FA_GET" "$PORTCULLIS" serve --config "$WORK/conf-fa/portcullis.yaml"
fi

# The floor for an answer Portcullis writes itself (no upstream): what forward auth compares to.
if want static; then
    free_port
    portcullis_conf "$WORK/conf-static/portcullis.yaml" "routes:
  - { name: static, path: /, upstream: \"static://200\", auth: none }"
    count static "Portcullis, static://200 route (answers by itself, auth: none)" "$PORT" 200 "$GET" \
        "$PORTCULLIS" serve --config "$WORK/conf-static/portcullis.yaml"
fi

# The same floor for the forward-auth request's bytes (its three front-proxy headers and the
# session cookie, read and dropped by Pingora): what is left between this row and the
# forward-auth row is the check itself.
if want static_fa_bytes; then
    free_port
    mint
    portcullis_conf "$WORK/conf-static-fa/portcullis.yaml" "routes:
  - { name: static, path: /, upstream: \"static://200\", auth: none }" "  trusted_proxies: [127.0.0.1/32]"
    STATIC_FA_GET=$(fa_request /)
    count static_fa_bytes "Portcullis, static://200 route, the forward-auth request's bytes" "$PORT" 200 \
        "$STATIC_FA_GET" "$PORTCULLIS" serve --config "$WORK/conf-static-fa/portcullis.yaml"
fi

# Pingora alone answering 200 from request_filter, to the plain request and to the
# forward-auth request's bytes: the floor under the two rows above and under forward auth.
if want bare_answer; then
    free_port
    count bare_answer "bare Pingora answering 200 itself" "$PORT" 200 "$GET" \
        "$BARE" "127.0.0.1:$PORT" "127.0.0.1:$UPSTREAM_PORT" 1 --answer
fi
if want bare_answer_fa_bytes; then
    free_port
    mint
    BARE_FA_GET=$(fa_request /.portcullis/auth)
    count bare_answer_fa_bytes "bare Pingora answering 200 itself, the forward-auth request's bytes" "$PORT" 200 \
        "$BARE_FA_GET" "$BARE" "127.0.0.1:$PORT" "127.0.0.1:$UPSTREAM_PORT" 1 --answer
fi

# Scale: the same public request on a host route, alone and among 10 000 exact and 1 000
# wildcard hosts; then a request for a wildcard host, alone and among them. A host lookup that
# does not depend on the number of routes gives the same count in each pair.
scale_routes() {
    local with_many=$1 i
    echo "routes:"
    echo "  - { name: app, host: app.test, path: /, upstream: \"http://127.0.0.1:$UPSTREAM_PORT\", auth: none }"
    echo "  - { name: wild, host: \"*.w999.test\", path: /, upstream: \"http://127.0.0.1:$UPSTREAM_PORT\", auth: none }"
    if [[ $with_many == 1 ]]; then
        for ((i = 0; i < 10000; i++)); do
            echo "  - { host: h$i.test, path: /, upstream: \"http://127.0.0.1:$UPSTREAM_PORT\", auth: none }"
        done
        for ((i = 0; i < 999; i++)); do
            echo "  - { host: \"*.w$i.test\", path: /, upstream: \"http://127.0.0.1:$UPSTREAM_PORT\", auth: none }"
        done
    fi
}
WILD_GET="GET / HTTP/1.1\\r\\nHost: x.w999.test\\r\\nUser-Agent: bench\\r\\nAccept: */*\\r\\n\\r\\n"
for many in 0 1; do
    suffix=$([[ $many == 1 ]] && echo "_many" || echo "")
    routes=$([[ $many == 1 ]] && echo "among 11 001 routes" || echo "2 routes")
    if want "host$suffix"; then
        free_port
        portcullis_conf "$WORK/conf-host$suffix/portcullis.yaml" "$(scale_routes $many)"
        count "host$suffix" "Portcullis, public route, exact host ($routes)" "$PORT" 200 "$GET" \
            "$PORTCULLIS" serve --config "$WORK/conf-host$suffix/portcullis.yaml"
    fi
    if want "wildcard$suffix"; then
        free_port
        portcullis_conf "$WORK/conf-wildcard$suffix/portcullis.yaml" "$(scale_routes $many)"
        count "wildcard$suffix" "Portcullis, public route, wildcard host ($routes)" "$PORT" 200 \
            "$WILD_GET" "$PORTCULLIS" serve --config "$WORK/conf-wildcard$suffix/portcullis.yaml"
    fi
done

# Rows added by later capabilities: a YAML fragment (routes and what they need) in
# bench/instructions/<key>.yaml, with @UPSTREAM@, @REDIS@ and @SECRET@ placeholders, driven
# with the authenticated request.
# Rows are separated by spaces, or by newlines when there is one (then labels may hold spaces).
EXTRA_SEP=' '
[[ $EXTRA == *$'\n'* ]] && EXTRA_SEP=$'\n'
# (Read without the newline a here-string would add: with no rows, no row at all.)
EXTRA_ROWS=()
IFS=$EXTRA_SEP read -r -d '' -a EXTRA_ROWS < <(printf '%s' "$EXTRA") || true
for extra in "${EXTRA_ROWS[@]}"; do
    [[ -n ${extra//[[:space:]]/} ]] || continue
    IFS='|' read -r key label file <<<"$extra"
    want "$key" || continue
    free_port
    mint
    sed -e "s|@UPSTREAM@|http://127.0.0.1:$UPSTREAM_PORT|g" -e "s|@REDIS@|redis://127.0.0.1:$REDIS_PORT/0|g" \
        -e "s|@SECRET@|$SECRET|g" "$ROOT/bench/instructions/$file" >"$WORK/$key.rest"
    portcullis_conf "$WORK/conf-$key/portcullis.yaml" "$(cat "$WORK/$key.rest")"
    AUTH_GET="GET / HTTP/1.1\\r\\nHost: app.test\\r\\nUser-Agent: bench\\r\\nAccept: */*\\r\\nCookie: _portcullis=$COOKIE\\r\\n\\r\\n"
    count "$key" "$label" "$PORT" 200 "$AUTH_GET" "$PORTCULLIS" serve --config "$WORK/conf-$key/portcullis.yaml"
done

# ---- the table --------------------------------------------------------------------------------
base=${RESULT[bare_pingora]:-}
echo
echo "| server, same request | instructions / request | × bare Pingora |"
echo "| --- | ---: | ---: |"
for row in "${ORDER[@]}"; do
    key=${row%%|*}
    label=${row#*|}
    ratio="-"
    [[ -n $base ]] && ratio=$(awk -v a="${RESULT[$key]}" -v b="$base" 'BEGIN { printf "%.2f", a / b }')
    printf '| %s | %s | %s |\n' "$label" "$(printf "%'d" "${RESULT[$key]}" 2>/dev/null || echo "${RESULT[$key]}")" "$ratio"
done
echo
echo "($REQUESTS requests after $WARMUP warm-up requests, one keep-alive connection, one worker thread; commit $(cd "$ROOT" && git rev-parse --short HEAD))"
