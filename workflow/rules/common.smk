# Helpers shared by all stages -- paths, the grid of runs, per-run parameters.
import functools
import json

from dnndist import config as dcfg
from dnndist import outputs
from dnndist import reporting
from dnndist import runcache
from dnndist.provenance import config_hash
from dnndist.settings import RunSettings

reporting.register()  # the report's front page embeds its headline figures (../report/workflow.rst)

RESULTS = config["results"]
RESOURCES = config["resources"]
LOGS = f"{RESULTS}/logs"
RUNS = dcfg.runs(config)
ENVIRONMENT = "../../environment.yml"  # the project environment, relative to the stage files
DATASET_STORE = f"{RESULTS}/data/dataset.zarr"
RUN_DIR = f"{RESULTS}/runs/{{variant}}/{{init}}/seed{{seed}}"
EXTRACT_KINDS = ["weights", "features", "gradients"]
# the statistics, figures and tables are declared in dnndist.outputs (src/dnndist/outputs.py)
STATS_TABLES = outputs.summary_tables()  # combined and aggregated over seeds
RUN_TABLES = outputs.run_tables()  # per run
CONCAT_TABLES = outputs.concat_tables()  # combined without seed aggregation
STYLE = workflow.source_path("../style/dnndist.mplstyle")  # shared figure style, next to the workflow
VARIANTS = list(dict.fromkeys(r.variant for r in RUNS))


@functools.cache
def settings_of(run):
    """A run's resolved settings (dnndist.config.run_settings), worked out once per run."""
    return dcfg.run_settings(config, run)


def typed_run_settings(run):
    """A run's resolved settings, typed (dnndist.settings); the params JSON stays the dict."""
    return RunSettings.from_dict(settings_of(run))


# given weights (model.weights) are analysed at one checkpoint ("epoch 0"), not trained
TRAINED = any(typed_run_settings(r).given_weights is None for r in RUNS)
# figures and tables made for this experiment: curves over epochs only when something is trained,
# the factors table only with variants (each output's `when` in dnndist.outputs)
STAGES = bool(config["stats"]["claims_at"])  # claims also decided at stages of training (claims_stages)
FIGURES = [f.name for f in outputs.figures(TRAINED, len(VARIANTS), STAGES)]
TABLES = [t.name for t in outputs.tables(TRAINED, len(VARIANTS), STAGES)]  # in the reproduction document's order
OWN_OPTIONS = [f for f in FIGURES if outputs.FIGURE[f].options]  # figures with settings of their own (Fig 4)
# glibc malloc gives memory back to the OS on every large free, which costs 35-60 %
# of CPU training throughput (../shared/perf-notes.md); these settings keep it.
MALLOC_ENV = "MALLOC_MMAP_THRESHOLD_=1073741824 MALLOC_TRIM_THRESHOLD_=4294967296"


@functools.cache
def code(*modules):
    """The dnndist modules a rule's outputs depend on, as a param: a digest of their content
    (``resources.code_digest``). Editing plots.py reruns only the figures, editing stats.py the
    statistics and what is drawn from them (training and extraction do not depend on them);
    touching a file or reverting an edit reruns nothing."""
    from dnndist import resources

    return resources.code_digest(*modules)


TRAIN_CODE = code("train")  # training's code, a param of every training job (and part of a cache key)
# stacked: runs train into a cache entry keyed by their settings and TRAIN_CODE, and each run's
# folder is restored from its entry (dnndist.runcache); stacks are formed from the runs whose entry
# is not complete, so no run's bytes depend on which other runs train, or train again.
CACHE = f"{RESULTS}/cache/train"
RUN_KEYS = {r: runcache.run_key(settings_of(r), TRAIN_CODE) for r in RUNS} if config["stacked"] else {}


def cache_entry(run):
    return f"{CACHE}/{RUN_KEYS[run]}"


STACK_GROUPS = dcfg.stack_groups(config, [r for r in RUN_KEYS if not runcache.is_complete(cache_entry(r))], settings_of)


def entry_paths(runs, name):
    """One path per run: ``name`` in the run's cache entry."""
    return [f"{cache_entry(r)}/{name}" for r in runs]


