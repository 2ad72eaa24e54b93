"""BLIP-2 baselines as subclasses of LAVIS's own classes, buildable offline from our configs.

Registered: ``blip2_stage1`` (``Blip2Qformer``: ITC + ITM + ITG), ``blip2_stage2_opt`` (``Blip2OPT``)
and ``blip2_stage2_llama`` (the same with a Llama-architecture decoder).
"""
from lavis_evlgen.models.blip2.stage1 import Blip2Stage1
from lavis_evlgen.models.blip2.stage2 import Blip2Stage2Llama, Blip2Stage2OPT

__all__ = ["Blip2Stage1", "Blip2Stage2Llama", "Blip2Stage2OPT"]
