# Extraction stage: one job per run (one process: the interpreter, torch and the data are loaded
# once) writes the weights, features and gradients zarr stores, stacked or not: a run's stores
# depend on its checkpoints and its own settings only, so a change to one run re-extracts that run.
from dnndist.io import STORE_LAYOUT


rule extract:
    input:
        checkpoints=f"{RUN_DIR}/checkpoints",
        store=DATASET_STORE,
    output:
        weights=directory(f"{RUN_DIR}/weights.zarr"),
        features=directory(f"{RUN_DIR}/features.zarr"),
        gradients=directory(f"{RUN_DIR}/gradients.zarr"),
    log:
        f"{LOGS}/extract/{{variant}}/{{init}}/seed{{seed}}.log",
    conda:
        ENVIRONMENT
    threads: extract_threads()
    resources:
        mem_mb=6000,
        runtime=240,
        torch_threads=1,  # fixed whatever the job's threads: the stores' bits do not depend on --cores
    params:
        settings=extract_settings_json,
        code=code("extract"),
        layout=STORE_LAYOUT,  # a new store layout re-extracts (dnndist.io.STORE_LAYOUT)
        run_dir=run_dir,
        env=MALLOC_ENV,
        compared=settings_param(extract_settings_of),  # what Snakemake compares (extract_settings_json)
    shell:
        "{params.env} python -m dnndist extract all --settings {params.settings:q} "
        "--checkpoints {input.checkpoints:q} --data {input.store:q} --out {params.run_dir:q} "
        "--threads {resources.torch_threads} > {log:q} 2>&1"
