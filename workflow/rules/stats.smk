# Statistics stage: per-run tidy tables, then all runs combined (and aggregated over seeds).


rule stats_run:
    input:
        weights=f"{RUN_DIR}/weights.zarr",
        features=f"{RUN_DIR}/features.zarr",
        gradients=f"{RUN_DIR}/gradients.zarr",
        code=code("stats", "spectral", "verdicts"),
    output:
        tables=expand(f"{RUN_DIR}/stats/{{table}}.csv", table=RUN_TABLES, allow_missing=True),
    log:
        f"{LOGS}/stats/{{variant}}/{{init}}/seed{{seed}}.log",
    conda:
        ENVIRONMENT
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        settings=stats_settings_json,
        out_dir=lambda wildcards: f"{run_dir(wildcards)}/stats",
    shell:
        "python -m dnndist stats-run --settings {params.settings:q} --weights {input.weights:q} "
        "--features {input.features:q} --gradients {input.gradients:q} --out-dir {params.out_dir:q} > {log:q} 2>&1"


rule stats_combine:
    input:
        tables=stats_inputs,
        code=code("stats", "spectral", "verdicts"),
    output:
        table=f"{RESULTS}/stats/{{table}}.csv",
        summary=f"{RESULTS}/stats/{{table}}_summary.csv",
    log:
        f"{LOGS}/stats/combine_{{table}}.log",
    conda:
        ENVIRONMENT
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    shell:
        "python -m dnndist stats-combine {wildcards.table} --inputs {input.tables:q} "
        "--out {output.table:q} --summary {output.summary:q} > {log:q} 2>&1"


rule stats_concat:
    input:
        tables=lambda wildcards: expand_runs(f"{RUN_DIR}/stats/{wildcards.plain}.csv"),
        code=code("stats", "spectral", "verdicts"),
    output:
        table=f"{RESULTS}/stats/{{plain}}.csv",
    log:
        f"{LOGS}/stats/concat_{{plain}}.log",
    conda:
        ENVIRONMENT
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    shell:
        "python -m dnndist stats-combine {wildcards.plain} --inputs {input.tables:q} --out {output.table:q} > {log:q} 2>&1"


rule table:
    input:
        unpack(table_inputs),
        code=code("tables", "verdicts", "outputs"),
    output:
        csv=f"{RESULTS}/tables/{{name}}.csv",
        md=f"{RESULTS}/tables/{{name}}.md",
        tex=f"{RESULTS}/tables/{{name}}.tex",
        # the report shows the table itself (HTML), not a download link to the CSV
        html=report(
            f"{RESULTS}/tables/{{name}}.html", caption="../report/tables.rst", category="Tables", labels=table_labels
        ),
    log:
        f"{LOGS}/tables/{{name}}.log",
    conda:
        ENVIRONMENT
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        args=table_args,
        stem=lambda wildcards: f"{RESULTS}/tables/{wildcards.name}",
    shell:
        "python -m dnndist table {wildcards.name} {params.args} --out-stem {params.stem:q} > {log:q} 2>&1"
