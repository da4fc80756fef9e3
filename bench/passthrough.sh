#!/usr/bin/env bash
# Pass-through benchmark: the upstream alone, nginx (1 worker), totpgate,
# Caddy and oauth2-proxy, each proxy pinned to a core of its own.
#
# Usage (from anywhere inside the repo):
#   bench/passthrough.sh                 # run, print a markdown report
#   bench/passthrough.sh --write         # ... and update docs/benchmarks.md
#   TARGETS="nginx totpgate" ROUNDS=5 bench/passthrough.sh
#
# Environment:
#   TARGETS       targets in round-1 order (default: upstream nginx totpgate
#                 caddy oauth2-proxy go-reverseproxy); go-reverseproxy is
#                 bench/bareproxy, net/http with nothing of totpgate's: the
#                 floor for any proxy built on the standard library;
#                 go-ownclient (not in the default list) is bench/bareproxy
#                 with a minimal upstream client of its own instead of
#                 http.Transport, to see what such a client could save
#   ROUNDS        rounds (default 3); each round starts one target later, so
#                 no target is always first or always after the same one
#   DURATION      wrk -d per run (default 10s), after a WARMUP (default 2s) run
#   THREADS       wrk -t (default 1)
#   CONNECTIONS   wrk -c (default 64)
#   PROXY_CPU     the core every proxy is pinned to (default 1)
#   LOAD_CPU      the core wrk and the upstream are pinned to (default 0)
#   WAIT_QUIET=N  before the first round, wait up to N seconds (bounded
#                 sleeps) for the 1-minute load average to fall below
#                 QUIET_LOAD (default 1.0); the report states the load either way
#   PROFILE=DIR   build totpgate with -tags benchpprof and save, for each
#                 totpgate run, a CPU profile (DIR/cpu-rN.prof, most of the
#                 run) and an allocation profile (DIR/allocs-rN.prof)
#   SIDECAR_ARGS  extra arguments appended to `totpgate serve` (word-split)
#   BASE_REV=REV  also measure totpgate as built from git revision REV
#                 (target totpgate-base, added to TARGETS after totpgate), to
#                 see a change's effect in the same rounds
#   KEEP_TMP=1    keep the temp dir (logs, configs, wrk output) after exit
#
# Requirements: go, wrk, nginx, curl, ss, taskset; wrk and nginx are
# installed with apt-get (Debian's wrk, nginx-light) when missing and we are
# root. Caddy and oauth2-proxy are built from Go modules in bench/peers (a
# module of its own, so their dependencies stay out of go.mod) into
# .tools/bench/, once; later runs reuse them (first build: several minutes).
# Only 127.0.0.1 is used. Every process started here is killed on exit;
# every wait and load run is bounded in time.
#
# What is measured, per run: wrk's req/s and p50/p99 latency; the CPU time
# the target's processes used during the run (utime+stime from
# /proc/<pid>/stat, before and after) divided by the requests wrk counted;
# the CPU used by everything else on the machine during the run (from
# /proc/stat, minus the target, the upstream and wrk), so a disturbed run
# can be seen; and, at the end, each proxy's peak RSS (VmHWM of the process
# that serves: nginx's worker, the Go binaries themselves) over all rounds.
# The report gives the median of the rounds for each figure, every round's
# figures, and totpgate's figures beside issue 15's targets.
set -euo pipefail

TARGETS="${TARGETS:-upstream nginx totpgate caddy oauth2-proxy go-reverseproxy}"
ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-10s}"
WARMUP="${WARMUP:-2s}"
THREADS="${THREADS:-1}"
CONNECTIONS="${CONNECTIONS:-64}"
PROXY_CPU="${PROXY_CPU:-1}"
LOAD_CPU="${LOAD_CPU:-0}"
WAIT_QUIET="${WAIT_QUIET:-0}"
QUIET_LOAD="${QUIET_LOAD:-1.0}"
PROFILE="${PROFILE:-}"
SIDECAR_ARGS="${SIDECAR_ARGS:-}"
BASE_REV="${BASE_REV:-}"
if [[ -n "$BASE_REV" && " $TARGETS " != *" totpgate-base "* ]]; then
	TARGETS="${TARGETS/totpgate/totpgate totpgate-base}"
fi

ORIG_ARGS=("$@")
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_args "$0" "$@"

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd "$script_dir/.." && pwd)"
doc="$repo_root/docs/benchmarks.md"
peers_bin="$repo_root/.tools/bench"

log() { printf '[passthrough] %s\n' "$*" >&2; }

