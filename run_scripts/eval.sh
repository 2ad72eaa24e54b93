#!/usr/bin/env bash
# Zero-shot evaluation of EVLGen (paper Tables 1 and 5) with the configs in projects/evlgen/eval/.
#
#   bash run_scripts/eval.sh BENCHMARK MODEL [GPUS] [-- --options key=value ...]
#     BENCHMARK: coco | flickr30k | nocaps | vqav2 | okvqa | gqa | all (these six, zero-shot from the
#                pre-trained model), or coco_finetuned | nocaps_coco_finetuned | flickr30k_coco_finetuned
#                (opt2.7b only: the COCO-fine-tuned model, not a paper setting)
#     MODEL:     opt2.7b | vicuna7b
#     GPUS:      processes to launch (default: every visible GPU, else 1 on CPU)
#
# Data files are found under $EVLGEN_DATA, weights through the EVLGEN_* variables (docs/reproduce.md).
# OK-VQA's lemmatiser is spaCy's English pipeline, installed from requirements.lock. With "all" every
# benchmark runs even if one fails; the failures are listed at the end (exit status 1). Results:
# output/evlgen/eval/<benchmark>_<model>/ (result/<split>_eval*.json, evaluate.txt).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
usage() { sed -n '4,9p' "$0" >&2; exit 2; }
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
case $benchmark in
  all) benchmarks="coco flickr30k nocaps vqav2 okvqa gqa" ;;
  coco|flickr30k|nocaps|vqav2|okvqa|gqa|coco_finetuned|nocaps_coco_finetuned|flickr30k_coco_finetuned)
    benchmarks=$benchmark ;;
  *) usage ;;
esac
case $model in opt2.7b|vicuna7b) ;; *) usage ;; esac
cd "$root"
failed=""
for b in $benchmarks; do
  cfg=projects/evlgen/eval/${b}_${model}.yaml
  [ -f "$cfg" ] || { echo "no config $cfg (the fine-tuned variants exist for opt2.7b only)" >&2; exit 2; }
  echo "== $cfg on $gpus process(es)"
  "$python" -m torch.distributed.run --standalone --nproc_per_node="$gpus" evaluate.py --cfg-path "$cfg" "$@" ||
    failed="$failed $b"
done
if [ -n "$failed" ]; then
  echo "failed:$failed (see the messages above)" >&2
  exit 1
fi
