#!/usr/bin/env bash
# Side-by-side benchmark: the same scenarios against ejabberd, Prosody and xmppd (all-in-one
# and cluster), all on loopback, then one table per scenario with ratios to the first server.
#
#   loadtest/compare/run.sh                 # every server that can be started
#   SERVERS="ejabberd prosody" USERS=2000 DURATION=30s loadtest/compare/run.sh
#   ROUNDS=3 SERVERS="ejabberd xmppd-allinone" SCENARIOS=chat-closed loadtest/compare/run.sh
#   loadtest/compare/run.sh start prosody   # just start one server (and print its pids)
#   loadtest/compare/run.sh stop prosody
#   loadtest/compare/run.sh idle-scale xmppd-cluster 50000   # idle memory at scale (below)
#   TRANSPORT=websocket SERVERS="ejabberd prosody" loadtest/compare/run.sh   # over RFC 7395
#   FEATURES="--carbons --blocklist 3" loadtest/compare/run.sh   # every user turns them on
#   SERVERS="xmppd-cluster-plain xmppd-cluster" loadtest/compare/run.sh   # mutual TLS off, on
#   XMPPD_BASE=/work/wt-old SERVERS="xmppd-allinone-base xmppd-allinone" ROUNDS=3 \
#       loadtest/compare/run.sh                 # this commit beside another one's build
#
# Needs root (apt-get, and running the peers as their Debian users). Reports land in $OUT.
set -euo pipefail

COMPARE_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$COMPARE_DIR/../.." && pwd)"
WORK="${WORK:-/tmp/xmpp-compare}"
# `tcp` (XMPP's own framing) or `websocket` (RFC 7395): the same scenarios either way. Over
# WebSocket, TLS=plain runs on the server's ws:// URL and any other TLS on its wss:// URL,
# since a WebSocket is secured from the first byte or not at all.
TRANSPORT="${TRANSPORT:-tcp}"
# Apart per transport, so that `compare` can set a server's WebSocket runs beside its TCP ones.
OUT="${OUT:-$WORK/reports$([[ "$TRANSPORT" == tcp ]] || echo "-$TRANSPORT")}"
SERVERS="${SERVERS:-ejabberd prosody xmppd-allinone xmppd-cluster}"
USERS="${USERS:-1000}"            # idle, login and presence population
# Logins of the storm: several per account, so the phase lasts long enough for CPU read from
# /proc (in 10 ms ticks per process) to be exact to a few per cent.
LOGINS="${LOGINS:-$((USERS * 5))}"
# Which scenarios run (provision always does), in this order.
SCENARIOS="${SCENARIOS:-login idle idle-plain chat-closed chat-rate muc presence}"
CHAT_PAIRS="${CHAT_PAIRS:-50}"    # chat: closed loop over this many pairs
CHAT_RATE="${CHAT_RATE:-2000}"    # chat: fixed-rate run, messages/s
MUC_OCCUPANTS="${MUC_OCCUPANTS:-10}"
MUC_RATE="${MUC_RATE:-100}"       # group messages/s before fan-out
DURATION="${DURATION:-20s}"
LOGIN_RATE="${LOGIN_RATE:-100}"  # users/s joining in idle, chat, muc and presence
TLS="${TLS:-starttls}"
# Threads of the one-process servers (ejabberd's schedulers, the all-in-one's workers); empty
# keeps each server's default (one per core). Prosody has one thread whatever this says.
THREADS="${THREADS:-}"
MECHANISM="${MECHANISM:-SCRAM-SHA-1}"
# Options of the load tool for every scenario but provisioning: account features each user
# turns on after its login, e.g. "--carbons --blocklist 3" (a server without one answers with
# an error, counted in the report). BASE_FEATURES stands in for the `-base` servers (below).
FEATURES="${FEATURES:-}"
BASE_FEATURES="${BASE_FEATURES:-}"
# Runs of every scenario against every server, the servers taking turns; with more than one the
# tables give each figure's median and the median of the rounds' ratios (reports in
# $OUT/round-N/), so that a machine drifting during the run moves both sides of a ratio. Even
# rounds take the servers in the reverse order: a server's place in a round moves its figures
# (up to 20% at a fixed rate), so an even number of rounds gives each place to each server.
ROUNDS="${ROUNDS:-1}"
RUN_OUT="$OUT"

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
LOADTEST="$CARGO_TARGET_DIR/release/xmppd-loadtest"

