#!/usr/bin/env bash
# The adapters against the REAL framework releases from PyPI (tests/integrations/real,
# docs/frameworks/verified.md), one stack at a time:
#
#   scripts/test-real.sh PYTHON STACK [pytest args...]      STACK: real-torch | real-jax
#
# The stack's exact pins (requirements/STACK.txt) are installed with --no-deps into
# .real/STACK/ (pip --target, once; again when the file changes) and put in front of PYTHON's
# environment (the project's .venv: torch, wandb, the server) by PYTHONPATH, so nothing in
# .venv is reinstalled or changed.  A stack whose packages cannot be installed (no registry,
# no wheel for this platform) is reported as SKIPPED, loudly; a test that fails fails the run.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${1:?usage: test-real.sh PYTHON STACK [pytest args]}
STACK=${2:?usage: test-real.sh PYTHON STACK [pytest args]}
shift 2

case "$STACK" in
  real-torch) TESTS=(tests/integrations/real/test_torchtitan_real.py tests/integrations/real/test_keras_real.py
                     tests/integrations/real/test_megatron_bridge_real.py) ;;
  real-jax)   TESTS=(tests/integrations/real/test_jax_clu_real.py tests/integrations/real/test_maxtext_real.py
                     "tests/integrations/real/test_keras_real.py::test_wandb_metrics_logger_is_mirrored_exactly_from_wandb") ;;
  *) echo "test-real.sh: unknown stack $STACK (real-torch, real-jax)" >&2; exit 2 ;;
esac

REQ=requirements/$STACK.txt
DIR=$PWD/.real/$STACK
if [ ! -f "$DIR/.installed" ] || [ "$REQ" -nt "$DIR/.installed" ]; then
  echo "test-real: installing $REQ into .real/$STACK/ (--no-deps, once)"
  rm -rf "$DIR"
  if ! "$PYTHON" -m pip install -q --no-deps --ignore-requires-python --target "$DIR" -r "$REQ"; then
    rm -rf "$DIR"
    echo "test-real: SKIPPED $STACK: its packages could not be installed (see pip's output above)"
    exit 0
  fi
  touch "$DIR/.installed"
fi
echo "test-real: $STACK (${TESTS[*]})"
PYTHONPATH="$DIR${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" -m pytest -p no:cacheprovider -ra "${TESTS[@]}" "$@"
