"""The reproduction pipeline: experiment files, profiles, the plan and its estimate, gathering, and a miniature end to end."""

import json
import math

import pandas as pd
import pytest
from omegaconf import OmegaConf

from sparseprop import config, records
from sparseprop.errors import SparsepropError
from sparseprop.runner import checks
from sparseprop.paper import catalog, costs, draw, experiment, gather, reproduce
from sparseprop.paper import plan as plans
from sparseprop.paper.profiles import PROFILES, Profile
from tests.paper import synthetic

EXPERIMENT_DIR = config.CONF_DIR / "experiment"
catalog.load()
EXPERIMENTS = [e.id for e in experiment.runnable()]


def test_one_experiment_file_per_experiment_each_saying_what_it_makes_and_how_to_run_it():
    assert sorted(p.stem for p in EXPERIMENT_DIR.glob("*.yaml")) == sorted(EXPERIMENTS)
    for name in EXPERIMENTS:
        lines = (EXPERIMENT_DIR / f"{name}.yaml").read_text().splitlines()
        assert lines[0] == "# @package _global_"  # Hydra reads the package only from the first line
        header = "\n".join(ln for ln in lines[1:6] if ln.startswith("#"))
        assert "Makes" in header and f"sparseprop train -m experiment={name}" in header, name


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_paper_settings_live_in_the_experiment_files(name):
    cfg = plans.compose([f"experiment={name}"], hydra=True)
    seeds = str(cfg.hydra.sweeper.params.seed).split(",")
    assert len(seeds) >= 3
    # E4 on CIFAR-10 / Tiny-ImageNet: SNIP's 150k iterations (PAPER.md: about 100-150k).
    # e4_conv, e7_sculpting_conv and e8_criteria_conv, CPU-sized conv runs with no paper setting, train 4,000.
    expected = {"e1_masks": 0, "e4_conv": 4_000, "e7_sculpting_conv": 4_000, "e8_criteria_conv": 4_000}.get(name, 150_000 if experiment.get(name).only else 10_000)
    assert cfg.train.iterations == expected
    if name in ("e2_init", "e3_isometry"):
        assert cfg.signal.examples == "all"
    if name == "e3_isometry":  # the paper's AI: 10,000 steps
        assert plans.compose([f"experiment={name}", "isometry=ai"]).isometry.steps == 10_000
    assert experiment.get(name).profiles["paper"] == (["arch.depth=8"] if name == "e4_conv" else [])


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_every_experiment_composes_and_validates_under_every_profile(profile, tmp_path):
    for name in EXPERIMENTS:
        plan = plans.make_plan(experiment.get(name), PROFILES[profile], tmp_path)
        assert plan.sweep_dir == tmp_path / "experiments" / profile / name
        checks.validate(plans.compose(plan.jobs[-1].overrides))


def test_plan_expands_the_sweep_with_the_profile_winning_and_finds_completed_jobs(tmp_path):
    profile = PROFILES["quick"]
    plan = plans.make_plan(experiment.get("e2_init"), profile, tmp_path)
    assert len(plan.jobs) == 2 * 4 * 2 * 2  # activation x init x prune x seed (the profile's two seeds, not three)
    assert {o for j in plan.jobs for o in j.overrides if o.startswith("seed=")} == {"seed=0", "seed=1"}
    assert len({j.dirname for j in plan.jobs}) == len(plan.jobs) and not plan.jobs[0].done
    first = plan.jobs[0]
    # Directory names hold what varies within the sweep; the experiment and the profile's fixed settings
    # are the same for every job of the sweep directory, which is per profile.
    assert first.dirname == "activation=linear,init=vs_l,prune=snip,seed=0"
    assert {"experiment", "train.iterations", "threads"} <= set(plan.exclude)
    records.mark_complete(plan.sweep_dir / first.dirname)
    again = plans.make_plan(experiment.get("e2_init"), profile, tmp_path)
    assert [j.done for j in again.jobs].count(True) == 1 and len(again.todo) == len(plan.jobs) - 1


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_e1_runs_both_readings_of_gamma_under_every_profile(profile, tmp_path):
    plan = plans.make_plan(experiment.get("e1_masks"), PROFILES[profile], tmp_path)
    by_init = {}
    for job in plan.jobs:
        by_init.setdefault(next(o for o in job.overrides if o.startswith("init=")).split("=")[1], []).append(job)
    for init, jobs in by_init.items():
        cfg = plans.compose(jobs[-1].overrides)
        # gamma = 1.0 is init=normal's variance; VS-L has no free scale, so its config has none.
        scale = cfg.init.get("scale")
        assert (cfg.init.name, scale, cfg.train.iterations) == (init, 1.0 if init == "normal" else None, 0)
    # VS-L, N(0, 1/fan_in), and the fixed variance N(0, 1): each over the whole rest of the sweep.
    assert sorted(by_init) == ["normal", "vs_l"] and len(by_init["normal"]) == len(by_init["vs_l"]) == len(plan.jobs) / 2
    assert all("init=normal" in j.dirname for j in by_init["normal"])
    assert len(plan.jobs) == (2 * 2 * 3 * 2 if profile == "quick" else 2 * 2 * 9 * 3)


