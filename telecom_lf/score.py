"""``generated_predictions.jsonl`` -> the blog's metrics and a few it lacked.

- ``acc``: exact match after stripping both sides (0.9.5 decodes labels as ``"{a}\\n"``);
  ``acc_raw``: the blog's ``label == predict``, unstripped, to reproduce its script exactly.
- ``long_recall``: exact match among rows whose label is longer than 10 characters (the
  blog's "Recall"), with the count of such rows.
- ``bleu-4``, ``rouge-1/2/l``: LLaMA-Factory's ComputeSimilarity to the digit — ROUGE F over
  jieba words (rouge-chinese; 0 when either side is empty), character-level BLEU-4 with
  nltk's method3 smoothing, each x100 and rounded to 4 places per row, then the mean — on
  the raw strings, as LLaMA-Factory scores them. Memoised per distinct (predict, label) pair:
  the telecom answers repeat a lot, and the numbers are the same.
- ``item_precision/recall/f1``: over the ``|``-separated answer items (ids and prices),
  micro-averaged: exact match alone hides an answer that got three of four items right.
- ``by_category``: accuracy per class when the split manifest is given.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from . import guard, inputs, rundir
from .errors import TlfError

LONG_THRESHOLD = 10
# ROUGE's LCS costs time and memory in the product of the two lengths (measured here: two
# 2,000-character answers take ~2 s, two 10,000-character ones 35 s). A row above this product is
# refused by name (or skipped with --skip-bad) instead of running for minutes: a predicted answer
# of 1024 tokens against a 1,000-character label stays well inside it.
MAX_PAIR_CHARS = 4_000_000


@dataclass(frozen=True)
class Row:
    line: int
    predict: str
    label: str
    prompt: str | None = None       # 0.9.5 writes it; 0.6 files have none


@dataclass
class ReadResult:
    rows: list[Row]
    skipped: list[str] = field(default_factory=list)
    format: str = ""


def read_predictions(path: Path, skip_bad: bool = False) -> ReadResult:
    """Every known format: 0.9.5 and the vLLM script ({prompt, predict, label}), 0.6 ({label, predict})."""
    path = Path(path)
    blob = inputs.read_input(path, "predictions")
    result = ReadResult(rows=[])
    formats = set()
    for number, raw in enumerate(blob.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            problem = None
            text = raw.decode("utf-8")
            record = json.loads(text, parse_constant=_reject_constant)
            if not isinstance(record, dict):
                problem = f"expected a JSON object, got {type(record).__name__}"
            elif "predict" not in record or "label" not in record:
                missing = [k for k in ("predict", "label") if k not in record]
                problem = f"missing key(s) {missing}"
            elif not isinstance(record["predict"], str) or not isinstance(record["label"], str):
                problem = "'predict' and 'label' must be strings"
            elif not all(_is_text(record.get(k)) for k in ("predict", "label", "prompt")):
                problem = "holds a lone surrogate escape such as \\ud800 (not a character; JSON text cannot carry it)"
            elif len(record["predict"]) * len(record["label"]) > MAX_PAIR_CHARS:
                problem = (f"predict ({len(record['predict']):,} characters) x label ({len(record['label']):,}) is "
                           f"over {MAX_PAIR_CHARS:,} character pairs, more than ROUGE's LCS can score in seconds")
        except UnicodeDecodeError as error:
            problem = f"not UTF-8 ({error.reason} at byte {error.start})"
        except (json.JSONDecodeError, ValueError) as error:
            problem = f"not valid JSON ({error})"
        except RecursionError:
            problem = "JSON nested too deeply"
        if problem:
            message = f"{path}: line {number}: {problem}"
            oversized = problem.startswith("predict (")
            if not skip_bad and not result.rows and not oversized:   # the first line already: another kind of file
                raise TlfError(message + "; expected a generated_predictions.jsonl (one JSON object a line, with "
                                         "predict and label)")
            if not skip_bad:
                raise TlfError(message + "; pass --skip-bad to score the other rows")
            result.skipped.append(message)
            continue
        formats.add("0.9.5" if "prompt" in record else "0.6")
        prompt = record.get("prompt") if isinstance(record.get("prompt"), str) else None
        result.rows.append(Row(number, record["predict"], record["label"], prompt))
    if not result.rows:
        raise TlfError(f"{path}: no predictions to score" + (f" ({len(result.skipped)} bad lines skipped)"
                                                             if result.skipped else " (empty file)"))
    result.format = "+".join(sorted(formats))
    return result


def _is_text(value) -> bool:
    return not isinstance(value, str) or guard.is_text(value)


def _reject_constant(name: str):
    raise ValueError(f"{name} is not a valid value")


class Similarity:
    """LLaMA-Factory's ComputeSimilarity on strings, memoised per distinct pair."""

    def __init__(self):
        import jieba
        from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
        from rouge_chinese import Rouge

        jieba.setLogLevel(60)
        self._cut = lambda text: list(jieba.cut(text))
        self._bleu = sentence_bleu
        self._smooth = SmoothingFunction().method3
        self._rouge = Rouge()
        self._words: dict[str, list[str]] = {}
        self._pairs: dict[tuple[str, str], tuple[float, float, float, float]] = {}

    def _words_of(self, text: str) -> list[str]:
        words = self._words.get(text)
        if words is None:
            words = self._words[text] = self._cut(text)
        return words

    def pair(self, predict: str, label: str) -> tuple[float, float, float, float]:
        """(rouge-1, rouge-2, rouge-l, bleu-4), each x100 and rounded as LLaMA-Factory does."""
        key = (predict, label)
        cached = self._pairs.get(key)
        if cached is not None:
            return cached
        hypothesis, reference = self._words_of(predict), self._words_of(label)
        if len(" ".join(hypothesis).split()) == 0 or len(" ".join(reference).split()) == 0:
            rouge = (0.0, 0.0, 0.0)
        else:
            scores = self._rouge.get_scores(" ".join(hypothesis), " ".join(reference))[0]
            rouge = tuple(round(scores[k]["f"] * 100, 4) for k in ("rouge-1", "rouge-2", "rouge-l"))
        bleu = self._bleu([list(label)], list(predict), smoothing_function=self._smooth)
        cached = self._pairs[key] = (*rouge, round(bleu * 100, 4))
        return cached


