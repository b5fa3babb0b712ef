#!/usr/bin/env bash
# Throughput/latency benchmark: the same wrk load against an upstream directly, a bare Pingora
# pass-through, nginx, Caddy and Portcullis, in one run, written to docs/benchmarks/throughput.md.
# See bench/README.md. Everything listens on 127.0.0.1 only; temp files live in one mktemp dir;
# every process started here is stopped on exit.
set -euo pipefail

# ---- settings (environment) -------------------------------------------------------------------
THREADS=${BENCH_THREADS:-1}              # worker threads/processes of every proxy
UPSTREAM_WORKERS=${BENCH_UPSTREAM_WORKERS:-1}
WRK_THREADS=${BENCH_WRK_THREADS:-1}
CONNS=${BENCH_CONNS:-32}
DURATION=${BENCH_DURATION:-8s} 
WARMUP=${BENCH_WARMUP:-2s}               # unrecorded wrk run before each measured one
ROUNDS=${BENCH_ROUNDS:-3}                # all targets are run once per round; best round is kept
PORT_BASE=${BENCH_PORT_BASE:-18080}      # first port tried; busy ports are skipped
SKIP_BUILD=${BENCH_SKIP_BUILD:-0}
ONLY=${BENCH_ONLY:-}                     # space-separated target keys to run (default: all)
PIN=${BENCH_PIN:-1}                      # 1: proxies on their own CPUs, wrk + upstream on the rest

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=${BENCH_OUT:-$ROOT/docs/benchmarks/throughput.md}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
PORTCULLIS=$TARGET_DIR/release/portcullis
BARE=$TARGET_DIR/release/examples/bare_pingora
MINT=$TARGET_DIR/release/examples/mint_session
BODY="hello from the upstream"           # what the upstream answers; every target must return it

