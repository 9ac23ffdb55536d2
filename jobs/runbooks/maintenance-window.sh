#!/usr/bin/env bash
# Runbook: a maintenance window. Freeze the public rooms, do the maintenance, then unfreeze
# exactly the rooms this job froze: a room that was already frozen before the window (frozen
# for violations, by a moderator or an earlier job) stays frozen.
#
# The precision comes from --snapshot: the freeze run reads each room (GET /rooms/{id})
# before freezing it and records what it read in the journal, and `revert` writes an
# unfreeze only for the rooms whose snapshot shows them active.
#
# Environment (an operator's env file gives the first four: `set -a; . FILE; set +a`):
#   IMKIT_BASE_URL     the API, e.g. https://your-app.imkit.io (in a rehearsal: the sandbox)
#   IMKIT_CLIENT_KEY, IMKIT_TOKEN, IMKIT_API_KEY
#                      the credentials; room ops use the client key and token when both are
#                      set, else the API key; a missing one is named before anything is sent
#   BIN                the imkit-batch binary (default: imkit-batch on the PATH)
#   MANIFEST           the freeze job (default: jobs/examples/maintenance-freeze.yaml)
#   WORK_DIR           where the journals and the unfreeze manifest go (default: a new
#                      temporary directory). For a real window give a lasting one: run again
#                      with the same WORK_DIR, the script repeats the finished steps as no-ops
#                      (a finished job sends nothing) and goes on where it stopped.
#   RUN_FLAGS          extra flags for every `run`, e.g. "--rate 300/min" or "--until TIME"
#   REHEARSAL=1        rehearsal against `imkit-batch sandbox`: also print the rooms' state
#                      from the sandbox's control API at the end (needs curl)
#
# Exit: 0 when the rooms are unfrozen; otherwise the code of the command that stopped it
# (imkit-batch's codes: 1 some ops failed, see `report --failed`; 2 nothing was sent; 3
# aborted; 4 stopped, run again to resume), or 4 when stopped at the pause.
set -euo pipefail

examples=$(cd "$(dirname "${BASH_SOURCE[0]}")/../examples" && pwd)
BIN=${BIN:-imkit-batch}
MANIFEST=${MANIFEST:-$examples/maintenance-freeze.yaml}
WORK_DIR=${WORK_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/imkit-maintenance.XXXXXX")}
read -r -a run_flags <<<"${RUN_FLAGS:-}"
: "${IMKIT_BASE_URL:?set IMKIT_BASE_URL and the credentials first (e.g. from the env file)}"
mkdir -p "$WORK_DIR"

freeze_journal=$WORK_DIR/freeze.journal
unfreeze_csv=$WORK_DIR/unfreeze.csv
unfreeze_journal=$WORK_DIR/unfreeze.journal

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

echo "maintenance window: $MANIFEST"
echo "journals and manifests in $WORK_DIR"

# 1. Check the whole manifest (every room id, the settings); nothing is sent.
step "$BIN" validate "$MANIFEST"

# 2. What the run would send: per room, the snapshot read and then the freeze.
step "$BIN" plan "$MANIFEST" --journal "$freeze_journal" --snapshot

# 3. Freeze, reading each room first (--snapshot; the example manifest also sets
#    `snapshot: true`, the flag makes it explicit). Any exit but 0 stops the script with
#    that code: run the script again to resume the same job.
step "$BIN" run "$MANIFEST" --journal "$freeze_journal" --snapshot "${run_flags[@]}"

# 4. Every op done, and how many rooms were read first.
step "$BIN" status "$freeze_journal"

# 5. The maintenance itself.
pause "The rooms are frozen: do the maintenance now. When it is over, come back here to unfreeze them."

# 6. The unfreeze manifest: an unfreeze for each room this job froze whose snapshot shows it
#    active before. Rooms frozen before the window get no unfreeze. Anything revert cannot
#    judge is listed apart (as # comments at the end of the file, and on stderr), never
#    guessed.
step "$BIN" revert "$freeze_journal" -o "$unfreeze_csv"

# 7. What the unfreeze would send. It is a job of its own, with its own journal.
step "$BIN" plan "$unfreeze_csv" --journal "$unfreeze_journal"

# 8. Unfreeze.
step "$BIN" run "$unfreeze_csv" --journal "$unfreeze_journal" "${run_flags[@]}"

# 9. What was checked: both jobs complete, the unfreeze sent only to the rooms in
#    unfreeze.csv.
step "$BIN" status "$unfreeze_journal"
echo
echo "checked: the freeze and the unfreeze are complete; rooms unfrozen: $(grep -c '^unfreeze,' "$unfreeze_csv")"

# Rehearsal only: what the sandbox holds now, every room of the freeze job with its status
# (frozen before the window: still frozen; the others: active again).
if [[ ${REHEARSAL:-0} == 1 ]]; then
  if command -v curl >/dev/null 2>&1; then
    echo "rehearsal: the rooms as the sandbox holds them:"
    # Column 5 of the report is the room (ids here hold no comma).
    "$BIN" report "$freeze_journal" </dev/null | tail -n +2 | cut -d, -f5 | while read -r room; do
      status=$(curl -s --noproxy '*' "$IMKIT_BASE_URL/_sandbox/rooms/$room" | grep -o '"status":[01]' || true)
      case $status in
        '"status":0') echo "  $room: frozen" ;;
        '"status":1') echo "  $room: active" ;;
        *) echo "  $room: not found" ;;
      esac
    done
  else
    echo "rehearsal: curl not found, the sandbox's state is not shown"
  fi
fi
