#!/usr/bin/env bash
# One command that measures every GPU claim (issue 16), each part under its own `timeout`, into one folder:
#
#   bash bench/gpu_check.sh OUT_DIR            on a CUDA machine (about 5 minutes on one H100, at most 8)
#   bash bench/gpu_check.sh --dry-run OUT_DIR  the same parts on CPU with tests/tiny.py's model and a few steps (~40 s)
#
# Parts: env (versions, device), setup (the kit's wheels into a temporary site folder: PYTHONPATH, nothing installed
# system-wide), model (the default model, or its architecture twin when its weights are not here), tests (`pytest -m gpu`),
# train_lora (bf16) and train_qlora (NF4) (bench_train: tunegate against Trainer + PEFT and TRL's SFTTrainer: tokens/s,
# peak memory, MFU, eval loss), eval (bench_eval: tunegate's batched generation against transformers' batched
# generate and one-at-a-time), vllm (serving through vLLM when its wheel is in the kit; it never fits the 64 MiB a
# GPU machine here receives, so the part says so). Each writes OUT_DIR/PART.log, PART.status ("exit-code seconds")
# and PART.json when it produced figures; OUT_DIR/gpu_check.json and OUT_DIR/summary.txt gather them, and
# OUT_DIR/parts.tar.gz holds every part's files (three files to bring back from a machine that returns few).
#
# The kit (an ignored folder, default .gpu/, set GPU_KIT to move it): `make gpu-kit` fills it here: wheels/ (the
# packages the GPU image lacks, for Python 3.12 manylinux x86_64), data/ (the demo's validated splits) and model/
# (the default model's config and tokenizer). Exit status: 0 when every part that ran passed, 1 otherwise.
set -uo pipefail

DRY=0
if [ "${1:-}" = "--dry-run" ]; then DRY=1; shift; fi
OUT=${1:?usage: bench/gpu_check.sh [--dry-run] OUT_DIR}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
KIT=${GPU_KIT:-$ROOT/.gpu}
PY=${PYTHON:-python3}
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=disabled DO_NOT_TRACK=1 TUNEGATE_CACHE="$WORK/cache"
cd "$ROOT" || exit 1

# Time limits in seconds (the GPU run's add up to 480 = 8 minutes); the dry run's are generous for 2 shared CPU cores.
if [ $DRY = 1 ]; then
  declare -A LIMIT=([env]=60 [setup]=30 [model]=60 [tests]=120 [train_lora]=150 [train_qlora]=150 [eval]=120 [vllm]=30)
  # qlora against TRL's SFTTrainer only: each side is a fresh process (~10 s of imports), and the test stays near a minute
  DEVICE=cpu TRAIN="--steps 2 --max-length 128" QLORA="--baselines trl" EVAL="--prompts 6 --max-new-tokens 6 --batch-size 4"
else
  declare -A LIMIT=([env]=20 [setup]=45 [model]=30 [tests]=60 [train_lora]=110 [train_qlora]=110 [eval]=90 [vllm]=15)
  # 8 packed 512-token rows a step (~55 demo sequences): 20 steps = 4 epochs of the demo's 274 sft records.
  DEVICE=cuda TRAIN="--steps 20 --batch-size 8 --max-length 512" QLORA="" EVAL="--prompts 32 --max-new-tokens 64 --batch-size 32 --repeats 2"
fi

FAILED=0
part() {  # part NAME COMMAND...: run under NAME's limit, log, record "exit-code seconds"
  local name=$1; shift
  local t0=$SECONDS rc
  echo "== $name (limit ${LIMIT[$name]} s)"
  timeout --kill-after=10 "${LIMIT[$name]}" "$@" >"$OUT/$name.log" 2>&1
  rc=$?
  echo "$rc $((SECONDS - t0))" >"$OUT/$name.status"
  [ $rc = 0 ] || FAILED=1
  echo "   exit $rc after $((SECONDS - t0)) s: $(tail -n 1 "$OUT/$name.log" | cut -c1-200)"
}
skip() {  # skip NAME REASON: a part that cannot run here, said so in the summary
  echo "== $1: skipped ($2)"
  echo "$2" >"$OUT/$1.log"
  echo "0 0" >"$OUT/$1.status"
  printf '{"skipped": "%s"}\n' "$2" >"$OUT/$1.json"
}

