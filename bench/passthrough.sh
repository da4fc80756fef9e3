#!/usr/bin/env bash
# Pass-through benchmark: upstream directly vs nginx (1 worker) vs totpgate.
#
# Usage (from anywhere inside the repo):
#   bench/passthrough.sh                   # run, print a markdown table
#   bench/passthrough.sh --write           # ... and update docs/benchmarks.md
#   bench/passthrough.sh --only-baseline   # upstream + nginx only, no sidecar
#   DURATION=30s bench/passthrough.sh      # wrk duration per target (default 10s)
#
# Environment:
#   DURATION        wrk -d value per target (default 10s); a 2 s warm-up precedes each run
#   THREADS         wrk -t (default 2)
#   CONNECTIONS     wrk -c (default 64)
#   SIDECAR_ARGS    extra arguments appended to `totpgate serve` (word-split)
#   SIDECAR_HEADER  optional header sent by curl/wrk to the sidecar only,
#                   e.g. "Cookie: totpgate_session=..." (for gated paths)
#   KEEP_TMP=1      keep the temp dir (logs, nginx conf) after exit
#
# Requirements: go, wrk, nginx, curl, ss. Only 127.0.0.1 is used. Every
# process started here is killed on exit; every wait and load run is bounded.
#
# What it does: builds bench/upstream and ./cmd/totpgate into a temp dir,
# starts the upstream, nginx (1 worker, keepalive 64 to the upstream) and
# the sidecar (cwd = temp dir, so its SQLite file and keyring land there),
# checks each answers GET / with 200 and the 1 KiB body, then runs
# `wrk -t2 -c64 -d$DURATION --latency` against each after a 2 s warm-up.
# If the sidecar does not build or start, its row says why and the
# baseline rows are still produced (exit status stays 0 in that case only
# with --only-baseline; otherwise the script exits 1 at the end).
set -euo pipefail

DURATION="${DURATION:-10s}"
THREADS="${THREADS:-2}"
CONNECTIONS="${CONNECTIONS:-64}"
WARMUP="2s"
SIDECAR_ARGS="${SIDECAR_ARGS:-}"
SIDECAR_HEADER="${SIDECAR_HEADER:-}"

WRITE=0
ONLY_BASELINE=0
ORIG_ARGS=("$@")
for arg in "$@"; do
	case "$arg" in
	--write) WRITE=1 ;;
	--only-baseline) ONLY_BASELINE=1 ;;
	-h | --help)
		sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
		exit 0
		;;
	*)
		echo "unknown argument: $arg (try --help)" >&2
		exit 2
		;;
	esac
done

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd "$script_dir/.." && pwd)"
doc="$repo_root/docs/benchmarks.md"

for bin in go wrk nginx curl ss timeout awk; do
	command -v "$bin" >/dev/null 2>&1 || {
		echo "missing required tool: $bin" >&2
		exit 1
	}
done

log() { printf '[passthrough] %s\n' "$*" >&2; }

