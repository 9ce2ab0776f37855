"""The plan of a reproduction: each experiment's sweep under a profile expanded into jobs, which are done, and the estimate."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sparseprop import records
from sparseprop.paper.costs import COST_KEYS, Costs, run_cost
from sparseprop.paper.experiment import Experiment
from sparseprop.paper.profiles import Profile
from sparseprop.sweeps import jobs

OUTPUTS = Path("outputs")


@dataclass
class Job:
    """One run of a sweep: its overrides, its directory name, whether it is done, and its estimated cost."""

    overrides: list[str]
    dirname: str
    done: bool = False
    cost_s: float = 0.0


@dataclass
class Plan:
    """One experiment under one profile: where its sweep lives and the jobs it stands for."""

    experiment: str
    profile: str
    overrides: list[str]
    sweep_dir: Path
    collected_dir: Path
    jobs: list[Job] = field(default_factory=list)
    skip_reason: str = ""
    # Keys left out of job directory names: conf/train.yaml's runtime keys, plus the experiment and the
    # profile's fixed settings, which are the same for every job of this sweep directory.
    exclude: list[str] = field(default_factory=list)

    @property
    def todo(self) -> list[Job]:
        """Jobs not finished yet."""
        return [j for j in self.jobs if not j.done]


def experiment_dir(root: Path, profile: str, experiment: str) -> Path:
    """The fixed sweep directory of ``experiment`` under ``profile`` (fixed, so a second call resumes)."""
    return root / "experiments" / profile / experiment


def collected_dir(root: Path, profile: str, experiment: str) -> Path:
    """Where the gathered tables of ``experiment`` under ``profile`` go."""
    return root / "collected" / profile / experiment


def compose(overrides: list[str], hydra: bool = False) -> Any:
    """One job's config, composed from its overrides."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from sparseprop.config import CONF_DIR

    from sparseprop.runner import checks

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name="reproduce"):
        # As a sweep's job sees it: a profile's setting for some of an experiment's options (isometry.steps
        # with isometry=none,ai) is added to every job and dropped by those whose option lacks it.
        cfg = hydra_compose(config_name="train", overrides=checks.force_group_settings(overrides),
                            return_hydra_config=hydra)
    checks.drop_foreign_settings(cfg)
    return cfg


def make_plan(exp: Experiment, profile: Profile, root: Path = OUTPUTS, overrides: list[str] | None = None) -> Plan:
    """The jobs of ``exp`` under ``profile`` (or with ``overrides`` in place of the profile's), with which are complete."""
    overrides = [f"experiment={exp.id}", *(exp.profiles.get(profile.name, []) if overrides is None else overrides)]
    plan = Plan(exp.id, profile.name, overrides, experiment_dir(root, profile.name, exp.id),
                collected_dir(root, profile.name, exp.id))
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    parsed = OverridesParser.create().parse_overrides(overrides)
    fixed = [o for o in parsed if not o.is_sweep_override()]
    hcfg = compose([o.input_line for o in fixed], hydra=True).hydra
    params = OmegaConf.to_container(hcfg.sweeper.params) or {}
    plan.exclude = [*hcfg.job.config.override_dirname.exclude_keys, *(o.key_or_group for o in fixed)]
    for job in jobs.expand([*(f"{k}={v}" for k, v in params.items()), *overrides]):
        name = jobs.job_dirname(job, plan.exclude)
        plan.jobs.append(Job(job, name, records.is_complete(plan.sweep_dir / name)))
    return plan


def estimate(plan: Plan, costs: Costs) -> None:
    """Fill in every job's estimated cost (composing one config per distinct cost-relevant setting)."""
    cache: dict[tuple[str, ...], float] = {}
    for job in plan.jobs:
        key = tuple(o for o in job.overrides if o.partition("=")[0] in (*COST_KEYS, "experiment"))
        if key not in cache:
            cache[key] = run_cost(compose(list(key)), costs)
        job.cost_s = cache[key]


def wall_estimate(plans: list[Plan], costs: Costs, n_jobs: int) -> float:
    """Seconds to finish every plan's remaining jobs with ``n_jobs`` in parallel."""
    return sum(sum(j.cost_s for j in p.todo) / n_jobs + (costs.per_sweep if p.todo else 0) for p in plans if not p.skip_reason)


def minutes(seconds: float) -> str:
    """``seconds`` as a short human duration."""
    if seconds >= 2 * 86_400:
        return f"{seconds / 86_400:.1f} days"
    if seconds >= 2 * 3_600:
        return f"{seconds / 3_600:.1f} h"
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def print_plan(plans: list[Plan], profile: Profile, costs: Costs, n_jobs: int) -> None:
    """Print what will run, with each experiment's overrides under the profile, and how long it should take."""
    print(f"sparseprop reproduce: profile '{profile.name}' - {profile.description}")
    print(f"  measured here (1 thread): training step {costs.train_step * 1e3:.1f} ms, SNIP batch "
          f"{costs.snip_batch * 1e3:.1f} ms, AI step {costs.ai_step * 1e3:.1f} ms, JSV {costs.io_example * 1e3:.2f} ms "
          f"per example (input-output), {costs.layer_example * 1e3:.2f} ms (layerwise)")
    for p in plans:
        todo = p.todo
        if p.skip_reason:
            print(f"  {p.experiment:<15} skipped: {p.skip_reason}")
            if not any(j.cost_s for j in p.jobs):
                continue
        print(f"  {p.experiment:<15} {len(p.jobs):>4} runs, {len(p.jobs) - len(todo):>4} already complete, "
              f"about {minutes(sum(j.cost_s for j in todo) / n_jobs)}{' (not in the total)' if p.skip_reason else ''}"
              f"  -> {p.sweep_dir}")
        print(f"  {'':<15} {' '.join(p.overrides)}")
    print(f"  estimated time: {minutes(wall_estimate(plans, costs, n_jobs))} with {n_jobs} parallel jobs "
          "(longer if other processes share the cores)")