# The kit's wheels into $WORK/site, first on PYTHONPATH; the image's own packages stay as they are.
INSTALL='shopt -s nullglob; wheels=("$KIT"/wheels/*.whl)
  if [ ${#wheels[@]} = 0 ]; then echo "no wheels in $KIT/wheels: using what is installed"; exit 0; fi
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$WORK/site" "${wheels[@]}" || exit 1
  echo "installed ${#wheels[@]} wheels into $WORK/site: ${wheels[*]##*/}"'
export KIT PY WORK

if [ $DRY = 1 ]; then
  part model "$PY" bench/gpu_kit.py tiny "$WORK/tiny"
  MODEL=$WORK/tiny/model DATA=$WORK/tiny/data
  skip setup "dry run: nothing to install"
else
  part setup bash -c "$INSTALL"
  [ -d "$WORK/site" ] && export PYTHONPATH="$WORK/site:$PYTHONPATH"
  DATA=${GPU_DATA:-$KIT/data}
  [ -f "$DATA/train.jsonl" ] || DATA=$ROOT/data/validated
  part model bash -c "$PY bench/gpu_kit.py model '$KIT' '$WORK/model' >'$WORK/model.path'"
  MODEL=$(cat "$WORK/model.path" 2>/dev/null)
fi
part env "$PY" bench/gpu_kit.py env "$OUT/env.json"

if [ $DRY = 1 ]; then
  skip tests "dry run: the gpu tests need CUDA"
else  # each file with gpu tests on its own: a file that cannot import here (pytest exit 2: a package the kit does
  # not carry, e.g. openai for tests/test_serve.py) is reported and does not hide the others; a failing test fails the part
  part tests bash -c 'rc=0; for f in $(grep -rl "mark.gpu" tests --include="test_*.py"); do
      echo "-- $f"; PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 '"$PY"' -m pytest -q -rs -m gpu -p no:cacheprovider "$f"; r=$?
      case $r in 0|5) ;; 2) echo "-- $f: not collected here (see the import error above)";; *) rc=1;; esac; done; exit $rc'
fi

if [ -z "${MODEL:-}" ]; then
  skip train_lora "no model (see model.log)"; skip train_qlora "no model (see model.log)"; skip eval "no model (see model.log)"
else
  part train_lora "$PY" bench/bench_train.py --method lora $TRAIN --model "$MODEL" --data-dir "$DATA" --out "$OUT/train_lora.json"
  if [ $DRY = 1 ] && ! "$PY" -c "import bitsandbytes" 2>/dev/null; then
    skip train_qlora "bitsandbytes is not installed here"
  else
    part train_qlora "$PY" bench/bench_train.py --method qlora $TRAIN $QLORA --model "$MODEL" --data-dir "$DATA" --out "$OUT/train_qlora.json"
  fi
  part eval "$PY" bench/bench_eval.py $EVAL --pairs 0 --model "$MODEL" --device $DEVICE --data-dir "$DATA" --out "$OUT/eval.json"
fi

if [ $DRY = 0 ] && "$PY" -c "import vllm" 2>/dev/null; then
  part vllm "$PY" -m pytest -q -m gpu -p no:cacheprovider tests/test_serve.py -k vllm
else
  skip vllm "vllm is not installed: its wheel (with its CUDA kernels, hundreds of MB) does not fit the 64 MiB a GPU machine here receives"
fi

"$PY" bench/gpu_kit.py summary "$OUT"
# Every part's files in one archive too: a borrowed machine may return only a few files (gpu_check.json, summary.txt, this)
(cd "$OUT" && tar -czf parts.tar.gz --exclude=parts.tar.gz -- *.log *.status *.json)
exit $FAILED
