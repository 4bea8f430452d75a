"""The README's figures are the results files' figures."""

import json
import os

from infini_jax.bench import tiny_default
from tests.conftest import ROOT


def test_the_readme_tiny_default_table_is_its_results_file():
    with open(os.path.join(ROOT, "docs", "results", "tiny_default.json")) as f:
        results = json.load(f)
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    # The stored table is what the command printed; rendering it again from the figures must
    # give the same text, and the README must hold it verbatim.
    assert tiny_default.table(results) == results["table"]
    assert results["table"] in readme, "paste docs/results/tiny_default.json's table into README"
    assert results["command"] in readme
    assert tiny_default.evals_sentence(results) == results["evals_sentence"]
    assert results["evals_sentence"] in readme.replace("\n", " ")


def test_the_table_cells_count_the_samples_they_say():
    def record(length, back, correct):
        return {"length": length, "segments_back": back, "correct": correct, "digit_accuracy": 0.5}

    records = [record(256, 0, True), record(256, 2, True), record(256, 5, False)]
    records += [record(1024, 9, False), record(1024, 1, True)]
    cells = tiny_default.figures({"samples": records}, 256)
    assert cells["near"] == {"accuracy": 1.0, "digit_accuracy": 0.5, "n": 1}
    assert cells["beyond"]["n"] == 4 and cells["beyond"]["accuracy"] == 0.5
    assert cells["by_length"]["256"]["accuracy"] == 2 / 3
    assert list(cells["by_length"]) == ["256", "1024"]


def test_a_cell_quotes_the_median_and_range_over_seeds():
    def seed(beyond):
        return {"beyond": {"accuracy": beyond, "digit_accuracy": None, "n": 96}}

    per_seed = [seed(0.19), seed(0.46), seed(0.31)]
    assert tiny_default.cell(per_seed, "beyond") == "31% (19%–46%)"
    assert tiny_default.cell(per_seed[:1], "beyond") == "19%"


def test_the_readme_quotes_every_seed_and_the_spread():
    with open(os.path.join(ROOT, "docs", "results", "tiny_default.json")) as f:
        results = json.load(f)
    assert len(results["seeds"]) >= 3, "the README's figures are over at least 3 seeds"
    beyond = [s["infini"]["beyond"]["accuracy"] for s in results["seeds"].values()]
    assert results["infini_beyond"] == tiny_default.spread(beyond)
    low, high = f"{min(beyond):.0%}", f"{max(beyond):.0%}"
    assert f"({low}–{high})" in results["table"]


def test_the_evals_sentence_names_the_first_step_above_zero_and_at_ninety_percent():
    def seed(*beyond):
        return {
            "infini_evals": [{"step": 250 * (i + 1), "beyond": b} for i, b in enumerate(beyond)]
        }

    sentence = tiny_default.evals_sentence(
        {"seeds": {"0": seed(0, 0.1, 0.95), "1": seed(0, 0, 0.5)}}
    )
    assert "above 0% at step 500 (seed 0), 750 (seed 1)" in sentence
    assert "first reaches 90% at step 750 (seed 0), never (seed 1)" in sentence
    assert "90%" not in tiny_default.evals_sentence({"seeds": {"0": seed(None, 0.2)}})