def llamafactory_similarity(pairs: list[tuple[str, str]]) -> dict[str, float]:
    """LLaMA-Factory's own ComputeSimilarity on (predict, label) strings, for cross-checks.

    It decodes token ids; here each id row stands for one whole string through a lookup."""
    import numpy as np
    from llamafactory.train.sft.metric import ComputeSimilarity
    from transformers import EvalPrediction

    texts = {0: ""}
    for i, (predict, label) in enumerate(pairs):
        texts[2 * i + 1], texts[2 * i + 2] = predict, label

    class Lookup:
        pad_token_id = 0

        def batch_decode(self, ids, skip_special_tokens=True):
            return [texts[int(row[0])] for row in ids]

    predictions = np.array([[2 * i + 1] for i in range(len(pairs))])
    labels = np.array([[2 * i + 2] for i in range(len(pairs))])
    return ComputeSimilarity(tokenizer=Lookup())(EvalPrediction(predictions, labels))


def _items(text: str) -> set[str]:
    return {item.strip() for item in text.strip().split("|") if item.strip()}


def _pct(numerator: float, denominator: float) -> float | None:
    return round(100.0 * numerator / denominator, 2) if denominator else None


def score_rows(rows: list[Row], long_threshold: int = LONG_THRESHOLD,
               categories: list[str] | None = None, similarity: Similarity | None = None) -> dict:
    similarity = similarity or Similarity()
    n = len(rows)
    exact = [r.predict.strip() == r.label.strip() for r in rows]
    exact_raw = [r.predict == r.label for r in rows]
    long_rows = [i for i, r in enumerate(rows) if len(r.label.strip()) > long_threshold]
    long_rows_raw = [i for i, r in enumerate(rows) if len(r.label) > long_threshold]
    sums = [0.0, 0.0, 0.0, 0.0]
    for r in rows:
        for k, value in enumerate(similarity.pair(r.predict, r.label)):
            sums[k] += value
    tp = fp = fn = 0
    for r in rows:
        predicted, wanted = _items(r.predict), _items(r.label)
        tp += len(predicted & wanted)
        fp += len(predicted - wanted)
        fn += len(wanted - predicted)
    precision, recall = _pct(tp, tp + fp), _pct(tp, tp + fn)
    f1 = (round(2 * precision * recall / (precision + recall), 2)
          if precision is not None and recall is not None and precision + recall else 0.0)
    result = {
        "rows": n,
        "acc": _pct(sum(exact), n),
        "acc_raw": _pct(sum(exact_raw), n),
        "long_threshold": long_threshold,
        "long_rows": len(long_rows),
        "long_correct": sum(exact[i] for i in long_rows),
        "long_recall": _pct(sum(exact[i] for i in long_rows), len(long_rows)),
        "long_recall_raw": _pct(sum(exact_raw[i] for i in long_rows_raw), len(long_rows_raw)),
        "bleu-4": round(sums[3] / n, 4),
        "rouge-1": round(sums[0] / n, 4),
        "rouge-2": round(sums[1] / n, 4),
        "rouge-l": round(sums[2] / n, 4),
        "item_precision": precision,
        "item_recall": recall,
        "item_f1": f1,
    }
    if categories is not None:
        if len(categories) < n:
            raise TlfError(f"the split manifest lists {len(categories)} rows, the predictions have {n}")
        hits: dict[str, list[bool]] = defaultdict(list)
        for category, ok in zip(categories, exact):  # max_samples keeps the first rows, in order
            hits[category].append(ok)
        result["by_category"] = {c: {"rows": len(v), "acc": _pct(sum(v), len(v))} for c, v in sorted(hits.items())}
    return result


def categories_for(manifest_path: Path, split: str) -> list[str]:
    manifest_path = Path(manifest_path)
    if manifest_path.is_dir():
        manifest_path = manifest_path / rundir.SPLIT_MANIFEST
    try:
        manifest = json.loads(inputs.read_input(manifest_path, "record"))
    except (ValueError, RecursionError) as error:
        raise TlfError(f"{manifest_path}: cannot read split manifest ({error})") from None
    splits = manifest.get("splits") if isinstance(manifest, dict) else None
    if not isinstance(splits, dict):
        raise TlfError(f"{manifest_path}: not the split manifest `tlf data split` writes (no 'splits' object)")
    if split not in splits:
        raise TlfError(f"{manifest_path}: no split {split!r}; has {sorted(map(str, splits))}")
    categories = splits[split].get("categories") if isinstance(splits[split], dict) else None
    if not isinstance(categories, list) or not all(isinstance(c, str) for c in categories):
        raise TlfError(f"{manifest_path}: splits.{split}.categories: expected a list of class names")
    return categories


def format_table(scores: dict) -> str:
    keys = ["rows", "acc", "acc_raw", "long_rows", "long_recall", "bleu-4", "rouge-1", "rouge-2", "rouge-l",
            "item_precision", "item_recall", "item_f1"]
    lines = [f"{k:16s} {'-' if scores.get(k) is None else scores[k]}" for k in keys]
    for category, values in scores.get("by_category", {}).items():
        lines.append(f"  acc[{category}] {values['acc']}  ({values['rows']} rows)")
    return "\n".join(lines)
