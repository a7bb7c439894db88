# The self-contained HTML report, and one page per heatmap for `snakemake --report`.
localrules:
    report,


rule report:
    input:
        summaries=[P("matrices.summary", task=task, arch=arch) for task, arch in matrices()],
        analyses=[P("matrices.analysis", task=task, arch=arch) for task, arch in matrices()],
        curves=LC_OUTPUTS,
        completions=completion_outputs(),
        sheet=SHEET,
    output:
        html=P("report"),
        figures=[
            report(
                P("report.figure", task=task, arch=arch, kind=kind),
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
        completions=lambda w, input: " ".join(
            ["--completions", *(shlex.quote(str(Path(p).parent)) for p in input.completions)] if input.completions else []
        ),
    log:
        P("logs", name="report"),
    benchmark:
        P("benchmarks", name="report")
    conda:
        "../envs/cpu.yaml"
    shell:
        "cltm report --config-json {params.config:q} --languages-sheet {input.sheet:q} --matrices {params.matrices}"
        " --out {output.html:q} --figures {params.figures:q} --learning-curves {params.curves} {params.completions}"
        " > {log:q} 2>&1"