# ---------------------------------------------------------------- tools
if ! command -v wrk >/dev/null 2>&1 || ! command -v nginx >/dev/null 2>&1; then
	if [[ "$(id -u)" -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
		log "installing wrk and nginx-light (Debian packages)"
		apt-get update -qq >/dev/null
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx-light >/dev/null
	fi
fi
for bin in go wrk nginx curl ss timeout awk taskset; do
	command -v "$bin" >/dev/null 2>&1 || {
		echo "missing required tool: $bin" >&2
		exit 1
	}
done
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || {
	echo "ROUNDS must be a positive integer" >&2
	exit 2
}
for c in "$PROXY_CPU" "$LOAD_CPU"; do
	taskset -c "$c" true 2>/dev/null || {
		echo "cannot pin to core $c (nproc=$(nproc))" >&2
		exit 2
	}
done
[[ "$PROXY_CPU" != "$LOAD_CPU" ]] || log "warning: PROXY_CPU = LOAD_CPU: proxy and load generator share a core"

# duration_seconds 10s|2m|15 -> integer seconds
duration_seconds() {
	local d="$1" n unit
	n="${d%[smh]}"
	unit="${d#"$n"}"
	[[ "$n" =~ ^[0-9]+$ ]] || {
		echo "bad duration: $d" >&2
		exit 2
	}
	case "$unit" in
	h) echo $((n * 3600)) ;;
	m) echo $((n * 60)) ;;
	*) echo "$n" ;;
	esac
}
dur_s="$(duration_seconds "$DURATION")"
(( dur_s > 0 && dur_s <= 600 )) || {
	echo "DURATION must be between 1s and 10m" >&2
	exit 2
}
duration_seconds "$WARMUP" >/dev/null

hz="$(getconf CLK_TCK)"

tmp="$(mktemp -d "${TMPDIR:-/tmp}/totpgate-bench.XXXXXX")"
pids=()    # long-lived servers started by this script
cur_pid="" # the bounded command in progress, if any

cleanup() {
	local rc=$? pid i
	trap - EXIT INT TERM
	[[ -n "$cur_pid" ]] && kill -TERM "$cur_pid" 2>/dev/null
	for pid in "${pids[@]}"; do
		kill -TERM "$pid" 2>/dev/null || true
	done
	for pid in "${pids[@]}"; do
		for ((i = 0; i < 50; i++)); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	if [[ "${KEEP_TMP:-0}" == 1 ]]; then
		log "kept temp dir $tmp"
	else
		rm -rf "$tmp"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# free_port: a random loopback TCP port not listening and not handed out yet.
used_ports=" "
free_port() {
	local port i listening
	listening="$(ss -Htln 2>/dev/null | awk '{print $4}')"
	for ((i = 0; i < 200; i++)); do
		port=$((20000 + RANDOM % 40000))
		[[ "$used_ports" == *" $port "* ]] && continue
		grep -Eq "[:.]${port}\$" <<<"$listening" && continue
		used_ports+="$port "
		echo "$port"
		return 0
	done
	echo "no free port found" >&2
	return 1
}

# wait_http NAME URL PID LOGFILE: poll until URL answers any HTTP status
# (bounded to ~15 s); fail early if the process died.
wait_http() {
	local name="$1" url="$2" pid="$3" logf="$4" code i
	for ((i = 0; i < 150; i++)); do
		if ! kill -0 "$pid" 2>/dev/null; then
			log "$name exited before answering; last log lines:"
			tail -n 20 "$logf" >&2 || true
			return 1
		fi
		code="$(curl -s -o /dev/null -m 1 -w '%{http_code}' "$url" || true)"
		if [[ -n "$code" && "$code" != 000 ]]; then
			return 0
		fi
		sleep 0.1
	done
	log "$name did not answer $url within 15 s; last log lines:"
	tail -n 20 "$logf" >&2 || true
	return 1
}

# check_body NAME URL: GET / must be 200 with the upstream's exact 1 KiB
# body, otherwise we would be benchmarking an error page or a redirect.
check_body() {
	local name="$1" url="$2" out
	out="$(curl -s -o "$tmp/check.body" -m 5 -w '%{http_code} %{size_download}' "$url" || true)"
	if [[ "$out" != "200 1024" ]]; then
		log "$name: GET $url returned '$out' (status size), expected '200 1024'"
		head -c 300 "$tmp/check.body" >&2 2>/dev/null || true
		echo >&2
		return 1
	fi
	cmp -s "$tmp/check.body" "$tmp/expected.body" || {
		log "$name: body differs from the upstream's"
		return 1
	}
}

# bounded SECS OUTFILE CMD...: run CMD under `timeout` in the background and
# wait for it, so a TERM/INT to this script triggers cleanup at once.
bounded() {
	local secs="$1" outf="$2" rc=0
	shift 2
	timeout "$secs" "$@" >"$outf" 2>&1 &
	cur_pid=$!
	wait "$cur_pid" || rc=$?
	cur_pid=""
	return "$rc"
}

# start NAME LOGFILE CPU CMD...: start a long-lived server pinned to CPU.
start() {
	local name="$1" logf="$2" cpu="$3"
	shift 3
	taskset -c "$cpu" "$@" >"$logf" 2>&1 &
	pids+=("$!")
	eval "pid_$name=$!"
}

# tree_pids PID: PID and its children (nginx's master and worker).
tree_pids() {
	echo "$1"
	pgrep -P "$1" 2>/dev/null || true
}

# cpu_ticks PID...: utime+stime of the given processes, in clock ticks.
cpu_ticks() { stat_ticks '$12 + $13' "$@"; }
# sys_ticks PID...: their stime alone (time in the kernel), in clock ticks.
sys_ticks() { stat_ticks '$13' "$@"; }
stat_ticks() {
	local expr="$1" p sum=0 t
	shift
	for p in "$@"; do
		# Fields after the ")" that ends comm: utime and stime are the 12th and 13th.
		t="$(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null | awk "{print $expr}")" || t=0
		sum=$((sum + ${t:-0}))
	done
	echo "$sum"
}

# busy_ticks: machine-wide busy time (all cores) from /proc/stat, and steal.
busy_ticks() {
	awk '/^cpu / { print $2 + $3 + $4 + $7 + $8, $9 }' /proc/stat
}

# children_ticks VAR: CPU of this shell's waited-for children (wrk above
# all), in ticks, into VAR. `times` must run in this shell, not in a $(...)
# subshell, whose children's times start at zero.
children_ticks() {
	times >"$tmp/times"
	printf -v "$1" '%s' "$(awk -v hz="$hz" 'function sec(x,  m) { m = x; sub(/m.*/, "", m); sub(/^[0-9]+m/, "", x); sub(/s$/, "", x); return m * 60 + x }
		END { printf "%d\n", (sec($1) + sec($2)) * hz + 0.5 }' "$tmp/times")"
}

# vmhwm_kib PID: peak resident set size of PID in KiB.
vmhwm_kib() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }

