# The reproduction document (`snakemake docs`): generated from the tables (verbatim Markdown,
# captions included) and figures (PNG), stamped with the command, config files, code version,
# machine and wall time. Not part of `all`; copy it and its figures into docs/ to publish.


rule docs:
    input:
        tables=expand(f"{RESULTS}/tables/{{name}}.md", name=TABLES),
        figures=expand(f"{RESULTS}/figures/{{figure}}.png", figure=FIGURES),
    output:
        f"{RESULTS}/docs/reproduction.md",
    log:
        f"{LOGS}/docs.log",
    localrule: True
    conda:
        ENVIRONMENT
    params:
        code=code("docs", "outputs"),
        results=lambda wildcards, output: os.path.dirname(os.path.dirname(output[0])),  # <results>/docs/..
        configfiles=" ".join(f"'{c}'" for c in workflow.overwrite_configfiles),
    shell:
        "python -m dnndist docs --results {params.results:q} --tables {input.tables:q} --figures {input.figures:q} "
        "--configfiles {params.configfiles} --out {output:q} > {log:q} 2>&1"