log() { printf '[bench] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

for tool in nginx caddy wrk curl; do
    command -v "$tool" >/dev/null || die "$tool not found (apt-get install -y nginx-light caddy wrk curl)"
done
[[ $THREADS =~ ^[1-9][0-9]*$ ]] || die "BENCH_THREADS must be a positive integer"
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "BENCH_ROUNDS must be a positive integer"

# CPU pinning: the proxy under test gets the last THREADS CPUs, wrk and the upstream the others,
# so the proxy is not slowed by sharing a CPU with the load generator (it is what is measured).
NCPU=$(nproc)
PROXY_PIN=() LOAD_PIN=() PIN_NOTE="none"
if [[ $PIN == 1 ]] && ((NCPU > THREADS)) && command -v taskset >/dev/null; then
    cpus() { if (($1 == $2)); then echo "$1"; else echo "$1-$2"; fi; }
    PROXY_PIN=(taskset -c "$(cpus $((NCPU - THREADS)) $((NCPU - 1)))")
    LOAD_PIN=(taskset -c "$(cpus 0 $((NCPU - THREADS - 1)))")
    PIN_NOTE="proxies on CPU ${PROXY_PIN[2]}, wrk and the upstream on CPU ${LOAD_PIN[2]} (taskset)"
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/portcullis-bench.XXXXXX")
PIDS=()

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for _ in $(seq 30); do
        local alive=0
        for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        ((alive)) || break
        sleep 0.1
    done
    for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- helpers ----------------------------------------------------------------------------------
NEXT_PORT=$PORT_BASE
# Sets PORT to the next port at or above NEXT_PORT that nothing on 127.0.0.1 listens on.
free_port() {
    local p=$NEXT_PORT
    while (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; do
        p=$((p + 1))
    done
    NEXT_PORT=$((p + 1))
    PORT=$p
}

# Runs a command in the background (stdout to /dev/null, stderr to a file) and remembers its pid.
spawn() {
    local name=$1
    shift
    "$@" >/dev/null 2>"$WORK/$name.err" &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
    log "started $name (pid $LAST_PID)"
}

# Waits until URL answers with the upstream body, or fails with the process's stderr.
wait_ready() {
    local name=$1 url=$2 header=${3:-} body=""
    for _ in $(seq 100); do
        body=$(curl -s --max-time 1 ${header:+-H "$header"} "$url" 2>/dev/null || true)
        [[ $body == "$BODY" ]] && return 0
        sleep 0.1
    done
    log "$name did not answer at $url; its stderr:"
    tail -n 20 "$WORK/$name.err" >&2 || true
    die "$name not ready"
}

# Registered targets, in table order.
KEYS=()
declare -A LABEL URL NOTE PID HDR
# key, label, url, note, pid whose CPU time (with its direct children: nginx workers) is counted
add_target() {
    KEYS+=("$1")
    LABEL[$1]=$2
    URL[$1]=$3
    NOTE[$1]=$4
    PID[$1]=$5
}

want() { [[ -z $ONLY || " $ONLY " == *" $1 "* || $1 == upstream ]]; }

# ---- targets: one function each ---------------------------------------------------------------
UPSTREAM_PORT=""

start_upstream() {
    free_port
    UPSTREAM_PORT=$PORT
    mkdir -p "$WORK/nginx-upstream"
    cat >"$WORK/nginx-upstream/nginx.conf" <<EOF
daemon off;
master_process on;
worker_processes $UPSTREAM_WORKERS;
pid $WORK/nginx-upstream/nginx.pid;
error_log $WORK/nginx-upstream/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $WORK/nginx-upstream/tmp;
    keepalive_requests 1000000;
    keepalive_timeout 60s;
    server {
        listen 127.0.0.1:$UPSTREAM_PORT;
        location / {
            default_type text/plain;
            return 200 "$BODY";
        }
        # The forward-auth baseline: a static 200 with an empty body, like Portcullis' answer
        # (with a body nginx's auth_request cannot keep the connection to it alive).
        location = /auth-ok {
            return 200;
        }
    }
}
EOF
    spawn nginx-upstream "${LOAD_PIN[@]}" nginx -p "$WORK/nginx-upstream" -e "$WORK/nginx-upstream/error.log" \
        -c "$WORK/nginx-upstream/nginx.conf"
    wait_ready nginx-upstream "http://127.0.0.1:$UPSTREAM_PORT/"
    add_target upstream "upstream (nginx, direct)" "http://127.0.0.1:$UPSTREAM_PORT/" \
        "baseline: no proxy, $UPSTREAM_WORKERS nginx worker(s)" "$LAST_PID"
}

start_bare_pingora() {
    want bare_pingora || return 0
    free_port
    spawn bare-pingora "${PROXY_PIN[@]}" "$BARE" "127.0.0.1:$PORT" "127.0.0.1:$UPSTREAM_PORT" "$THREADS"
    local pid=$LAST_PID
    wait_ready bare-pingora "http://127.0.0.1:$PORT/"
    add_target bare_pingora "bare Pingora" "http://127.0.0.1:$PORT/" \
        "examples/bare_pingora.rs: fixed HttpPeer, Portcullis's ServerConf" "$pid"
}

# The start of every nginx front proxy's config, up to inside `http {`, for directory $1.
nginx_front_head() {
    local dir=$1
    cat <<EOF
daemon off;
master_process on;
worker_processes $THREADS;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $dir/tmp-body;
    proxy_temp_path $dir/tmp-proxy;
    keepalive_requests 1000000;
    keepalive_timeout 60s;
EOF
}

start_nginx_proxy() {
    want nginx || return 0
    free_port
    local dir=$WORK/nginx-proxy
    mkdir -p "$dir"
    { nginx_front_head "$dir"; cat <<EOF
    upstream app {
        server 127.0.0.1:$UPSTREAM_PORT;
        keepalive 64;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$PORT;
        location / {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
    } >"$dir/nginx.conf"
    spawn nginx-proxy "${PROXY_PIN[@]}" nginx -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf"
    local pid=$LAST_PID
    wait_ready nginx-proxy "http://127.0.0.1:$PORT/"
    add_target nginx "nginx proxy_pass" "http://127.0.0.1:$PORT/" \
        "worker_processes $THREADS, upstream keepalive 64, access_log off" "$pid"
}

start_caddy() {
    want caddy || return 0
    free_port
    local dir=$WORK/caddy
    mkdir -p "$dir"
    cat >"$dir/Caddyfile" <<EOF
{
    admin off
    auto_https off
}
http://:$PORT {
    bind 127.0.0.1
    reverse_proxy 127.0.0.1:$UPSTREAM_PORT
}
EOF
    spawn caddy "${PROXY_PIN[@]}" env HOME="$dir" XDG_CONFIG_HOME="$dir" XDG_DATA_HOME="$dir" GOMAXPROCS="$THREADS" \
        caddy run --config "$dir/Caddyfile" --adapter caddyfile
    local pid=$LAST_PID
    wait_ready caddy "http://127.0.0.1:$PORT/"
    add_target caddy "Caddy reverse_proxy" "http://127.0.0.1:$PORT/" \
        "GOMAXPROCS=$THREADS, no access log" "$pid"
}

# Writes a Portcullis config with one public route to the upstream and starts it.
# $1 key, $2 label, $3 access_log (true/false).
start_portcullis_public() {
    local key=$1 label=$2 access_log=$3
    want "$key" || return 0
    free_port
    local conf=$WORK/$key.yaml
    cat >"$conf" <<EOF
server:
  listen: ["127.0.0.1:$PORT"]
  threads: $THREADS
admin:
  listen: off
logging:
  format: json
  level: info
  access_log: $access_log
routes:
  - name: public
    path: /
    upstream: http://127.0.0.1:$UPSTREAM_PORT
    auth: none
EOF
    "$PORTCULLIS" check --config "$conf" >"$WORK/$key.check" 2>&1 ||
        { cat "$WORK/$key.check" >&2; die "portcullis check failed for $key"; }
    spawn "$key" "${PROXY_PIN[@]}" "$PORTCULLIS" serve --config "$conf"
    local pid=$LAST_PID
    wait_ready "$key" "http://127.0.0.1:$PORT/"
    add_target "$key" "$label" "http://127.0.0.1:$PORT/" \
        "route auth: none, logging.access_log: $access_log (stdout to /dev/null)" "$pid"
}

# An `auth: required` route with a Redis session store, driven with one session's cookie: the
# hot path of a logged-in user (cookie open, session cache hit, identity headers). The session
# is minted straight into Redis (examples/mint_session.rs) instead of logging in at an IdP.
REDIS_AUTH_PORT=""
declare -A REDIS_CMDS
# $1 key, $2 label, $3 more top-level YAML, $4 more keys of the route (", k: v"), $5 note
start_portcullis_auth() {
    local key=${1:-portcullis_auth} label=${2:-"Portcullis, authenticated route"}
    local more=${3:-} route_more=${4:-}
    local note=${5:-"route auth: required, Redis session store, one session's cookie (session cache hit), access_log: false"}
    if [[ $key == portcullis_auth ]]; then
        want portcullis_auth || want forward_auth || return 0
    else
        want "$key" || return 0
    fi
    command -v redis-server >/dev/null || { log "redis-server not found: no authenticated row"; return 0; }
    if [[ -z $REDIS_AUTH_PORT ]]; then
        free_port
        REDIS_AUTH_PORT=$PORT
        spawn redis-auth "${LOAD_PIN[@]}" redis-server --port "$REDIS_AUTH_PORT" --bind 127.0.0.1 \
            --save "" --appendonly no --dir "$WORK"
        for _ in $(seq 50); do
            redis-cli -p "$REDIS_AUTH_PORT" ping 2>/dev/null | grep -q PONG && break
            sleep 0.1
        done
    fi
    free_port
    local conf=$WORK/$key.yaml secret cookie
    secret=$("$PORTCULLIS" gen-secret)
    cat >"$conf" <<EOF
server:
  listen: ["127.0.0.1:$PORT"]
  threads: $THREADS
  public_url: http://127.0.0.1:$PORT
admin:
  listen: off
logging:
  format: json
  level: error
  access_log: false
session:
  store: redis
  redis: { url: "redis://127.0.0.1:$REDIS_AUTH_PORT/0" }
  secrets: ["$secret"]
  cookie: { secure: false }
  cache_ttl: 10m
  refresh: false
providers:
  # Never contacted: the session used below exists already.
  - { id: bench, type: oidc, issuer: "http://127.0.0.1:9/", client_id: bench, client_secret: bench }
$more
routes:
  - { name: private, path: /, upstream: "http://127.0.0.1:$UPSTREAM_PORT", auth: required$route_more }
EOF
    "$PORTCULLIS" check --config "$conf" >"$WORK/$key.check" 2>&1 ||
        { cat "$WORK/$key.check" >&2; die "portcullis check failed for $key"; }
    cookie=$("$MINT" "redis://127.0.0.1:$REDIS_AUTH_PORT/0" "$secret" "portcullis:" bench) ||
        die "could not mint a session"
    spawn "$key" "${PROXY_PIN[@]}" "$PORTCULLIS" serve --config "$conf"
    local pid=$LAST_PID
    HDR[$key]="Cookie: _portcullis=$cookie"
    wait_ready "$key" "http://127.0.0.1:$PORT/" "${HDR[$key]}"
    [[ $(curl -s -o /dev/null -w '%{http_code}' -H 'Accept: application/json' "http://127.0.0.1:$PORT/") == 401 ]] ||
        die "$key: a request without the cookie was not refused"
    add_target "$key" "$label" "http://127.0.0.1:$PORT/" "$note" "$pid"
}

# Forward auth (issue 4): an nginx front proxy with `auth_request`, once asking a location that
# answers a static 200 (on the upstream nginx: the same network hop), once asking Portcullis'
# /.portcullis/auth for a logged-in user (session minted into Redis as above). The auth servers
# sit with wrk and the upstream; the front nginx alone on the proxy CPU(s).
# $1 key, $2 label, $3 auth server address, $4 its path, $5 note, $6 more pids to count
start_nginx_auth_front() {
    local key=$1 label=$2 auth_target=$3 auth_path=$4 note=$5 counted=$6
    free_port
    local dir=$WORK/$key
    mkdir -p "$dir"
    { nginx_front_head "$dir"; cat <<CONF
    upstream app { server 127.0.0.1:$UPSTREAM_PORT; keepalive 64; keepalive_requests 1000000; }
    upstream auth { server $auth_target; keepalive 64; keepalive_requests 1000000; }
    server {
        listen 127.0.0.1:$PORT;
        location = /_auth {
            internal;
            proxy_pass http://auth$auth_path;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header X-Original-URL \$scheme://\$http_host\$request_uri;
            proxy_set_header X-Original-Method \$request_method;
        }
        location / {
            auth_request /_auth;
            auth_request_set \$auth_user \$upstream_http_x_auth_request_user;
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Auth-Request-User \$auth_user;
        }
    }
}
CONF
    } >"$dir/nginx.conf"
    spawn "$key" "${PROXY_PIN[@]}" nginx -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf"
    local pid=$LAST_PID
    HDR[$key]="Cookie: _portcullis=$FA_COOKIE"
    wait_ready "$key" "http://127.0.0.1:$PORT/" "${HDR[$key]}"
    add_target "$key" "$label" "http://127.0.0.1:$PORT/" "$note" "$pid${counted:+ $counted}"
}

FA_COOKIE=""
start_forward_auth() {
    want forward_auth || return 0
    [[ -n $REDIS_AUTH_PORT ]] || { log "no Redis from the authenticated row: no forward-auth rows"; return 0; }
    free_port
    local key=portcullis_forward_auth conf=$WORK/portcullis_forward_auth.yaml secret fa_port=$PORT
    secret=$("$PORTCULLIS" gen-secret)
    cat >"$conf" <<CONF
server:
  listen: ["127.0.0.1:$fa_port"]
  threads: $THREADS
  public_url: http://127.0.0.1:$fa_port
  trusted_proxies: [127.0.0.1/32]
admin:
  listen: off
logging:
  format: json
  level: error
  access_log: false
session:
  store: redis
  redis: { url: "redis://127.0.0.1:$REDIS_AUTH_PORT/0", key_prefix: "fa:" }
  secrets: ["$secret"]
  cookie: { secure: false }
  cache_ttl: 10m
  refresh: false
providers:
  - { id: bench, type: oidc, issuer: "http://127.0.0.1:9/", client_id: bench, client_secret: bench }
routes:
  - name: forward-auth
    path: /
    auth: required
CONF
    "$PORTCULLIS" check --config "$conf" >"$WORK/$key.check" 2>&1 ||
        { cat "$WORK/$key.check" >&2; die "portcullis check failed for $key"; }
    FA_COOKIE=$("$MINT" "redis://127.0.0.1:$REDIS_AUTH_PORT/0" "$secret" "fa:" bench) ||
        die "could not mint a session"
    spawn "$key" "${LOAD_PIN[@]}" "$PORTCULLIS" serve --config "$conf"
    local fa_pid=$LAST_PID
    for _ in $(seq 100); do
        curl -s -o /dev/null "http://127.0.0.1:$fa_port/.portcullis/auth" && break
        sleep 0.1
    done
    start_nginx_auth_front nginx_auth_static "nginx auth_request → static 200" \
        "127.0.0.1:$UPSTREAM_PORT" "/auth-ok" \
        "the auth location proxies to the upstream nginx's \`return 200\` (empty body; the same hop as Portcullis); CPU counts the front nginx" ""
    start_nginx_auth_front nginx_auth_portcullis "nginx auth_request → Portcullis" \
        "127.0.0.1:$fa_port" "/.portcullis/auth" \
        "/.portcullis/auth for a logged-in user (Redis store, session cache hit); CPU counts the front nginx and Portcullis" "$fa_pid"
    [[ $(curl -s -o /dev/null -w '%{http_code}' -H 'Accept: application/json' "${URL[nginx_auth_portcullis]}") == 401 ]] ||
        die "nginx_auth_portcullis: a request without the cookie was not refused"
}

# Redis commands processed so far by the authenticated row's store (each INFO counts itself).
redis_commands() {
    redis-cli -p "$REDIS_AUTH_PORT" info stats 2>/dev/null |
        awk -F: '/^total_commands_processed:/ { gsub(/\r/, "", $2); print $2 }'
}

# ---- measuring --------------------------------------------------------------------------------
WRK_CMD=("${LOAD_PIN[@]}" wrk -t"$WRK_THREADS" -c"$CONNS" -d"$DURATION" --latency)
declare -A RPS P50 P99 ERRS RAW CPU
CLK_TCK=$(getconf CLK_TCK)

# CPU time (user + system, in clock ticks) used so far by a process and its direct children.
cpu_ticks() {
    local root p total=0 t
    for root in $1; do
        for p in "$root" $(pgrep -P "$root" || true); do
            t=$(awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$p/stat" 2>/dev/null || echo 0)
            total=$((total + t))
        done
    done
    echo "$total"
}

# Converts a wrk latency ("812.00us", "1.23ms", "1.02s") to milliseconds.
to_ms() {
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000
        printf "%.2f", n }'
}

# Runs wrk against one target; keeps the round with the most requests per second.
measure() {
    local key=$1 round=$2 url=${URL[$1]} out rps p50 p99 errs reqs cpu t0 t1 r0="" r1=""
    local hdr=()
    [[ -n ${HDR[$key]:-} ]] && hdr=(-H "${HDR[$key]}")
    "${LOAD_PIN[@]}" wrk -t"$WRK_THREADS" -c"$CONNS" -d"$WARMUP" "${hdr[@]}" "$url" >/dev/null
    [[ $key == portcullis_auth ]] && r0=$(redis_commands)
    t0=$(cpu_ticks "${PID[$key]}")
    out=$("${WRK_CMD[@]}" "${hdr[@]}" "$url")
    t1=$(cpu_ticks "${PID[$key]}")
    [[ $key == portcullis_auth ]] && r1=$(redis_commands)
    printf '%s\n' "$out" >"$WORK/wrk-$key-$round.txt"
    rps=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' <<<"$out")
    p50=$(to_ms "$(awk '$1 == "50%" { print $2 }' <<<"$out")")
    p99=$(to_ms "$(awk '$1 == "99%" { print $2 }' <<<"$out")")
    errs=$(awk '/Socket errors:/ { gsub(/,/, ""); e += $4 + $6 + $8 + $10 }
                /Non-2xx or 3xx/ { e += $NF }
                END { print e + 0 }' <<<"$out")
    reqs=$(awk '/ requests in / { print $1 }' <<<"$out")
    cpu=$(awk -v d=$((t1 - t0)) -v hz="$CLK_TCK" -v n="${reqs:-0}" \
        'BEGIN { if (n > 0) printf "%.1f", d * 1e6 / hz / n; else print "-" }')
    [[ -n $rps ]] || { printf '%s\n' "$out" >&2; die "could not parse wrk output for $key"; }
    log "round $round ${LABEL[$key]}: $rps req/s, p50 ${p50} ms, p99 ${p99} ms, CPU ${cpu} us/req, errors $errs"
    if [[ -n $r0 && -n $r1 ]]; then
        # Minus the INFO that read r1.
        REDIS_CMDS[$key]="${REDIS_CMDS[$key]:-}${REDIS_CMDS[$key]:+; }$((r1 - r0 - 1)) for $reqs requests"
    fi
    RAW[$key]="${RAW[$key]:-}${RAW[$key]:+, }$rps"
    if [[ -z ${RPS[$key]:-} ]] || ((rps > RPS[$key])); then
        RPS[$key]=$rps P50[$key]=$p50 P99[$key]=$p99 ERRS[$key]=$errs CPU[$key]=$cpu
    fi
}

# ---- run --------------------------------------------------------------------------------------
cd "$ROOT"
# What is being measured: the commit, and whether the files the two binaries are built from
# differ from it.
commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ -n $(git -C "$ROOT" status --porcelain -- src Cargo.toml Cargo.lock examples/bare_pingora.rs 2>/dev/null) ]]; then
    commit="$commit, with uncommitted changes to src/, Cargo.* or examples/bare_pingora.rs"