def test_run_cost_grows_with_what_a_run_does():
    c = costs.Costs(train_step=0.005, eval_example=1e-5, snip_batch=0.005, io_example=1e-4,
                    layer_example=3e-3, ai_step=0.002, per_run=9.0)
    base = ["experiment=e2_init", "signal.examples=1000", "signal.layer_examples=100"]
    cost = lambda *extra: costs.run_cost(plans.compose([*base, *extra]), c)  # noqa: E731
    snip = cost("prune=snip")
    assert cost("prune=random") < snip < cost("prune=snip", "train.iterations=20000")
    assert cost("prune=snip", "arch.depth=3") < snip
    # prune-only: SNIP over 540 batches and two JSV stages, plus the fixed per-run cost
    expected = 9.0 + 540 * 0.005 + 2 * (1000 * 1e-4 + 100 * 3e-3) + 16_000 * 1e-5
    assert cost("prune=snip", "train.iterations=0") == pytest.approx(expected)
    e3 = ["experiment=e3_isometry", "signal.examples=1000", "signal.layer_examples=100", "isometry.steps=2000"]
    with_ai = costs.run_cost(plans.compose([*e3, "isometry=ai"]), c)
    assert with_ai - costs.run_cost(plans.compose([*e3, "isometry=none"]), c) == pytest.approx(
        2000 * 0.002 + 1000 * 1e-4 + 100 * 3e-3)  # the AI steps and the extra signal stage


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_every_experiment_of_every_profile_gets_a_cost(profile, tmp_path):
    c = costs.Costs(train_step=0.005, eval_example=1e-5, snip_batch=0.005, io_example=1e-4,
                    layer_example=3e-3, ai_step=0.002, per_run=9.0)
    for exp in experiment.runnable():
        if exp.runs_under(profile):
            plan = plans.make_plan(exp, PROFILES[profile], tmp_path)
            plans.estimate(plan, c)
            assert all(math.isfinite(j.cost_s) and j.cost_s > c.per_run for j in plan.jobs), exp.id


def test_signal_examples_auto_costs_all_examples_of_an_mlp_and_a_bounded_number_otherwise():
    from sparseprop.signal.jacobians import GENERIC_IO_EXAMPLES

    c = costs.Costs(train_step=0, eval_example=0, snip_batch=0, io_example=1.0, layer_example=0, ai_step=0, per_run=0)
    quiet = ["prune=random", "train.iterations=0", "signal.stages=[init]", "signal.layer_examples=1"]
    mlp = costs.run_cost(plans.compose(["dataset=fashion_mnist", "signal.examples=auto", *quiet]), c)
    assert mlp == pytest.approx(54_000)  # one stage, every training example, 10 classes
    conv = ["dataset=fashion_mnist", "arch=lenet5", *quiet]
    ratio = costs.run_cost(plans.compose([*conv, "signal.examples=auto"]), c) / costs.run_cost(
        plans.compose([*conv, "signal.examples=all"]), c)
    assert ratio == pytest.approx(GENERIC_IO_EXAMPLES / 54_000)


