"""Tiny random-weight causal LMs built locally (nothing is downloaded).

Used by the tests and the demo in place of gemma-2b: the same architecture family, the
same loading path through ``save_pretrained``/``from_pretrained``, a byte-level BPE tokenizer
trained here on the telecom text so Chinese prompts round-trip, and a few seconds per
training run on a CPU.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from . import paths, synth
from .data import BLOG_INSTRUCTION

ARCHITECTURES = ("gemma", "llama")
SPECIAL_TOKENS = ["<pad>", "<eos>", "<bos>", "<unk>"]
# Strings every prompt template may emit, so they tokenize compactly.
TEMPLATE_TEXT = ["Human: ", "\nAssistant: ", "Assistant:", "System: ", "<start_of_turn>user\n",
                 "<end_of_turn>\n<start_of_turn>model\n"]


@dataclass(frozen=True)
class TinySpec:
    arch: str = "gemma"
    hidden_size: int = 64
    intermediate_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 1
    head_dim: int = 16
    vocab_size: int = 768
    seed: int = 0
    # One token per product name, category and catalogue number (the demo): a 64-wide model
    # then learns facts about a product, not how to spell it.
    whole_terms: bool = False

    def key(self) -> str:
        blob = json.dumps(asdict(self), sort_keys=True).encode()
        return f"tiny-{self.arch}-" + hashlib.sha256(blob).hexdigest()[:12]


def _train_tokenizer(spec: TinySpec):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=spec.vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = synth.corpus_text() + TEMPLATE_TEXT
    corpus += [BLOG_INSTRUCTION.format(question=q) for q in synth.corpus_text()[:200]]
    if spec.whole_terms:
        corpus += synth.catalogue() + synth.glossary()
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    if spec.whole_terms:
        tokenizer.add_tokens(synth.whole_terms())
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        clean_up_tokenization_spaces=False,
    )


def _model_config(spec: TinySpec, tokenizer):
    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        head_dim=spec.head_dim,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    if spec.arch == "gemma":
        from transformers import GemmaConfig

        return GemmaConfig(**common)
    if spec.arch == "llama":
        from transformers import LlamaConfig

        return LlamaConfig(**common, tie_word_embeddings=False)
    raise ValueError(f"unknown tiny architecture {spec.arch!r}; expected one of {ARCHITECTURES}")


def build(out_dir: Path, spec: TinySpec = TinySpec()) -> Path:
    """Write a tiny model + tokenizer to ``out_dir`` atomically; return ``out_dir``."""
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Writing model shards" would land in tlf's own output
    out_dir = Path(out_dir)
    tokenizer = _train_tokenizer(spec)
    torch.manual_seed(spec.seed)
    model = AutoModelForCausalLM.from_config(_model_config(spec, tokenizer))
    with paths.staged_directory(out_dir, "model") as staged:
        model.save_pretrained(staged)
        tokenizer.save_pretrained(staged)
        (staged / "tlf_tiny.json").write_text(json.dumps(asdict(spec), indent=2) + "\n")
    return out_dir


def cached(cache_dir: Path, spec: TinySpec = TinySpec()) -> Path:
    """The tiny model for ``spec`` under ``cache_dir``, built on first use."""
    target = Path(cache_dir) / spec.key()
    if not (target / "tlf_tiny.json").exists():
        build(target, spec)
    return target
