"""The data section of the config as frozen typed dataclasses, with their checks.

The fields, their defaults and their meaning are declared once, in `base_config().data`
(`infini_jax/defaults.py`).
"""

import os
import re

from infini_jax.defaults import base_config
from infini_jax.errors import Section, check, check_choice, check_positive_ints, is_int, section

PACKING = ("concat", "padding")
LONG_DOCUMENTS = ("truncate", "random_window")
HOST_SHARDING = ("replicated", "sharded")
MIN_SYNTHETIC_LENGTH = 64  # a passkey document needs its preamble, needle and question


def source_name(spec: str) -> str:
    """A source's default name: "synthetic", or the nearest directory above a glob of shards
    that is not called "shards" (".../kjv/shards/*.array_record" → "kjv")."""
    if spec == "synthetic":
        return spec
    parts = [p for p in os.path.dirname(spec).split("/") if p and not re.search(r"[*?\[]", p)]
    parts = [p for p in parts if p != "shards"]
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", parts[-1]) if parts else "shards"
    return name


class _SyntheticMethods(Section):
    PREFIX = "data.synthetic"

    def check(self) -> None:
        names = ("min_length", "max_length", "key_digits", "tokenizer_vocab_size")
        check_positive_ints({k: getattr(self, k) for k in names}, "data.synthetic.")
        check(
            self.min_length <= self.max_length,
            f"config.data.synthetic.min_length={self.min_length} exceeds max_length="
            f"{self.max_length}",
        )
        check(
            self.min_length >= MIN_SYNTHETIC_LENGTH,
            f"config.data.synthetic.min_length={self.min_length} must be >= "
            f"{MIN_SYNTHETIC_LENGTH} tokens (a document needs its preamble, needle and question)",
        )
        weights = (self.passkey_weight, self.kv_recall_weight)
        check(
            all(w >= 0 for w in weights) and sum(weights) > 0,
            f"config.data.synthetic: passkey_weight={self.passkey_weight} and kv_recall_weight="
            f"{self.kv_recall_weight} must be >= 0 and not both 0",
        )


SyntheticConfig = section("SyntheticConfig", _SyntheticMethods, base_config().data.synthetic)


class _DataMethods(Section):
    PREFIX = "data"

    @property
    def sources(self) -> list[str]:
        """The entries of `source`: "synthetic" and/or globs of prepared shards."""
        return [s for s in self.source.split(",") if s]

    @property
    def mixture_weights(self) -> list[float] | None:
        """One weight per source (0: validation only), or None for equal shares."""
        return [float(w) for w in self.weights.split(",")] if self.weights else None

    @property
    def trained(self) -> list[bool]:
        """Per source: whether training draws from it (weight > 0)."""
        weights = self.mixture_weights
        return [w > 0 for w in weights] if weights else [True] * len(self.sources)

    @property
    def names(self) -> list[str]:
        """Per source, its name in the validation metrics: `source_names`, or derived."""
        if self.source_names:
            return [n.strip() for n in self.source_names.split(",")]
        names = [source_name(s) for s in self.sources]
        return [n if names.count(n) == 1 else f"{n}{k}" for k, n in enumerate(names)]

    def check(self) -> None:
        check_positive_ints({"seq_len": self.seq_len, "batch_size": self.batch_size}, "data.")
        check_choice(self.packing, PACKING, "data.packing")
        check_choice(self.long_documents, LONG_DOCUMENTS, "data.long_documents")
        check(
            0 < self.validation_fraction <= 0.5,
            f"config.data.validation_fraction={self.validation_fraction!r} must be in (0, 0.5]",
        )
        check_choice(self.host_sharding, HOST_SHARDING, "data.host_sharding")
        check(
            is_int(self.worker_count) and self.worker_count >= 0,
            f"config.data.worker_count={self.worker_count!r} must be an integer >= 0",
        )
        n = len(self.sources)
        check(
            n > 0,
            "config.data.source is empty: use 'synthetic' or a glob of shards "
            "written by python -m infini_jax.data.prepare",
        )
        if self.weights:
            try:
                weights = self.mixture_weights
            except ValueError:
                weights = []
            check(
                len(weights) == n and all(w >= 0 for w in weights) and any(weights),
                f"config.data.weights={self.weights!r} must be {n} numbers >= 0 (0: validation "
                "only), one per entry of config.data.source, not all 0",
            )
        names = self.names
        check(
            len(names) == n
            and len(set(names)) == n
            and all(re.fullmatch(r"[A-Za-z0-9_.-]+", x) for x in names),
            f"config.data.source_names={self.source_names!r} must be {n} distinct names of "
            "letters, digits, '_', '.' or '-', one per entry of config.data.source",
        )
        remote = [s for s in self.sources if s.startswith("gs://")]
        check(
            not remote,
            f"config.data.source={remote[0] if remote else ''!r}: ArrayRecord shards are read "
            "from local disk (the pip build of array_record has no GCS reader); copy them to "
            "the workers or mount the bucket (gcsfuse, see docs/data.md) and pass the local path",
        )


DataConfig = section("DataConfig", _DataMethods, base_config().data, synthetic=SyntheticConfig)
