# The self-contained HTML report, and one page per heatmap for `snakemake --report`.
localrules:
    report,


rule report:
    input:
        summaries=[f"{RESULTS}/matrices/{task}/{arch}/summary.json" for task, arch in matrices()],
        analyses=[f"{RESULTS}/matrices/{task}/{arch}/analysis.json" for task, arch in matrices()],
        curves=LC_OUTPUTS,
        sheet=SHEET,
    output:
        html=f"{RESULTS}/report/index.html",
        figures=[
            report(
                f"{RESULTS}/report/figures/{task}_{arch}_{kind}.html",
                category="{task} / {arch}".format(task=task, arch=arch),
                caption="../report/heatmap.rst",
                labels={"task": task, "architecture": arch, "figure": kind},
            )
            for task, arch in matrices()
            for kind in ("cltm", "m")
        ],
    params:
        config=json.dumps({**CFG.raw, "languages_sheet": SHEET}, sort_keys=True),
        matrices=lambda w, input: " ".join(shlex.quote(str(Path(p).parent)) for p in input.summaries),
        figures=lambda w, output: str(Path(output.html).parent / "figures"),
        curves=lambda w, input: " ".join(shlex.quote(str(Path(p).parent)) for p in input.curves),
    log:
        f"{RESULTS}/logs/report.log",
    conda:
        "../envs/cpu.yaml"
    shell:
        "cltm report --config-json {params.config:q} --languages-sheet {input.sheet:q} --matrices {params.matrices}"
        " --out {output.html:q} --figures {params.figures:q} --learning-curves {params.curves}"
        " > {log:q} 2>&1"
