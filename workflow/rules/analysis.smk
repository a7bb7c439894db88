# Analyses of each matrix (properties, map, typology, significance, probes, training time) and the optional
# choice-of-N learning curve; both feed the report.
localrules:
    analyse,


# URIEL+ distances between every locale of the config, once: a pair's distance does not depend on the
# other languages asked (minutes for the study's 54 languages, seconds for the demo).
rule typology:
    input:
        sheet=SHEET,
    output:
        P("typology"),
    params:
        locales=" ".join(LOCALES),
    log:
        P("logs", name="typology"),
    benchmark:
        P("benchmarks", name="typology")
    conda:
        "../envs/cpu.yaml"
    shell:
        "cltm typology --languages-sheet {input.sheet:q} --locales {params.locales} --out {output:q} > {log:q} 2>&1"


rule analyse:
    input:
        summary=P("matrices.summary"),
        cells=P("matrices.cells"),
        typology=P("typology"),
        sheet=SHEET,
    output:
        analysis=P("matrices.analysis"),
        overlap=P("matrices.overlap"),
    params:
        runs_dir=lambda w: P("runs", task=w.task, arch=w.arch),
        seeds=lambda w: " ".join(map(str, CFG.seeds(w.task))),
        seed=CFG.raw["inference"]["seed"],
    log:
        P("logs", name="analysis/{task}/{arch}"),
    benchmark:
        P("benchmarks", name="analysis/{task}/{arch}")
    conda:
        "../envs/cpu.yaml"
    shell:
        "cltm analyse --matrix \"$(dirname {input.summary:q})\" --runs-dir {params.runs_dir:q} --seeds {params.seeds}"
        " --languages-sheet {input.sheet:q} --typology {input.typology:q} --seed {params.seed}"
        " --out {output.analysis:q} --overlap-out {output.overlap:q} > {log:q} 2>&1"


rule learning_curve:
    input:
        tables=lambda w: [ingest_table(loc) for loc in LC["languages"]],
        audio=lambda w: [P("ingest.audio", locale=loc) for loc in LC["languages"]],
        model=model_flag,
    output:
        curve=P("learning_curve.curve"),
        rec=P("learning_curve.recommendation"),
    params:
        spec=lambda w: subset_spec_json(w.task),
        hparams=lambda w: arch_hparams_json(w.task, w.arch),
        metric=lambda w: CFG.raw["tasks"][w.task]["metric"],
        languages=lambda w: " ".join(LC["languages"]),
        ladder=lambda w: " ".join(f"{n:g}" for n in LC["ladder"]),
        seeds=lambda w: " ".join(map(str, CFG.learning_curve_seeds())),
        z=lambda w: LC["z"],
    threads: lambda w: LC["jobs"]
    log:
        P("logs", name="learning_curve/{task}/{arch}"),
    benchmark:
        P("benchmarks", name="learning_curve/{task}/{arch}")
    conda:
        "../envs/gpu.yaml"
    shell:
        "cltm learning-curve --task {wildcards.task} --arch {wildcards.arch} --spec {params.spec:q}"
        " --model-dir \"$(dirname {input.model:q})\" --ingest-root \"$(dirname \"$(dirname {input.tables[0]:q})\")\""
        " --languages {params.languages} --ladder {params.ladder} --seeds {params.seeds} --hparams {params.hparams:q}"
        " --metric {params.metric} --z {params.z} --jobs {threads} --out \"$(dirname {output.curve:q})\" > {log:q} 2>&1"
