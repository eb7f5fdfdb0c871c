# Training stage: one job per run (variant, init, seed), or with `stacked: true` one job
# per stack group (up to stack_max runs of a variant, inits and seeds alike, trained as one
# wide model). One training loop either way (a run alone is a stack of one): the same
# per-run outputs, resumed if killed.


if not config["stacked"]:

    rule train:
        input:
            store=DATASET_STORE,
            weights=run_weights,  # given weights (experiment 2): a changed file reruns the run
        output:
            checkpoints=directory(f"{RUN_DIR}/checkpoints"),
            metrics=f"{RUN_DIR}/metrics.csv",
            summary=f"{RUN_DIR}/summary.json",
        log:
            f"{LOGS}/train/{{variant}}/{{init}}/seed{{seed}}.log",
        conda:
            ENVIRONMENT
        threads: 2
        resources:
            mem_mb=4000,
            runtime=240,
            # intra-op threads of torch, fixed so that weights are bitwise identical whatever
            # --cores is (CPU kernels reduce in a thread-count-dependent order)
            torch_threads=2,
        params:
            settings=run_settings_json,
            run_dir=run_dir,
            env=MALLOC_ENV,
        shell:
            "{params.env} python -m dnndist train --settings {params.settings:q} "
            "--data {input.store:q} --out {params.run_dir:q} --threads {resources.torch_threads} --no-progress "
            "> {log:q} 2>&1"

else:

    for group in STACK_GROUPS:

        rule:
            name:
                rule_name("train_stacked", group.name)
            input:
                store=DATASET_STORE,
            output:
                checkpoints=[directory(p) for p in group_paths(group, f"{RUN_DIR}/checkpoints")],
                metrics=group_paths(group, f"{RUN_DIR}/metrics.csv"),
                summary=group_paths(group, f"{RUN_DIR}/summary.json"),
            log:
                f"{LOGS}/train/stacked/{group.name}.log",
            conda:
                ENVIRONMENT
            threads: 2
            resources:
                **stacked_resources(group),
            params:
                settings=group_settings_json(group),
                run_dirs=group_paths(group, RUN_DIR),
                env=MALLOC_ENV,
            shell:
                "{params.env} python -m dnndist train-stacked --settings {params.settings:q} "
                "--data {input.store:q} --out {params.run_dirs:q} --threads {resources.torch_threads} --no-progress "
                "> {log:q} 2>&1"
