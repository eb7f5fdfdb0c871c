# Statistics stage: per-run tidy tables, then all runs combined and aggregated over seeds.


rule stats_run:
    input:
        weights=f"{RUN_DIR}/weights.zarr",
        features=f"{RUN_DIR}/features.zarr",
    output:
        weights=f"{RUN_DIR}/stats/weights.csv",
        features=f"{RUN_DIR}/stats/features.csv",
        hist=f"{RUN_DIR}/stats/weight_hist.csv",
    params:
        settings=stats_settings_json,
    conda:
        ENVIRONMENT
    log:
        f"{LOGS}/stats/{{variant}}/{{init}}/seed{{seed}}.log",
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    shell:
        "python -m dnndist stats-run --settings {params.settings:q} --weights {input.weights:q} "
        "--features {input.features:q} --weights-out {output.weights:q} --features-out {output.features:q} "
        "--hist-out {output.hist:q} "
        "> {log:q} 2>&1"


rule stats_combine:
    input:
        tables=stats_inputs,
    output:
        table=f"{RESULTS}/stats/{{table}}.csv",
        summary=f"{RESULTS}/stats/{{table}}_summary.csv",
    conda:
        ENVIRONMENT
    log:
        f"{LOGS}/stats/combine_{{table}}.log",
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    shell:
        "python -m dnndist stats-combine {wildcards.table} --inputs {input.tables:q} "
        "--out {output.table:q} --summary {output.summary:q} > {log:q} 2>&1"


rule weight_histograms:
    input:
        tables=expand_runs(f"{RUN_DIR}/stats/weight_hist.csv"),
    output:
        table=f"{RESULTS}/stats/weight_hist.csv",
    conda:
        ENVIRONMENT
    log:
        f"{LOGS}/stats/combine_weight_hist.log",
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    shell:
        "python -m dnndist stats-combine weight_hist --inputs {input.tables:q} --out {output.table:q} > {log:q} 2>&1"