def group_log(group):
    """A stack group's log, named after its runs' entries too: a later group of the same name (other
    runs needing training) does not overwrite it."""
    return f"{LOGS}/train/stacked/{group.name}-{config_hash(entry_paths(group.runs, ''))[:8]}.log"


def cached_run(wildcards):
    """A run's cache entry (its summary.json), which its folder is restored from (stacked: true)."""
    return f"{cache_entry(run_of(wildcards))}/summary.json"


def expand_runs(pattern, kinds=(None,)):
    """One path per run of the experiment (variant x init x seed), and per kind if given."""
    return [pattern.format(variant=r.variant, init=r.init, seed=r.seed, kind=k) for r in RUNS for k in kinds]


def run_of(wildcards):
    return dcfg.Run(wildcards.variant, wildcards.init, int(wildcards.seed))


def run_paths(runs, pattern):
    """One path per run."""
    return [pattern.format(variant=r.variant, init=r.init, seed=r.seed) for r in runs]


STATS_MAX = 70  # runs per statistics job (see stats_jobs)


def stats_jobs():
    """(name, runs) of each statistics job: a variant's runs in chunks of at most STATS_MAX, named
    after the variant (and the chunk's number when there are several). The cap keeps planning
    linear: Snakemake matches a requested file against every output of the rule that may make
    it, and one job for all of a variant's runs has 8 outputs per run."""
    by_variant = {}
    for r in RUNS:
        by_variant.setdefault(r.variant, []).append(r)
    jobs = []
    for variant, runs in by_variant.items():
        chunks = [runs[i : i + STATS_MAX] for i in range(0, len(runs), STATS_MAX)]
        for i, chunk in enumerate(chunks, 1):
            jobs.append((variant if len(chunks) == 1 else f"{variant}-{i}", chunk))
    return jobs


def rule_name(prefix, name):
    """The name of the rule made for a stack group or a variant (letters, digits and underscores)."""
    return f"{prefix}_{name}".replace("-", "_").replace(".", "_").replace("+", "_")


def profile_resources(rule, res):
    """A rule's resources ``res``, then what the profile or the command line sets for ``rule``
    (`set-resources: train: gpu: 1`): Snakemake applies set-resources by rule name, and the
    rules made per stack group or variant are named after their group or variant."""
    over = workflow.resource_settings.overwrite_resources.get(rule, {})
    return {**res, **dict(over.unwrapped_items() if hasattr(over, "unwrapped_items") else over.items())}


def group_settings_json(group):
    """The settings of every run of a stack group, for its job's command line (a group is made
    of runs that need training: its runs' keys, not its params, say when a run changed)."""
    return json.dumps([settings_of(r) for r in group.runs], sort_keys=True)


def stacked_resources(group):
    """A stack group's resources: its runs' memory and time, then what the profile or the
    command line sets for `train` (profile_resources)."""
    res = {"mem_mb": 4000 + 500 * len(group.runs), "runtime": 240 * len(group.runs), "torch_threads": 2}
    return profile_resources("train", res)


def extract_threads():
    """The cores Snakemake counts for an extract job: 2 (as many side by side as the lease's cost
    model says: half the cores), or 1 where it would otherwise run one job at a time (--cores 2 or
    3), so that two run side by side (most of a demo job is imports and zarr writes, serial).
    torch runs 1 thread either way (resources.torch_threads): its thread count changes the
    features' and gradients' last bits, so a count that followed --cores would make the stores
    depend on it, and 2 threads in each of two jobs on 2 cores spin against each other."""
    cores = getattr(workflow.global_resources.get("_cores"), "value", None)
    return 1 if cores is not None and cores < 4 else 2


def stats_threads(runs):
    """A statistics job: a process per run, at most 8 (Snakemake scales it down to the cores it has)."""
    return min(8, len(runs))


def stats_resources(runs):
    """A statistics job: the memory of one run per process (each computes its runs one after
    another, weight statistics in bounded batches) and 5 minutes a run (about 30 s for 51
    checkpoints of the paper CNN on a CPU core), then what the profile or the command line sets
    for `stats_runs`."""
    mem = 4000 + 1000 * (stats_threads(runs) - 1)
    return profile_resources("stats_runs", {"mem_mb": mem, "runtime": 30 + 5 * len(runs)})


def given_weights(run):
    """The local state dict a run analyses instead of training (model.weights), if any."""
    weights = settings_of(run)["model"].get("weights")
    return [weights] if weights else []


