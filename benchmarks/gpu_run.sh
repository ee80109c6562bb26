#!/usr/bin/env bash
# The project's GPU run, in one command, for a machine where nothing can be installed:
#
#   bash benchmarks/gpu_run.sh OUT_DIR [--budget SECONDS] [--stages LIST] [--name NAME] [--commit SHA] [--allow-dirty]
#   bash benchmarks/gpu_run.sh OUT_DIR --dry-run                                                        # the same steps on the CPU, tiny
#
# From the repo root, with whatever python3 has torch, torchvision, jax (with its CUDA plugin), flax,
# optax, safetensors, pytest and pytest-benchmark (no install: the repo goes on
# PYTHONPATH). In order, each step writing its results as it goes, so that a run cut off still leaves
# what it measured:
#   0. provenance: refuses a working tree that differs from its commit (--allow-dirty runs anyway, and the
#      results say so); a copy without git metadata (a device machine's) names its commit with --commit SHA;
#      warns when the machine is already busy;
#   1. versions and the GPU's name; stops with one line if PyTorch or JAX does not see the GPU;
#   2. checks that pytest and pytest-benchmark work together (pytest 9 with pytest-benchmark 5.3.0 does not);
#   3. pytest -m gpu (the GPU tests); then JAX's GPU candidates, each in its own process, in interleaved rounds,
#      A/B against the shipped deterministic trainer path (experiments.gpu_candidates: which XLA flags give
#      byte-identical reruns without the deterministic-ops tax, command buffers over while loops, conv1 as a
#      matmul, the one-hot loss, NCHW); then the per-kernel profile of one training step per framework
#      (experiments.profile), with and without --xla_gpu_deterministic_ops;
#   4. the benchmark suite's cuda rows (paired, interleaved rounds with 95% intervals), most important first:
#      float32 and TF32 at batch 128; time to 99% over seeds, each trainer in its own process, as shipped
#      (deterministic) and at its fastest (--nondeterministic); batch 1024; one-image latency and the matmul
#      peak; cold start (compile from empty and warm caches, break-even); peak memory, each variant in its own
#      process; bf16; data-parallel scaling (skipped, with the reason, below 2 GPUs); each stage inside the
#      time budget (a benchmark that would start after its stage's deadline is skipped, with the reason, and
#      the accuracy runs stop adding seeds, saying how many ran);
#   5. both trainers' default runs on cuda (and PyTorch's --mode cuda-graphs);
#   6. reproducibility: each trainer twice with the same flags, weights' bytes compared (benchmarks.reproducibility);
# and writes into OUT_DIR: NAME.json (the stages' results merged), NAME.md and NAME.png (benchmarks.report),
# NAME-trainers.json (the trainers' metrics.json files), NAME-repro.json (step 6) and NAME.log (everything printed).
# NAME defaults to the GPU's model, e.g. h100; a dry run's is dry-run. --budget (default 540 s; a dry
# run's 3600 s) bounds steps 3-6 together, so that the command fits one 10-minute call on a lent machine
# with the imports before it (measured: benchmarks/RESULTS.md, 'Design measurements'). --stages (default:
# all) names the steps to run, comma-separated, from: STAGES below. The budget is shared among the chosen
# ones in proportion to what each takes on an H200 (SHARE; candidates' and profile's are planned, not yet
# measured): all of them want about 1 280 s (SHARE's sum), so a short lease runs them in two or three calls,
# e.g. --stages gpu-tests,candidates,profile, then b128,accuracy,fastest,b1024, then the rest, and merges the
# NAME.json files with
# python -m benchmarks.report. A stage that ends early leaves its time to the next.
# --dry-run runs every step on the CPU with one tiny round per benchmark and one-epoch trainings, each code path
# once (.ci/run runs it, so the GPU command cannot rot): two candidates for one round, one profile, the accuracy
# stages on each framework's default trainer, batch 1024's selection collected, not run again (the e2e tests
# run shipped and another candidate for two rounds, the profile's checks and every trainer mode), scaling's row of
# JAX's two processes only.
# Each step's seconds are printed at the end.
# Exit status: 0 when every step ran, 1 otherwise.
set -uo pipefail