def test_prune_cost_counts_rounds_batches_and_the_measured_pass_of_each_criterion():
    c = costs.Costs(train_step=0, eval_example=0, snip_batch=1.0, io_example=0, layer_example=0, ai_step=0, per_run=0,
                    grasp_batch=10.0, scored_round=0.01)
    quiet = ["dataset=fashion_mnist", "train.iterations=0", "signal.stages=[]"]
    cost = lambda *extra: costs.run_cost(plans.compose([*quiet, *extra]), c)  # noqa: E731
    assert cost("prune=random") == 0 and cost("prune=none") == 0
    # SNIP over every batch of 100 of the 54,000 training examples, one selection
    assert cost("prune=snip") == pytest.approx(540 + 0.01)
    # Iterative SNIP: its 100 rounds of one batch; FORCE costs the same
    assert cost("prune=iterative_snip") == pytest.approx(100 * (1 + 0.01))
    assert cost("prune=iterative_snip", "prune.variant=force") == cost("prune=iterative_snip")
    # GraSP: one balanced batch of 100 by default; batches of 50 cost half as much each
    assert cost("prune=grasp") == pytest.approx(10 + 0.01)
    assert cost("prune=grasp", "prune.batches=4", "prune.batch_size=50", "prune.rounds=3") == pytest.approx(3 * (4 * 5 + 0.01))
    # SynFlow: its 100 rounds, each one float64 pass and one selection; magnitude one round
    assert cost("prune=synflow") == pytest.approx(100 * 0.01)
    assert cost("prune=synflow", "prune.rounds=7") == pytest.approx(7 * 0.01)
    assert cost("prune=magnitude") == pytest.approx(0.01)
    # A conv net's pruning scales with its multiply-adds per example, like the rest of its run
    lenet = costs.run_cost(plans.compose([*quiet, "arch=lenet5", "prune=synflow"]), c)
    assert lenet == pytest.approx(1.0 * costs.network_macs(plans.compose([*quiet, "arch=lenet5"]))[0] / costs.MLP7_MACS)


def test_ai_cost_scales_with_the_products_of_an_ai_step():
    # An AI step forms M Mᵀ and A M for each weight M = (out, in·k·k): 2·out²·in·k·k multiply-adds.
    lenet5 = 2 * (20 * 20 * 25 + 50 * 50 * 500 + 500 * 500 * 800 + 10 * 10 * 500)
    assert costs.network_macs(plans.compose(["dataset=fashion_mnist", "arch=lenet5"]))[1] == lenet5
    c = costs.Costs(train_step=0, eval_example=0, snip_batch=0, io_example=0, layer_example=0, ai_step=1.0, per_run=0)
    ai = ["prune=random", "train.iterations=0", "signal.stages=[]", "isometry=ai", "isometry.steps=10"]
    mlp7 = costs.run_cost(plans.compose(["dataset=fashion_mnist", *ai]), c)
    assert mlp7 == pytest.approx(10)  # the step is measured on MLP-7
    assert costs.run_cost(plans.compose(["dataset=fashion_mnist", "arch=lenet5", *ai]), c) == pytest.approx(
        10 * lenet5 / costs.MLP7_AI_MACS)


def test_wall_estimate_divides_by_jobs_and_skips_finished_and_skipped_plans(tmp_path):
    c = costs.Costs(0, 0, 0, 0, 0, 0, per_run=10.0, per_sweep=5.0)
    a = plans.Plan("a", "quick", [], tmp_path, tmp_path, [plans.Job([], "x", cost_s=10.0),
                                                              plans.Job([], "y", cost_s=30.0)])
    done = plans.Plan("b", "quick", [], tmp_path, tmp_path, [plans.Job([], "z", done=True, cost_s=99.0)])
    skipped = plans.Plan("c", "quick", [], tmp_path, tmp_path, [plans.Job([], "w", cost_s=99.0)], skip_reason="no data")
    assert plans.wall_estimate([a, done, skipped], c, n_jobs=2) == pytest.approx(40 / 2 + 5)


