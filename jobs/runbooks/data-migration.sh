#!/usr/bin/env bash
# Runbook: a data-migration update. Rename, retag and close rooms from a CSV of updates, then
# deal with the ops that failed: write them out, fix their cause, re-run only them.
#
# A migration often meets rooms that are not there yet (created by another system that lags
# behind, or renamed): those updates answer 404 ROOM_NOT_FOUND and fail permanently, while
# every other update is applied and recorded. The journal keeps the whole job, so the re-run
# sends only the failed ops and never an update that is done.
#
# Environment (an operator's env file gives the first four: `set -a; . FILE; set +a`):
#   IMKIT_BASE_URL     the API, e.g. https://your-app.imkit.io (in a rehearsal: the sandbox)
#   IMKIT_CLIENT_KEY, IMKIT_TOKEN, IMKIT_API_KEY
#                      the credentials; room ops use the client key and token when both are
#                      set, else the API key; a missing one is named before anything is sent
#   BIN                the imkit-batch binary (default: imkit-batch on the PATH)
#   MANIFEST           the updates (default: jobs/examples/room-update.csv)
#   WORK_DIR           where the journal, retry.csv and report.csv go (default: a new
#                      temporary directory). Give a lasting one for a real migration: run
#                      again with the same WORK_DIR, the script repeats the finished steps as
#                      no-ops and goes on where it stopped.
#   RUN_FLAGS          extra flags for every `run`, e.g. "--rate 300/min"
#   REHEARSAL=1        rehearsal against `imkit-batch sandbox`: also print what the sandbox
#                      received per room at the end (needs curl)
#
# Exit: 0 when every update is applied; 1 when some still fail after the re-run (retry.csv
# lists them: fix and run the script again); otherwise the code of the command that stopped
# it, or 4 when stopped at the pause.
set -euo pipefail

examples=$(cd "$(dirname "${BASH_SOURCE[0]}")/../examples" && pwd)
BIN=${BIN:-imkit-batch}
MANIFEST=${MANIFEST:-$examples/room-update.csv}
WORK_DIR=${WORK_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/imkit-migration.XXXXXX")}
read -r -a run_flags <<<"${RUN_FLAGS:-}"
: "${IMKIT_BASE_URL:?set IMKIT_BASE_URL and the credentials first (e.g. from the env file)}"
mkdir -p "$WORK_DIR"

journal=$WORK_DIR/migration.journal
retry_csv=$WORK_DIR/retry.csv
report_csv=$WORK_DIR/report.csv

# Prints a command, then runs it. Its standard input is closed: only the pause below reads
# the operator's answer.
step() {
  printf '\n$ %s\n' "$*"
  "$@" </dev/null
}

# A manual step: says what to do, then waits for a line on standard input (Enter at a
# terminal). Ctrl-C or the end of input stops the script here with nothing half-done.
pause() {
  printf '\n>>> %s\n' "$1"
  printf '>>> Press Enter to go on (Ctrl-C stops here; run again with WORK_DIR=%s to come back).\n' \
    "$WORK_DIR"
  if ! read -r _; then
    echo "no answer on standard input: stopped before the next step" >&2
    exit 4
  fi
}

echo "data migration: $MANIFEST"
echo "journal and manifests in $WORK_DIR"

# 1. Check every row (ids, field values, columns); nothing is sent.
step "$BIN" validate "$MANIFEST"

# 2. The exact requests: each update sends only the fields its row gives.
step "$BIN" plan "$MANIFEST" --journal "$journal"

# 3. Apply the updates. Exit 1 is EXPECTED here and handled, not an error of the script: it
#    means the job finished and some ops failed permanently (here: rooms that do not exist
#    yet, 404 ROOM_NOT_FOUND); every other update is applied and recorded. So the exit code
#    is caught (`|| rc=$?`, which `set -e` allows) and 1 goes on to the failure steps. Any
#    other code stops the script with it: 2 nothing was sent (fix the manifest or the
#    configuration), 3 aborted (e.g. credentials rejected), 4 stopped (run again to resume).
rc=0
step "$BIN" run "$MANIFEST" --journal "$journal" "${run_flags[@]}" || rc=$?
case $rc in
  0) echo "every update applied: nothing to re-run" ;;
  1) echo "some updates failed permanently (exit 1, expected in this runbook): handling them" ;;
  *) exit "$rc" ;;
esac

if [[ $rc == 1 ]]; then
  # 4. The failed ops as a manifest `run` accepts, for the person who fixes their cause.
  step "$BIN" report "$journal" --failed -o "$retry_csv"

  # 5. The failures by error code, with the job's counts.
  step "$BIN" status "$journal"

  # 6. Fix the cause. For missing rooms: have them created (or wait for the system that
  #    creates them). If the fix is in the rows themselves (a wrong id), edit retry.csv and
  #    run it as a job of its own instead: `$BIN run retry.csv --journal retry.journal`.
  pause "Fix what made the ops in $retry_csv fail (here: the rooms that do not exist yet). Then come back here to re-run them."

  # 7. Re-run the failures only, in the same journal: --retry-failed sets the failed ops back
  #    to pending and sends them; the done ones are not sent again. Exit 1 again means some
  #    still fail: they are written out once more and the script ends with 1.
  rc=0
  step "$BIN" run "$MANIFEST" --journal "$journal" --retry-failed "${run_flags[@]}" || rc=$?
  case $rc in
    0) ;;
    1)
      step "$BIN" report "$journal" --failed -o "$retry_csv"
      echo "some updates still fail: they are in $retry_csv; fix them and run this script again with WORK_DIR=$WORK_DIR" >&2
      exit 1
      ;;
    *) exit "$rc" ;;
  esac
fi

# 8. What was checked: the whole job, its runs (the first with exit 1, the re-run with 0),
#    and one row per op with its outcome in report.csv.
step "$BIN" status "$journal"
step "$BIN" report "$journal" -o "$report_csv"
echo
echo "checked: every update is applied, each sent until done and never again (report: $report_csv)"

# Rehearsal only: per room, the updates the sandbox received and applied (each once).
if [[ ${REHEARSAL:-0} == 1 ]]; then
  if command -v curl >/dev/null 2>&1; then
    echo "rehearsal: updates per room as the sandbox counted them (a restarted sandbox counts from its start):"
    # Column 5 of the report is the room (ids here hold no comma).
    tail -n +2 "$report_csv" | cut -d, -f5 | while read -r room; do
      counts=$(curl -s --noproxy '*' "$IMKIT_BASE_URL/_sandbox/applied?kind=update&path=/rooms/$room")
      echo "  $room: $counts"
    done
  else
    echo "rehearsal: curl not found, the sandbox's counts are not shown"
  fi
fi