fi
if [[ $SKIP_BUILD != 1 ]]; then
    log "building (release)"
    cargo build --release --bin portcullis --example bare_pingora --example mint_session >&2
fi
[[ -x $PORTCULLIS && -x $BARE && -x $MINT ]] || die "missing $PORTCULLIS, $BARE or $MINT (build first)"

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
start_upstream
start_bare_pingora
start_nginx_proxy
start_caddy
start_portcullis_public portcullis_public "Portcullis, public route" false
start_portcullis_public portcullis_public_log "Portcullis, public route, access log" true
start_portcullis_auth
# The authenticated route with one local rate limiter (generous: every request admitted and
# counted), and with the issuer's signed assertion on every request.
start_portcullis_auth portcullis_auth_limit "Portcullis, authenticated route + local rate limiter" \
    "rate_limits: [{ name: per-ip, key: client_ip, limit: 1000000/s, burst: 1000000 }]" \
    ", rate_limit: [per-ip]" \
    "as the authenticated route, with one local client_ip limiter that admits every request (RateLimit headers on each answer)"
start_portcullis_auth portcullis_auth_assertion "Portcullis, authenticated route + assertion" \
    "issuer: { assertion: { ttl: 5m } }" "" \
    "as the authenticated route, with the issuer on: a signed X-Portcullis-Assertion on every request (cached per session)"
