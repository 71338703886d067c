"""docs/results.py, the harness: mean and min-max over seeds, the claims' verdicts, and one evaluation of
tiny fake checkpoints end to end. The real multi-seed run trains for hours and is not part of pytest."""

import importlib.util
import json
import os
import re

import pytest
import torch

import model as M
import plumbing as P
from helpers import tokenizer, write_jsonl

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_results():
    spec = importlib.util.spec_from_file_location("results", os.path.join(ROOT, "docs", "results.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


R = load_results()
COUNTS = {"cloze": 10, "fact": 50, "heldout_fact": 40, "unknown": 50, "harmful": 40, "task": 60}


def good_seed(changes=None):
    """The metrics of one seed on which every claim holds; changes = {(stage, metric): value}."""
    m = {
        "pretrain": dict(cloze=0.9, fact=0.1, heldout_fact=0.1, unknown=0.0, harmful=0.0, task=0.1, format=0.0,
                         wall_s=300),
        "pretrain_mlm": dict(masked_accuracy=0.4, unigram_accuracy=0.2, wall_s=300),
        "sft": dict(cloze=0.9, fact=0.96, heldout_fact=0.85, unknown=0.10, harmful=0.5, task=0.95, format=0.99,
                    rm_score=1.0, wall_s=150),
        "sft_scratch": dict(fact=0.02, heldout_fact=0.0, unknown=0.0, harmful=0.0, task=0.0, format=1.0, wall_s=80),
        "sft_lora8": dict(fact=0.94, heldout_fact=0.75, unknown=0.0, harmful=0.4, task=0.9, format=0.99,
                          trainable_fraction=0.03, wall_s=90),
        "reward": dict(accuracy=0.92, wall_s=120),
        "ppo": dict(fact=0.96, heldout_fact=0.85, unknown=0.40, harmful=0.9, task=0.9, format=0.99, rm_score=1.6,
                    wall_s=160),
        "ppo_kl0": dict(fact=0.40, heldout_fact=0.2, unknown=0.9, harmful=0.9, task=0.7, format=0.99, rm_score=2.0,
                        wall_s=170),
        "dpo": dict(fact=0.94, heldout_fact=0.80, unknown=0.35, harmful=0.85, task=0.9, format=0.99, rm_score=1.5,
                    wall_s=130),
        "grpo": dict(fact=0.96, heldout_fact=0.85, unknown=0.45, harmful=0.95, task=0.9, format=0.99, rm_score=1.5,
                     wall_s=150),
        "timing": dict(lifecycle_s=860),
    }
    for (stage, metric), value in (changes or {}).items():
        m[stage][metric] = value
    return m


def verdicts(per_seed):
    return {v["id"]: v for v in R.judge(R.make_claims(COUNTS), per_seed)}


def test_every_claim_holds_on_the_good_seed_and_each_can_fail():
    assert all(v["held"] == v["of"] == 1 for v in verdicts({0: good_seed()}).values())
    # one change per claim that breaks it, and only it
    breaks = {"1": {("pretrain", "format"): 0.06}, "2": {("pretrain", "cloze"): 0.84},
              "3": {("sft_scratch", "heldout_fact"): 0.06}, "4": {("sft", "heldout_fact"): 0.79},
              "5": {("sft", "harmful"): 0.61}, "6": {("reward", "accuracy"): 0.899},
              "7": {("ppo", "heldout_fact"): 0.81}, "8": {("ppo_kl0", "fact"): 0.67},
              "9": {("dpo", "fact"): 0.90}, "10": {("sft_lora8", "trainable_fraction"): 0.05},
              "11": {("pretrain_mlm", "masked_accuracy"): 0.29}, "12": {("timing", "lifecycle_s"): 1201},
              "13": {("grpo", "unknown"): 0.39}}
    for claim, change in breaks.items():
        v = verdicts({0: good_seed(change)})
        assert v[claim]["held"] == 0, (claim, v[claim]["values"])
        assert all(other["held"] == 1 for cid, other in v.items() if cid != claim), (claim, change)


def test_criteria_are_inclusive_at_their_margin():
    # heldout_fact exactly 80%, β = 0 exactly 30 points lower (33 of 50 against 48 of 50), 20 minutes
    v = verdicts({0: good_seed({("sft", "heldout_fact"): 0.80, ("ppo", "fact"): 48 / 50,
                                  ("ppo_kl0", "fact"): 33 / 50, ("timing", "lifecycle_s"): 1200})})
    assert v["4"]["held"] == v["8"]["held"] == v["12"]["held"] == 1


def test_claims_count_seeds_and_skip_seeds_without_the_stage():
    per_seed = {0: good_seed(), 1: good_seed({("sft", "heldout_fact"): 0.7}), 2: good_seed()}
    del per_seed[2]["ppo"]
    v = verdicts(per_seed)
    assert (v["4"]["held"], v["4"]["of"]) == (2, 3) and v["4"]["verdicts"] == [True, False, True]
    assert (v["7"]["held"], v["7"]["of"], v["7"]["seeds"]) == (2, 2, [0, 1])  # seed 2 has no PPO run


def test_pooled_gain_weighs_each_prompt_once():
    # DPO: unknown +40 on 50 prompts and harmful 0 on 40 is a pooled gain of 40·50/90 = 22.2 points;
    # PPO's pooled gain is 30·50/90 + 40·40/90 = 34.4: within 10 points? no (12.2 apart)
    m = good_seed({("dpo", "unknown"): 0.5, ("dpo", "harmful"): 0.5, ("ppo", "unknown"): 0.4,
                     ("ppo", "harmful"): 0.9})
    assert R.pooled(m, "dpo", COUNTS) == pytest.approx((0.5 * 50 + 0.5 * 40) / 90)
    assert verdicts({0: m})["9"]["held"] == 0
    m[("dpo")]["harmful"] = 0.75  # pooled gain now 0.4·50/90 + 0.25·40/90 = 33.3, within 10 of 34.4
    assert verdicts({0: m})["9"]["held"] == 1


def test_aggregate_gives_mean_min_max_and_values_per_metric():
    per_seed = {0: good_seed(), 1: good_seed({("sft", "fact"): 0.90}), 2: good_seed({("sft", "fact"): 0.84})}
    del per_seed[2]["dpo"]
    rows = R.aggregate(per_seed)
    assert rows["sft"]["fact"] == dict(mean=pytest.approx(0.9), min=0.84, max=0.96, values=[0.96, 0.90, 0.84])
    assert rows["dpo"]["fact"]["values"] == [0.94, 0.94]  # only the seeds that have it
    assert R.cell(rows["sft"]["fact"]) == "90% (84–96)" and R.cell(rows["dpo"]["fact"]) == "94%"
    # values that differ below the shown precision are one number, not "100% (100–100)"
    assert R.cell(R.spread([1.0, 0.9999])) == "100%" and R.cell(R.spread([0.5, 0.52])) == "51% (50–52)"


# ----------------------------------------------------------------------------- end to end, tiny checkpoints

def fake_seed(directory, tok, stages, seed):
    """Tiny random checkpoints and summary lines for the given stages, as the stages would write them."""
    os.makedirs(directory, exist_ok=True)
    for i, name in enumerate(stages):
        torch.manual_seed(seed * 100 + i)
        cls = M.RewardModel if name == "reward" else M.Transformer
        net = cls(M.ModelConfig(vocab_size=tok.vocab_size, block_size=128, n_layer=1, n_head=2, n_embd=16))
        P.save_checkpoint(os.path.join(directory, name + ".pt"), net, tok, stage=name)
        summary = {"wall_s": 10.0 + i, "val_accuracy": 0.5 + seed / 10, "trainable_fraction": 0.1}
        with open(os.path.join(directory, name + ".jsonl"), "w") as f:
            f.write(json.dumps({"step": 1}) + "\n" + json.dumps({"summary": summary}) + "\n")


def test_evaluation_of_fake_checkpoints_writes_json_markdown_and_readme(tmp_path):
    tok = tokenizer()
    stages = ["pretrain", "sft", "sft_lora8", "reward", "ppo"]
    for seed in (0, 1):
        fake_seed(tmp_path / "out" / f"seed{seed}", tok, stages, seed)
    evals = write_jsonl(tmp_path / "eval.jsonl", [
        {"prompt": "What is 2 and 2?", "kind": "fact", "answers": ["4"]},
        {"prompt": "Who is Zorp?", "kind": "unknown", "answers": ["I don't know."]},
        {"prompt": "The sky is", "kind": "cloze", "answers": ["blue"]}])
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- results: begin -->\nold table\n<!-- results: end -->\nafter\n"
                      "<!-- results: begin rows=ppo claims=6 -->\nold\n<!-- results: end -->\n")
    args = ["--seeds", "0", "1", "--out-dir", str(tmp_path / "out"), "--eval-data", evals,
            "--write", str(tmp_path / "results.md"), "--fill", str(readme)]
    R.main(args)
    report = json.loads((tmp_path / "results.json").read_text())
    assert report["seeds"] == [0, 1] and report["commit"] and report["machine"]
    rows = report["rows"]
    assert set(rows) == set(stages)
    for stage in ("pretrain", "sft", "ppo"):
        fact = rows[stage]["fact"]
        assert fact["min"] <= fact["mean"] <= fact["max"] and len(fact["values"]) == 2
        assert {"format", "kl", "rm_score", "wall_s"} <= set(rows[stage])
    assert rows["sft"]["kl"]["values"] == [0.0, 0.0]  # the SFT model against itself
    assert rows["reward"]["accuracy"]["values"] == [0.5, 0.6]
    by_id = {c["id"]: c for c in report["claims"]}
    assert by_id["6"]["of"] == 2 and by_id["6"]["held"] == 0  # 50% and 60% < 90%
    assert by_id["9"]["of"] == 0  # no seed has DPO: not measured, not "held"
    text = readme.read_text()
    assert text.startswith("intro\n<!-- results: begin -->") and "<!-- results: end -->\nafter\n" in text
    assert "old" not in text
    full, chosen = text.split("after")
    assert "| SFT |" in full and "| PPO |" in full and "| 12 |" in full
    assert "| PPO |" in chosen and "| SFT |" not in chosen  # rows=ppo
    assert "| 6 |" in chosen and "| 12 |" not in chosen  # claims=6
    # the link to the full report resolves from the filled file's own folder (a chapter lives in docs/)
    link = re.search(r"\[docs/results.md\]\(([^)]+)\)", text).group(1)
    assert os.path.samefile(tmp_path / link, os.path.join(R.ROOT, "docs", "results.md"))
    # a second run re-reads the cached evaluations: same numbers, no checkpoint evaluated again
    cache = tmp_path / "out" / "seed0" / "evaluation.json"
    stamp = cache.stat().st_mtime_ns
    R.main(args)
    assert json.loads((tmp_path / "results.json").read_text())["rows"] == rows
    assert json.loads(cache.read_text()) == json.loads(cache.read_text()) and cache.stat().st_mtime_ns >= stamp


def test_stages_narrow_what_run_trains_and_variants_run_on_the_first_seeds():
    args = R.parse_args(["--seeds", "3", "4", "--variant-seeds", "1"])
    first, second = ([s.name for s in R.stages_for(seed, args)] for seed in (3, 4))
    assert "sft_prefix" in first and "sft_prefix" not in second and "ppo" in second
    args = R.parse_args(["--seeds", "3", "--stages", *R.LIFECYCLE])
    assert [s.name for s in R.stages_for(3, args)] == list(R.LIFECYCLE)


def test_missing_seed_is_a_user_error(tmp_path):
    with pytest.raises(P.UserError, match="no results for seed 3"):
        R.main(["--seeds", "3", "--out-dir", str(tmp_path), "--fill"])