# duration_seconds 10s|2m|1h|15 -> integer seconds (used for timeouts only)
duration_seconds() {
	local d="$1" n unit
	n="${d%[smh]}"
	unit="${d#"$n"}"
	[[ "$n" =~ ^[0-9]+$ ]] || {
		echo "bad DURATION: $d" >&2
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

tmp="$(mktemp -d "${TMPDIR:-/tmp}/totpgate-bench.XXXXXX")"
pids=()    # long-lived servers started by this script
cur_pid="" # the wrk run in progress, if any

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

# free_port: a random loopback TCP port not currently listening and not
# already handed out by this script.
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

# wait_http NAME URL PID LOGFILE [HEADER]: poll until URL answers any HTTP
# status (bounded to ~15 s); fail early if the process died.
wait_http() {
	local name="$1" url="$2" pid="$3" logf="$4" hdr="${5:-}" code i
	local -a hargs=()
	[[ -n "$hdr" ]] && hargs=(-H "$hdr")
	for ((i = 0; i < 150; i++)); do
		if ! kill -0 "$pid" 2>/dev/null; then
			log "$name exited before answering; last log lines:"
			tail -n 20 "$logf" >&2 || true
			return 1
		fi
		code="$(curl -s -o /dev/null -m 1 "${hargs[@]}" -w '%{http_code}' "$url" || true)"
		if [[ -n "$code" && "$code" != 000 ]]; then
			return 0
		fi
		sleep 0.1
	done
	log "$name did not answer $url within 15 s; last log lines:"
	tail -n 20 "$logf" >&2 || true
	return 1
}

# check_body NAME URL [HEADER]: GET / must be 200 with the upstream's 1 KiB
# body, otherwise we would be benchmarking an error page or a redirect.
check_body() {
	local name="$1" url="$2" hdr="${3:-}" out
	local -a hargs=()
	[[ -n "$hdr" ]] && hargs=(-H "$hdr")
	out="$(curl -s -o "$tmp/check.body" -m 5 "${hargs[@]}" -w '%{http_code} %{size_download}' "$url" || true)"
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
# wait for it, so a TERM/INT to this script triggers cleanup immediately
# instead of after the command finishes.
bounded() {
	local secs="$1" outf="$2" rc=0
	shift 2
	timeout "$secs" "$@" >"$outf" 2>&1 &
	cur_pid=$!
	wait "$cur_pid" || rc=$?
	cur_pid=""
	return "$rc"
}

# flag_named HELP REGEX: print the first flag in HELP (Go flag usage text)
# whose name matches REGEX, without dashes; fail if there is none.
flag_named() {
	grep -oE -- "^ +--?($2)( |\$)" <<<"$1" | head -n1 | sed -E 's/^ +-+//; s/ $//' | grep .
}

# ---------------------------------------------------------------- build
log "temp dir: $tmp"
log "building bench/upstream"
(cd "$repo_root" && timeout 300 go build -o "$tmp/upstream" ./bench/upstream)

sidecar_status="" # empty = usable; otherwise the reason it was skipped
if ((ONLY_BASELINE)); then
	sidecar_status="skipped (--only-baseline)"
else
	log "building ./cmd/totpgate"
	if ! (cd "$repo_root" && timeout 300 go build -o "$tmp/totpgate" ./cmd/totpgate) >"$tmp/sidecar-build.log" 2>&1; then
		log "sidecar does not build; continuing with the baseline only:"
		head -n 20 "$tmp/sidecar-build.log" >&2
		sidecar_status="not measured: \`go build ./cmd/totpgate\` failed"
	fi
fi

# ---------------------------------------------------------------- start
up_port="$(free_port)"
ngx_port="$(free_port)"

log "starting upstream on 127.0.0.1:$up_port"
"$tmp/upstream" -listen "127.0.0.1:$up_port" >"$tmp/upstream.log" 2>&1 &
up_pid=$!
pids+=("$up_pid")
wait_http upstream "http://127.0.0.1:$up_port/" "$up_pid" "$tmp/upstream.log"
curl -s -m 5 -o "$tmp/expected.body" "http://127.0.0.1:$up_port/"
[[ "$(wc -c <"$tmp/expected.body")" -eq 1024 ]] || {
	log "upstream body is not 1024 bytes"
	exit 1
}

log "starting nginx (1 worker) on 127.0.0.1:$ngx_port"
mkdir -p "$tmp/nginx"
user_line="# (not root: no user directive)"
[[ "$(id -u)" -eq 0 ]] && user_line="user root;"
sed -e "s|@PREFIX@|$tmp/nginx|g" \
	-e "s|@LISTEN_PORT@|$ngx_port|g" \
	-e "s|@UPSTREAM_PORT@|$up_port|g" \
	-e "s|@USER_LINE@|$user_line|g" \
	"$script_dir/nginx.conf.tmpl" >"$tmp/nginx/nginx.conf"
nginx -p "$tmp/nginx" -c "$tmp/nginx/nginx.conf" -e "$tmp/nginx/error.log" -t >"$tmp/nginx-t.log" 2>&1 || {
	cat "$tmp/nginx-t.log" >&2
	exit 1
}
nginx -p "$tmp/nginx" -c "$tmp/nginx/nginx.conf" -e "$tmp/nginx/error.log" >"$tmp/nginx.log" 2>&1 &
ngx_pid=$!
pids+=("$ngx_pid")
wait_http nginx "http://127.0.0.1:$ngx_port/" "$ngx_pid" "$tmp/nginx/error.log"

sc_port="" adm_port=""
if [[ -z "$sidecar_status" ]]; then
	sc_port="$(free_port)"
	adm_port="$(free_port)"
	mkdir -p "$tmp/sidecar"
	sc_args=(serve --listen "127.0.0.1:$sc_port" --admin-listen "127.0.0.1:$adm_port"
		--upstream "http://127.0.0.1:$up_port")
	help="$(cd "$tmp/sidecar" && timeout 10 "$tmp/totpgate" serve --help 2>&1 || true)"
	# Point the store and keyring into the temp dir if serve has flags for
	# them (Go's flag help lists them as "-store.path" or "-store-path").
	f="$(flag_named "$help" 'store[.-](path|file)')" && sc_args+=("--$f" "$tmp/sidecar/totpgate.db")
	f="$(flag_named "$help" 'keyring[.-](path|file)')" && sc_args+=("--$f" "$tmp/sidecar/totpgate-keyring.json")
	# shellcheck disable=SC2206 # intentional word splitting of SIDECAR_ARGS
	[[ -n "$SIDECAR_ARGS" ]] && sc_args+=($SIDECAR_ARGS)
	log "starting sidecar: totpgate ${sc_args[*]} (cwd $tmp/sidecar)"
	(cd "$tmp/sidecar" && exec "$tmp/totpgate" "${sc_args[@]}") >"$tmp/sidecar.log" 2>&1 &
	sc_pid=$!
	pids+=("$sc_pid")
	if ! wait_http sidecar "http://127.0.0.1:$sc_port/" "$sc_pid" "$tmp/sidecar.log" "$SIDECAR_HEADER"; then
		sidecar_status="not measured: \`totpgate serve\` did not start (see log)"
	fi
fi

# Every target must return the upstream's exact 200 body before we load it.
check_body upstream "http://127.0.0.1:$up_port/"
check_body nginx "http://127.0.0.1:$ngx_port/"
sidecar_note=""
if [[ -z "$sidecar_status" ]] && ! check_body sidecar "http://127.0.0.1:$sc_port/" "$SIDECAR_HEADER"; then
	# Still measure it, but flag the row: it is not a pass-through number.
	sidecar_note="GET / was not a 200 pass-through of the upstream body"
fi

# ---------------------------------------------------------------- load
wrk_timeout=$((dur_s + 30))

# run_wrk NAME URL [HEADER] -> sets row_* variables
run_wrk() {
	local name="$1" url="$2" hdr="${3:-}" out="$tmp/wrk-$1.txt"
	local -a hargs=()
	[[ -n "$hdr" ]] && hargs=(-H "$hdr")
	log "$name: warm-up $WARMUP"
	bounded 60 /dev/null wrk -t"$THREADS" -c"$CONNECTIONS" -d"$WARMUP" "${hargs[@]}" "$url" || true
	log "$name: wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency $url"
	if ! bounded "$wrk_timeout" "$out" wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "${hargs[@]}" "$url"; then
		log "$name: wrk failed:"
		cat "$out" >&2
		return 1
	fi
	cat "$out" >&2
	# Latencies are normalised to ms. Socket errors and non-2xx/3xx counts
	# are summed into one "errors" column with the breakdown alongside.
	awk '
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
		/Socket errors:/ {
			gsub(/,/, "")
			serr = $4 + $6 + $8 + $10
			sdetail = sprintf("connect %d, read %d, write %d, timeout %d", $4, $6, $8, $10)
		}
		/Non-2xx or 3xx responses:/ { non2xx = $NF }
		END {
			if (rps == "") exit 1
			printf "%s\t%.3f\t%.3f\t%d\t%d\t%d\t%s\n", rps, p50, p99, reqs, serr + 0, non2xx + 0, sdetail
		}' "$out" >"$tmp/parsed-$name.tsv" || {
		log "$name: could not parse wrk output"
		return 1
	}
}

declare -A rps p50 p99 reqs serr non2xx sdetail
measure() {
	local name="$1"
	if run_wrk "$@"; then
		IFS=$'\t' read -r rps[$name] p50[$name] p99[$name] reqs[$name] serr[$name] non2xx[$name] sdetail[$name] <"$tmp/parsed-$name.tsv"
	else
		rps[$name]=""
	fi
}

measure upstream "http://127.0.0.1:$up_port/"
measure nginx "http://127.0.0.1:$ngx_port/"
if [[ -z "$sidecar_status" ]]; then
	measure sidecar "http://127.0.0.1:$sc_port/" "$SIDECAR_HEADER"
	if ! kill -0 "$sc_pid" 2>/dev/null; then
		sidecar_note="${sidecar_note:+$sidecar_note; }sidecar process died during the run"
	fi
fi

# ---------------------------------------------------------------- report
label() {
	case "$1" in
	upstream) echo "upstream (direct, no proxy)" ;;
	nginx) echo "nginx $(nginx -v 2>&1 | sed 's|.*nginx/||'), 1 worker, keepalive 64" ;;
	sidecar) echo "totpgate serve (pass-through)" ;;
	esac
}

