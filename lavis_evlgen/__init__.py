"""lavis-evlgen: EVLGen for Salesforce LAVIS.

Importing this package registers every model, dataset builder, task, runner and learning-rate schedule
of the plugin with ``lavis.common.registry`` (images and text go through LAVIS's own processors) and
records where the plugin's configs live (``registry.get_path("evlgen_root")``), so LAVIS's own Config,
setup_task, build_datasets, build_model and runners work on the YAML files under ``projects/`` and
``lavis_evlgen/configs/``.
"""
import warnings

# Import-time deprecation notices from LAVIS's pinned dependencies, not actionable here: fairscale 0.4.4
# uses torch.cuda.amp.custom_fwd/bwd and timm 0.4.12 uses torch.jit.script.
warnings.filterwarnings("ignore", category=FutureWarning, module=r"fairscale\.")
warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)

from lavis_evlgen.common import lavis_patches  # noqa: E402,F401  (applied before anything else runs)
from lavis_evlgen.common.paths import register_paths  # noqa: E402

register_paths()

from lavis_evlgen import datasets, models, runners, tasks  # noqa: E402,F401
from lavis_evlgen.models import load_model_and_preprocess  # noqa: E402

__all__ = ["load_model_and_preprocess"]
__version__ = "0.1.0"
