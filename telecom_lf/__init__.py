"""tlf: the telecom-QA LoRA study of the blog, as one tool around LLaMA-Factory."""

__version__ = "0.1.0"
