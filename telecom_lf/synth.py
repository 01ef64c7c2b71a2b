"""Synthetic rows shaped like the Tianchi 531904 competition file (user question, answer).

The real file cannot be shipped, so tests and the demo use this generator. It keeps the
properties that matter to the study:
- answers are category-tagged ids (``取消方式_68``), sometimes several items and prices
  joined by ``|`` (``业务简介_105|9.9|11.9|开通方式_105``);
- the answer is a function of the product and the intent in the question, so a model
  can learn it, and the categories are imbalanced like the competition's. An id's number
  is its product's catalogue number (every answer about a product carries it), and
  ``catalogue()`` is the product catalogue, unlabelled text a base model can read;
- about a quarter of the answers are longer than 10 characters (the blog's "long answers").
Same seed, same rows, byte for byte.
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass

QUESTION_COLUMN = "用户问题"
ANSWER_COLUMN = "答案"

PRODUCTS = [
    "9元百度专属定向流量包", "7天5g视频会员流量包", "畅享套餐", "5G畅享融合套餐", "腾讯王卡",
    "国际漫游包", "来电显示", "彩铃业务", "天翼云盘会员", "视频彩铃", "流量日包", "30元流量月包",
    "爱奇艺会员包", "宽带提速包", "副卡业务", "话费充值卡", "翼支付", "短信包", "夜间流量包",
    "亲情号码", "全国流量包", "校园套餐", "老年关怀套餐", "免费WiFi", "语音信箱", "呼叫转移",
    "定向流量包", "抖音定向流量包", "10元语音包", "家庭共享套餐", "天翼看家", "号码百事通",
    "手机报", "尊享会员", "云手机", "加装副卡", "流量安心包", "来电提醒", "优酷会员包", "19元畅聊包",
]

# (category, share of single-intent questions, question patterns). Shares are deliberately
# skewed: the competition's categories are far from uniform.
INTENTS = [
    ("取消方式", 0.30, ["{p}如何取消", "怎么退订{p}", "{p}不想要了怎么关", "帮我取消{p}"]),
    ("开通方式", 0.25, ["{p}怎么开通", "我想办理{p}", "如何订购{p}", "{p}在哪里开通"]),
    ("业务简介", 0.18, ["{p}是什么", "介绍一下{p}", "{p}有什么内容", "{p}包含哪些服务"]),
    ("资费介绍", 0.12, ["{p}多少钱", "{p}怎么收费", "{p}一个月费用是多少", "{p}的价格"]),
    ("使用方式", 0.09, ["{p}怎么用", "{p}如何使用", "开了{p}以后怎么用"]),
    ("办理条件", 0.06, ["什么人可以办{p}", "{p}有什么办理条件", "我能不能办{p}"]),
]

# Questions that ask two things at once get multi-item answers (the long answers).
COMBOS = [
    (("业务简介", "开通方式"), ["你告诉我{p}怎么开通，多少钱", "{p}是什么，怎么开通"]),
    (("取消方式", "资费介绍"), ["{p}怎么取消，取消要钱吗", "{p}多少钱，不用了怎么退"]),
    (("开通方式", "使用方式"), ["{p}怎么开通，开了怎么用"]),
]

PREFIXES = ["", "", "", "你好，", "请问", "麻烦问下，", "客服你好，", "我想知道", "问一下，", "您好，"]
SUFFIXES = ["", "", "？", "?", "呢", "啊", "。"]
LONG_SHARE = 0.25
MAX_ROWS = 20000  # well inside the number of distinct rows the patterns can make


@dataclass(frozen=True)
class SynthRow:
    question: str
    answer: str


def product_code(product_index: int) -> int:
    """The product's catalogue number: distinct for the 40 products (37 is prime to 140)."""
    return 20 + (48 + 37 * product_index) % 140


def _item_id(category: str, product_index: int) -> str:
    return f"{category}_{product_code(product_index)}"


def _price(product_index: int) -> list[str]:
    monthly = 5 + (product_index * 7) % 40
    return [f"{monthly}.9", f"{monthly + 2}.9"] if product_index % 2 else [f"{monthly}"]


def _phrase(rng: random.Random, patterns: list[str], product_index: int) -> str:
    body = rng.choice(patterns).format(p=PRODUCTS[product_index])
    return rng.choice(PREFIXES) + body + rng.choice(SUFFIXES)


def _single(rng: random.Random) -> SynthRow:
    categories = [c for c, _, _ in INTENTS]
    weights = [w for _, w, _ in INTENTS]
    category = rng.choices(categories, weights)[0]
    patterns = next(p for c, _, p in INTENTS if c == category)
    index = rng.randrange(len(PRODUCTS))
    return SynthRow(_phrase(rng, patterns, index), _item_id(category, index))


