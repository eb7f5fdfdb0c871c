# Figures: one rule per figure, drawn from one tidy table with the shared style file.


rule figure:
    input:
        table=figure_table,
        style=STYLE,
        code=code("plots"),
    output:
        pdf=report(f"{RESULTS}/figures/{{figure}}.pdf", caption="../report/figures.rst", category="Figures", subcategory="{figure}"),
        png=f"{RESULTS}/figures/{{figure}}.png",
    params:
        init=config["plots"]["emission_init"],
    conda:
        ENVIRONMENT
    log:
        f"{LOGS}/figures/{{figure}}.log",
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "python -m dnndist plot {wildcards.figure} --table {input.table:q} --style {input.style:q} "
        "--init {params.init:q} --pdf {output.pdf:q} --png {output.png:q} > {log:q} 2>&1"
