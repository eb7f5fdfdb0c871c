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
        # Fig 4's settings are parameters of Fig 4 only, so editing them redraws only it
        fig4=figure_fig4_args,
    conda:
        ENVIRONMENT
    log:
        f"{LOGS}/figures/{{figure}}.log",
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "python -m dnndist plot {wildcards.figure} --table {input.table:q} --style {input.style:q} "
        "{params.fig4} --pdf {output.pdf:q} --png {output.png:q} > {log:q} 2>&1"