def _combo_answer(first: str, second: str, product_index: int) -> str:
    items = [_item_id(first, product_index)]
    if "资费介绍" in (first, second) or first == "业务简介":
        items += _price(product_index)
    items.append(_item_id(second, product_index))
    return "|".join(items)


def _combo(rng: random.Random) -> SynthRow:
    (first, second), patterns = rng.choice(COMBOS)
    index = rng.randrange(len(PRODUCTS))
    return SynthRow(_phrase(rng, patterns, index), _combo_answer(first, second, index))


def generate(n_rows: int, seed: int = 0) -> list[SynthRow]:
    """``n_rows`` distinct rows; a quarter (in expectation) with answers over 10 characters.

    Rows are distinct as the competition's are; questions may still differ only by
    punctuation (``？`` vs ``?``), which is what the leakage check's normalising catches.
    """
    if not 1 <= n_rows <= MAX_ROWS:
        raise ValueError(f"n_rows must be between 1 and {MAX_ROWS}, got {n_rows}")
    rng = random.Random(seed)
    rows: dict[SynthRow, None] = {}
    while len(rows) < n_rows:
        rows[(_combo if rng.random() < LONG_SHARE else _single)(rng)] = None
    return list(rows)


CATALOGUE_LINES = ["{p}的{c}：{id}", "关于{p}，{c}请看{id}", "{p}{c}文档{id}", "查询{p}：{c}对应{id}",
                   "{p}是中国电信的一项业务，它的{c}见{id}", "{c}（{p}）：{id}",
                   "{p}：客户可以在营业厅、网上营业厅或客服热线咨询，{c}的说明见{id}",
                   "您好，您问的是{p}，稍等，我帮您查一下，{c}在这里：{id}"]


def catalogue() -> list[str]:
    """The operator's product catalogue: lines naming each (product, category)'s document
    (``腾讯王卡的取消方式：取消方式_76``) in a few phrasings, and each product's prices.
    Unlabelled text: never a user's question."""
    lines = []
    for index, product in enumerate(PRODUCTS):
        for category, _, _ in INTENTS:
            lines += [line.format(p=product, c=category, id=_item_id(category, index)) for line in CATALOGUE_LINES]
        lines.append(f"{product}的价格是{'|'.join(_price(index))}")
    return lines


@functools.cache
def _answers_by_body() -> dict[str, set[str]]:
    """Every question body (a pattern with its product) -> the answers the generator gives it."""
    bodies: dict[str, set[str]] = {}
    for index, product in enumerate(PRODUCTS):
        for category, _, patterns in INTENTS:
            for pattern in patterns:
                bodies.setdefault(pattern.format(p=product), set()).add(_item_id(category, index))
        for (first, second), patterns in COMBOS:
            for pattern in patterns:
                bodies.setdefault(pattern.format(p=product), set()).add(_combo_answer(first, second, index))
    return bodies


def derivable(question: str, answer: str) -> bool:
    """Whether ``answer`` follows from ``question`` alone: its product and intent, read with the
    catalogue and glossary, give exactly this answer and no other. An answer that does not
    (a number drawn at random, a question two answers share) no model can be sure to reach."""
    bodies = _answers_by_body()
    found = set()
    for prefix in set(PREFIXES):
        for suffix in set(SUFFIXES):
            if question.startswith(prefix) and question.endswith(suffix) and len(question) > len(prefix + suffix):
                found |= bodies.get(question[len(prefix):len(question) - len(suffix)], set())
    return found == {answer}


def glossary() -> list[str]:
    """How customers phrase each kind of question (``怎么退订腾讯王卡？这是问腾讯王卡的取消方式``):
    the Chinese a real base model brings, which a 64-wide one has to be taught. It names the
    category a phrasing asks about, never the document number."""
    lines = []
    for category, _, patterns in INTENTS:
        lines += [f"{pattern.format(p=p)}？这是问{p}的{category}" for pattern in patterns for p in PRODUCTS]
    for (first, second), patterns in COMBOS:
        lines += [f"{pattern.format(p=p)}？这是问{p}的{first}和{second}" for pattern in patterns for p in PRODUCTS]
    return lines


def whole_terms() -> list[str]:
    """The strings the demo's tokenizer keeps whole: products, categories, ``_<number>``."""
    return list(PRODUCTS) + [c for c, _, _ in INTENTS] + [f"_{product_code(i)}" for i in range(len(PRODUCTS))]


def corpus_text() -> list[str]:
    """Every string the generator can emit, for training the tiny model's tokenizer."""
    lines = list(PRODUCTS) + PREFIXES
    for category, _, patterns in INTENTS:
        lines += [p.format(p=product) for p in patterns for product in PRODUCTS]
        lines += [_item_id(category, i) for i in range(len(PRODUCTS))]
    for _, patterns in COMBOS:
        lines += [p.format(p=product) for p in patterns for product in PRODUCTS]
        lines += ["|".join(_price(i)) for i in range(len(PRODUCTS))]
    return lines