def test_unknown_experiment_is_refused():
    with pytest.raises(SparsepropError, match="e9"):
        reproduce.main(["--only", "e2_init,e9", "--dry-run"])


@pytest.mark.parametrize("args,named", [
    (["--only", ","], "--only ','"),
    (["--only", ""], "--only ''"),
    (["--outputs", ""], "--outputs"),
    (["--jobs", "abc"], "--jobs"),
    (["--profile", "nope"], "--profile"),
    (["extra"], "unrecognized arguments: extra"),
    (["--figures-only", "--dry-run"], "--dry-run cannot be used with --figures-only"),
    (["--figures-only", "--only", "e1_masks", "--jobs", "2"], "--only, --jobs cannot"),
    (["--figures-only", "--outputs", "no_such_folder"], "holds no experiments of profile quick"),
])
def test_meaningless_options_are_refused_in_one_line(args, named):
    with pytest.raises(SparsepropError) as info:
        reproduce.main(args)
    assert named in str(info.value) and "\n" not in str(info.value)


def fake_run(root, name, overrides, summary, complete=True):
    """A run directory as `sparseprop train` leaves it: Hydra's saved config, summary, records and the marker."""
    run = root / name
    (run / ".hydra").mkdir(parents=True)
    OmegaConf.save(plans.compose(overrides), run / ".hydra" / "config.yaml")
    records.write_json(run / "summary.json", summary)
    records.write_csv(run / "layers.csv", [{"index": 0, "name": "layers.0.weight", "kind": "weight", "kept_fraction": 0.5}])
    records.write_csv(run / "metrics.csv", [{"step": 10, "split": "train", "name": "loss", "value": 1.5}])
    if complete:
        records.mark_complete(run)
    return run


def test_gather_collects_status_config_and_every_summary_scalar(tmp_path):
    sweep = tmp_path / "sweep"
    fake_run(sweep, "a", ["experiment=e6_transfer", "prune.dataset=fashion_mnist", "arch.depth=3"],
             {"status": "completed", "best_val_test_error_pct": 2.5, "jsv_init_mean": "nan", "warnings": ["w"],
              "versions": {"torch": "x"}})
    fake_run(sweep, "b", ["experiment=e6_transfer", "seed=1"], {"status": "running", "step": 300}, complete=False)
    fake_run(sweep, "c", ["experiment=e6_transfer", "seed=2"], {"status": "failed", "reason": "boom"}, complete=False)
    fake_run(sweep, "d", ["experiment=e6_transfer", "seed=3"], {"status": "completed"}, complete=False)
    runs = gather.gather(sweep, tmp_path / "out")
    a = runs.set_index("run").loc["a"]
    assert (a.status, a.dataset, a.prune_dataset, a.depth, a.init) == ("completed", "mnist", "fashion_mnist", 3, "orthogonal")
    assert a.best_val_test_error_pct == 2.5 and math.isnan(a.jsv_init_mean)
    assert runs.set_index("run").status.to_dict() == {"a": "completed", "b": "partial", "c": "failed", "d": "partial"}
    assert runs.set_index("run").loc["b"].prune_dataset == "mnist"  # in-domain: scored on the training dataset
    loaded = gather.load(tmp_path / "out")
    assert len(loaded["runs"]) == 4 and set(loaded["layers"].run) == {"a", "b", "c", "d"}
    assert loaded["metrics"].value.tolist() == [1.5] * 4 and loaded["masks"] == {}


def test_draw_writes_figures_tables_and_the_report_from_collected_results(tmp_path):
    results = synthetic.results()
    for name in ("e5_supervision",):
        records.write_csv(plans.collected_dir(tmp_path, "quick", name) / gather.RUNS, results[name]["runs"])
    status = {"profile": "quick", "description": "d", "experiments": {"e6_transfer": {"skipped": "no Fashion-MNIST"}}}
    table = draw.draw(tmp_path, "quick", status, catalog.load())
    text = (tmp_path / "REPRODUCTION.md").read_text()
    assert table in text
    assert "| C5 | uniform targets 1/C | **holds** |" in text
    assert "| C6 | Fashion-MNIST mask on MNIST | **skipped** |" in text and "no Fashion-MNIST" in text
    assert "| C4 | linear | **skipped** |" in text and "e3_jsv: not drawn: no completed runs of e3_isometry" in text
    assert (tmp_path / "figures" / "e5_supervision.pdf").is_file() and (tmp_path / "tables" / "e5_supervision.md").is_file()
    assert not (tmp_path / "figures" / "e3_jsv.png").exists()


