#!/usr/bin/env bash
# `make lab` (root): the lab tests and the molecule lab scenarios, side by side.
#
# The scenarios default, check and rollback share one lab and one attack, both started here
# first: the first scenario's prepare waits until the floods match their rules and fixes the
# check time, SMTPGUARD_LAB_KEEP=1 keeps the lab between scenarios, each starts from an empty
# block list, and this script tears the lab down at the end.
# Meanwhile tests/lab runs in two jobs on labs of their own: the sample generator (which mostly
# waits for its traffic's schedule) and the rest. Their output follows the scenarios'. Ctrl-C
# or SIGTERM stops every job and tears every lab down.
set -uo pipefail
cd "$(dirname "$0")/../.."

BIN="$PWD/.venv/bin"
export PATH="$BIN:$PATH"
# The scenarios' lab, as named in extensions/molecule/*/molecule.yml.
export SMTPGUARD_LAB_DIR=/run/smtpguard-lab-scenarios SMTPGUARD_LAB_PREFIX=sgm
export SMTPGUARD_LAB_NUMBER=11 SMTPGUARD_LAB_KEEP=1
ATTACK_SECONDS=${SMTPGUARD_LAB_ATTACK_SECONDS:-240}  # as in extensions/molecule/lab_shared
read -r -a SCENARIOS <<<"${LAB_SCENARIOS:-default check rollback}"
SAMPLE_TEST=tests/lab/test_sample_generator.py
# Labs of tests/lab/test_lab_faults.py and test_lab_lifecycle.py, torn down again on exit.
TEST_LAB_DIRS=(/run/smtpguard-lab-tests /run/smtpguard-lab-lifecycle)
logs=$(mktemp -d)
jobs_running=()

# Each job runs in a process group of its own (set -m): an interrupt reaches all of its
# processes, and the trap runs at once instead of after the job in the foreground.
set -m

finish() {
    local status=$? pid lab
    trap - EXIT INT TERM
    # SIGTERM, not SIGINT: a job started without a terminal may ignore SIGINT. make_sample.py
    # cleans up after itself; the labs of pytest and molecule are torn down below.
    for pid in "${jobs_running[@]}"; do
        kill -TERM -- "-$pid" 2>/dev/null
    done
    for pid in "${jobs_running[@]}"; do
        wait "$pid" 2>/dev/null
    done
    for lab in "$SMTPGUARD_LAB_DIR" "${TEST_LAB_DIRS[@]}"; do
        "$BIN/python" tools/lab/lab.py down --dir "$lab" >/dev/null
    done
    rm -rf "$logs"
    exit "$status"
}
trap finish EXIT
trap 'echo "interrupted; tearing the labs down" >&2; exit 130' INT TERM

started=$SECONDS
"$BIN/python" tools/lab/lab.py down >/dev/null  # a lab left over by an interrupted run
# The attack first: its floods need about 35 s to match their rules, time that the jobs below
# and the first scenario's own start-up use; that scenario's prepare then finds them running.
"$BIN/python" tools/lab/lab.py up >/dev/null &&
    "$BIN/python" tools/lab/lab.py attack --background --duration "$ATTACK_SECONDS" || exit 1

"$BIN/pytest" -q "$SAMPLE_TEST" >"$logs/sample" 2>&1 &
sample_pid=$!
"$BIN/pytest" -q tests/lab --ignore="$SAMPLE_TEST" >"$logs/tests" 2>&1 &
tests_pid=$!
jobs_running=("$sample_pid" "$tests_pid")

status=0
for scenario in "${SCENARIOS[@]}"; do
    echo "molecule test -s $scenario ($((SECONDS - started)) s)"
    "$BIN/molecule" test -s "$scenario" &
    jobs_running+=("$!")
    wait "$!" || { status=1; break; }
done
"$BIN/python" tools/lab/lab.py down >/dev/null
echo "scenarios done ($((SECONDS - started)) s)"

for job in tests sample; do
    pid_var="${job}_pid"
    wait "${!pid_var}" || status=1
    echo "tests/lab, $job:"
    cat "$logs/$job"
done
echo "make lab: $([[ $status -eq 0 ]] && echo passed || echo FAILED) in $((SECONDS - started)) s"
exit "$status"
