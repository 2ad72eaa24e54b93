"""A word-level tokenizer for tiny random LLMs: one token per word of a closed vocabulary, plus "\\n".

A random byte-level tiny LLM almost never spells a whole word, so its sampled captions score zero
against word references; with whole words as tokens a tiny LLM produces captions from the start.
Used by the SCST test and the direction-captioning demo. ``write_word_tokenizer`` saves a
transformers tokenizer folder that ``model.llm.tokenizer`` can name; the newline (EVLGen's caption
end marker) is a token of its own, and words outside the vocabulary become ``<unk>``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from tokenizers import Regex, Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

SPECIALS = ("<pad>", "<s>", "</s>", "<unk>", "\n")


def write_word_tokenizer(words: Iterable[str], folder: Path) -> tuple[str, int]:
    """Save the tokenizer of ``words`` into ``folder``; returns the folder and the vocabulary size.

    Token ids: ``<pad>`` 0, ``<s>`` 1, ``</s>`` 2, ``<unk>`` 3, newline 4, then the words in sorted order.
    """
    vocab = {token: i for i, token in enumerate([*SPECIALS, *sorted(set(words) - set(SPECIALS))])}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"\n|[^ \n]+"), behavior="removed", invert=True)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", bos_token="<s>",
                                        eos_token="</s>", unk_token="<unk>")
    tokenizer.save_pretrained(folder)
    return str(folder), len(vocab)
