# Shared by the bench scripts (sourced, not run).

# bench_args reads the arguments every bench script takes: --write (set
# WRITE=1: the results go to docs/benchmarks.md) and --help (print the
# script's header comment). $1 is the script ($0), the rest its arguments.
bench_args() {
	local script="$1"
	shift
	WRITE=0
	for arg in "$@"; do
		case "$arg" in
		--write) WRITE=1 ;;
		-h | --help)
			sed -n '2,/^set -euo/p' "$script" | sed '$d' | sed 's/^# \{0,1\}//'
			exit 0
			;;
		*)
			echo "unknown argument: $arg (try --help)" >&2
			exit 2
			;;
		esac
	done
}
