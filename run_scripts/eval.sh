#!/usr/bin/env bash
# Zero-shot evaluation of EVLGen (paper Tables 1, 2 and 5) with the configs in projects/evlgen/eval/.
#
#   bash run_scripts/eval.sh BENCHMARK MODEL [GPUS] [-- --options key=value ...]
#     BENCHMARK: coco | flickr30k | nocaps | vqav2 | okvqa | gqa | all
#     MODEL:     opt2.7b | vicuna7b
#     GPUS:      processes to launch (default: every visible GPU, else 1 on CPU)
#
# Data files are found under $EVLGEN_DATA (see configs/datasets/evlgen_*/defaults.yaml), weights through
# the EVLGEN_* variables named in configs/models/ and the eval configs. Results: output/evlgen/eval/
# <benchmark>_<model>/ (result/<split>_eval*.json with one prediction per image/question, evaluate.txt).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
usage() { sed -n '4,7p' "$0" >&2; exit 2; }
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
  coco|flickr30k|nocaps|vqav2|okvqa|gqa) benchmarks=$benchmark ;;
  *) usage ;;
esac
case $model in opt2.7b|vicuna7b) ;; *) usage ;; esac
cd "$root"
for b in $benchmarks; do
  cfg=projects/evlgen/eval/${b}_${model}.yaml
  echo "== $cfg on $gpus process(es)"
  "$python" -m torch.distributed.run --standalone --nproc_per_node="$gpus" evaluate.py --cfg-path "$cfg" "$@"
done
