"""Blog-era prompt templates, registered into the installed LLaMA-Factory at run time.

The blog ran LLaMA-Factory 0.6 (package ``llmtuner``). Its ``default`` template rendered a
single turn as ``Human: {q}\\nAssistant: `` and trained ``{a}<eos>``; 0.9.5's ``default``
renders ``Human: {q}<eos>\\nAssistant:`` and trains ``{a}<eos>\\n``. To reproduce the blog's
token ids exactly, tlf registers the 0.6 rendering under its own name in every process that
tokenises (train, predict, each torchrun worker) through ``telecom_lf.lf_entry``.
"""

from __future__ import annotations

from pathlib import Path

# tlf name -> the v0.6 template it reproduces.
BLOG_TEMPLATES = {"tlf_blog_default": "default"}
# What the blog's `--template X` becomes in blog prompt mode.
BLOG_TEMPLATE_FOR = {v06: name for name, v06 in BLOG_TEMPLATES.items()}


def register_blog_templates() -> None:
    """Idempotent: safe to call in every process, any number of times."""
    from llamafactory.data.formatter import StringFormatter
    from llamafactory.data.template import TEMPLATES, register_template

    if "tlf_blog_default" not in TEMPLATES:
        # llmtuner 0.6.x data/template.py, name="default": no BOS, no eos after the prompt,
        # a trailing space after "Assistant:", eos appended to the answer (efficient_eos=False).
        register_template(
            name="tlf_blog_default",
            format_user=StringFormatter(slots=["Human: {{content}}\nAssistant: "]),
            format_assistant=StringFormatter(slots=["{{content}}", {"eos_token"}]),
            format_system=StringFormatter(slots=["{{content}}\n"]),
        )


# Predictions of LLaMA-Factory 0.6 were decoded with clean_up_tokenization_spaces=True (labels
# with False); 0.9.5 uses the tokenizer's own setting (False for Gemma). A blog-mode predict
# config asks tlf-lf for 0.6's decoding in its header: `# tlf-lf: decode_predictions=0.6`.
DECODE_KEY = "decode_predictions"
_original_save_predictions = None


def _cleaned(path: str, clean) -> None:
    import json

    from .fsutil import atomic_write

    with open(path, encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    for row in rows:
        row["predict"] = clean(row["predict"])
    atomic_write(Path(path), "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def install_blog_decoding(wanted: bool = True) -> None:
    """Make 0.9.5's save_predictions clean up the predicted text's spaces as 0.6 did (or, with
    ``wanted=False``, put 0.9.5's back: one ``tlf-lf serve`` process may run both kinds).

    ``clean_up_tokenization_spaces=True`` is ``tokenizer.clean_up_tokenization`` applied to the
    decoded string, so applying it to each written prediction gives 0.6's text exactly."""
    global _original_save_predictions
    from llamafactory.train.sft.trainer import CustomSeq2SeqTrainer

    if _original_save_predictions is None:
        _original_save_predictions = CustomSeq2SeqTrainer.save_predictions
    original = _original_save_predictions

    def save_predictions(self, dataset, predict_results, *args, **kwargs):
        original(self, dataset, predict_results, *args, **kwargs)
        if self.is_world_process_zero():
            import os

            _cleaned(os.path.join(self.args.output_dir, "generated_predictions.jsonl"),
                     self.processing_class.clean_up_tokenization)

    CustomSeq2SeqTrainer.save_predictions = save_predictions if wanted else original


def install_for(config_path: str | None) -> None:
    from .rundir import header_marker

    wanted = header_marker(config_path, DECODE_KEY) == "0.6"
    if wanted or _original_save_predictions is not None:
        install_blog_decoding(wanted)
    if wanted:
        import sys

        print("tlf: predictions decoded as LLaMA-Factory 0.6 did (clean_up_tokenization_spaces=True; "
              f"{DECODE_KEY}=0.6 in the config's header)", file=sys.stderr)
