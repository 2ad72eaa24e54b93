"""BLIP-2 baselines as subclasses of LAVIS's own classes, buildable offline from our configs.

Registered: ``blip2_stage1`` (``Blip2Qformer``: ITC + ITM + ITG) and ``blip2_stage2`` (``Blip2OPT``, any LLM
family; ``blip2_stage2_opt`` and ``blip2_stage2_llama`` name its OPT and Llama model types).
"""
from lavis_evlgen.models.blip2.stage1 import Blip2Stage1
from lavis_evlgen.models.blip2.stage2 import Blip2Stage2, Blip2Stage2Llama, Blip2Stage2OPT

__all__ = ["Blip2Stage1", "Blip2Stage2", "Blip2Stage2Llama", "Blip2Stage2OPT"]