loadavg1() { awk '{print $1}' /proc/loadavg; }

# ---------------------------------------------------------------- build
log "temp dir: $tmp"
log "building bench/upstream, bench/bareproxy and ./cmd/totpgate"
(cd "$repo_root" && timeout 300 go build -o "$tmp/upstream" ./bench/upstream && timeout 300 go build -o "$tmp/bareproxy" ./bench/bareproxy)
tags=()
[[ -n "$PROFILE" ]] && tags=(-tags benchpprof)
status_totpgate="" status_caddy="" status_oauth2_proxy="" status_nginx="" status_upstream="" status_go_reverseproxy="" status_go_ownclient="" status_totpgate_base=""
if ! (cd "$repo_root" && timeout 300 go build "${tags[@]}" -o "$tmp/totpgate" ./cmd/totpgate) >"$tmp/totpgate-build.log" 2>&1; then
	head -n 20 "$tmp/totpgate-build.log" >&2
	status_totpgate="not measured: \`go build ./cmd/totpgate\` failed"
fi

wants() { [[ " $TARGETS " == *" $1 "* ]]; }

if wants totpgate-base; then
	if [[ -z "$BASE_REV" ]]; then
		status_totpgate_base="not measured: BASE_REV not set"
	else
		base_sha="$(git -C "$repo_root" rev-parse --short "$BASE_REV^{commit}")"
		mkdir -p "$tmp/base-src"
		log "building totpgate at $BASE_REV ($base_sha)"
		if ! { git -C "$repo_root" archive "$base_sha" | tar -x -C "$tmp/base-src" &&
			(cd "$tmp/base-src" && timeout 300 go build -o "$tmp/totpgate-base" ./cmd/totpgate); } >"$tmp/base-build.log" 2>&1; then
			head -n 20 "$tmp/base-build.log" >&2
			status_totpgate_base="not measured: build of $BASE_REV failed"
		fi
	fi
fi

# build_peer NAME PACKAGE: build a peer from bench/peers into .tools/bench,
# unless the binary there is newer than the module's go.mod and go.sum.
build_peer() {
	local name="$1" pkg="$2" bin="$peers_bin/$1"
	if [[ -x "$bin" && "$bin" -nt "$script_dir/peers/go.mod" && "$bin" -nt "$script_dir/peers/go.sum" ]]; then
		return 0
	fi
	mkdir -p "$peers_bin"
	log "building $name from bench/peers (first build takes minutes, then cached in .tools/bench)"
	(cd "$script_dir/peers" && timeout 1800 go build -trimpath -o "$bin" "$pkg") >"$tmp/$name-build.log" 2>&1
}
if wants caddy && ! build_peer caddy github.com/caddyserver/caddy/v2/cmd/caddy; then
	head -n 20 "$tmp/caddy-build.log" >&2
	status_caddy="not measured: build failed"
fi
if wants oauth2-proxy && ! build_peer oauth2-proxy github.com/oauth2-proxy/oauth2-proxy/v7; then
	head -n 20 "$tmp/oauth2-proxy-build.log" >&2
	status_oauth2_proxy="not measured: build failed"
