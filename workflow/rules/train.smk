# Training stage: one job per run (variant, init, seed), or with `stacked: true` one job per
# stack group of the runs that need training (up to stack_max runs of a variant, inits and seeds
# alike, trained as one wide model into their cache entries, dnndist.runcache), and a local job
# per run restoring its folder from its entry. One training loop either way (a run alone is a
# stack of one): the same per-run outputs, resumed if killed.


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
            code=TRAIN_CODE,
            run_dir=run_dir,
            env=MALLOC_ENV,
            compared=settings_param(settings_of),  # what Snakemake compares (run_settings_json)
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
                weights=[w for r in group.runs for w in given_weights(r)],
            output:
                # each entry's summary.json, written last (its checkpoints/ and metrics.csv before
                # it): one path per run keeps the plan small, and what Snakemake removes before a
                # job runs again is the summary, not the resume state beside it
                entry_paths(group.runs, "summary.json"),
            log:
                group_log(group),
            conda:
                ENVIRONMENT
            threads: 2
            resources:
                **stacked_resources(group),
            params:
                settings=group_settings_json(group),
                entries=[cache_entry(r) for r in group.runs],
                env=MALLOC_ENV,
            shell:
                "{params.env} python -m dnndist train-stacked --settings {params.settings:q} "
                "--data {input.store:q} --out {params.entries:q} --threads {resources.torch_threads} --no-progress "
                "> {log:q} 2>&1"

    rule restore:
        input:
            summary=cached_run,
        output:
            checkpoints=directory(f"{RUN_DIR}/checkpoints"),
            metrics=f"{RUN_DIR}/metrics.csv",
            summary=f"{RUN_DIR}/summary.json",
        log:
            f"{LOGS}/restore/{{variant}}/{{init}}/seed{{seed}}.log",
        localrule: True
        conda:
            ENVIRONMENT
        params:
            run_dir=run_dir,
            # the run's key (in its input) changes with its settings; this names what changed
            compared=settings_param(settings_of),
        shell:
            "python -m dnndist restore $(dirname {input.summary:q}) --out {params.run_dir:q} > {log:q} 2>&1"