# Filled by each start_* function: where the server listens and which processes are it.
PORT=""
WS_URL=""      # XMPP over WebSocket without TLS, empty if the server has none
WSS_URL=""     # and with TLS
PIDS=""

log() { printf '== %s\n' "$*" >&2; }

# Each server's data starts empty at its first start in a run of the script and in each round,
# so that no run sees another's accounts and rosters (an existing roster makes the presence
# scenario's set-up phase cheaper), while the restarts between scenarios keep them.
declare -A STARTED=()
first_start() {
    [[ -z "${STARTED[$1]:-}" ]] || return 1
    STARTED[$1]=1
}

# Servers and the load generator hold one descriptor per session: 1024 is far too few (at
# 1000 sessions ejabberd fails accepts with emfile and its node dies). Raise the soft limit
# to the hard one; the servers inherit it.
ulimit -n "$(ulimit -Hn)"

install_peers() {
    local missing=()
    command -v ejabberdctl >/dev/null || missing+=(ejabberd)
    command -v prosody >/dev/null || missing+=(prosody)
    if ((${#missing[@]})); then
        log "installing ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
    fi
    # The packages start their own instances on the public ports; ours use other ports, but
    # stop those so they do not take CPU during the measurements.
    service ejabberd stop >/dev/null 2>&1 || true
    service prosody stop >/dev/null 2>&1 || true
}

# Runs a command as a service user without PAM (su and runuser would set the descriptor
# limit back to 1024). HOME is the server's work directory (the Erlang cookie goes there).
as_user() {
    local user="$1"
    shift
    HOME="$WORK/$user" setpriv --reuid="$user" --regid="$user" --init-groups "$@"
}

# The server and the load tool in one build: built apart, each would get its own feature set
# of the shared dependencies, and so a compile of its own.
build() { (cd "$ROOT" && cargo build --release -p xmppd -p xmppd-loadtest); }

# One certificate for every server: the key type decides much of a handshake's server CPU
# (an RSA-2048 signature costs several times an ECDSA P-256 one), so login figures compare
# only if the servers share it. P-256, the type xmppd generates when none is configured.
CERT="$WORK/certs/localhost.crt"
CERT_KEY="$WORK/certs/localhost.key"
certificate() {
    [[ -f "$CERT" && -f "$CERT_KEY" ]] && return
    mkdir -p "$WORK/certs"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
        -subj /CN=localhost -addext "subjectAltName=DNS:localhost,DNS:conference.localhost" \
        -keyout "$CERT_KEY" -out "$CERT" 2>/dev/null
}

# --- ejabberd -----------------------------------------------------------------------------

EJABBERD_NODE="loadtest-ejabberd@localhost"

# Our own ctl config too: Debian's sets EJABBERD_CONFIG_PATH, which would beat --config.
# Run as the ejabberd user already, so ejabberdctl does not switch with su.
ejabberdctl_lt() {
    as_user ejabberd ejabberdctl --ctl-config "$WORK/ejabberd/ejabberdctl.cfg" \
        --config "$WORK/ejabberd/ejabberd.yml" --spool "$WORK/ejabberd/spool" \
        --logs "$WORK/ejabberd/logs" --node "$EJABBERD_NODE" "$@"
}

start_ejabberd() {
    if first_start ejabberd; then rm -rf "$WORK/ejabberd/spool"; fi
    mkdir -p "$WORK/ejabberd/spool" "$WORK/ejabberd/logs"
    certificate
    cat "$CERT" "$CERT_KEY" >"$WORK/ejabberd/localhost.pem"
    sed -e "s|@CERT@|$WORK/ejabberd/localhost.pem|" "$COMPARE_DIR/ejabberd.yml" \
        >"$WORK/ejabberd/ejabberd.yml"
    printf 'ERL_OPTIONS="-env ERL_CRASH_DUMP_BYTES 0%s"\nEJABBERD_PID_PATH=%s\n' \
        "${THREADS:+ +S $THREADS:$THREADS}" "$WORK/ejabberd/ejabberd.pid" \
        >"$WORK/ejabberd/ejabberdctl.cfg"
    chown -R ejabberd:ejabberd "$WORK/ejabberd"
    ejabberdctl_lt start
    local up=""
    for _ in $(seq 60); do
        ejabberdctl_lt status >/dev/null 2>&1 && { up=1; break; }
        sleep 1
    done
    [[ -n "$up" ]] || { log "ejabberd did not start: see $WORK/ejabberd/logs"; return 1; }
    # The node's own Erlang VM (not another beam.smp on the machine, e.g. RabbitMQ's).
    PIDS="$(pgrep -f -- "name $EJABBERD_NODE" | paste -sd' ' || true)"
    PORT=15222
    WS_URL="ws://127.0.0.1:15280/xmpp-websocket"
    WSS_URL="wss://127.0.0.1:15281/xmpp-websocket"
}

stop_ejabberd() { ejabberdctl_lt stop >/dev/null 2>&1 || true; sleep 2; }

# --- Prosody ------------------------------------------------------------------------------

start_prosody() {
    local dir="$WORK/prosody"
    if first_start prosody; then rm -rf "$dir/data"; fi
    mkdir -p "$dir/data" "$dir/certs"
    certificate
    cp "$CERT" "$dir/certs/localhost.crt"
    cp "$CERT_KEY" "$dir/certs/localhost.key"
    sed -e "s|@DATA@|$dir/data|g" -e "s|@CERTDIR@|$dir/certs|g" \
        "$COMPARE_DIR/prosody.cfg.lua" >"$dir/prosody.cfg.lua"
    chown -R prosody:prosody "$dir"
    as_user prosody prosody --config "$dir/prosody.cfg.lua" >"$dir/stdout.log" 2>&1 &
    for _ in $(seq 30); do
        (exec 3<>/dev/tcp/127.0.0.1/15322) 2>/dev/null && break
        sleep 0.5
    done
    # The server's own pid, not runuser's.
    PIDS="$(cat "$dir/data/prosody.pid")"
    PORT=15322
    WS_URL="ws://127.0.0.1:15380/xmpp-websocket"
    WSS_URL="wss://127.0.0.1:15381/xmpp-websocket"
}

stop_prosody() {
    local pidfile="$WORK/prosody/data/prosody.pid"
    [[ -f "$pidfile" ]] && kill "$(cat "$pidfile")" 2>/dev/null || true
    sleep 2
}

# --- xmppd --------------------------------------------------------------------------------

# XMPP over WebSocket of the all-in-one server, for TRANSPORT=websocket: the `[listen]`
# WebSocket addresses of loadtest/compare/xmppd-allinone.toml at `[websocket] path`'s default.
XMPPD_WS_URL="${XMPPD_WS_URL:-ws://127.0.0.1:5280/xmpp-websocket}"
XMPPD_WSS_URL="${XMPPD_WSS_URL:-wss://127.0.0.1:5281/xmpp-websocket}"

# Another commit of xmppd to set beside this one in the same run, as the servers
# `xmppd-allinone-base` and `xmppd-cluster-base`: a checkout (`git worktree add DIR COMMIT`)
# with its release build in DIR/target (`CARGO_TARGET_DIR=DIR/target cargo build --release
# -p xmppd`). It runs with that checkout's own compare configs, which its binary accepts, and
# without FEATURES (BASE_FEATURES instead), since an older commit may lack them.
XMPPD_BASE="${XMPPD_BASE:-}"

# The binary and the config folder of `server`: this checkout's, or XMPPD_BASE's for a
# `-base` server.
xmppd_build() {
    if [[ "$1" == *-base ]]; then
        [[ -n "$XMPPD_BASE" ]] || { log "$1 needs XMPPD_BASE (a checkout with a release build)"; return 1; }
        XMPPD_BIN="$XMPPD_BASE/target/release/xmppd"
        XMPPD_CONFIGS="$XMPPD_BASE/loadtest/compare"
    else
        XMPPD_BIN="$CARGO_TARGET_DIR/release/xmppd"
        XMPPD_CONFIGS="$COMPARE_DIR"
    fi
    [[ -x "$XMPPD_BIN" ]] || { log "$XMPPD_BIN is missing"; return 1; }
}

# The all-in-one server: `xmppd run` with xmppd-allinone.toml (open in-band registration, no
# rate limits), its data in a folder of its own, fresh in each round.
start_allinone() {
    local name="$1"
    xmppd_build "$name" || return 1
    local data="$WORK/data/$name"
    if first_start "$name"; then rm -rf "$data"; fi
    mkdir -p "$data"
    certificate
    XMPPD_TLS__CERT_FILE="$CERT" XMPPD_TLS__KEY_FILE="$CERT_KEY" XMPPD_SERVER__DATA_DIR="$data" \
        XMPPD_SERVER__WORKER_THREADS="${THREADS:-0}" "$XMPPD_BIN" run \
        --config "$XMPPD_CONFIGS/xmppd-allinone.toml" >"$WORK/$name.log" 2>&1 &
    PIDS="$!"
    echo "$PIDS" >"$WORK/$name.pids"
    PORT=5222
    # An older commit may have no WebSocket listener: its config says.
    if grep -q '^websocket = ' "$XMPPD_CONFIGS/xmppd-allinone.toml"; then
        WS_URL="$XMPPD_WS_URL"
        WSS_URL="$XMPPD_WSS_URL"
    fi
    sleep 2
}

start_xmppd_allinone() { start_allinone xmppd-allinone; }
stop_xmppd_allinone() { stop_pids "$WORK/xmppd-allinone.pids"; }
start_xmppd_allinone_base() { start_allinone xmppd-allinone-base; }
stop_xmppd_allinone_base() { stop_pids "$WORK/xmppd-allinone-base.pids"; }

# The WebSocket URL (ws:// or wss://, by `key`, `websocket` or `websocket_tls`) of a
# connection-manager's config, empty if it has none.
cm_ws_url() {
    local key="$1" config="$2" scheme=ws port
    [[ "$key" == websocket_tls ]] && scheme=wss
    port=$(sed -n "s/^$key = \"127.0.0.1:\([0-9]*\)\"/\1/p" "$config")
    [[ -n "$port" ]] && echo "$scheme://127.0.0.1:$port/xmpp-websocket"
    return 0
}

# The cluster's mutual TLS certificates, made once where every role looks by default
# (<data_dir>/cluster-tls/<role>; the configs share one data_dir) and kept across rounds. A
# binary from before mutual TLS has no `certs` command and needs none.
cluster_certificates() {
    "$XMPPD_BIN" certs --help >/dev/null 2>&1 || return 0
    local out
    if ! out=$("$XMPPD_BIN" --config "$1" certs init 2>&1) && [[ "$out" != *"already exists"* ]]; then
        log "cannot make the cluster's certificates: $out"
        return 1
    fi
}

# The cluster as separate processes (connection-manager, router, session, with
# Redis and Postgres). PIDS must list every process of the deployment, Redis and Postgres
# included, so server CPU and memory are counted in full.
start_cluster() {
    local name="$1"
    xmppd_build "$name" || return 1
    local config_dir="$XMPPD_CONFIGS/xmppd-cluster"
    if first_start "$name"; then
        psql -q -h 127.0.0.1 -U root -d postgres -c 'DROP DATABASE IF EXISTS xmppd_bench' \
            -c 'CREATE DATABASE xmppd_bench'
    fi
    redis-cli -h 127.0.0.1 --scan --pattern 'xmppd-bench:*' | xargs -r redis-cli -h 127.0.0.1 del >/dev/null
    certificate
    cluster_certificates "$config_dir/session-1.toml" || return 1
    CLUSTER_PIDS=""
    # `xmppd-cluster-plain` is this cluster with plain-text gRPC between its nodes, to set
    # beside `xmppd-cluster` for what mutual TLS costs.
    local cluster_tls=()
    [[ "$name" == *-plain ]] && cluster_tls=(XMPPD_CLUSTER_TLS__ENABLED=false)
    # The file name says the role: session-1.toml runs `xmppd session`.
    for config in "$config_dir"/session-*.toml "$config_dir"/router-*.toml "$config_dir"/connection-manager-*.toml; do
        local role
        role=$(basename "$config" .toml)
        role=${role%-*}
        env "${cluster_tls[@]}" XMPPD_TLS__CERT_FILE="$CERT" XMPPD_TLS__KEY_FILE="$CERT_KEY" \
            "$XMPPD_BIN" --config "$config" "$role" \
            >"$WORK/$name-$(basename "$config" .toml).log" 2>&1 &
        CLUSTER_PIDS="$CLUSTER_PIDS $!"
        sleep 0.5
    done
    # Measured, not owned: Redis and Postgres are shared and stay up. The tool counts a
    # process's descendants, so Postgres' postmaster brings every backend it forks, for the
    # pools and for any other client of that server while the benchmark runs.
    PIDS="$CLUSTER_PIDS $(pgrep -o -x redis-server) $(pgrep -o -x postgres)"
    echo "$CLUSTER_PIDS" >"$WORK/$name.pids"
    PORT=5222
    # The scenarios use the first connection-manager, over WebSocket too.
    WS_URL="$(cm_ws_url websocket "$config_dir/connection-manager-1.toml")"
    WSS_URL="$(cm_ws_url websocket_tls "$config_dir/connection-manager-1.toml")"
    sleep 2
    # A process that could not start (a port taken, a key its version does not know) must
    # not pass for a quiet one.
    for pid in $CLUSTER_PIDS; do
        kill -0 "$pid" 2>/dev/null || { log "$name: process $pid exited, see $WORK/$name-*.log"; return 1; }
    done
}

start_xmppd_cluster() { start_cluster xmppd-cluster; }
stop_xmppd_cluster() { stop_pids "$WORK/xmppd-cluster.pids"; }
start_xmppd_cluster_base() { start_cluster xmppd-cluster-base; }
stop_xmppd_cluster_base() { stop_pids "$WORK/xmppd-cluster-base.pids"; }
start_xmppd_cluster_plain() { start_cluster xmppd-cluster-plain; }
stop_xmppd_cluster_plain() { stop_pids "$WORK/xmppd-cluster-plain.pids"; }

# Stops the processes a start function listed in `file`, also when it ran in another shell
# (`run.sh start` then `run.sh stop`), so that no old server keeps the ports of the next.
stop_pids() {
    local file="$1"
    # shellcheck disable=SC2046 # a list of pids
    [[ -f "$file" ]] && kill $(cat "$file") 2>/dev/null || true
    rm -f "$file"
    sleep 2
}

# --- the scenarios ------------------------------------------------------------------------

# The tool's --target (and --tls, for TCP) for TRANSPORT and TLS, into TARGET_ARGS; `port`
# is the TCP listener to use (the cluster has several).
target_args() {
    local port="$1"
    if [[ "$TRANSPORT" == tcp ]]; then
        TARGET_ARGS=(--target "127.0.0.1:$port" --tls "$TLS")
        return
    fi
    [[ "$TRANSPORT" == websocket ]] || { log "unknown TRANSPORT $TRANSPORT"; return 1; }
    local url="$WSS_URL"
    [[ "$TLS" == plain ]] && url="$WS_URL"
    [[ -n "$url" ]] || { log "this server has no XMPP over WebSocket (TLS=$TLS)"; return 1; }
    TARGET_ARGS=(--target "$url")
}

loadtest() {
    local server="$1" name="$2"
    shift 2
    local scenario="$1"
    shift
    local pid_args=() features=()
    for pid in $PIDS; do pid_args+=(--server-pid "$pid"); done
    if [[ "$scenario" != provision ]]; then
        # shellcheck disable=SC2206 # a list of options
        if [[ "$server" == *-base ]]; then features=($BASE_FEATURES); else features=($FEATURES); fi
    fi
    target_args "$PORT" || return 1
    log "$server: $name ($TRANSPORT${features[*]:+, ${features[*]}})"
    "$LOADTEST" "$scenario" "${TARGET_ARGS[@]}" --mechanism "$MECHANISM" \
        --quiet "${pid_args[@]}" "${features[@]}" --json "$RUN_OUT/$server-$name.json" "$@" \
        >"$RUN_OUT/$server-$name.txt"
}

restart() {
    "stop_${1//-/_}"
    "start_${1//-/_}"
}

# One scenario of the comparison against one server, by its name in SCENARIOS.
scenario() {
    local server="$1" name="$2"
    local ramp=(--login-rate "$LOGIN_RATE")
    case "$name" in
        login) loadtest "$server" login login --users "$USERS" --count "$LOGINS" --concurrency 50 ;;
        # Memory per session is growth from a fresh server: runtimes keep freed memory.
        idle)
            restart "$server" &&
                loadtest "$server" idle idle --users "$USERS" --duration "$DURATION" "${ramp[@]}"
            ;;
        idle-plain)
            restart "$server" &&
                TLS=plain loadtest "$server" idle-plain idle --users "$USERS" \
                    --duration "$DURATION" "${ramp[@]}"
            ;;
        chat-closed)
            loadtest "$server" chat-closed chat --users $((CHAT_PAIRS * 2)) \
                --duration "$DURATION" "${ramp[@]}"
            ;;
        chat-rate)
            loadtest "$server" chat-rate chat --users $((CHAT_PAIRS * 2)) --duration "$DURATION" \
                --rate "$CHAT_RATE" "${ramp[@]}"
            ;;
        # xmppd has no MUC service yet: a failed MUC run leaves that table without it.
        muc)
            loadtest "$server" muc muc --users "$((USERS / MUC_OCCUPANTS * MUC_OCCUPANTS))" \
                --occupants "$MUC_OCCUPANTS" --rate "$MUC_RATE" --duration "$DURATION" \
                "${ramp[@]}" ||
                { log "$server: muc failed"; rm -f "$RUN_OUT/$server-muc.json"; }
            ;;
        presence)
            loadtest "$server" presence presence --users "$USERS" --duration "$DURATION" \
                "${ramp[@]}"
            ;;
        *) log "unknown scenario $name (SCENARIOS)"; return 1 ;;
    esac
}

