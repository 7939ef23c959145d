#!/usr/bin/env bash
# The libFuzzer harnesses in Fuzz/ (Fuzz/README.md says what each one feeds):
#
#   fuzz.sh build                        build every harness
#   fuzz.sh run NAME [SECONDS|-runs=N] [libFuzzer flags...]
#                                        fuzz one harness (default 60 s); new inputs go to a
#                                        scratch corpus, crashes to Fuzz/Artifacts/
#   fuzz.sh smoke                        build, then each harness over its corpus and a few
#                                        seconds of fresh input; fails on any crash, leak or hang
#   fuzz.sh all SECONDS                  run every harness in turn, SECONDS each
#   fuzz.sh merge [NAME...]              fold the scratch corpus into Fuzz/Corpus/NAME, minimized
#                                        to the fewest inputs that reach every edge
#   fuzz.sh seeds                        rewrite the hand-made seeds (seed-*) in Fuzz/Corpus
#   fuzz.sh reproduce NAME FILE...       run inputs (crash artifacts) through a harness once
#
# LGUEST_FUZZ_SANITIZERS (default fuzzer,address) and LGUEST_FUZZ_SCRATCH (default .build-fuzz)
# pick another build, e.g. fuzzer alone in .build-fuzz-plain for long campaigns.
set -euo pipefail
cd "$(dirname "$0")/.."

sanitizers=${LGUEST_FUZZ_SANITIZERS:-fuzzer,address}
scratch=${LGUEST_FUZZ_SCRATCH:-.build-fuzz}
harnesses=()
for dir in Fuzz/Sources/fuzz-*/; do
    name=$(basename "$dir"); harnesses+=("${name#fuzz-}")
done
# Every run: a hang is an input that takes more than 10 s; 2 GiB of RSS is a leak or a bomb.
common=(-timeout=10 -rss_limit_mb=2048 -print_final_stats=1)

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" >&2; exit 64; }

build() {
    nice -n 10 swift build -c release --package-path Fuzz --scratch-path "$scratch" \
        -Xswiftc "-sanitize=$sanitizers" -Xswiftc -parse-as-library "$@"
}

binary() {
    local name=$1
    [[ " ${harnesses[*]} " == *" $name "* ]] || { echo "fuzz: no harness '$name' (have: ${harnesses[*]})" >&2; exit 64; }
    echo "$scratch/release/fuzz-$name"
}

# One line from a libFuzzer log: executions, exec/s, cov, ft.
summary() {
    local name=$1 log=$2 status=$3
    local execs rate cov ft
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
    ft=$(grep -o 'ft: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
    local result=ok
    if ((status != 0)); then
        result="FAILED (exit $status: $(grep -m1 -oE 'ERROR: [A-Za-z]+: [^ ]*( [a-z-]+)*|Fatal error[^\n]*|ERROR: libFuzzer: [a-z-]+' "$log" || echo see log))"
    fi
    printf '%-8s executions=%s exec/s=%s cov=%s ft=%s %s (log: %s)\n' "$name" "${execs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" "$result" "$log"
}

# run NAME LIMIT [flags...]: fuzz NAME from its corpus; returns libFuzzer's status.
run() {
    local name=$1 limit=${2:-60}; shift $(( $# >= 2 ? 2 : 1 ))
    local bin; bin=$(binary "$name")
    [ -x "$bin" ] || { echo "fuzz: $bin is not built; run '$0 build'" >&2; exit 1; }
    local work="$scratch/corpus/$name" logs="$scratch/logs"
    mkdir -p "$work" "$logs" Fuzz/Artifacts "Fuzz/Corpus/$name"
    local bound
    if [[ $limit == -runs=* ]]; then bound=$limit; else bound=-max_total_time=$limit; fi
    local log="$logs/$name.log" status=0
    nice -n 19 "$bin" "${common[@]}" "$bound" -artifact_prefix="Fuzz/Artifacts/$name-" "$@" \
        "$work" "Fuzz/Corpus/$name" >"$log" 2>&1 || status=$?
    summary "$name" "$log" "$status"
    return "$status"
}

merge() {
    local name bin
    for name in "$@"; do
        bin=$(binary "$name")
        local merged="$scratch/merged/$name"
        rm -rf "$merged"; mkdir -p "$merged" "$scratch/corpus/$name" "$scratch/logs"
        # Hand-made seeds stay as they are; everything else is re-minimized into the smallest
        # set that still reaches every edge (without hit counts, which would keep ten times as
        # many inputs): the checked-in corpus stays small and the smoke stays quick.
        "$bin" -merge=1 -set_cover_merge=1 -use_counters=0 "${common[@]}" "$merged" "Fuzz/Corpus/$name" "$scratch/corpus/$name" \
            >"$scratch/logs/$name.merge.log" 2>&1
        find "Fuzz/Corpus/$name" -type f ! -name 'seed-*' -delete
        for file in "$merged"/*; do
            [ -e "$file" ] || continue
            [ -e "Fuzz/Corpus/$name/$(basename "$file")" ] || cp "$file" "Fuzz/Corpus/$name/"
        done
        # Seeds were merged too; a seed's content under its hash name would be a duplicate.
        for seed in "Fuzz/Corpus/$name"/seed-*; do
            [ -e "$seed" ] || continue
            rm -f "Fuzz/Corpus/$name/$(sha1sum "$seed" | cut -d' ' -f1)"
        done
        echo "$name: $(find "Fuzz/Corpus/$name" -type f | wc -l) inputs, $(du -sk "Fuzz/Corpus/$name" | cut -f1) KiB"
    done
}

command=${1:-}; shift || true
case $command in
    build) build "$@" ;;
    run)
        (($# >= 1)) || usage
        run "$@" ;;
    all)
        (($# == 1)) || usage
        failed=0
        for name in "${harnesses[@]}"; do run "$name" "$1" || failed=1; done
        exit $failed ;;
    smoke)
        build >/dev/null || { echo "fuzz smoke: build failed; see '$0 build'" >&2; exit 1; }
        failed=0
        # The scratch corpus is not used: the smoke replays exactly the checked-in corpus.
        for name in "${harnesses[@]}"; do
            rm -rf "$scratch/corpus/$name"
            run "$name" "${LGUEST_FUZZ_SMOKE_SECONDS:-6}" || failed=1
            rm -rf "$scratch/corpus/$name"
        done
        if ((failed)); then echo "fuzz smoke: FAILED (inputs in Fuzz/Artifacts/)" >&2; else echo "fuzz smoke: ok"; fi
        exit $failed ;;
    merge)
        (($# >= 1)) || set -- "${harnesses[@]}"
        merge "$@" ;;
    seeds)
        for name in "${harnesses[@]}"; do
            mkdir -p "Fuzz/Corpus/$name"
            LGUEST_FUZZ_WRITE_SEEDS="Fuzz/Corpus/$name" "$(binary "$name")"
        done ;;
    reproduce)
        (($# >= 2)) || usage
        name=$1; shift
        "$(binary "$name")" "$@" ;;
    *) usage ;;
esac
