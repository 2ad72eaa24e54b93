"""Evaluate the ``run.test_splits`` with LAVIS's command line on GPUs or CPUs, one process or many.

    python evaluate.py --cfg-path projects/evlgen/eval/<experiment>.yaml [--options key=value ...]
"""
import sys

import lavis_evlgen  # noqa: F401  registers the plugin before the config is read
from lavis_evlgen.runners.launch import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], evaluate_only=True))
