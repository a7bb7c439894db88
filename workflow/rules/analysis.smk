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
        f"{RESULTS}/typology/uriel.json",
    params:
        locales=" ".join(LOCALES),
    log:
        f"{RESULTS}/logs/typology.log",
    conda:
        "../envs/cpu.yaml"
    shell:
        "cltm typology --languages-sheet {input.sheet:q} --locales {params.locales} --out {output:q} > {log:q} 2>&1"


rule analyse:
    input:
        summary=f"{RESULTS}/matrices/{{task}}/{{arch}}/summary.json",
        cells=f"{RESULTS}/matrices/{{task}}/{{arch}}/cells.tsv",
        typology=f"{RESULTS}/typology/uriel.json",
        sheet=SHEET,
    output:
        f"{RESULTS}/matrices/{{task}}/{{arch}}/analysis.json",
    params:
        runs_dir=lambda w: f"{RESULTS}/runs/{w.task}/{w.arch}",
        seeds=lambda w: " ".join(map(str, CFG.seeds(w.task))),
        seed=CFG.raw["inference"]["seed"],
    log:
        f"{RESULTS}/logs/analysis/{{task}}/{{arch}}.log",
    conda:
        "../envs/cpu.yaml"
    shell:
        "cltm analyse --matrix \"$(dirname {input.summary:q})\" --runs-dir {params.runs_dir:q} --seeds {params.seeds}"
        " --languages-sheet {input.sheet:q} --typology {input.typology:q} --seed {params.seed}"
        " --out {output:q} > {log:q} 2>&1"


# (validated with the rest of the config in common.smk)
LC = CFG.raw.get("learning_curve")


# The learning curve's recommendation, if the config asks for one (an input of the report).
LC_OUTPUTS = [] if LC is None else [f"{RESULTS}/learning_curve/{LC['task']}/{LC['arch']}/recommendation.json"]


rule learning_curve:
    input:
        tables=lambda w: [ingest_table(loc) for loc in LC["languages"]],
        audio=lambda w: [f"{RESULTS}/ingest/{loc}/audio.npy" for loc in LC["languages"]],
        model=model_flag,
    output:
        curve=f"{RESULTS}/learning_curve/{{task}}/{{arch}}/curve.tsv",
        rec=f"{RESULTS}/learning_curve/{{task}}/{{arch}}/recommendation.json",
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
        f"{RESULTS}/logs/learning_curve/{{task}}/{{arch}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/learning_curve/{{task}}/{{arch}}.tsv"
    conda:
        "../envs/gpu.yaml"
    shell:
        "cltm learning-curve --task {wildcards.task} --arch {wildcards.arch} --spec {params.spec:q}"
        " --model-dir \"$(dirname {input.model:q})\" --ingest-root \"$(dirname \"$(dirname {input.tables[0]:q})\")\""
        " --languages {params.languages} --ladder {params.ladder} --seeds {params.seeds} --hparams {params.hparams:q}"
        " --metric {params.metric} --z {params.z} --jobs {threads} --out \"$(dirname {output.curve:q})\" > {log:q} 2>&1"
