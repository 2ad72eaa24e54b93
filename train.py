"""Train with LAVIS's command line on GPUs or CPUs, one process or many (torchrun).

    python train.py --cfg-path projects/evlgen/train/<experiment>.yaml [--options run.max_iters=1000 ...]
    python -m torch.distributed.run --nproc_per_node=N train.py --cfg-path ...

Resume exactly with ``--options run.resume_ckpt_path=<output_dir>/<job>/checkpoint_latest.pth``.
"""
import sys

import lavis_evlgen  # noqa: F401  registers the plugin before the config is read
from lavis_evlgen.runners.launch import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], evaluate_only=False))
