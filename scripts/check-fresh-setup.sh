#!/usr/bin/env bash
# The README's two commands, as a newcomer runs them: a fresh clone, a normal (non-root) user,
# nothing installed but what the README says (the system packages root installed, as the README's
# "Requirements" list them), a new virtual environment made by `make`.
#
#   1. `make demo`: its server answers with the points the training logged; SIGTERM stops the
#      demo AND its server (the port is free afterwards).
#   2. `make test` (PYTEST_ARGS selects a quick subset): installs nothing outside .venv, starts
#      PostgreSQL as that user, runs, and stops it again.
#   3. The system interpreter is untouched: the package is not importable outside .venv.
#
# Run by .ci/run as root (it creates the user $LENS_CHECK_USER, default lens-newcomer); as any
# other user it runs the checks in a fresh clone under that user's home.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
CHECK_USER=${LENS_CHECK_USER:-lens-newcomer}
SUBSET=${LENS_CHECK_TESTS:-tests/core/test_autoload.py tests/server/test_server_query.py tests/ui/test_mount_ui.py}

if [ "$(id -u)" = 0 ]; then
  id "$CHECK_USER" >/dev/null 2>&1 || useradd --create-home --shell /bin/bash "$CHECK_USER"
  home=$(getent passwd "$CHECK_USER" | cut -d: -f6)
  rm -rf "$home/lens"
  git clone -q "$REPO" "$home/lens"            # committed files only: what a user's clone holds
  chown -R "$CHECK_USER": "$home/lens"
  # a login shell: the user's own PATH and HOME, none of root's environment
  exec su - "$CHECK_USER" -c "LENS_CHECK_TESTS='$SUBSET' bash ~/lens/scripts/check-fresh-setup.sh"
fi

cd "$REPO"
say() { printf '\n=== fresh-setup check (%s): %s\n' "$(id -un)" "$*"; }
fail() { printf '\nfresh-setup check FAILED: %s\n' "$*" >&2; exit 1; }

say "python3 is $(command -v python3) ($(python3 --version 2>&1)); make demo"
log=$(mktemp)
setsid make demo DEMO_ARGS="--steps 30 --port 18080" >"$log" 2>&1 &
demo=$!
trap 'kill -TERM -- -$demo 2>/dev/null || true' EXIT
url=
for _ in $(seq 1 900); do          # the first install takes minutes
  url=$(grep -o 'http://127\.0\.0\.1:[0-9]*/#/workloads/[^/ ]*' "$log" | head -1 || true)
  [ -n "$url" ] && break
  kill -0 "$demo" 2>/dev/null || { cat "$log"; fail "make demo exited before serving"; }
  sleep 1
done
[ -n "$url" ] || { cat "$log"; fail "make demo printed no UI URL in 15 minutes"; }
base=${url%%/#*}; workload=${url##*/workloads/}
tail -n 25 "$log"
.venv/bin/python - "$base" "$workload" <<'EOF'
import sys, requests
base, workload = sys.argv[1:]
body = requests.get(f"{base}/api/v1/workloads/{workload}/metrics/available", params={"data_source": "wandb"}, timeout=10).json()
names = {m["name"] if isinstance(m, dict) else m for m in body.get("metrics", body.get("data", []))}
assert "loss" in names, body
assert requests.get(base + "/", timeout=10).status_code == 200
assert requests.get(base + "/static/vendor/uPlot.iife.min.js", timeout=10).status_code == 200, "the UI has no charting library"
print(f"the demo's server at {base} holds {sorted(names)} for {workload}, and serves the UI with its charts")
EOF
say "SIGTERM to make demo's process group"
kill -TERM -- -"$demo"
for _ in $(seq 1 30); do kill -0 "$demo" 2>/dev/null || break; sleep 1; done
kill -0 "$demo" 2>/dev/null && fail "make demo still runs 30 s after SIGTERM"
trap - EXIT
port=${base##*:}
if (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null; then fail "port $port still answers after the demo stopped (orphaned server)"; fi
echo "stopped; port $port is free"

say "make test PYTEST_ARGS='$LENS_CHECK_TESTS'"
make test PYTEST_ARGS="$LENS_CHECK_TESTS" 2>&1 | tee "$log"
grep -q "stopped the PostgreSQL it started" "$log" || fail "make test did not start and stop its own PostgreSQL"

say "the system interpreter is untouched"
if python3 -c "import primus_lens_wandb_exporter" 2>/dev/null; then fail "python3 (outside .venv) imports the package"; fi
echo "python3 outside .venv does not see the package; .venv/bin/python does: $(.venv/bin/python -c 'import primus_lens_wandb_exporter as m; print(m.__file__)')"
say "OK"