fi

# ---------------------------------------------------------------- start
declare -A port url serve_pid
up_port="$(free_port)"
log "starting upstream on 127.0.0.1:$up_port (core $LOAD_CPU)"
start upstream "$tmp/upstream.log" "$LOAD_CPU" "$tmp/upstream" -listen "127.0.0.1:$up_port"
wait_http upstream "http://127.0.0.1:$up_port/" "$pid_upstream" "$tmp/upstream.log"
curl -s -m 5 -o "$tmp/expected.body" "http://127.0.0.1:$up_port/"
[[ "$(wc -c <"$tmp/expected.body")" -eq 1024 ]] || {
	log "upstream body is not 1024 bytes"
	exit 1
}
port[upstream]="$up_port"
serve_pid[upstream]="$pid_upstream"

status_of() { local v="status_${1//-/_}"; echo "${!v}"; }
set_status() { printf -v "status_${1//-/_}" '%s' "$2"; }

if wants nginx; then
	port[nginx]="$(free_port)"
	mkdir -p "$tmp/nginx"
	user_line="# (not root: no user directive)"
	[[ "$(id -u)" -eq 0 ]] && user_line="user root;"
	sed -e "s|@PREFIX@|$tmp/nginx|g" -e "s|@LISTEN_PORT@|${port[nginx]}|g" \
		-e "s|@UPSTREAM_PORT@|$up_port|g" -e "s|@USER_LINE@|$user_line|g" \
		"$script_dir/nginx.conf.tmpl" >"$tmp/nginx/nginx.conf"
	nginx -p "$tmp/nginx" -c "$tmp/nginx/nginx.conf" -e "$tmp/nginx/error.log" -t >"$tmp/nginx-t.log" 2>&1 || {
		cat "$tmp/nginx-t.log" >&2
		exit 1
	}
	log "starting nginx (1 worker) on 127.0.0.1:${port[nginx]} (core $PROXY_CPU)"
	start nginx "$tmp/nginx.log" "$PROXY_CPU" nginx -p "$tmp/nginx" -c "$tmp/nginx/nginx.conf" -e "$tmp/nginx/error.log"
	wait_http nginx "http://127.0.0.1:${port[nginx]}/" "$pid_nginx" "$tmp/nginx/error.log" || set_status nginx "not measured: did not start"
fi

# sidecar_args NAME: the serve arguments of a totpgate target.
sidecar_args() {
	local adm
	adm="$(free_port)"
	mkdir -p "$tmp/state-$1"
	sc_args=(serve --listen "127.0.0.1:${port[$1]}" --admin-listen "127.0.0.1:$adm"
		--upstream "http://127.0.0.1:$up_port"
		--store.path "$tmp/state-$1/totpgate.db" --keyring.local-path "$tmp/state-$1/totpgate-keyring.json")
	# shellcheck disable=SC2206 # intentional word splitting of SIDECAR_ARGS
	[[ -n "$SIDECAR_ARGS" ]] && sc_args+=($SIDECAR_ARGS)
	return 0
}

if wants totpgate-base && [[ -z "$status_totpgate_base" ]]; then
	port[totpgate-base]="$(free_port)"
	sidecar_args totpgate-base
	log "starting totpgate at $BASE_REV (core $PROXY_CPU)"
	start totpgate_base "$tmp/totpgate-base.log" "$PROXY_CPU" "$tmp/totpgate-base" "${sc_args[@]}"
	wait_http totpgate-base "http://127.0.0.1:${port[totpgate-base]}/" "$pid_totpgate_base" "$tmp/totpgate-base.log" ||
		set_status totpgate-base "not measured: did not start"
fi

if wants totpgate && [[ -z "$status_totpgate" ]]; then
	port[totpgate]="$(free_port)"
	sidecar_args totpgate
	pprof_port=""
	env_args=()
	if [[ -n "$PROFILE" ]]; then
		mkdir -p "$PROFILE"
		pprof_port="$(free_port)"
		env_args=(env "TOTPGATE_BENCH_PPROF=127.0.0.1:$pprof_port")
	fi
	log "starting totpgate ${sc_args[*]} (core $PROXY_CPU)"
	start totpgate "$tmp/totpgate.log" "$PROXY_CPU" "${env_args[@]}" "$tmp/totpgate" "${sc_args[@]}"
	wait_http totpgate "http://127.0.0.1:${port[totpgate]}/" "$pid_totpgate" "$tmp/totpgate.log" ||
		set_status totpgate "not measured: \`totpgate serve\` did not start"
fi

