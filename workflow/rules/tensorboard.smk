# TensorBoard export (config key tensorboard, default off): per run, the stores' histograms
# as TensorBoard events, one step per checkpoint epoch (dnndist.tensorboard).
from pathlib import Path

TENSORBOARD_DIR = f"{RESULTS}/tensorboard"
TENSORBOARD_RUN = f"{TENSORBOARD_DIR}/{{variant}}/{{init}}/seed{{seed}}"


rule tensorboard:
    input:
        weights=f"{RUN_DIR}/weights.zarr",
        features=f"{RUN_DIR}/features.zarr",
        gradients=f"{RUN_DIR}/gradients.zarr",
    output:
        directory(TENSORBOARD_RUN),
    log:
        f"{LOGS}/tensorboard/{{variant}}/{{init}}/seed{{seed}}.log",
    conda:
        ENVIRONMENT
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        code=code("tensorboard"),
        run_dir=run_dir,
        logdir=lambda wildcards, output: str(Path(output[0]).parents[2]),  # OUT of OUT/<variant>/<init>/seed<seed>
    shell:
        "python -m dnndist tensorboard --run {params.run_dir:q} --out {params.logdir:q} > {log:q} 2>&1"
