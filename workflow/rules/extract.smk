# Extraction stage: per run, one job per kind (weights, features, gradients) -> zarr stores.


rule extract:
    input:
        checkpoints=f"{RUN_DIR}/checkpoints",
        store=DATASET_STORE,
    output:
        store=directory(f"{RUN_DIR}/{{kind}}.zarr"),
    params:
        settings=extract_settings_json,
        env=MALLOC_ENV,
    conda:
        ENVIRONMENT
    log:
        f"{LOGS}/extract/{{variant}}/{{init}}/seed{{seed}}.{{kind}}.log",
    threads: 2
    resources:
        mem_mb=6000,
        runtime=120,
        torch_threads=2,
    shell:
        "{params.env} python -m dnndist extract {wildcards.kind} --settings {params.settings:q} "
        "--checkpoints {input.checkpoints:q} --data {input.store:q} --out {output.store:q} "
        "--threads {resources.torch_threads} > {log:q} 2>&1"