if wants caddy && [[ -z "$status_caddy" ]]; then
	port[caddy]="$(free_port)"
	mkdir -p "$tmp/caddy"
	sed -e "s|@PREFIX@|$tmp/caddy|g" -e "s|@LISTEN_PORT@|${port[caddy]}|g" -e "s|@UPSTREAM_PORT@|$up_port|g" \
		"$script_dir/Caddyfile.tmpl" >"$tmp/caddy/Caddyfile"
	log "starting caddy on 127.0.0.1:${port[caddy]} (core $PROXY_CPU)"
	start caddy "$tmp/caddy.log" "$PROXY_CPU" env HOME="$tmp/caddy" XDG_DATA_HOME="$tmp/caddy" XDG_CONFIG_HOME="$tmp/caddy" \
		"$peers_bin/caddy" run --adapter caddyfile --config "$tmp/caddy/Caddyfile"
	wait_http caddy "http://127.0.0.1:${port[caddy]}/" "$pid_caddy" "$tmp/caddy.log" || set_status caddy "not measured: did not start"
fi

if wants oauth2-proxy && [[ -z "$status_oauth2_proxy" ]]; then
	port[oauth2-proxy]="$(free_port)"
	# A plain reverse proxy: every path skips authentication, so no
	# provider is ever asked (the client id, secret and cookie secret are
	# dummies it needs to start). Request logging off, as for the others.
	o2p_args=(--http-address "127.0.0.1:${port[oauth2-proxy]}" --upstream "http://127.0.0.1:$up_port/"
		--skip-auth-route '^/' --email-domain '*' --provider google
		--client-id bench --client-secret bench --cookie-secret 0123456789abcdef0123456789abcdef
		--request-logging=false --auth-logging=false --standard-logging=false
		--pass-host-header=true --reverse-proxy=false --skip-provider-button)
	log "starting oauth2-proxy on 127.0.0.1:${port[oauth2-proxy]} (core $PROXY_CPU)"
	start oauth2_proxy "$tmp/oauth2-proxy.log" "$PROXY_CPU" "$peers_bin/oauth2-proxy" "${o2p_args[@]}"
	wait_http oauth2-proxy "http://127.0.0.1:${port[oauth2-proxy]}/" "$pid_oauth2_proxy" "$tmp/oauth2-proxy.log" ||
		set_status oauth2-proxy "not measured: did not start"
fi

if wants go-reverseproxy; then
	port[go-reverseproxy]="$(free_port)"
	log "starting bench/bareproxy on 127.0.0.1:${port[go-reverseproxy]} (core $PROXY_CPU)"
	start go_reverseproxy "$tmp/bareproxy.log" "$PROXY_CPU" "$tmp/bareproxy" -listen "127.0.0.1:${port[go-reverseproxy]}" -upstream "http://127.0.0.1:$up_port"
	wait_http go-reverseproxy "http://127.0.0.1:${port[go-reverseproxy]}/" "$pid_go_reverseproxy" "$tmp/bareproxy.log" ||
		set_status go-reverseproxy "not measured: did not start"
fi
if wants go-ownclient; then
	port[go-ownclient]="$(free_port)"
	log "starting bench/bareproxy -client own on 127.0.0.1:${port[go-ownclient]} (core $PROXY_CPU)"
	start go_ownclient "$tmp/ownclient.log" "$PROXY_CPU" "$tmp/bareproxy" -client own -listen "127.0.0.1:${port[go-ownclient]}" -upstream "http://127.0.0.1:$up_port"
	wait_http go-ownclient "http://127.0.0.1:${port[go-ownclient]}/" "$pid_go_ownclient" "$tmp/ownclient.log" ||
		set_status go-ownclient "not measured: did not start"
fi

# Every target must return the upstream's exact 200 body before it is loaded.
order=()
for t in $TARGETS; do
	case "$t" in
	upstream | nginx | totpgate | totpgate-base | caddy | oauth2-proxy | go-reverseproxy | go-ownclient) ;;
	*)
		log "unknown target $t"
		exit 2
		;;
	esac
	[[ -n "$(status_of "$t")" ]] && continue
	v="pid_${t//-/_}"
	serve_pid[$t]="${!v}"
	url[$t]="http://127.0.0.1:${port[$t]}/"
	if ! check_body "$t" "${url[$t]}"; then
		set_status "$t" "not measured: GET / was not a 200 pass-through of the upstream body"
		continue
	fi
	order+=("$t")
