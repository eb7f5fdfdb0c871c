# Extraction stage: per run, one job (one process: the interpreter, torch and the data are
# loaded once) writes the weights, features and gradients zarr stores; with `stacked: true`
# one job per stack group extracts its runs one after another (the same stores, the imports
# paid once; editing one run's extract settings reruns its group, as training does).
from dnndist.io import STORE_LAYOUT

if not config["stacked"]:

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
        threads: 2
        resources:
            mem_mb=6000,
            runtime=240,
            torch_threads=2,
        params:
            settings=extract_settings_json,
            layout=STORE_LAYOUT,  # a new store layout re-extracts (dnndist.io.STORE_LAYOUT)
            run_dir=run_dir,
            env=MALLOC_ENV,
        shell:
            "{params.env} python -m dnndist extract all --settings {params.settings:q} "
            "--checkpoints {input.checkpoints:q} --data {input.store:q} --out {params.run_dir:q} "
            "--threads {resources.torch_threads} > {log:q} 2>&1"

else:

    for group in STACK_GROUPS:

        rule:
            name:
                rule_name("extract_stacked", group.name)
            input:
                checkpoints=group_paths(group, f"{RUN_DIR}/checkpoints"),
                store=DATASET_STORE,
            output:
                weights=[directory(p) for p in group_paths(group, f"{RUN_DIR}/weights.zarr")],
                features=[directory(p) for p in group_paths(group, f"{RUN_DIR}/features.zarr")],
                gradients=[directory(p) for p in group_paths(group, f"{RUN_DIR}/gradients.zarr")],
            log:
                f"{LOGS}/extract/stacked/{group.name}.log",
            conda:
                ENVIRONMENT
            threads: 2
            resources:
                **extract_group_resources(group),
            params:
                settings=extract_group_settings_json(group),
                layout=STORE_LAYOUT,
                run_dirs=group_paths(group, RUN_DIR),
                env=MALLOC_ENV,
            shell:
                "{params.env} python -m dnndist extract-group --settings {params.settings:q} "
                "--checkpoints {input.checkpoints:q} --data {input.store:q} --out {params.run_dirs:q} "
                "--threads {resources.torch_threads} > {log:q} 2>&1"
