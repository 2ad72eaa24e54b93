"""Zero-shot VQA by captioning with a question prompt (BLIP-2's ``predict_answers``), for any model with
``generate(samples, ..., prompt=[...])``: EVLGen and the BLIP-2 stage-2 baseline answer the same way."""
from __future__ import annotations

from typing import Any, Optional

import torch

from lavis_evlgen.common.spacy_english import load_pipeline

BLIP2_VQA_PROMPT = "Question: {} Short answer:"


class AnswerByGeneration:
    """Mixin: ``predict_answers`` for LAVIS's VQA tasks; ``_apply_lemmatizer`` (``model.apply_lemmatizer``)
    lemmatises nouns and verbs with spaCy as BLIP-2 does for OK-VQA."""

    _apply_lemmatizer = False
    _lemmatizer = None

    @torch.no_grad()
    def predict_answers(self, samples: dict[str, Any], num_beams: int = 5, inference_method: str = "generate",
                        max_len: int = 10, min_len: int = 1, num_ans_candidates: int = 128,
                        answer_list: Optional[list[str]] = None, prompt: str = BLIP2_VQA_PROMPT,
                        length_penalty: float = 0.0, **kwargs) -> list[str]:
        """Answers generated after the visual prompt and ``prompt`` formatted with each question."""
        if inference_method != "generate":
            raise ValueError(f"run.inference_method: {type(self).__name__} answers by 'generate', "
                             f"not '{inference_method}'")
        questions = samples["text_input"]
        questions = [questions] if isinstance(questions, str) else questions
        prompts = [prompt.format(q) if "{}" in prompt else prompt for q in questions]
        answers = self.generate(samples, num_beams=num_beams, max_length=max_len, min_length=min_len,
                                length_penalty=length_penalty, prompt=prompts)
        return self._lemmatize(answers) if self._apply_lemmatizer else answers

    def _lemmatize(self, answers: list[str]) -> list[str]:
        if self._lemmatizer is None:
            self._lemmatizer = load_pipeline()
        docs = self._lemmatizer.pipe(answers)
        return [" ".join(t.lemma_ if t.pos_ in ("NOUN", "VERB") else t.text for t in doc) for doc in docs]