done
((${#order[@]} > 0)) || {
	log "nothing to measure"
	exit 1
}

# The process whose peak RSS is reported: nginx's worker, else the server.
rss_pid() {
	local p="${serve_pid[$1]}"
	if [[ "$1" == nginx ]]; then
		pgrep -P "$p" | head -n1
	else
		echo "$p"
	fi
}

# ---------------------------------------------------------------- quiet
load_start="$(loadavg1)"
if ((WAIT_QUIET > 0)); then
	log "waiting up to ${WAIT_QUIET}s for the 1-minute load average ($load_start) to fall below $QUIET_LOAD"
	waited=0
	while awk -v l="$(loadavg1)" -v q="$QUIET_LOAD" 'BEGIN { exit !(l >= q) }' && ((waited < WAIT_QUIET)); do
		sleep 10
		waited=$((waited + 10))
	done
	load_start="$(loadavg1)"
	log "load average now $load_start after ${waited}s"
fi

# ---------------------------------------------------------------- load
wrk_timeout=$((dur_s + 30))
results="$tmp/results.tsv" # target round rps p50 p99 reqs errors cpu_us others_cores steal_pct
: >"$results"

# run_wrk TARGET ROUND: warm up, then one measured run; appends to $results.
run_wrk() {
	local t="$1" r="$2" out="$tmp/wrk-$1-r$2.txt" tp cpu0 cpu1 ks0 ks1 up0 up1 ch0 ch1 b0 b1 s0 s1 prof_pid=""
	log "round $r, $t: warm-up $WARMUP"
	bounded 60 /dev/null taskset -c "$LOAD_CPU" wrk -t"$THREADS" -c"$CONNECTIONS" -d"$WARMUP" "${url[$t]}" || true
	mapfile -t tp < <(tree_pids "${serve_pid[$t]}")
	if [[ -n "$PROFILE" && "$t" == totpgate ]]; then
		# The CPU profile covers the run but its first and last second.
		curl -s -m $((dur_s + 20)) -o "$PROFILE/cpu-r$r.prof" \
			"http://127.0.0.1:$pprof_port/debug/pprof/profile?seconds=$((dur_s > 3 ? dur_s - 2 : 1))" &
		prof_pid=$!
	fi
	cpu0="$(cpu_ticks "${tp[@]}")"
	ks0="$(sys_ticks "${tp[@]}")"
	up0="$(cpu_ticks "${serve_pid[upstream]}")"
	children_ticks ch0
	read -r b0 s0 < <(busy_ticks)
	log "round $r, $t: taskset -c $LOAD_CPU wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency ${url[$t]}"
	if ! bounded "$wrk_timeout" "$out" taskset -c "$LOAD_CPU" wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "${url[$t]}"; then
		log "$t: wrk failed:"
		cat "$out" >&2
		return 1
	fi
	read -r b1 s1 < <(busy_ticks)
	children_ticks ch1
	cpu1="$(cpu_ticks "${tp[@]}")"
	ks1="$(sys_ticks "${tp[@]}")"
	up1="$(cpu_ticks "${serve_pid[upstream]}")"
	if [[ -n "$prof_pid" ]]; then
		wait "$prof_pid" || log "CPU profile of round $r failed"
		curl -s -m 10 -o "$PROFILE/allocs-r$r.prof" "http://127.0.0.1:$pprof_port/debug/pprof/allocs" || true
	fi
	# The upstream is the target itself in the direct run: count it once.
	local proxy=$((cpu1 - cpu0)) upstream=$((up1 - up0))
	[[ "$t" == upstream ]] && upstream=0
	awk -v t="$t" -v r="$r" -v cpu="$proxy" -v ksys=$((ks1 - ks0)) -v ours=$((proxy + upstream + ch1 - ch0)) \
		-v busy=$((b1 - b0)) -v steal=$((s1 - s0)) -v hz="$hz" -v secs="$dur_s" -v ncpu="$(nproc)" '
		function ms(v,   n, u) {
			n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
			if (u == "us") return n / 1000
			if (u == "ms") return n
			if (u == "s")  return n * 1000
			if (u == "m")  return n * 60000
			return n
		}
		/^ +50%/ { p50 = ms($2) }
		/^ +99%/ { p99 = ms($2) }
		/requests in/ { reqs = $1 }
		/^Requests\/sec:/ { rps = $2 }
		/Socket errors:/ { gsub(/,/, ""); serr = $4 + $6 + $8 + $10 }
		/Non-2xx or 3xx responses:/ { non2xx = $NF }
		END {
			if (rps == "" || reqs == 0) exit 1
			others = (busy - ours) / hz / secs; if (others < 0) others = 0
			printf "%s\t%d\t%.0f\t%.3f\t%.3f\t%d\t%d\t%.1f\t%.2f\t%.1f\t%.1f\n", t, r, rps, p50, p99, reqs,
				serr + non2xx, cpu * 1e6 / hz / reqs, others, 100 * steal / (hz * secs * ncpu), ksys * 1e6 / hz / reqs
		}' "$out" >>"$results" || {
		log "$t: could not parse wrk output"
		cat "$out" >&2
		return 1
	}
	tail -n1 "$results" >&2
}

for ((r = 1; r <= ROUNDS; r++)); do
	n=${#order[@]}
	for ((i = 0; i < n; i++)); do
		t="${order[$(((i + r - 1) % n))]}"
		run_wrk "$t" "$r" || set_status "$t" "wrk run failed in round $r"
		if ! kill -0 "${serve_pid[$t]}" 2>/dev/null; then
			set_status "$t" "process died in round $r"
		fi
	done
done
load_end="$(loadavg1)"

declare -A rss
for t in "${order[@]}"; do
	[[ "$t" == upstream ]] && continue
	p="$(rss_pid "$t")"
	[[ -n "$p" ]] && rss[$t]="$(vmhwm_kib "$p")"
done

# ---------------------------------------------------------------- report
# median TARGET COLUMN: the median over the rounds (column numbers as in $results).
median() {
	awk -F'\t' -v t="$1" -v c="$2" '$1 == t { print $c }' "$results" | sort -g |
		awk '{ v[NR] = $1 } END { if (NR == 0) exit; if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
sum_col() { awk -F'\t' -v t="$1" -v c="$2" '$1 == t { s += $c } END { print s + 0 }' "$results"; }
max_col() { awk -F'\t' -v c="$1" 'NR == 1 || $c > m { m = $c } END { print m + 0 }' "$results"; }

ngx_ver="$(nginx -v 2>&1 | sed 's|^nginx version: nginx/||')"
# The peers' versions are the ones bench/peers/go.mod requires (built as
# dependencies, they cannot always name their own version).
peer_ver() { awk -v m="$1" '$1 == m && $2 ~ /^v/ { print $2; exit }' "$script_dir/peers/go.mod"; }
caddy_ver="$(peer_ver github.com/caddyserver/caddy/v2)"
o2p_ver="$(peer_ver github.com/oauth2-proxy/oauth2-proxy/v7)"
label() {
	case "$1" in
	upstream) echo "upstream alone (\`bench/upstream\`, no proxy)" ;;
	nginx) echo "nginx $ngx_ver, 1 worker, keepalive 64" ;;
	totpgate) echo "**totpgate** serve (pass-through)" ;;
	totpgate-base) echo "totpgate at $BASE_REV ($base_sha)" ;;
	caddy) echo "Caddy ${caddy_ver:-?} reverse_proxy" ;;
	oauth2-proxy) echo "oauth2-proxy ${o2p_ver:-?}, auth skipped" ;;
	go-ownclient) echo "bare \`httputil.ReverseProxy\` with a minimal client of its own (\`bench/bareproxy -client own\`)" ;;
	go-reverseproxy) echo "bare \`httputil.ReverseProxy\` (\`bench/bareproxy\`, $(go version | awk '{print $3}'))" ;;
	esac
}

