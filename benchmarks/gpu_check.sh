#!/usr/bin/env bash
# Every GPU check and benchmark of interestflow in one call of the device tool.
#
# Run from the repository root on the GPU machine, with the fp16 model export, the LightGBM
# wheel and the revision file carried in .gpu_carry (written here first by
# `python benchmarks/export_fp16_model.py`; ~47 MiB of the tool's 64 MiB carry):
#
#     bash benchmarks/gpu_check.sh            # results in $OUT (else ./gpu_check_out)
#
# Through the device tool: first, here, `python benchmarks/export_fp16_model.py`; then one
# `run` with command "bash benchmarks/gpu_check.sh", carry [".gpu_carry"], timeout_s 600. The
# files come back as gpu_check.json/.md (copy them to benchmarks/results/ to commit them).
#
# It makes `interestflow` importable without any download: first an editable install that
# builds the C++ module (`pip install --no-deps --no-build-isolation --no-index -e .`), and if
# that fails or does not import, a PYTHONPATH folder that maps interestflow -> engine/ and
# interestflow/kernels -> kernels/ (no C++ module). Which one was used is recorded. Then
# benchmarks/gpu_check.py runs its sections (env, encode, cosine_topk, kmeans, two_stage,
# pytest_gpu; see its docstring) inside the time left of GPU_CHECK_BUDGET_S
# (default 540 s, under the tool's 10-minute call limit) and writes gpu_check.json,
# gpu_check.md, gpu_check.log, install.log and pytest_gpu.log into $OUT.
# Before the sections it installs every wheel carried in .gpu_carry/wheels/ (LightGBM: the
# device machine has no network) with `pip install --no-index --no-deps`, logged in install.log;
# a failure is recorded there and is not fatal (the ranker parts then say "skipped").
# Extra arguments go to gpu_check.py (e.g. --sections encode,cosine_topk). GPU_CHECK_NO_INSTALL=1
# skips the install and uses the PYTHONPATH folder (the tests use it: no install into CI's env).
set -u -o pipefail
cd "$(dirname "$0")/.."
START=$SECONDS
OUT="${OUT:-$PWD/gpu_check_out}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
BUDGET="${GPU_CHECK_BUDGET_S:-540}"
export PYTHONUNBUFFERED=1

REV="${GPU_CHECK_REV:-}"
if [ -z "$REV" ] && [ -s .gpu_carry/git_rev ]; then REV="$(head -n 1 .gpu_carry/git_rev)"; fi
if [ -z "$REV" ]; then REV="$(git rev-parse HEAD 2>/dev/null || echo unknown)"; fi

can_import() {  # from outside the repository, so that only an installed package can answer
  (cd /tmp && "$PY" -c "import interestflow.encoder, interestflow.kernels, interestflow.kmeans")
}

# wheels the machine lacks (LightGBM for the ranker), carried by export_fp16_model.py; a failed
# install is recorded in install.log and the sections that need the package say "skipped"
install_wheels() {
  local whl
  for whl in .gpu_carry/wheels/*.whl; do
    [ -e "$whl" ] || { echo "no wheels in .gpu_carry/wheels"; return 0; }
    echo "pip install --no-index --no-deps $whl"
    timeout 120 "$PY" -m pip install --no-index --no-deps "$whl" \
      || echo "FAILED (rc $?): $whl is not installed"
  done
}

MODE=""
if [ -n "${GPU_CHECK_NO_INSTALL:-}" ]; then
  echo "GPU_CHECK_NO_INSTALL is set: no editable install" >"$OUT/install.log"
  WHY="GPU_CHECK_NO_INSTALL set"
else
  echo "[gpu_check.sh] editable install (log: install.log)"
  WHY="editable install failed: see install.log"
fi
if [ -z "${GPU_CHECK_NO_INSTALL:-}" ] \
   && timeout 240 "$PY" -m pip install --no-deps --no-build-isolation --no-index -e . \
        >"$OUT/install.log" 2>&1 && can_import >>"$OUT/install.log" 2>&1; then
  MODE="editable-install"
else
  SHIM="$(mktemp -d)"
  mkdir -p "$SHIM/interestflow"
  for f in "$PWD"/engine/*; do ln -s "$f" "$SHIM/interestflow/"; done
  ln -sfn "$PWD/kernels" "$SHIM/interestflow/kernels"  # replaces an engine/kernels link
  export PYTHONPATH="$SHIM${PYTHONPATH:+:$PYTHONPATH}"
  if can_import >>"$OUT/install.log" 2>&1; then
    MODE="pythonpath-shim ($WHY)"
  else
    MODE="none: interestflow is not importable (see install.log)"
  fi
fi
echo "[gpu_check.sh] interestflow import: $MODE ($((SECONDS - START)) s)"
if [ -z "${GPU_CHECK_NO_INSTALL:-}" ]; then
  echo "[gpu_check.sh] carried wheels (log: install.log)"
  install_wheels >>"$OUT/install.log" 2>&1
  grep -h "^FAILED\|^no wheels" "$OUT/install.log" || true
fi

LEFT=$((BUDGET - (SECONDS - START)))
timeout $((LEFT + 30)) "$PY" benchmarks/gpu_check.py --out "$OUT" --git-rev "$REV" \
  --import-mode "$MODE" --budget-s "$LEFT" "$@" 2>&1 | tee "$OUT/gpu_check.log"
exit "${PIPESTATUS[0]}"
