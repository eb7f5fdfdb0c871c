# Figures: one rule for all figures (the {figure} wildcard), each drawn from one tidy table with
# the shared style file. The report shows the PNG (a PDF would be blank where a browser cannot
# render it); the PDF lies beside it.


rule figure:
    input:
        table=figure_table,
        style=STYLE,
    output:
        pdf=f"{RESULTS}/figures/{{figure}}.pdf",
        png=report(
            f"{RESULTS}/figures/{{figure}}.png",
            caption="../report/figures.rst",
            category="Figures",
            labels=figure_labels,
        ),
    log:
        f"{LOGS}/figures/{{figure}}.log",
    wildcard_constraints:
        figure="|".join(f for f in FIGURES if f not in OWN_OPTIONS),
    conda:
        ENVIRONMENT
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        code=code("plots", "outputs"),
    shell:
        "python -m dnndist plot {wildcards.figure} --table {input.table:q} --style {input.style:q} "
        "--pdf {output.pdf:q} --png {output.png:q} > {log:q} 2>&1"


# Fig 4 has settings of its own (plots.emission_*): editing them redraws only it
rule figure_emission:
    input:
        table=figure_table,
        style=STYLE,
    output:
        pdf=f"{RESULTS}/figures/{{figure}}.pdf",
        png=report(
            f"{RESULTS}/figures/{{figure}}.png",
            caption="../report/figures.rst",
            category="Figures",
            labels=figure_labels,
        ),
    log:
        f"{LOGS}/figures/{{figure}}.log",
    wildcard_constraints:
        figure="|".join(OWN_OPTIONS),
    conda:
        ENVIRONMENT
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        code=code("plots", "outputs"),
        options=emission_options(),
    shell:
        "python -m dnndist plot {wildcards.figure} --table {input.table:q} --style {input.style:q} "
        "{params.options} --pdf {output.pdf:q} --png {output.png:q} > {log:q} 2>&1"