declare -A m_rps m_p50 m_p99 m_cpu m_sys
for t in "${order[@]}"; do
	m_sys[$t]="$(median "$t" 11)"
	m_rps[$t]="$(median "$t" 3)"
	m_p50[$t]="$(median "$t" 4)"
	m_p99[$t]="$(median "$t" 5)"
	m_cpu[$t]="$(median "$t" 8)"
done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b == 0) print "–"; else printf "%.2f×", a / b }'; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

go_ver="$(go version | awk '{print $3}')"
wrk_ver="$(wrk -v 2>&1 | head -n1 | awk '{print $2}' || true)"
cpu_model="$(lscpu 2>/dev/null | awk -F: '/^Model name/ { gsub(/^ +/, "", $2); print $2; exit }' || true)"
cmd="bench/passthrough.sh${ORIG_ARGS[*]:+ ${ORIG_ARGS[*]}}"
for v in BASE_REV SIDECAR_ARGS PROFILE WAIT_QUIET CONNECTIONS THREADS DURATION ROUNDS TARGETS; do
	case "$v" in
	TARGETS) [[ "$TARGETS" == "upstream nginx totpgate caddy oauth2-proxy go-reverseproxy" ]] && continue ;;
	ROUNDS) [[ "$ROUNDS" == 3 ]] && continue ;;
	DURATION) [[ "$DURATION" == 10s ]] && continue ;;
	THREADS) [[ "$THREADS" == 1 ]] && continue ;;
	CONNECTIONS) [[ "$CONNECTIONS" == 64 ]] && continue ;;
	WAIT_QUIET) [[ "$WAIT_QUIET" == 0 ]] && continue ;;
	*) [[ -z "${!v}" ]] && continue ;;
	esac
	if [[ "${!v}" =~ ^[A-Za-z0-9_./-]+$ ]]; then cmd="$v=${!v} $cmd"; else cmd="$v='${!v}' $cmd"; fi
done

