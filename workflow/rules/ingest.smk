# One job per locale: parse the release's TSVs, decode clips to 16 kHz, cache audio, quarantine bad clips.
rule ingest:
    input:
        release_tsv,
    output:
        table=f"{RESULTS}/ingest/{{locale}}/utterances.parquet",
        audio=f"{RESULTS}/ingest/{{locale}}/audio.npy",
        quarantine=f"{RESULTS}/ingest/{{locale}}/quarantine.tsv",
        summary=f"{RESULTS}/ingest/{{locale}}/ingest.json",
    params:
        release=RELEASE,
        min_clips=CFG.raw["ingest"]["min_clips"],
        cap=lambda w: (
            f"--max-clips-per-speaker {CFG.raw['ingest']['max_clips_per_speaker']}"
            if CFG.raw["ingest"].get("max_clips_per_speaker")
            else ""
        ),
    threads: CFG.raw["ingest"]["workers"]
    resources:
        mem_mb=4000,
        runtime=60,
    log:
        f"{RESULTS}/logs/ingest/{{locale}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/ingest/{{locale}}.tsv"
    conda:
        "../envs/cpu.yaml"
    shell:
        "cltm ingest --release {params.release} --locale {wildcards.locale} --out $(dirname {output.table})"
        " --workers {threads} --min-clips {params.min_clips} {params.cap} > {log} 2>&1"
