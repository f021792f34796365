"""`bench run`'s executor flags and how they override a suite's ``executor`` section."""
from __future__ import annotations

EXECUTOR_KINDS = ("inprocess", "pool", "slurm")


def add_executor_arguments(p) -> None:
    """The `bench run` flags that choose and size the executor (they override the suite's
    ``executor`` section; ``--set executor.slurm.KEY=VALUE`` reaches every other setting)."""
    g = p.add_argument_group("where the runs execute (README: Running on a cluster)")
    g.add_argument("--executor", choices=EXECUTOR_KINDS,
                   help="inprocess (default), pool (local worker processes) or slurm (one job array)")
    g.add_argument("--workers", type=int, help="pool: number of worker processes (> 1 implies --executor pool)")
    g.add_argument("--partition", help="slurm: partition")
    g.add_argument("--gpus-per-job", type=int, help="slurm: GPUs per job (one run per job)")
    g.add_argument("--cpus-per-job", type=int, help="slurm: CPUs per job")
    g.add_argument("--mem-gb", type=float, help="slurm: memory per job, GB")
    g.add_argument("--time-limit", type=int, metavar="MINUTES",
                   help="slurm: job time limit; a longer run checkpoints, requeues and resumes")
    g.add_argument("--array-parallelism", type=int, metavar="N", help="slurm: at most N jobs of the array at once")
    g.add_argument("--sbatch", action="append", default=[], metavar="KEY=VALUE",
                   help="slurm: extra #SBATCH option, e.g. --sbatch account=proj --sbatch qos=high (repeatable)")
    g.add_argument("--slurm-setup", action="append", default=[], metavar="LINE",
                   help="slurm: shell line run before each job, e.g. 'source ~/venv/bin/activate' (repeatable)")
    g.add_argument("--no-wait", action="store_true",
                   help="slurm: submit and return at once; follow with `bench status --runs OUT`")


def executor_from_args(config, args):
    """``config`` (the suite's executor section) with the `bench run` flags applied."""
    import dataclasses

    from bench.core.errors import BenchError
    from bench.core.typed import parse_override

    def given(name):
        return getattr(args, name, None)

    slurm = config.slurm
    changes = {"partition": given("partition"), "gpus_per_job": given("gpus_per_job"),
               "cpus_per_job": given("cpus_per_job"), "mem_gb": given("mem_gb"),
               "time_min": given("time_limit"), "array_parallelism": given("array_parallelism")}
    changes = {k: v for k, v in changes.items() if v is not None}
    extra = dict(slurm.sbatch)
    for text in given("sbatch") or []:
        key, value = parse_override(text)
        extra[key.lstrip("-")] = value
    changes["sbatch"] = extra
    if given("slurm_setup"):
        changes["setup"] = tuple(slurm.setup) + tuple(given("slurm_setup"))
    kind, workers = config.kind, config.workers
    if given("workers") is not None:
        workers = given("workers")
        if given("executor") is None and workers > 1 and kind == "inprocess":
            kind = "pool"
    if given("executor") is not None:
        kind = given("executor")
    try:
        return dataclasses.replace(config, kind=kind, workers=workers, slurm=dataclasses.replace(slurm, **changes))
    except ValueError as exc:
        raise BenchError(str(exc)) from None