{
	echo "| target | req/s | vs nginx | CPU µs/req (kernel) | p50 ms | p99 ms | peak RSS MiB | errors |"
	echo "|---|---:|---:|---:|---:|---:|---:|---:|"
	for t in $TARGETS; do
		st="$(status_of "$t")"
		if [[ -n "$st" && -z "${m_rps[$t]:-}" ]]; then
			printf '| %s | – | – | – | – | – | – | %s |\n' "$(label "$t")" "$st"
			continue
		fi
		r="–"
		[[ -n "${rss[$t]:-}" ]] && r="$(mib "${rss[$t]}")"
		printf '| %s | %s | %s | %s | %s | %s | %s | %s%s |\n' "$(label "$t")" "$(printf "%.0f" "${m_rps[$t]}")" \
			"$(ratio "${m_rps[$t]}" "${m_rps[nginx]:-}")" "${m_cpu[$t]} (${m_sys[$t]})" "${m_p50[$t]}" "${m_p99[$t]}" "$r" \
			"$(sum_col "$t" 7)" "${st:+ ($st)}"
	done
	echo
	echo "Median of $ROUNDS rounds; peak RSS is the largest over all rounds (VmHWM; nginx: its worker)."
	echo "The upstream alone row's CPU is the upstream's own (sharing core $LOAD_CPU with wrk)."
	echo
	if [[ -n "${m_rps[totpgate]:-}" && -n "${m_rps[nginx]:-}" ]]; then
		echo "| issue 15 target | totpgate | bound | verdict |"
		echo "|---|---:|---:|---|"
		awk -v c="${m_cpu[totpgate]}" -v nc="${m_cpu[nginx]}" -v q="${m_rps[totpgate]}" -v nq="${m_rps[nginx]}" \
			-v p="${m_p99[totpgate]}" -v np="${m_p99[nginx]}" -v rss="${rss[totpgate]:-0}" 'BEGIN {
			verdict(c <= 1.1 * nc, sprintf("CPU per request ≤ 1.1× nginx (%.1f µs)", nc), sprintf("%.1f µs", c), sprintf("≤ %.1f µs", 1.1 * nc), sprintf("%.2f× the bound", c / (1.1 * nc)))
			verdict(q >= nq, "throughput ≥ 1.0× nginx", sprintf("%d req/s", q), sprintf("≥ %d req/s", nq), sprintf("%.2f× nginx", q / nq))
			verdict(p <= np, "p99 ≤ nginx", sprintf("%.2f ms", p), sprintf("≤ %.2f ms", np), sprintf("%.2f× nginx", p / np))
			verdict(rss <= 32 * 1024, "peak RSS ≤ 32 MiB", sprintf("%.1f MiB", rss / 1024), "≤ 32 MiB", sprintf("%.2f× the bound", rss / 32768))
		}
		function verdict(ok, what, got, bound, by) { printf "| %s | %s | %s | %s |\n", what, got, bound, ok ? "met" : "**not met** (" by ")" }'
		echo
	fi
	echo "<details><summary>every round</summary>"
	echo
	echo "| round | target | req/s | CPU µs/req | of which kernel | p50 ms | p99 ms | requests | errors | other CPU (cores) | steal % |"
	echo "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
	sort -t$'\t' -k2,2n -s "$results" | awk -F'\t' '{ printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", $2, $1, $3, $8, $11, $4, $5, $6, $7, $9, $10 }'
	echo
	echo "</details>"
	echo
	echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
	echo "- machine: nproc=$(nproc)${cpu_model:+, $cpu_model}, $(uname -sr); each proxy pinned to core $PROXY_CPU (\`taskset -c $PROXY_CPU\`, so Go's GOMAXPROCS is 1), wrk and the upstream to core $LOAD_CPU"
	echo "- load average (1 min): $load_start at the start, $load_end at the end; the largest CPU used by other processes during a run: $(max_col 9) cores"
	echo "- versions: $go_ver, nginx $ngx_ver, Caddy ${caddy_ver:-?}, oauth2-proxy ${o2p_ver:-?}, wrk ${wrk_ver:-?}"
	echo "- load: \`wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency\` per run after a $WARMUP warm-up, GET / → 1 KiB text/plain; targets alternate, each round starting one later"
	echo "- command: \`$cmd\`"
} >"$tmp/table.md"

echo
cat "$tmp/table.md"

if ((WRITE)); then
	grep -q '<!-- passthrough:begin -->' "$doc" && grep -q '<!-- passthrough:end -->' "$doc" || {
		log "markers <!-- passthrough:begin/end --> not found in $doc"
		exit 1
	}
	awk -v table="$tmp/table.md" '
		/<!-- passthrough:begin -->/ {
			print; print ""
			while ((getline line < table) > 0) print line
			print ""; skip = 1; next
		}
		/<!-- passthrough:end -->/ { skip = 0 }
		!skip { print }
	' "$doc" >"$tmp/benchmarks.md"
	cat "$tmp/benchmarks.md" >"$doc"
	log "updated $doc"
fi

# Fail (after reporting) if a wanted target was not measured.
status=0
for t in $TARGETS; do
	[[ -n "${m_rps[$t]:-}" ]] || status=1
done
exit "$status"
