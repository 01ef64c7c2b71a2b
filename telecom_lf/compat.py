"""Blog-era prompt templates, registered into the installed LLaMA-Factory at run time.

The blog ran LLaMA-Factory 0.6 (package ``llmtuner``). Its ``default`` template rendered a
single turn as ``Human: {q}\\nAssistant: `` and trained ``{a}<eos>``; 0.9.5's ``default``
renders ``Human: {q}<eos>\\nAssistant:`` and trains ``{a}<eos>\\n``. To reproduce the blog's
token ids exactly, tlf registers the 0.6 rendering under its own name in every process that
tokenises (train, predict, each torchrun worker) through ``telecom_lf.lf_entry``.
"""

from __future__ import annotations

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
