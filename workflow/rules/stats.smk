# Statistics stage: every run's tidy tables (runs/<variant>/<init>/seed<N>/stats/<table>.csv),
# then all runs combined (and aggregated over seeds).
#
# One job per variant, or per 70 of its runs (stats_jobs; a rule per job, as stacked training makes
# one per stack group) computes the tables of each of its runs, in up to 8 processes that share them: the interpreter and imports, the
# reference bands (stats.gaussian_reference, per tensor size) and the stores once, and the weight
# statistics vectorised over the runs' tensors; each run's tables are those `dnndist stats-run`
# writes for it alone, byte for byte. The trade-off: a run that changes (its extraction, its
# settings, a seed added) recomputes the statistics of every run of its job (about 0.3 s a
# run and checkpoint for the paper CNN on one CPU core); the job's threads are processes that
# share its runs (a cluster spreads variants; a job's cores spread its runs).


for name, runs in stats_jobs():

    rule:
        name:
            rule_name("stats_runs", name)
        input:
            weights=run_paths(runs, f"{RUN_DIR}/weights.zarr"),
            features=run_paths(runs, f"{RUN_DIR}/features.zarr"),
            gradients=run_paths(runs, f"{RUN_DIR}/gradients.zarr"),
        output:
            tables=[f"{run}/stats/{table}.csv" for run in run_paths(runs, RUN_DIR) for table in RUN_TABLES],
        log:
            f"{LOGS}/stats/runs_{name}.log",
        conda:
            ENVIRONMENT
        threads: stats_threads(runs)
        resources:
            **stats_resources(runs),
        params:
            code=code("stats", "moments", "spectral", "verdicts"),
            settings=stats_settings_json,
            run_dirs=run_paths(runs, RUN_DIR),
        shell:
            # the runs shared by {threads} processes, each with one BLAS thread whatever --cores is:
            # the tables are byte for byte the same with 1 or 2 (BLAS sums in a thread-dependent order)
            "OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 python -m dnndist stats-runs "
            "--settings {params.settings:q} --run-dirs {params.run_dirs:q} --workers {threads} > {log:q} 2>&1"


rule stats_combine:
    input:
        tables=stats_inputs,
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
    params:
        code=code("stats", "moments", "spectral", "verdicts"),
    shell:
        "python -m dnndist stats-combine {wildcards.table} --inputs {input.tables:q} "
        "--out {output.table:q} --summary {output.summary:q} > {log:q} 2>&1"


rule stats_concat:
    input:
        tables=lambda wildcards: expand_runs(f"{RUN_DIR}/stats/{wildcards.plain}.csv"),
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
    params:
        code=code("stats", "moments", "spectral", "verdicts"),
    shell:
        "python -m dnndist stats-combine {wildcards.plain} --inputs {input.tables:q} --out {output.table:q} > {log:q} 2>&1"


rule table:
    input:
        unpack(table_inputs),
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
        code=code("tables", "verdicts", "outputs"),
        args=table_args,
        stem=lambda wildcards: f"{RESULTS}/tables/{wildcards.name}",
    shell:
        "python -m dnndist table {wildcards.name} {params.args} --out-stem {params.stem:q} > {log:q} 2>&1"