usage="usage: bash benchmarks/gpu_run.sh OUT_DIR [--dry-run] [--budget SECONDS] [--stages LIST] [--name NAME] [--commit SHA] [--allow-dirty]"
out_dir="" dry_run=0 budget="" name="" allow_dirty=0 commit="" stages_arg=""
#: The steps in the order they run, and the seconds each took on an H200 (their share of the budget).
STAGES=(gpu-tests candidates profile b128 accuracy fastest b1024 latency cold memory bf16 bf16-accuracy scaling trainers repro)
declare -A SHARE=([gpu-tests]=30 [candidates]=240 [profile]=90 [b128]=90 [accuracy]=95 [fastest]=105 [b1024]=70 [latency]=30 [cold]=40 [memory]=120
                  [bf16]=40 [bf16-accuracy]=95 [scaling]=10 [trainers]=70 [repro]=150)
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry_run=1 ;;
    --allow-dirty) allow_dirty=1 ;;
    --commit|--budget|--stages|--name)
      [ $# -ge 2 ] && [ -n "$2" ] && [[ "$2" != --* ]] || { echo "error: $1 needs a value; $usage" >&2; exit 2; } ;;&
    --commit) shift; commit="${1:-}"; [[ "$commit" =~ ^[0-9a-f]{7,40}$ ]] || { echo "error: --commit takes a commit's hex SHA, got '$commit'" >&2; exit 2; } ;;
    --budget) shift; budget="${1:-}" ;;
    --stages) shift; stages_arg="${1:-}" ;;
    --name) shift; name="${1:-}" ;;
    -h|--help) echo "$usage"; exit 0 ;;
    -*) echo "error: unknown option $1; $usage" >&2; exit 2 ;;
    *) [ -z "$out_dir" ] || { echo "error: one OUT_DIR only, got $out_dir and $1; $usage" >&2; exit 2; }; out_dir="$1" ;;
  esac
  shift
done
[ -n "$out_dir" ] || { echo "error: OUT_DIR is missing; $usage" >&2; exit 2; }
[ -n "$budget" ] || budget=$([ "$dry_run" = 1 ] && echo 3600 || echo 540)  # a dry run is never cut short
# Digits without a leading zero (bash reads 0600 as octal), 60 s to 1 000 000 s.
[[ "$budget" =~ ^[1-9][0-9]{1,6}$ ]] && [ "$budget" -ge 60 ] && [ "$budget" -le 1000000 ] \
  || { echo "error: --budget takes whole seconds from 60 to 1000000, written without a leading zero, got '$budget'; $usage" >&2; exit 2; }
