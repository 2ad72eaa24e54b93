"""SPICE through pycocoevalcap's jar, run only when its resources are on local disk.

pycocoevalcap ships ``spice-1.0.jar`` but fetches Stanford CoreNLP 3.6.0 into its ``lib/`` on first use,
which fails offline (and writes into the installed package). Here SPICE runs only when the jar and
both CoreNLP jars are present in the SPICE folder (``EVLGEN_SPICE_DIR``, default pycocoevalcap's
``spice/``); otherwise callers report :func:`spice_note`. The score is the mean per-image F-score
("All"), on PTB-tokenised captions, as pycocoevalcap computes it; SPICE needs Java 8 or newer.
"""
from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Hashable, Mapping, Optional

import numpy as np
from pycocoevalcap.spice import spice as pycocoevalcap_spice

SPICE_FILES = ("spice-1.0.jar", "lib/stanford-corenlp-3.6.0.jar", "lib/stanford-corenlp-3.6.0-models.jar")


def spice_dir() -> Path:
    """Folder holding ``spice-1.0.jar`` and ``lib/``: ``EVLGEN_SPICE_DIR`` or pycocoevalcap's ``spice/``."""
    default = Path(pycocoevalcap_spice.__file__).parent
    return Path(os.environ.get("EVLGEN_SPICE_DIR", default))


def missing_spice_files(folder: Optional[Path] = None) -> list[str]:
    """The SPICE resources absent from ``folder`` (default :func:`spice_dir`)."""
    folder = spice_dir() if folder is None else folder
    return [str(folder / name) for name in SPICE_FILES if not (folder / name).is_file()]


def spice_note(missing: list[str]) -> str:
    """Why SPICE was not computed, and how to enable it."""
    return (f"SPICE not computed: missing {', '.join(missing)}. Put Stanford CoreNLP 3.6.0 "
            f"(stanford-corenlp-3.6.0.jar and stanford-corenlp-3.6.0-models.jar) in the lib/ folder next to "
            f"spice-1.0.jar, or point EVLGEN_SPICE_DIR at a folder that has them")


def spice_score(refs: Mapping[Hashable, list[str]], hyps: Mapping[Hashable, list[str]], work_dir: str,
                folder: Optional[Path] = None) -> float:
    """Mean SPICE F-score of one hypothesis per image against its references (tokenised captions)."""
    folder = spice_dir() if folder is None else folder
    if sorted(refs) != sorted(hyps):
        raise ValueError("SPICE needs references and hypotheses for the same images")
    records = [{"image_id": i, "test": hyps[i][0], "refs": refs[i]} for i in sorted(refs)]
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        in_file, out_file = os.path.join(tmp, "in.json"), os.path.join(tmp, "out.json")
        with open(in_file, "w") as f:
            json.dump(records, f)
        subprocess.run(["java", "-jar", "-Xmx8G", str(folder / SPICE_FILES[0]), in_file, "-out", out_file,
                        "-subset", "-silent"], cwd=folder, check=True)
        with open(out_file) as f:
            results = json.load(f)
    values = []
    for item in results:
        try:
            values.append(float(item["scores"]["All"]["f"]))
        except (TypeError, ValueError):
            values.append(float("nan"))
    return float(np.mean(values))
