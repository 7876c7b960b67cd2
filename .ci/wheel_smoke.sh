#!/usr/bin/env bash
# Smoke test of the wheel as a user gets it: build it, install it (not editable) into a fresh venv outside the
# checkout, and run the CLI from a directory where the checkout cannot be imported by accident.
#
#   bash .ci/wheel_smoke.sh [BUILD_PYTHON] [BASE_PYTHON]
#
# BUILD_PYTHON builds the wheel (needs `build` and `setuptools>=77`, the dev extra; default .venv/bin/python);
# BASE_PYTHON makes the fresh venv (default python3). KEEP_WHEEL_CHECK=1 keeps the scratch directory.
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
BUILD_PYTHON="${1:-$REPO/.venv/bin/python}"
BASE_PYTHON="${2:-python3}"
case "$BUILD_PYTHON" in */*) BUILD_PYTHON="$(cd "$(dirname "$BUILD_PYTHON")" && pwd)/$(basename "$BUILD_PYTHON")" ;; esac
case "$BASE_PYTHON" in */*) BASE_PYTHON="$(cd "$(dirname "$BASE_PYTHON")" && pwd)/$(basename "$BASE_PYTHON")" ;; esac
CONSTRAINTS="$REPO/constraints.txt"

SCRATCH="$(mktemp -d "${TMPDIR:-/tmp}/ofa-deploy-wheel-check.XXXXXX")"
case "$SCRATCH" in "$REPO"/*) echo "wheel-check: scratch dir $SCRATCH is inside the checkout" >&2; exit 1 ;; esac
cleanup() {
    local rc=$?
    if [ "${KEEP_WHEEL_CHECK:-0}" = 1 ] || [ $rc -ne 0 ]; then
        echo "wheel-check: scratch directory kept: $SCRATCH" >&2
    else
        rm -rf "$SCRATCH"
    fi
    [ $rc -eq 0 ] || echo "wheel-check: FAILED (exit $rc)" >&2
}
trap cleanup EXIT

START=$SECONDS
SUMMARY=()
step() {  # step NAME: prints a header and records the time the previous step took
    local now=$SECONDS
    if [ -n "${STEP_NAME:-}" ]; then SUMMARY+=("$(printf '%4ss  %s' $((now - STEP_START)) "$STEP_NAME")"); fi
    STEP_NAME="$1"
    STEP_START=$now
    echo "== wheel-check: $1" >&2
}
fail() { echo "wheel-check: $*" >&2; exit 1; }
need_flag() {  # need_flag "VERB" FLAG...: the CLI's --help lists every FLAG
    local help
    # shellcheck disable=SC2086
    help="$(ofa-deploy $1 --help)"
    shift
    for flag in "$@"; do grep -q -- "$flag" <<<"$help" || fail "'ofa-deploy --help' lacks $flag"; done
}
check_json() { "$PY" -c 'import json, sys; json.load(open(sys.argv[1]))' "$1" || fail "$1 is not valid JSON"; }

# Build from a copy of the checkout (tracked files plus new files git does not ignore): setuptools writes
# build/ and *.egg-info next to setup.py, and a stale build/lib in the checkout could smuggle deleted modules in.
step "build the wheel"
mkdir "$SCRATCH/src"
if git -C "$REPO" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    (cd "$REPO" && git ls-files --cached --others --exclude-standard -z \
        | while IFS= read -r -d '' f; do [ -f "$f" ] && printf '%s\0' "$f"; done \
        | xargs -0 cp --parents -t "$SCRATCH/src")
else
    (cd "$REPO" && tar --exclude=.git --exclude=.venv --exclude=build --exclude=dist --exclude='*.egg-info' \
        --exclude=__pycache__ -cf - .) | tar -xf - -C "$SCRATCH/src"
fi
(cd "$SCRATCH/src" && "$BUILD_PYTHON" -m build --wheel --no-isolation --outdir "$SCRATCH/dist" . >"$SCRATCH/build.log" 2>&1) \
    || { tail -n 40 "$SCRATCH/build.log" >&2; fail "python -m build failed"; }
WHEELS=("$SCRATCH"/dist/*.whl)
[ ${#WHEELS[@]} -eq 1 ] && [ -f "${WHEELS[0]}" ] || fail "expected one wheel, found: ${WHEELS[*]}"
WHEEL="${WHEELS[0]}"

step "fresh venv; torch from constraints.txt, then the wheel"
"$BASE_PYTHON" -m venv "$SCRATCH/venv"
VENV="$SCRATCH/venv"
PY="$VENV/bin/python"
export PATH="$VENV/bin:$PATH"
unset PYTHONPATH PYTHONHOME PYTHONSTARTUP VIRTUAL_ENV
"$PY" -m pip install --quiet --upgrade pip
# torch first, pinned, so resolving the wheel's `torch>=2.13` cannot pull a multi-GB CUDA build.
"$PY" -m pip install --quiet -c "$CONSTRAINTS" torch
"$PY" -m pip install --quiet -c "$CONSTRAINTS" "$WHEEL"
TORCH_VERSION="$("$PY" -c 'import torch; print(torch.__version__)')"

step "import from outside the checkout"
RUN="$SCRATCH/run"
mkdir "$RUN"
cd "$RUN"
SITE="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
WHERE="$("$PY" -c 'import ofa_deploy, ofa_deploy.backends, ofa_deploy.device_profiles as p
print(ofa_deploy.__file__); print(ofa_deploy.backends.__file__); print(p.__file__)')"
while IFS= read -r file; do
    case "$(realpath "$file")" in
        "$(realpath "$SITE")"/*) ;;
        *) fail "$file is not in the venv's site-packages ($SITE): the checkout was imported" ;;
    esac
done <<<"$WHERE"
"$PY" - <<'PYCODE' || fail "ofa-deploy is installed editable, not from the wheel"
import importlib.metadata, json, sys
direct_url = importlib.metadata.distribution("ofa-deploy").read_text("direct_url.json")
sys.exit(1 if direct_url and json.loads(direct_url).get("dir_info", {}).get("editable") else 0)
PYCODE

step "python -m ofa_deploy devices --json"
"$PY" -m ofa_deploy devices --json >devices.json
check_json devices.json

step "ofa-deploy --version"
VERSION_LINE="$(ofa-deploy --version)"
DIST_VERSION="$("$PY" -c 'import importlib.metadata as m; print(m.version("ofa-deploy"))')"
[ "$VERSION_LINE" = "ofa-deploy $DIST_VERSION" ] || fail "--version says '$VERSION_LINE', the wheel is $DIST_VERSION"

step "no torch import on --help"
"$PY" -X importtime -m ofa_deploy --help >/dev/null 2>importtime.log
if grep -E '\|[[:space:]]*torch$' importtime.log >&2; then fail "'python -m ofa_deploy --help' imports torch"; fi
grep -q 'ofa_deploy' importtime.log || fail "-X importtime recorded no ofa_deploy import; the check above saw nothing"

step "ofa-deploy compile (onnxruntime)"
need_flag compile --arch --backend --out
"$PY" -c 'import json; json.dump({"ks": [3] * 20, "e": [3] * 20, "d": [2, 2, 2, 2, 2], "r": 128}, open("a.json", "w"))'
ofa-deploy compile --arch a.json --backend onnxruntime --out bundle
[ -f bundle/manifest.json ] || fail "compile wrote no bundle/manifest.json"
check_json bundle/manifest.json

step "ofa-deploy benchmark"
need_flag benchmark --json --rounds --runs
ofa-deploy benchmark bundle --json --rounds 2 --runs 3 >benchmark.json
check_json benchmark.json

step "done"
echo
echo "wheel-check passed in $((SECONDS - START)) s"
echo "  wheel:   $(basename "$WHEEL")"
echo "  torch:   $TORCH_VERSION"
echo "  package: $(head -n 1 <<<"$WHERE")"
echo "  bundle:  $(cd bundle && ls | tr '\n' ' ')"
printf '  %s\n' "${SUMMARY[@]}"