# A miniature of E3 on scikit-learn's digits: 4 runs, tens of steps, through sweep, gather, figures and verdicts.
MINI = Profile("mini", "miniature for tests")
MINI_OVERRIDES = [
    "dataset=digits", "arch.width=16", "activation=tanh", "init=orthogonal", "seed=0,1", "train.iterations=40",
    "train.eval_interval=20", "train.log_interval=10", "train.checkpoint_interval=20", "isometry.steps=30",
    "signal.examples=64", "signal.layer_examples=16"]


@pytest.mark.slow
def test_miniature_through_sweep_gather_figures_and_verdicts(tmp_path):
    plan = plans.make_plan(experiment.get("e3_isometry"), MINI, tmp_path, MINI_OVERRIDES)
    assert len(plan.todo) == 4  # isometry none/ai x two seeds

    class Bar:
        n = 0

        def update(self, k):
            self.n += k

    bar = Bar()
    code, error = reproduce.run_sweep(plan, 2, bar)
    assert (code, error) == (0, "") and bar.n == 4
    # The plan predicted Hydra's job directories: a second plan finds every job complete (a rerun skips them).
    assert plans.make_plan(experiment.get("e3_isometry"), MINI, tmp_path, MINI_OVERRIDES).todo == []
    runs = gather.gather(plan.sweep_dir, plan.collected_dir)
    assert set(runs.status) == {"completed"} and len(runs) == 4
    ai = runs[runs.isometry == "ai"]
    assert ai.jsv_isometry_mean.notna().all() and runs[runs.isometry == "none"].jsv_pruned_mean.notna().all()
    status = {"profile": "mini", "description": "miniature", "experiments": {"e3_isometry": reproduce.outcome(runs)}}
    draw.draw(tmp_path, "mini", status, catalog.load())
    for stem in ("e3_jsv", "e3_training"):
        assert (tmp_path / "figures" / f"{stem}.png").is_file() and (tmp_path / "figures" / f"{stem}.pdf").is_file()
    table = pd.read_csv(tmp_path / "tables" / "e3_isometry.csv")
    assert table.method.tolist() == ["LDI", "LDI-AI"] and table.n.tolist() == [2, 2]
    text = (tmp_path / "REPRODUCTION.md").read_text()
    assert "### C4, tanh:" in text and "| e3_isometry | 4 | 4 | 0 | 0 | 0 |" in text
    assert json.loads(json.dumps(status))  # the status is plain JSON, as the pipeline stores it


def test_missing_fashion_mnist_skips_e6_with_the_reason(monkeypatch):
    from sparseprop import data
    from sparseprop.errors import DataError

    def check_available(name, root, download=True):
        if name == "fashion_mnist":
            raise DataError("dataset=fashion_mnist: files not found")

    monkeypatch.setattr(data, "check_available", check_available)
    assert reproduce.data_problem(experiment.get("e6_transfer")) == "dataset=fashion_mnist: files not found"
    assert reproduce.data_problem(experiment.get("e2_init")) == ""


def test_outcome_counts_statuses_and_jobs_that_never_started():
    runs = pd.DataFrame({"run": ["a", "b", "c"], "status": ["completed", "diverged", "failed"],
                         "reason": ["", "loss nan", "boom"]})
    out = reproduce.outcome(runs, ["a", "b", "c", "d"])
    assert out["counts"] == {"completed": 1, "diverged": 1, "failed": 1, "missing": 1}
    assert [(p["run"], p["status"]) for p in out["problems"]] == [("b", "diverged"), ("c", "failed"), ("d", "missing")]
    assert reproduce.outcome(pd.DataFrame(), ["x"])["counts"] == {"missing": 1}