row() {
	local name="$1" errs notes=() ratio="–"
	if [[ -z "${rps[$name]:-}" ]]; then
		printf '| %s | – | – | – | – | – | wrk run failed |\n' "$(label "$name")"
		return
	fi
	errs=$((serr[$name] + non2xx[$name]))
	((serr[$name] > 0)) && notes+=("socket errors: ${sdetail[$name]}")
	((non2xx[$name] > 0)) && notes+=("non-2xx/3xx: ${non2xx[$name]}")
	[[ "$name" == sidecar && -n "$sidecar_note" ]] && notes+=("$sidecar_note")
	if [[ -n "${rps[nginx]:-}" ]]; then
		ratio="$(awk -v a="${rps[$name]}" -v b="${rps[nginx]}" 'BEGIN { printf "%.2f×", a / b }')"
	fi
	local n
	n="$(IFS=';'; echo "${notes[*]:-}")"
	printf '| %s | %.0f | %s | %s | %s | %s | %s |\n' "$(label "$name")" "${rps[$name]}" \
		"$ratio" "${p50[$name]}" "${p99[$name]}" "$errs" "${n//;/; }"
}

go_ver="$(go version | awk '{print $3}')"
ngx_ver="$(nginx -v 2>&1 | sed 's|^nginx version: ||')"
wrk_ver="$(wrk -v 2>&1 | head -n1 | awk '{print $2}' || true)"
cpu="$(lscpu 2>/dev/null | awk -F: '/^Model name/ { gsub(/^ +/, "", $2); print $2; exit }' || true)"
cmd="DURATION=$DURATION bench/passthrough.sh${ORIG_ARGS[*]:+ ${ORIG_ARGS[*]}}"
[[ -n "$SIDECAR_ARGS" ]] && cmd="SIDECAR_ARGS='$SIDECAR_ARGS' $cmd"