start_forward_auth

for round in $(seq "$ROUNDS"); do
    for key in "${KEYS[@]}"; do measure "$key" "$round"; done
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# ---- report -----------------------------------------------------------------------------------
cpu_model=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
[[ -n $cpu_model ]] || cpu_model=$(awk -F': ' '/^(Hardware|cpu model|uarch)/ { print $2; exit }' /proc/cpuinfo)
nginx_v=$(nginx -v 2>&1)
caddy_v=$(caddy version 2>&1 | head -n1)
wrk_v=$( (wrk -v 2>&1 || true) | head -n1 | awk '{ print $1, $2 }')
rustc_v=$(rustc -V 2>/dev/null || echo unknown)
pingora_v=$(awk '/^name = "pingora"$/ { getline; print $3; exit }' "$ROOT/Cargo.lock" | tr -d '"')
env_line="BENCH_THREADS=$THREADS BENCH_UPSTREAM_WORKERS=$UPSTREAM_WORKERS BENCH_WRK_THREADS=$WRK_THREADS BENCH_CONNS=$CONNS BENCH_DURATION=$DURATION BENCH_WARMUP=$WARMUP BENCH_ROUNDS=$ROUNDS BENCH_PIN=$PIN"

bare=${RPS[bare_pingora]:-}
ratio() {
    if [[ -n $bare ]]; then awk -v a="$1" -v b="$bare" 'BEGIN { printf "%.2f", a / b }'; else echo "-"; fi
}

