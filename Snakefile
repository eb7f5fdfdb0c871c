# dnndist: distributions of weights, features and gradients in deep networks.
#   snakemake --cores all                                  # the paper's experiment (config.yaml)
#   snakemake --cores all --configfile presets/demo.yaml   # the demo on embedded synthetic data
import sys

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version

from dnndist.config import ConfigError, load_schema, read_config_file, validate
from dnndist.preflight import (
    check_job_python,
    claim_results_dir,
    report_without_results,
    unused_settings,
)
from dnndist.results_lock import ResultsInUse, lock_results_dir

min_version("9.0")


configfile: "config.yaml"


report: "workflow/report/workflow.rst"


# Schema validation (types, ranges, enums, defaults) plus semantic checks; a bad
# config stops here, before any job, with the offending key in the message.
# Every config file is also read strictly (a key given twice is refused: Snakemake keeps the last).
try:
    for _path in workflow.configfiles:
        read_config_file(_path)
    _validated = validate(config, load_schema(workflow.source_path("workflow/schemas/config.schema.yaml")))
except ConfigError as exc:
    raise WorkflowError(f"invalid configuration: {exc}") from None
config.clear()
config.update(_validated)
for _line in unused_settings(config):  # set, but idle: said by name
    print(f"dnndist: warning: {_line}", file=sys.stderr)
if _error := report_without_results(sys.argv, config["results"]):
    raise WorkflowError(_error)


onstart:
    # pre-flight: jobs run `python -m dnndist`; stop before any job if that python cannot
    # import it (e.g. .venv/bin/snakemake called without the venv on PATH)
    if "conda" not in str(workflow.deployment_settings.deployment_method):
        try:
            check_job_python()
        except ConfigError as exc:
            raise WorkflowError(str(exc)) from None
    claim_results_dir(config["results"])  # later runs may reuse a folder dnndist marked
    try:  # one writer per results folder, until this Snakemake exits (dnndist.results_lock)
        lock_results_dir(config["results"])
    except ResultsInUse as exc:
        raise WorkflowError(str(exc)) from None


include: "workflow/rules/common.smk"


wildcard_constraints:
    variant=r"[a-z0-9][a-z0-9_.+-]*",
    init=r"[a-z_]+",
    seed=r"\d+",
    table="|".join(STATS_TABLES),
    plain="|".join(CONCAT_TABLES),
    figure="|".join(FIGURES),
    name="|".join(TABLES),


include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/extract.smk"
include: "workflow/rules/stats.smk"
include: "workflow/rules/plots.smk"
include: "workflow/rules/docs.smk"
include: "workflow/rules/tensorboard.smk"


# on a cluster, these run where Snakemake runs (compute nodes often have no internet)
localrules:
    all,
    download_cifar10,


rule all:
    default_target: True
    input:
        store=DATASET_STORE,
        summaries=expand_runs(f"{RUN_DIR}/summary.json"),
        extracted=expand_runs(f"{RUN_DIR}/{{kind}}.zarr", EXTRACT_KINDS),
        run_stats=expand_runs(f"{RUN_DIR}/stats/{{kind}}.csv", RUN_TABLES),  # rebuilt if lost (a kill)
        stats=expand(f"{RESULTS}/stats/{{table}}_summary.csv", table=STATS_TABLES),
        concatenated=expand(f"{RESULTS}/stats/{{plain}}.csv", plain=CONCAT_TABLES),
        figures=expand(f"{RESULTS}/figures/{{figure}}.{{ext}}", figure=FIGURES, ext=["pdf", "png"]),
        tables=expand(f"{RESULTS}/tables/{{name}}.{{ext}}", name=TABLES, ext=["csv", "md", "tex", "html"]),
        tensorboard=expand_runs(TENSORBOARD_RUN) if config["tensorboard"] else [],
