# Figures: one rule per figure, drawn from one tidy table with the shared style file.


rule fig_training:
    input:
        table=f"{RESULTS}/stats/training_summary.csv",
        style=STYLE,
    output:
        pdf=report(f"{RESULTS}/figures/fig1_training.pdf", caption="../report/fig1_training.rst", category="Figures", subcategory="Training"),
        png=f"{RESULTS}/figures/fig1_training.png",
    conda:
        ENVIRONMENT
    log:
        f"{LOGS}/figures/fig1_training.log",
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "python -m dnndist plot training --table {input.table:q} --style {input.style:q} "
        "--pdf {output.pdf:q} --png {output.png:q} > {log:q} 2>&1"


rule fig_weights:
    input:
        table=f"{RESULTS}/stats/weight_hist.csv",
        style=STYLE,
    output:
        pdf=report(f"{RESULTS}/figures/fig2_weights.pdf", caption="../report/fig2_weights.rst", category="Figures", subcategory="Weights"),
        png=f"{RESULTS}/figures/fig2_weights.png",
    conda:
        ENVIRONMENT
    log:
        f"{LOGS}/figures/fig2_weights.log",
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "python -m dnndist plot weights --table {input.table:q} --style {input.style:q} "
        "--pdf {output.pdf:q} --png {output.png:q} > {log:q} 2>&1"
