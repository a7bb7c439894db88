# One job per locale: parse the release's TSVs, decode clips to 16 kHz, cache audio, quarantine bad clips.
rule ingest:
    input:
        release_files,
    output:
        table=P("ingest.table"),
        audio=P("ingest.audio"),
        quarantine=P("ingest.quarantine"),
        summary=P("ingest.summary"),
    params:
        release=RELEASE,
        min_clips=CFG.raw["ingest"]["min_clips"],
        cap=lambda w: (
            f"--max-clips-per-speaker {CFG.raw['ingest']['max_clips_per_speaker']}"
            if CFG.raw["ingest"].get("max_clips_per_speaker")
            else ""
        ),
        pool=lambda w: POOL_CLIPS[w.locale],
    threads: CFG.raw["ingest"]["workers"]
    resources:
        mem_mb=4000,
        runtime=60,
    log:
        P("logs", name="ingest/{locale}"),
    benchmark:
        P("benchmarks", name="ingest/{locale}")
    conda:
        "../envs/cpu.yaml"
    shell:
        "cltm ingest --release {params.release:q} --locale {wildcards.locale} --out \"$(dirname {output.table:q})\""
        " --workers {threads} --min-clips {params.min_clips} {params.cap} --pool-clips {params.pool} > {log:q} 2>&1"


# One flag per task standing for every language's ingested table and audio: train and subsets jobs depend on
# it instead of on each language's files, so the DAG's edges grow with jobs, not jobs x languages (the
# worker's data hash still covers what a cell reads).
localrules:
    task_ingested,


rule task_ingested:
    input:
        tables=subset_tables,
        audio=lambda w: [P("ingest.audio", locale=loc) for loc in CFG.raw["tasks"][w.task]["languages"]],
    output:
        P("ready.ingested"),
    log:
        P("logs", name="ready/{task}/ingested"),
    benchmark:
        P("benchmarks", name="ready/{task}/ingested")
    conda:
        "../envs/cpu.yaml"
    shell:
        "cltm ready --inputs {input:q} --out {output:q} > {log:q} 2>&1"