{
	echo "| target | req/s | vs nginx | p50 (ms) | p99 (ms) | errors | notes |"
	echo "|---|---:|---:|---:|---:|---:|---|"
	row upstream
	row nginx
	if [[ -n "$sidecar_status" ]]; then
		printf '| %s | – | – | – | – | – | %s |\n' "$(label sidecar)" "$sidecar_status"
	else
		row sidecar
	fi
	echo
	echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
	echo "- machine: nproc=$(nproc)${cpu:+, $cpu}, $(uname -sr) — load generator, proxy and upstream share these cores"
	echo "- versions: $go_ver, $ngx_ver, wrk $wrk_ver"
	echo "- load: \`wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency\` per target after a $WARMUP warm-up; GET / → 1 KiB text/plain from \`bench/upstream\`"
	echo "- command: \`$cmd\`"
	if [[ -z "$sidecar_status" && -n "${rps[sidecar]:-}" && -n "${rps[nginx]:-}" ]]; then
		verdict="$(awk -v a="${rps[sidecar]}" -v b="${rps[nginx]}" 'BEGIN { print (a >= b) ? "met" : "NOT met" }')"
		echo "- target (sidecar req/s ≥ nginx 1-worker req/s at $CONNECTIONS connections): **$verdict**"
	fi
} >"$tmp/table.md"

echo
cat "$tmp/table.md"

if ((WRITE)); then
	[[ -f "$doc" ]] || {
		log "$doc not found"
		exit 1
	}
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

# Fail (after reporting) if anything that should have been measured was not.
status=0
for name in upstream nginx; do
	[[ -n "${rps[$name]:-}" ]] || status=1
done
if ((!ONLY_BASELINE)); then
	[[ -z "$sidecar_status" && -n "${rps[sidecar]:-}" ]] || status=1
fi
exit "$status"