mkdir -p "$(dirname "$OUT")"
{
    echo "# Throughput (bench/run.sh)"
    echo
    echo "Generated by \`bench/run.sh\`; do not edit by hand. See \`bench/README.md\` for what each"
    echo "row means. Numbers are from one machine on one day: compare rows with each other, not with"
    echo "other runs."
    echo
    echo "## Run"
    echo
    echo "- Date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "- Commit: $commit"
    echo "- Machine: $(nproc) CPU(s), ${cpu_model:-unknown CPU}, Linux $(uname -r)"
    echo "- Load average (1/5/15 min) before: $LOAD_BEFORE; after: $LOAD_AFTER"
    echo "- Command: \`$env_line bench/run.sh\`"
    echo "- Load per target: \`${WRK_CMD[*]} http://127.0.0.1:PORT/\`, after an unrecorded"
    echo "  $WARMUP warm-up; $ROUNDS round(s) over all targets, the round with the most req/s kept"
    echo "- Every proxy: $THREADS worker thread(s)/process(es); upstream: nginx with $UPSTREAM_WORKERS"
    echo "  worker(s) answering \`$BODY\` (${#BODY} bytes) to every request; all on 127.0.0.1"
    echo "- CPU pinning: $PIN_NOTE"
    echo "- Versions: $nginx_v; Caddy $caddy_v; $wrk_v; Pingora $pingora_v; $rustc_v"
    echo
    echo "## Results"
    echo
    echo "| target | req/s | p50 (ms) | p99 (ms) | ratio to bare Pingora | CPU µs/req | errors | all rounds (req/s) |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
    for key in "${KEYS[@]}"; do
        echo "| ${LABEL[$key]} | ${RPS[$key]} | ${P50[$key]} | ${P99[$key]} | $(ratio "${RPS[$key]}") | ${CPU[$key]} | ${ERRS[$key]} | ${RAW[$key]} |"
    done
    echo
    echo "CPU µs/req is the CPU time (user + system) the target's own processes used during the"
    echo "measured run divided by the requests wrk completed: the upstream's and wrk's CPU are not in"
    echo "it. It is less disturbed by other load on the machine than req/s."
    echo
    echo "Rows:"
    echo
    for key in "${KEYS[@]}"; do echo "- ${LABEL[$key]}: ${NOTE[$key]}"; done
    echo
    if [[ -n ${REDIS_CMDS[portcullis_auth]:-} ]]; then
        echo "Redis commands during the authenticated row's measured runs (\`INFO stats\`"
        echo "total_commands_processed, per round): ${REDIS_CMDS[portcullis_auth]}. Issue 3 asks for 0"
        echo "per request on a session cache hit: the few counted are the connections' own keep-alive"
        echo "over the run, the same whatever the number of requests."
        echo
    fi
    echo "## Targets"
    echo
    if [[ -n $bare && -n ${RPS[portcullis_auth]:-} ]]; then
        echo "Issue 3 asks for the authenticated route at **≥ 0.90 × bare Pingora** req/s: this run"
        echo "$(ratio "${RPS[portcullis_auth]}")."
        echo
    fi
    if [[ -n ${RPS[nginx_auth_static]:-} && -n ${RPS[nginx_auth_portcullis]:-} ]]; then
        fa=$(awk -v a="${RPS[nginx_auth_portcullis]}" -v b="${RPS[nginx_auth_static]}" 'BEGIN { printf "%.2f", a / b }')
        echo "Issue 4 asks for nginx \`auth_request\` to Portcullis at **≥ 0.90 ×** nginx \`auth_request\`"
        echo "to a static 200 location (rows \"nginx auth_request → …\"): this run $fa."
        echo
    fi
    echo "Issue 2 asks for Portcullis on a public route at **≥ 0.95 × bare Pingora** req/s (row"
    echo "\"Portcullis, public route\", access log off)."
    if [[ -n $bare && -n ${RPS[portcullis_public]:-} ]]; then
        r=$(ratio "${RPS[portcullis_public]}")
        if awk -v r="$r" 'BEGIN { exit !(r >= 0.95) }'; then
            echo "This run: $r, **met**."
        else
            echo "This run: $r, **not met**."
        fi
        if [[ ${CPU[bare_pingora]:-} =~ ^[0-9.]+$ && ${CPU[portcullis_public]:-} =~ ^[0-9.]+$ ]]; then
            c=$(awk -v a="${CPU[bare_pingora]}" -v b="${CPU[portcullis_public]}" 'BEGIN { printf "%.2f", a / b }')
            echo "By CPU per request (bare Pingora µs/req ÷ Portcullis µs/req, what the req/s ratio"
            echo "comes to when the proxy is the bottleneck): $c."
            if awk -v r="$r" -v c="$c" 'BEGIN { d = r - c; exit !(d > 0.1 || d < -0.1) }'; then
                echo "The two ratios differ by more than 0.1: the run was disturbed; run it again on an"
                echo "idle machine before drawing conclusions."
            fi
        fi
    fi
    echo
    if ((${#PROXY_PIN[@]})); then
        echo "The proxy under test has its own CPU(s); wrk and the upstream share the rest, so on a"
        echo "small machine the load side can cap the fastest rows (nginx, the upstream itself)."
    else
        echo "wrk, the proxy and the upstream share the CPUs (no pinning), so req/s depends on"
        echo "scheduling; a few percent of noise between runs is normal."
    fi
} >"$OUT"
log "wrote $OUT"
cat "$OUT"