# The cluster's Postgres is measured with it, background workers included: without this, the
# vacuum and the checkpoint that provisioning calls for land in whichever later phase they
# happen to fall into, though chat between online users gives Postgres nothing to do.
settle() {
    [[ "$1" == xmppd-cluster* ]] || return 0
    psql -q -h 127.0.0.1 -U root -d xmppd_bench -c 'VACUUM ANALYZE' -c 'CHECKPOINT'
}

# `if bench` turns errexit off inside, hence the explicit `|| return 1`.
bench() {
    local server="$1"
    loadtest "$server" provision provision --users "$USERS" || return 1
    settle "$server" || return 1
    for name in $SCENARIOS; do
        scenario "$server" "$name" || return 1
    done
}

# Idle memory at scale: USERS sessions held by one load generator per listener, because
# one process may hold at most `ulimit -Hn` descriptors (20,000 on the benchmark machine).
# The cluster spreads them over its connection-managers; the peers and the all-in-one
# server are one process, so they get one generator and are bounded by that limit.
# Prints the merged report: memory growth of every server process over all sessions.
idle_scale() {
    local server="$1" users="$2"
    local ports=("${PORT}") ws_urls=("$WS_URL") wss_urls=("$WSS_URL")
    # The cluster: each generator on a connection-manager of its own, over either transport.
    if [[ "$server" == xmppd-cluster* ]]; then
        ports=() ws_urls=() wss_urls=()
        for config in "$XMPPD_CONFIGS"/xmppd-cluster/connection-manager-*.toml; do
            ports+=("$(sed -n 's/^c2s = "127.0.0.1:\([0-9]*\)"/\1/p' "$config")")
            ws_urls+=("$(cm_ws_url websocket "$config")")
            wss_urls+=("$(cm_ws_url websocket_tls "$config")")
        done
    fi
    local workers=${#ports[@]} reports=() pid_args=() generators=()
    loadtest "$server" "provision-$users" provision --users "$users" --concurrency 200
    restart "$server"
    for pid in $PIDS; do pid_args+=(--server-pid "$pid"); done
    for ((i = 0; i < workers; i++)); do
        local report="$RUN_OUT/$server-idle-$users-$TLS-$i.json"
        reports+=("$report")
        WS_URL="${ws_urls[i]}" WSS_URL="${wss_urls[i]}" target_args "${ports[i]}" || return 1
        "$LOADTEST" idle "${TARGET_ARGS[@]}" --mechanism "$MECHANISM" \
            --users "$users" --workers "$workers" --worker-index "$i" --duration "$DURATION" \
            --login-rate "$((LOGIN_RATE / workers))" --quiet "${pid_args[@]}" \
            --json "$report" >/dev/null &
        generators+=("$!")
    done
    wait "${generators[@]}"
    "$LOADTEST" merge "${reports[@]}" --json "$RUN_OUT/$server-idle-$users-$TLS.json"
}

# SERVERS in the order round `$1` takes them: as given in odd rounds, reversed in even ones.
round_order() {
    if (($1 % 2)); then echo "$SERVERS"; else echo "$SERVERS" | tr ' ' '\n' | tac | paste -sd' '; fi
}

# Where a round's reports go: $OUT itself when there is one round.
round_out() { if ((ROUNDS > 1)); then echo "$OUT/round-$1"; else echo "$OUT"; fi; }

main() {
    install_peers
    build
    local ran=()
    for ((round = 1; round <= ROUNDS; round++)); do
        RUN_OUT="$(round_out "$round")"
        mkdir -p "$RUN_OUT"
        STARTED=()  # every round starts each server with empty data, as the first does
        for server in $(round_order "$round"); do
            local start="start_${server//-/_}" stop="stop_${server//-/_}"
            PIDS="" WS_URL="" WSS_URL=""
            if ! "$start"; then continue; fi
            log "$server up on 127.0.0.1:$PORT ${WS_URL:+and $WS_URL }(pids: $PIDS), round $round of $ROUNDS"
            if bench "$server"; then
                [[ " ${ran[*]} " == *" $server "* ]] || ran+=("$server")
            else
                log "$server: a scenario failed"
            fi
            "$stop"
        done
    done
    ((${#ran[@]})) || { log "no server ran"; exit 1; }
    for name in provision $SCENARIOS; do
        local args=()
        for server in "${ran[@]}"; do
            # A server is compared on a scenario only if every round has its report.
            local rounds=()
            for ((round = 1; round <= ROUNDS; round++)); do
                local report
                report="$(round_out "$round")/$server-$name.json"
                [[ -f "$report" ]] && rounds+=("$report")
            done
            if ((${#rounds[@]} == ROUNDS)); then
                args+=("$server=$(IFS=,; echo "${rounds[*]}")")
            elif ((${#rounds[@]})); then
                log "$server: $name missing in some rounds, left out of its table"
            fi
        done
        ((${#args[@]})) || continue
        printf '\n######## %s\n' "$name"
        "$LOADTEST" compare --plot "$OUT/plots/$name" "${args[@]}"
    done
}

case "${1:-}" in
    start)
        mkdir -p "$WORK"
        build
        "start_${2//-/_}"
        echo "$2 on 127.0.0.1:$PORT ${WS_URL:+and $WS_URL $WSS_URL }pids: $PIDS"
        ;;
    stop) "stop_${2//-/_}" ;;
    idle-scale)
        RUN_OUT="$OUT"
        mkdir -p "$WORK" "$OUT"
        install_peers
        build
        "start_${2//-/_}"
        idle_scale "$2" "$3"
        "stop_${2//-/_}"
        ;;
    *) main ;;
esac