def run_weights(wildcards):
    return given_weights(run_of(wildcards))


@functools.cache
def extract_settings_of(run):
    """A run's settings plus the extract section: editing extraction reruns only extraction."""
    return dcfg.extract_settings(config, run)


def run_settings_json(wildcards, input):
    """A run's settings for the job's command line. A param that takes `input` is one Snakemake
    does not compare (it counts as derived from the inputs): settings_param is the one it does."""
    return json.dumps(settings_of(run_of(wildcards)), sort_keys=True)


def extract_settings_json(wildcards, input):
    """A run's extract settings for the job's command line (not compared, as run_settings_json)."""
    return json.dumps(extract_settings_of(run_of(wildcards)), sort_keys=True)


DEFAULT_SETTINGS = dcfg.default_settings()  # the schema's defaults, which settings_param leaves out


def settings_param(settings_fn):
    """A run's settings (``settings_fn(run)``) as the param Snakemake compares: one line, their
    digest and what differs from the defaults (``dnndist.config.settings_line``)."""

    def param(wildcards):
        return dcfg.settings_line(settings_fn(run_of(wildcards)), DEFAULT_SETTINGS)

    return param


def stats_settings_json(wildcards):
    return json.dumps({"stats": config["stats"]}, sort_keys=True)


def stats_inputs(wildcards):
    """Per-run tables behind one combined table (training reads the runs' metrics)."""
    if wildcards.table == "training":
        return expand_runs(f"{RUN_DIR}/metrics.csv")
    return expand_runs(f"{RUN_DIR}/stats/{wildcards.table}.csv")


def emission_options():
    """Fig 4's own options (plots.emission_init, plots.emission_layers), as shown in the report."""
    import shlex

    layers = " ".join(shlex.quote(name) for name in config["plots"]["emission_layers"])
    return f"--init {shlex.quote(config['plots']['emission_init'])}" + (f" --layers {layers}" if layers else "")


def figure_table(wildcards):
    return f"{RESULTS}/stats/{outputs.FIGURE[wildcards.figure].table}.csv"


def figure_labels(wildcards):
    figure = outputs.FIGURE[wildcards.figure]
    return {"figure": figure.number, "shows": figure.shows}


def table_labels(wildcards):
    return {"table": wildcards.name, "shows": outputs.TABLE[wildcards.name].shows}


def table_inputs(wildcards):
    return {name: f"{RESULTS}/stats/{name}.csv" for name in outputs.TABLE[wildcards.name].inputs}


def variant_settings_json():
    """Each variant's swept settings (model, train, input of its first run), for the factor table."""
    first = {}
    for r in RUNS:
        first.setdefault(r.variant, r)
    return json.dumps(
        {v: {sec: settings_of(r)[sec] for sec in ("model", "train", "input")} for v, r in first.items()},
        sort_keys=True,
    )


def gain_conventions_json():
    """Each variant's gain convention (init.gain of its first run), named in captions."""
    first = {}
    for r in RUNS:
        first.setdefault(r.variant, r)
    return json.dumps({v: typed_run_settings(r).init_scheme.gain for v, r in first.items()})


def table_args(wildcards, input):
    import shlex

    args = " ".join(f"--{name.replace('_', '-')} {path}" for name, path in input.items() if name != "code")
    args += f" --gain-conventions {shlex.quote(gain_conventions_json())}"
    if "variants" in outputs.TABLE[wildcards.name].extra:
        args += f" --variants {shlex.quote(variant_settings_json())}"
    if "stages" in outputs.TABLE[wildcards.name].extra:
        args += f" --stages {shlex.quote(json.dumps(config['stats']['claims_at']))}"
    return args


def run_dir(wildcards):
    return RUN_DIR.format(**wildcards)


def data_settings_json(wildcards):
    return json.dumps(dcfg.data_settings(config), sort_keys=True)


def dataset_inputs(wildcards):
    source = config["data"]["source"]
    if source == "cifar10":
        return {"archive": rules.download_cifar10.output.archive}
    if source == "imagefolder":
        return {"folder": config["data"]["imagefolder"]["path"]}
    return {}


def archive_arg(wildcards, input):
    return f"--archive {input.archive}" if "archive" in input.keys() else ""
