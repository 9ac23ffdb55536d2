#!/usr/bin/env bash
# Runbook: a ban sweep and its exact lift. Ban a spam account from every room it joined;
# later (an appeal granted, the account cleaned up), lift exactly the bans this sweep made.
#
# A room where the account was already banned (by a moderator, before the sweep) answers 409
# USER_ALREADY_BLOCKED: counted as done, "already", and never lifted. `revert` knows it from
# the answers, so the lift unbans only the pairs the sweep banned, and every other ban in
# those rooms (of other accounts, or of this one from before) stays.
#
# Who may lift: the vendor documents unban as room-owner only. So the lift runs with the
# rooms' owner's token when IMKIT_OWNER_TOKEN is set (the owner's IMKIT_TOKEN, with the
# same IMKIT_CLIENT_KEY), and otherwise on the credentials in the environment, which works
# only on a deployment that lets the platform admin unban. In a rehearsal, start the
# sandbox with `--user OWNER_TOKEN=OWNER` and set IMKIT_OWNER_TOKEN (the owner's way), or
# with `--admin-may-unban` (the admin's way). An unban refused 403 fails that op: the script
# writes the refused ones to lift-failed.csv and exits 1; set IMKIT_OWNER_TOKEN and run it
# again with the same WORK_DIR to lift them.
#
# Environment (an operator's env file gives the first four: `set -a; . FILE; set +a`):
#   IMKIT_BASE_URL     the API, e.g. https://your-app.imkit.io (in a rehearsal: the sandbox)
#   IMKIT_CLIENT_KEY, IMKIT_TOKEN, IMKIT_API_KEY
#                      the credentials; bans use the client key and token when both are set,
#                      else the API key (a cron job can sweep on the API key alone)
#   IMKIT_OWNER_TOKEN  optional: the rooms' owner's token, for the lift only
#   BIN                the imkit-batch binary (default: imkit-batch on the PATH)
#   MANIFEST           the sweep (default: jobs/examples/ban-sweep.yaml)
#   WORK_DIR           where the journals and the lift manifest go (default: a new temporary
#                      directory). Give a lasting one: the lift may come days later, and run
#                      again with the same WORK_DIR the script repeats the finished steps as
#                      no-ops and goes on where it stopped.
#   RUN_FLAGS          extra flags for every `run`, e.g. "--rate 300/min"
#   REHEARSAL=1        rehearsal against `imkit-batch sandbox`: also print each room's bans
#                      from the sandbox's control API at the end (needs curl)
#
# Exit: 0 when the sweep is lifted; 1 when some unbans were refused (lift-failed.csv);
# otherwise the code of the command that stopped it, or 4 when stopped at the pause.
set -euo pipefail

examples=$(cd "$(dirname "${BASH_SOURCE[0]}")/../examples" && pwd)
BIN=${BIN:-imkit-batch}
MANIFEST=${MANIFEST:-$examples/ban-sweep.yaml}
WORK_DIR=${WORK_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/imkit-ban-sweep.XXXXXX")}
read -r -a run_flags <<<"${RUN_FLAGS:-}"
: "${IMKIT_BASE_URL:?set IMKIT_BASE_URL and the credentials first (e.g. from the env file)}"
mkdir -p "$WORK_DIR"

sweep_journal=$WORK_DIR/sweep.journal
lift_csv=$WORK_DIR/lift.csv
lift_journal=$WORK_DIR/lift.journal
lift_failed_csv=$WORK_DIR/lift-failed.csv

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

# The lift's commands, on the owner's token when one is given: IMKIT_TOKEN is set for that
# one command only (in its environment, never on a command line), and --room-auth token
# makes sure the bans' credential is that token and not the API key.
as_lifter() {
  if [[ -n ${IMKIT_OWNER_TOKEN:-} ]]; then
    IMKIT_TOKEN=$IMKIT_OWNER_TOKEN "$@" --room-auth token
  else
    "$@"
  fi
}

echo "ban sweep: $MANIFEST"
echo "journals and manifests in $WORK_DIR"

# 1. Check the manifest and the rooms file it names; nothing is sent.
step "$BIN" validate "$MANIFEST"

# 2. The bans, and the credential they use.
step "$BIN" plan "$MANIFEST" --journal "$sweep_journal"

# 3. The sweep. Any exit but 0 stops the script with that code (1: some bans failed, see
#    `$BIN report $sweep_journal --failed`; run the script again to resume).
step "$BIN" run "$MANIFEST" --journal "$sweep_journal" "${run_flags[@]}"

# 4. Every ban done; "N already in state" are the rooms where the account was banned before.
step "$BIN" status "$sweep_journal"

# 5. The account stays banned until the lift is decided.
pause "The account is banned from every room it joined. When the sweep is to be lifted, come back here."

# 6. The lift manifest: an unban for each pair this sweep banned, none for a ban answered
#    USER_ALREADY_BLOCKED (someone else's).
step "$BIN" revert "$sweep_journal" -o "$lift_csv"

# 7. The unbans, and the credential they will use (the owner's token, or the environment's).
as_lifter step "$BIN" plan "$lift_csv" --journal "$lift_journal"

# 8. The lift. --retry-failed re-sends unbans refused by an earlier run of this script (a
#    first lift without the owner's token); on a new journal it changes nothing. Exit 1 is
#    handled: an unban refused 403 means the credential may not unban there.
rc=0
as_lifter step "$BIN" run "$lift_csv" --journal "$lift_journal" --retry-failed "${run_flags[@]}" || rc=$?
case $rc in
  0) ;;
  1)
    step "$BIN" report "$lift_journal" --failed -o "$lift_failed_csv"
    echo "some unbans failed (listed in $lift_failed_csv): an unban refused 403 needs the rooms' owner's token; set IMKIT_OWNER_TOKEN and run this script again with WORK_DIR=$WORK_DIR" >&2
    exit 1
    ;;
  *) exit "$rc" ;;
esac

# 9. What was checked: the lift is complete; the bans from before the sweep were never in it.
step "$BIN" status "$lift_journal"
echo
echo "checked: the sweep is lifted; bans lifted: $(grep -c '^unban,' "$lift_csv"); bans from before the sweep kept"

# Rehearsal only: each room's bans as the sandbox holds them (only the bans from before the
# sweep are left).
if [[ ${REHEARSAL:-0} == 1 ]]; then
  if command -v curl >/dev/null 2>&1; then
    echo "rehearsal: the bans left in each room of the sweep:"
    # Column 5 of the report is the room (ids here hold no comma).
    "$BIN" report "$sweep_journal" </dev/null | tail -n +2 | cut -d, -f5 | while read -r room; do
      bans=$(curl -s --noproxy '*' "$IMKIT_BASE_URL/_sandbox/rooms/$room" |
        grep -o '"blockee":"[^"]*"' | cut -d'"' -f4 | paste -sd' ' - || true)
      echo "  $room: ${bans:-none}"
    done
  else
    echo "rehearsal: curl not found, the sandbox's bans are not shown"
  fi
fi
