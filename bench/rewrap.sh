#!/usr/bin/env bash
# Rewrap benchmark: the rewrap job's secrets per second for N stored
# secrets, beside Vault's own batch rewrap rate (the ceiling) measured in the
# same run, while a login-like load goes on.
#
# Usage (from anywhere inside the repo):
#   bench/rewrap.sh                  # run, print a markdown table
#   bench/rewrap.sh --write          # ... and update docs/benchmarks.md
#   SIZES=10000 bench/rewrap.sh      # other sizes (default 100000,1000000)
#
# Environment: SIZES, BATCH (default 1000), LOGIN_RATE (sidecar logins per
# second, default 50), IN_FLIGHT (batches at Vault at once, default 4),
# QUIET (how long logins are measured without a rewrap first, default 10s),
# JOB_IN (sidecar: the job runs inside the sidecar, POST /admin/keys/rewrap,
# sharing its store; process: in the bench's own process, as `totpgate keys
# rewrap` runs it), STORE (sqlite, default, or postgres: a fresh schema on
# PG_DSN, default the local test server, dropped afterwards), KEEP_TMP=1
# (keep the temp dir: the sidecar's logs).
#
# It builds the test Vault (bin/vault, `make vault`) if needed, starts a dev
# server on a free loopback port with transit enabled, runs bench/rewrap and
# stops the server on exit. Vault's dev server keeps everything in memory:
# a million secrets take about 1 GiB in Vault and a few hundred MB on disk.
set -euo pipefail

SIZES="${SIZES:-100000,1000000}"
BATCH="${BATCH:-1000}"
LOGIN_RATE="${LOGIN_RATE:-50}"
IN_FLIGHT="${IN_FLIGHT:-4}"
QUIET="${QUIET:-10s}"
JOB_IN="${JOB_IN:-sidecar}"
STORE="${STORE:-sqlite}"
PG_DSN="${PG_DSN:-postgres://postgres@127.0.0.1:5432/test?sslmode=disable}"
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_args "$0" "$@"

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
make -s vault
tmp="$(mktemp -d)"
vault_pid=""
cleanup() {
	[[ -n "$vault_pid" ]] && kill "$vault_pid" 2>/dev/null && wait "$vault_pid" 2>/dev/null
	if [[ "${KEEP_TMP:-0}" == 1 ]]; then
		echo "kept $tmp (the sidecar's logs)" >&2
	else
		rm -rf "$tmp"
	fi
}
trap cleanup EXIT

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
export VAULT_ADDR="http://127.0.0.1:$port" VAULT_TOKEN=bench-root
HOME="$tmp" bin/vault server -dev -dev-root-token-id="$VAULT_TOKEN" -dev-listen-address="127.0.0.1:$port" >"$tmp/vault.log" 2>&1 &
vault_pid=$!
for _ in $(seq 1 100); do
	bin/vault status >/dev/null 2>&1 && break
	sleep 0.2
done
bin/vault secrets enable transit >/dev/null
go build -o "$tmp/totpgate" ./cmd/totpgate

{
	echo "Measured $(date -u +%Y-%m-%d) on $(nproc) cores ($(uname -m)), Vault $(bin/vault version | awk '{print $2}') dev server (in-memory storage) on loopback; \`STORE=$STORE bench/rewrap.sh\`."
	echo
	go run ./bench/rewrap -vault-addr "$VAULT_ADDR" -token "$VAULT_TOKEN" -n "$SIZES" -batch "$BATCH" -login-rate "$LOGIN_RATE" \
		-in-flight "$IN_FLIGHT" -quiet "$QUIET" -job-in "$JOB_IN" -sidecar "$tmp/totpgate" -dir "$tmp" \
		-store "$STORE" -pg-dsn "$PG_DSN"
} >"$tmp/table.md"
cat "$tmp/table.md"

if ((WRITE)); then
	doc="$repo_root/docs/benchmarks.md"
	awk -v table="$tmp/table.md" '
		/<!-- rewrap:begin -->/ {
			print; print ""
			while ((getline line < table) > 0) print line
			print ""; skip = 1; next
		}
		/<!-- rewrap:end -->/ { skip = 0 }
		!skip { print }
	' "$doc" >"$tmp/benchmarks.md"
	cat "$tmp/benchmarks.md" >"$doc"
	echo "updated $doc" >&2
fi
