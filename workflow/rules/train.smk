# Training stage: one job per run (variant, init, seed); resumes if killed.


rule train:
    input:
        store=DATASET_STORE,
    output:
        checkpoints=directory(f"{RUN_DIR}/checkpoints"),
        metrics=f"{RUN_DIR}/metrics.csv",
        summary=f"{RUN_DIR}/summary.json",
    params:
        settings=run_settings_json,
        run_dir=run_dir,
        env=MALLOC_ENV,
    conda:
        ENVIRONMENT
    log:
        f"{LOGS}/train/{{variant}}/{{init}}/seed{{seed}}.log",
    threads: 2
    resources:
        mem_mb=4000,
        runtime=240,
        # intra-op threads of torch, fixed so that weights are bitwise identical whatever
        # --cores is (CPU kernels reduce in a thread-count-dependent order)
        torch_threads=2,
    shell:
        "{params.env} python -m dnndist train --settings {params.settings:q} "
        "--data {input.store:q} --out {params.run_dir:q} --threads {resources.torch_threads} --no-progress "
        "> {log:q} 2>&1"