declare -A chosen=()
for stage in ${stages_arg//,/ }; do
  [ -n "${SHARE[$stage]+x}" ] || { echo "error: --stages: unknown stage '$stage'; expected a comma-separated list from: ${STAGES[*]}" >&2; exit 2; }
  chosen[$stage]=1
done
[ -z "$stages_arg" ] || [ ${#chosen[@]} -gt 0 ] || { echo "error: --stages is empty; expected a comma-separated list from: ${STAGES[*]}" >&2; exit 2; }
[ -n "$stages_arg" ] || for stage in "${STAGES[@]}"; do chosen[$stage]=1; done
[[ -z "$name" || "$name" =~ ^[A-Za-z0-9._-]+$ ]] || { echo "error: --name takes letters, digits, '.', '_' and '-', got '$name'" >&2; exit 2; }

repo="$(cd "$(dirname "$0")/.." && pwd)"
# Never overwrite results: OUT_DIR must be new or empty, and writable, before anything runs.
if [ -e "$out_dir" ] || [ -L "$out_dir" ]; then
  [ -d "$out_dir" ] || { echo "error: OUT_DIR $out_dir exists and is not a folder; give a new or empty folder" >&2; exit 2; }
  [ -z "$(ls -A "$out_dir" 2>/dev/null)" ] || { echo "error: OUT_DIR $out_dir already holds files (an earlier run's?); give a new or empty folder, so that no result is overwritten" >&2; exit 2; }
fi
mkdir -p "$out_dir" 2>/dev/null || { echo "error: cannot create OUT_DIR $out_dir; give a folder you can write to" >&2; exit 2; }
out_dir="$(cd "$out_dir" && pwd)"
probe="$out_dir/.gpu_run-write-test"
{ : >"$probe" && rm -f "$probe"; } 2>/dev/null || { echo "error: cannot write into OUT_DIR $out_dir; give a folder you can write to" >&2; exit 2; }
cd "$repo"
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
# The suite runs PyTorch and JAX in one process: JAX would take 75% of the GPU's memory up front.
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.5}"
PY="${PYTHON:-python3}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
child=""
stop() {  # $1: the signal's name, $2: the exit status
  # `timeout` leads its own process group and passes the signal to all of it (pytest and its trainers).
  [ -n "$child" ] && kill -TERM "$child" 2>/dev/null && wait "$child" 2>/dev/null
  echo "gpu_run: stopped by $1; what the finished steps measured is in ${out_dir}; the step that was running is lost" >&2
  exit "$2"
}
trap 'stop SIGINT 130' INT
trap 'stop SIGTERM 143' TERM
bounded() {  # $1: seconds, then the command: run it under timeout, in the background, and wait for it
  local seconds="$1"; shift
  timeout "$seconds" "$@" & child=$!
  wait "$child"; local status=$?
  child=""
  return "$status"
}

# --- 0. provenance and load -----------------------------------------------------------------------------
[ -n "$commit" ] && export MNIST_BENCH_COMMIT="$commit"
bench_provenance=()
refusal=$("$PY" -c 'from benchmarks import conditions as c; print(c.dirty_refusal(c.provenance()) or "")') \
  || { echo "error: $PY cannot run benchmarks/conditions.py; nothing was measured" >&2; exit 1; }
if [ -n "$refusal" ]; then
  if [ "$allow_dirty" = 1 ] || [ "$dry_run" = 1 ]; then
    echo "gpu_run: going on as told (--allow-dirty or --dry-run); the results are marked: ${refusal#error: }"
    bench_provenance=(--bench-allow-dirty)
  else
    echo "${refusal/--bench-allow-dirty (gpu_run.sh --allow-dirty)/--allow-dirty}" >&2; exit 2
  fi
fi
"$PY" -c 'from benchmarks import conditions as c; w = c.load_warning(); w and print("gpu_run: " + w)'

if [ "$dry_run" = 1 ]; then
  device=cpu; name="${name:-dry-run}"
  bench_opts=(--bench-dry-run); train_opts=(--epochs 1 --train-size 1280 --test-size 1000)
else
  device=cuda; bench_opts=(); train_opts=()
fi

# --- 1. versions and the device ---------------------------------------------------------------------
gpu_check=$("$PY" - "$device" <<'EOF'
import platform, re, sys
from importlib.metadata import PackageNotFoundError, version
device = sys.argv[1]
names = ["torch", "torchvision", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "safetensors", "numpy", "pytest", "pytest-benchmark"]
def v(n):
    try:
        return version(n)
    except PackageNotFoundError:
        return "missing"
print("versions: python " + platform.python_version() + ", " + ", ".join(f"{n} {v(n)}" for n in names), file=sys.stderr)
import jax, torch
jax_gpus = [d for d in jax.devices() if d.platform == "gpu"] if device == "cuda" else []
if device == "cuda":
    problems = []
    if not torch.cuda.is_available():
        problems.append(f"PyTorch {torch.__version__} sees no CUDA GPU (torch.cuda.is_available() is False)")
    if not jax_gpus:
        problems.append(f"JAX {jax.__version__} sees no GPU (jax.devices(): {jax.devices()}; is jax-cuda*-plugin installed?)")
    if problems:
        print("error: " + "; ".join(problems) + "; nothing was measured", file=sys.stderr)
        sys.exit(1)
    gpu = torch.cuda.get_device_name(0)
    print(f"device: {gpu} (PyTorch), {jax_gpus[0].device_kind} (JAX), CUDA {torch.version.cuda}, "
          f"cuDNN {torch.backends.cudnn.version()}", file=sys.stderr)
    model = re.search(r"\b([A-Z]+\d+[A-Za-z]*)\b", gpu.replace("NVIDIA", ""))
    print(model.group(1).lower() if model else "gpu")
else:
    print(f"device: CPU ({platform.machine()}), dry run", file=sys.stderr)
    print("cpu")
EOF
) || exit 1
name="${name:-$gpu_check}"
log="$out_dir/$name.log"
# tee ignores SIGINT and SIGTERM: Ctrl-C and `timeout` signal the whole process group, and a tee that died first
# took the "stopped by" line with it (the script then died of SIGPIPE); it ends when the script's output closes.
exec > >(trap '' INT TERM; exec tee -a "$log") 2>&1
echo "gpu_run: $(date -u +%FT%TZ), results $out_dir/$name.*, budget ${budget}s, device $device$([ "$dry_run" = 1 ] && echo ', DRY RUN')"
"$PY" -c "import sys; print(sys.executable)"
command -v nvidia-smi >/dev/null && nvidia-smi -L
start=$(date +%s)
end=$((start + budget))
failed=()
# Seconds each step took, printed at the end, so that the slow step of a run (or of CI's dry run) shows.
took=() step_started=$start
took() {  # $1: the step that just ended
  local now; now=$(date +%s)
  took+=("$1 $((now - step_started))s"); step_started=$now
}
# Each chosen stage's deadline: the budget shared in proportion to SHARE, cumulatively, in STAGES' order.
declare -A deadline_of=()
total=0; for stage in "${!chosen[@]}"; do total=$((total + SHARE[$stage])); done
sum=0
for stage in "${STAGES[@]}"; do
  [ -n "${chosen[$stage]+x}" ] || continue
  sum=$((sum + SHARE[$stage])); deadline_of[$stage]=$((start + budget * sum / total))
done
echo "gpu_run: stages $(for s in "${STAGES[@]}"; do [ -n "${deadline_of[$s]+x}" ] && printf '%s (until %ss) ' "$s" $((deadline_of[$s] - start)); done)"

# --- 2. pytest with pytest-benchmark ------------------------------------------------------------------
cat > "$work/test_probe.py" <<'EOF'
def test_probe(benchmark):
    benchmark.pedantic(lambda: None, rounds=1)
EOF
benchmarks_ok=1
if ! (cd "$work" && "$PY" -m pytest -q -p no:cacheprovider test_probe.py --benchmark-json probe.json >probe.log 2>&1); then
  benchmarks_ok=0
  tail -n 3 "$work/probe.log"
  echo "error: pytest $("$PY" -c 'import pytest; print(pytest.__version__)') and pytest-benchmark cannot run a benchmark together here (pytest 9 removed node._nodeid, which pytest-benchmark 5.3.0 reads); put pytest 8.4.2 beside the repo (pip download pytest==8.4.2; unzip the wheel into a folder) and on PYTHONPATH, then run again; skipping the benchmark stages"
  failed+=("pytest-benchmark")
fi
took "pytest-benchmark probe"

# --- 3. the GPU tests ---------------------------------------------------------------------------------
if [ -n "${chosen[gpu-tests]+x}" ]; then
  echo "== pytest -m gpu (the trainers' own GPU runs are step 5)"
  bounded $((deadline_of[gpu-tests] - $(date +%s) + 60)) "$PY" -m pytest -m gpu tests -q -p no:cacheprovider \
    -k "not test_trainers_train_on_the_gpu" || failed+=("pytest -m gpu")
  took gpu-tests
fi

# --- 3b. JAX's GPU candidates and the per-kernel profiles, written as they go -------------------------------
if [ -n "${chosen[candidates]+x}" ]; then
  left=$((deadline_of[candidates] - $(date +%s)))
  if [ "$left" -lt 60 ]; then echo "== candidates: skipped, the budget is spent"; failed+=("candidates (no time)")
  else
    echo "== JAX's GPU candidates, A/B in interleaved rounds (until $((deadline_of[candidates] - start))s of ${budget}s)"
    candidate_opts=(--device "$device" --budget $((left - 20)))
    # The dry run proves the stage's wiring with two candidates for one round; tests/test_gpu_candidates.py (e2e) runs
    # shipped and a candidate the verdict adopts for two rounds as workers, the model and loss variants in-process,
    # and parses every candidate's flags.
    [ "$dry_run" = 1 ] && candidate_opts=(--dry-run --candidates shipped,nondeterministic --rounds 1)
    bounded $((left + 60)) "$PY" -m experiments.gpu_candidates "$out_dir/$name-candidates" "${candidate_opts[@]}" \
      || failed+=("candidates")
  fi
  took candidates
fi
if [ -n "${chosen[profile]+x}" ]; then
  profile_opts=(--device "$device" --batch-size 128); [ "$dry_run" = 1 ] && profile_opts+=(--smoke)
  determinisms=(deterministic nondeterministic)
  # The dry run's CPU ignores the GPU's determinism flag: one profile proves the step;
  # tests/test_profile_experiment.py checks it.
  [ "$dry_run" = 1 ] && determinisms=(deterministic)
  for determinism in "${determinisms[@]}"; do  # XLA's deterministic ops on, as the trainer ships, and off
    left=$((deadline_of[profile] - $(date +%s)))
    if [ "$left" -lt 20 ]; then echo "== profile ($determinism): skipped, the budget is spent"; failed+=("profile $determinism (no time)"); continue; fi
    echo "== per-kernel profile of one training step, $determinism"
    flags=""; [ "$determinism" = deterministic ] && flags="--xla_gpu_deterministic_ops=true"
    XLA_FLAGS="$flags" bounded "$left" "$PY" -m experiments.profile "${profile_opts[@]}" --out "$out_dir/$name-profile-$determinism" \
      || failed+=("profile $determinism")
  done
  took profile
fi

# --- 4. the benchmark suite, most important first ---------------------------------------------------
parts=()
report() {
  [ ${#parts[@]} -gt 0 ] || return 0
  "$PY" -m benchmarks.report "${parts[@]}" --out-dir "$out_dir" --name "$name" \
    --title "PyTorch vs JAX, MNIST CNN on $name: throughput (higher is better)" >"$work/report.md" \
    || failed+=("report")
}
bench_stage() {  # $1: the stage's name in STAGES, $2: label, $3: -k expression, then more pytest options
  local stage="$1" label="$2" expr="$3" deadline json="$work/stage${#parts[@]}.json"
  shift 3
  [ -n "${chosen[$stage]+x}" ] || return 0
  deadline=${deadline_of[$stage]}
  if [ "$(date +%s)" -ge "$deadline" ]; then
    echo "== $label: skipped, the budget is spent"; failed+=("$label (no time)"); return
  fi
  echo "== $label (until $((deadline - start))s of ${budget}s)"
  bounded $((deadline - $(date +%s) + 120)) "$PY" -m pytest benchmarks --benchmark-only -q -p no:cacheprovider \
    --benchmark-json "$json" --bench-deadline "$deadline" "${bench_opts[@]}" "${bench_provenance[@]}" -k "$expr" -W ignore::UserWarning "$@" \
    || failed+=("$label")
  [ -s "$json" ] && parts+=("$json") && report
  took "$stage"
}
# The dry run runs each benchmark function once: the accuracy stage on each framework's default trainer (the
# trainers' other modes are their own e2e tests), and the stages that run a function another stage ran (batch
# 1024's, batch 128's; the fastest settings' accuracy, the shipped settings') only collect their selection, so
# that each -k expression still must select something.
# Scaling trains one row, JAX's two processes (its launcher waiting on several): each engine's 2-process or 2-device
# run on the CPU is an e2e test (tests/test_data_parallel.py), and every row's command line is checked against the
# trainers' parser (tests/test_benchmark_scaling.py).
dry_trainers=() dry_collect=() dry_scaling=""
[ "$dry_run" = 1 ] && dry_trainers=(--bench-trainers jax,torch_eager) && dry_collect=(--collect-only) \
  && dry_scaling=" and jax_processes"
if [ "$benchmarks_ok" = 1 ]; then
  bench_stage b128 "train and eval, batch 128, float32 and tf32" "$device and 128 and (float32 or tf32) and (train_step or test_eval)"
  bench_stage accuracy "time to 99% over seeds, float32, as shipped" "$device and accuracy and float32 and shipped" "${dry_trainers[@]}"
  bench_stage fastest "time to 99% over seeds, float32, fastest settings" "$device and accuracy and float32 and fastest" "${dry_trainers[@]}" "${dry_collect[@]}"
  bench_stage b1024 "train and eval, batch 1024, float32 and tf32" "$device and 1024 and (float32 or tf32) and (train_step or test_eval)" "${dry_collect[@]}"
  bench_stage latency "latency, one image per call, and the float32 matmul peak" "$device and (latency or peak)"
  bench_stage cold "cold start: compile from empty and warm caches, break-even" "$device and cold_start"
  bench_stage memory "peak memory, each variant in its own process" "$device and memory"
  bench_stage bf16 "train, bf16" "$device and bf16 and train_step"
  bench_stage bf16-accuracy "accuracy runs, bf16, as shipped" "$device and accuracy and bf16 and shipped" "${dry_trainers[@]}"
  bench_stage scaling "data-parallel scaling (2 or more GPUs)" "$device and scaling$dry_scaling"
fi

# --- 5. the trainers' default runs ----------------------------------------------------------------------
trainer() {  # $1: label, then the command's arguments
  local label="$1"; shift
  local left=$((deadline_of[trainers] - $(date +%s)))
  if [ "$left" -le 0 ]; then echo "== $label: skipped, the budget is spent"; failed+=("$label (no time)"); return; fi
  echo "== $label: $*"
  bounded "$left" "$PY" -m "$@" --device "$device" --out-dir "$work/$label" "${train_opts[@]}" --quiet || failed+=("$label")
}
if [ -n "${chosen[trainers]+x}" ]; then
  trainer jax mnist_jax.train
  trainer torch_eager mnist_torch.train
  if [ "$device" = cuda ]; then
    trainer torch_cudagraph mnist_torch.train --mode cuda-graphs
  fi
  "$PY" - "$work" "$out_dir/$name-trainers.json" <<'EOF'
import json, pathlib, sys
work, target = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
runs = {p.parent.name: json.loads(p.read_text()) for p in sorted(work.glob("*/metrics.json"))}
target.write_text(json.dumps(runs, indent=1) + "\n")
for label, m in runs.items():
    e = m["epochs"]
    print(f"{label}: {len(e)} epochs, {100 * m['test_accuracy']:.2f}%, {sum(r['seconds'] for r in e) / len(e):.3f} s/epoch, "
          f"compile {m['compile_seconds']}, on {m['device']}")
EOF
  took trainers
fi

# --- 6. reproducibility: each trainer twice with the same flags, bytes compared -------------------------
# What the README's "Reproducibility" says about the GPU; the pairs done are written as they finish.
if [ -n "${chosen[repro]+x}" ]; then
  repro_opts=(--epochs 2 --train-size 6400)
  # The dry run compares one case, JAX's, twice: every case runs the same code with another command, and both
  # trainers' fresh processes are held to their in-process runs' bytes by tests/test_cli.py (e2e).
  [ "$dry_run" = 1 ] && repro_opts=(--epochs 1 --train-size 1280 --test-size 1000 --cases jax)
  echo "== reproducibility: each trainer twice, ${repro_opts[*]}"
  repro_left=$((deadline_of[repro] - $(date +%s))); [ "$repro_left" -ge 60 ] || repro_left=60
  bounded "$repro_left" "$PY" -m benchmarks.reproducibility "$out_dir/$name-repro.json" --device "$device" "${repro_opts[@]}" \
    || failed+=("reproducibility")
  took repro
fi

[ -s "$work/report.md" ] && cat "$work/report.md"  # written after the last benchmark stage
# On a full disk (or past a quota) a step's results are cut short or empty: an empty file is never a result.
empty="$(cd "$out_dir" && find . -maxdepth 1 -type f -empty -printf '%f ' 2>/dev/null)"
[ -z "$empty" ] || failed+=("writing its results: empty in $out_dir (a full disk?): $empty")
echo "gpu_run: done in $(($(date +%s) - start))s; wrote $(cd "$out_dir" && ls | tr '\n' ' ')"
echo "gpu_run: seconds per step: $(IFS=';'; echo "${took[*]}")"
if [ ${#failed[@]} -gt 0 ]; then
  echo "gpu_run: these steps did not complete: $(IFS=';'; echo "${failed[*]}")"
  exit 1
fi
