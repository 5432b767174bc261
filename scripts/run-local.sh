#!/usr/bin/env bash
# Run fedprune with `flwr run . --stream` on a local simulation SuperLink, check
# the run's real status (flwr run exits 0 even when the run fails), print the
# summary of results.json, and stop the local SuperLink if this script started it.
#
#   bash scripts/run-local.sh                          # the default job (embedded MNIST)
#   bash scripts/run-local.sh "partitioner='dirichlet' dirichlet-alpha=0.3"
#
# Environment: VENV (default .venv; created and installed when missing),
# NUM_SUPERNODES (default 10), RESULTS (default ./results/local-<date-time>), FLWR_HOME
# (default ./.flwr-home: keeps Flower's config, SuperLink db and logs here).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=${VENV:-.venv}
if [ ! -x "$VENV/bin/flwr" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q -e .
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"
export FLWR_HOME=${FLWR_HOME:-$ROOT/.flwr-home}
export FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_UPDATE_CHECK=1
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1   # else each run re-installs torch
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0             # Ray on 127.0.0.1 only
export RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO=0 TQDM_DISABLE=1
export RAY_TMPDIR=${RAY_TMPDIR:-/tmp/fedprune-ray-$(id -u)}
mkdir -p "$FLWR_HOME" "$RAY_TMPDIR"
RESULTS=${RESULTS:-$ROOT/results/local-$(date +%Y%m%d-%H%M%S)}  # a new folder per run
NUM_SUPERNODES=${NUM_SUPERNODES:-10}

superlink_pid() { pgrep -f "flower-superlink .*--database $FLWR_HOME/local-superlink/state.db" || true; }
had_superlink=$(superlink_pid)
start=$(date +%s)
flwr run . --stream --federation-config "num-supernodes=$NUM_SUPERNODES" \
  --run-config "results-dir='$RESULTS' ${1:-}"
status=$(flwr ls --format json | python -c '
import json, sys
runs = json.load(sys.stdin)["runs"]
print(max(runs, key=lambda r: r["pending-at"])["status"] if runs else "none")')
if [ -z "$had_superlink" ]; then
  pid=$(superlink_pid)
  [ -n "$pid" ] && kill $pid
fi
echo "run status: $status ($(( $(date +%s) - start )) s)"
[ "$status" = "finished:completed" ] || { echo "the run did not complete" >&2; exit 1; }
python - "$RESULTS/results.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))["summary"]
ratio = s.get("upload_vs_dense")  # None when no reply was accepted
print(f"final accuracy {s['final_accuracy']:.4f} (best {s['best_accuracy']:.4f}) after "
      f"{s['rounds_completed']} rounds; upload {s['total_bytes_up'] / 1e6:.1f} MB"
      + (f" ({ratio:.2f}x dense)" if ratio is not None else "")
      + f", download {s['total_bytes_down'] / 1e6:.1f} MB; "
      f"results: {sys.argv[1]}")
PY
