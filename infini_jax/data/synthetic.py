"""A built-in synthetic long-context corpus, generated deterministically from a seed.

Two retrieval tasks, so a model cannot pass by memorising one format:
- `passkey`: the Landmark-attention template (preamble, repeated filler, a needle with a key at
  a chosen depth, more filler, the question). Depth 0 is furthest from the question.
- `kv_recall`: a list of "key → value" facts, some filler between them, then a question about
  one key. The queried fact sits at the chosen depth among the facts.

Documents are assembled from separately tokenized pieces, so their length in tokens and the
needle's position are exact. Each document records where its answer tokens are.
"""

import dataclasses
from collections.abc import Callable, Iterator

import numpy as np

PREAMBLE = (
    "There is an important info hidden inside a lot of irrelevant text. Find it and memorize "
    "them. I will quiz you about the important information there."
)
FILLER = (
    " The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
)
TASKS = ("passkey", "kv_recall")


def passkey_needle(key: str) -> str:
    return f" The pass key is {key}. Remember it. {key} is the pass key."


PASSKEY_QUESTION = " What is the pass key? The pass key is"


def kv_fact(key: str, value: str) -> str:
    return f" The value of key {key} is {value}."


def kv_question(key: str) -> str:
    return f" What is the value of key {key}? The value of key {key} is"


def random_digits(rng: np.random.Generator, n: int) -> str:
    first = str(rng.integers(1, 10))  # no leading zero
    return first + "".join(str(d) for d in rng.integers(0, 10, size=n - 1))


@dataclasses.dataclass(frozen=True)
class Document:
    """One synthetic document. `tokens` int32 `[length]`; the answer is
    `tokens[answer_start:answer_start + len(answer_tokens)]`; the needle (fact) starts at token
    `needle_start`."""

    task: str
    tokens: np.ndarray
    answer: str
    answer_start: int
    needle_start: int
    depth: float


def text_document(rng: np.random.Generator, task: str, n_filler: int, key_digits: int = 5) -> str:
    """Plain-text form of a document (for tokenizer training): `n_filler` filler units."""
    depth = rng.uniform()
    at = int(round(depth * n_filler))
    key = random_digits(rng, key_digits)
    if task == "passkey":
        body = [FILLER] * n_filler
        body.insert(at, passkey_needle(key))
        return PREAMBLE + "".join(body) + PASSKEY_QUESTION + " " + key + "."
    keys = [f"{k:04d}" for k in rng.choice(np.arange(1000, 10000), max(1, n_filler), False)]
    values = [random_digits(rng, key_digits) for _ in keys]
    qi = min(at, len(keys) - 1)
    values[qi] = key
    facts = [kv_fact(k, v) for k, v in zip(keys, values, strict=True)]
    return PREAMBLE + FILLER.join(facts) + kv_question(keys[qi]) + " " + key + "."


class SyntheticTasks:
    """Builds token-exact documents with a tokenizer's `encode(str) -> list[int]`."""

    def __init__(self, encode: Callable[[str], list[int]], key_digits: int = 5):
        self.encode = encode
        self.key_digits = key_digits
        self._cache: dict[str, list[int]] = {}

    def _tok(self, text: str) -> list[int]:
        if text not in self._cache:
            self._cache[text] = list(self.encode(text))
        return self._cache[text]

    def sample(
        self, rng: np.random.Generator, task: str, length: int, depth: float | None = None
    ) -> Document:
        """A document of at most `length` tokens (the filler fills what the rest leaves)."""
        if task not in TASKS:
            raise ValueError(f"task {task!r} is not one of {TASKS}")
        depth = float(rng.uniform()) if depth is None else depth
        key = random_digits(rng, self.key_digits)
        answer = self.encode(" " + key)
        filler = self._tok(FILLER)
        pre = self._tok(PREAMBLE)
        if task == "passkey":
            needle = self.encode(passkey_needle(key))
            question = self._tok(PASSKEY_QUESTION)
            n_units = max(
                0, (length - len(pre) - len(needle) - len(question) - len(answer)) // len(filler)
            )
            at = int(round(depth * n_units))
            body = filler * at + needle + filler * (n_units - at)
            needle_start = len(pre) + len(filler) * at
        else:
            fact_budget = length - len(pre) - len(answer)
            facts, total = [], 0
            while True:  # facts with distinct keys, each followed by one filler unit
                fkey = random_digits(rng, 4)
                if any(fkey == f[0] for f in facts):
                    continue
                fact = self.encode(kv_fact(fkey, random_digits(rng, self.key_digits))) + filler
                q_len = len(self.encode(kv_question(fkey)))
                if facts and total + len(fact) + q_len > fact_budget:
                    break
                facts.append((fkey, fact))
                total += len(fact)
            at = min(int(round(depth * (len(facts) - 1))), len(facts) - 1)
            qkey = facts[at][0]
            facts[at] = (qkey, self.encode(kv_fact(qkey, key)) + filler)
            needle_start = len(pre) + sum(len(f[1]) for f in facts[:at])
            body = [t for f in facts for t in f[1]]
            question = self.encode(kv_question(qkey))
        tokens = np.asarray(pre + body + question + answer, np.int32)
        if len(tokens) > length:
            raise ValueError(
                f"a {task} document needs at least {len(tokens)} tokens with this "
                f"tokenizer; length={length} is too short"
            )
        return Document(task, tokens, key, len(tokens) - len(answer), needle_start, depth)


def documents(
    tasks: SyntheticTasks, seed: int, length_range: tuple[int, int], mix: dict[str, float]
) -> Iterator[Document]:
    """An endless deterministic stream: document i depends only on (seed, i)."""
    names = sorted(mix)
    p = np.asarray([mix[n] for n in names], np.float64)
    p = p / p.sum()
    i = 0
    while True:
        rng = np.random.default_rng([seed, i])
        task = names[rng.choice(len(names), p=p)]
        yield tasks.sample(rng, task, int(rng.integers(length_range[0], length_range[1] + 1)))
        i += 1
