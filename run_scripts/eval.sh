#!/usr/bin/env bash
# Zero-shot evaluation of EVLGen (paper Tables 1 and 5) with the configs in projects/evlgen/eval/.
#
#   bash run_scripts/eval.sh BENCHMARK MODEL [GPUS] [-- --options key=value ...]
#     BENCHMARK: a config projects/evlgen/eval/BENCHMARK_MODEL.yaml exists for it (coco, flickr30k, nocaps,
#                vqav2, okvqa, gqa: zero-shot from the pre-trained model; *_coco_finetuned: the COCO-fine-tuned
#                model, not a paper setting), or all (every zero-shot config of MODEL)
#     MODEL:     opt2.7b | vicuna7b (the suffix of the config names)
#     GPUS:      processes to launch (default: every visible GPU, else 1 on CPU)
# A new benchmark needs only its config in projects/evlgen/eval/: this script lists the folder.
#
# Data files are found under $EVLGEN_DATA, weights through the EVLGEN_* variables (docs/reproduce.md).
# OK-VQA's lemmatiser is spaCy's English pipeline, installed from requirements.lock. With "all" every
# benchmark runs even if one fails; the failures are listed at the end (exit status 1). Results:
# output/evlgen/eval/<benchmark>_<model>/ (result/<split>_eval*.json, evaluate.txt).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
usage() { sed -n '4,10p' "$0" >&2; exit 2; }
[ $# -ge 2 ] || usage
benchmark=$1; model=$2; shift 2
gpus=""
if [ $# -gt 0 ] && [ "$1" != "--" ]; then gpus=$1; shift; fi
[ "${1:-}" = "--" ] && shift
python=${PYTHON:-$root/.venv/bin/python}
[ -x "$python" ] || python=python
if [ -z "$gpus" ]; then
  gpus=$("$python" -c "import torch; print(max(torch.cuda.device_count(), 1))" 2>/dev/null || echo 1)
fi
cd "$root"
ls projects/evlgen/eval/*_"$model".yaml >/dev/null 2>&1 || { echo "no configs for model '$model'" >&2; usage; }
if [ "$benchmark" = all ]; then
  benchmarks=$(for f in projects/evlgen/eval/*_"$model".yaml; do b=$(basename "$f" "_$model.yaml");
               case $b in *coco_finetuned) ;; *) echo "$b" ;; esac; done)
else
  benchmarks=$benchmark
fi
failed=""
for b in $benchmarks; do
  cfg=projects/evlgen/eval/${b}_${model}.yaml
  [ -f "$cfg" ] || { echo "no config $cfg; there are: $(cd projects/evlgen/eval && ls *_"$model".yaml | tr '\n' ' ')" >&2; exit 2; }
  echo "== $cfg on $gpus process(es)"
  "$python" -m torch.distributed.run --standalone --nproc_per_node="$gpus" evaluate.py --cfg-path "$cfg" "$@" ||
    failed="$failed $b"
done
if [ -n "$failed" ]; then
  echo "failed:$failed (see the messages above)" >&2
  exit 1
fi
