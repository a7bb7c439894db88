# Frozen-encoder embeddings, once per utterance: one job per (task, arch, locale) for an architecture with
# `embedding_cache` (speechllm). Every cell and seed reads them back (train rule, artifacts emb:<locale>).
#
# What is embedded: the union of the locale's clips the task uses, i.e. its test and dev sets and its rows
# in every seed table (as target and as donor), not every ingested clip. On the paper grid that is about
# test + dev + 10 seeds x (2,000 own + 1,000 as donor, largely the same clips: draws are keyed by seed and
# locale) = a few 10^4 clips per locale, ~10^6 in all, where every ingested clip would be ~10^7 (CV's
# large locales) and re-embedding per cell ~4 x 10^7 (19,800 cells x ~2,000 clips).
# A rerun (new seeds or languages) embeds only clips its store does not hold yet (cltm_pipeline.models.embeddings).
rule embed:
    input:
        test=P("subsets.test", target="{locale}"),
        dev=P("subsets.dev", target="{locale}"),
        # stands for every seed table of the task (rule task_seed_tables): one edge, not targets x seeds
        seed_tables=P("ready.seed_tables"),
        model=model_flag,
        audio=P("ingest.audio"),
    output:
        P("embeddings"),
    params:
        ingest_root=lambda w, input: str(Path(input.audio).parent.parent),
        hparams=lambda w: arch_hparams_json(w.task, w.arch),
        manifests=embed_manifests,
    threads: lambda w: arch_resources(w.task, w.arch)["threads"]
    resources:
        mem_mb=lambda w, attempt: arch_resources(w.task, w.arch)["mem_mb"] * attempt,
        runtime=lambda w, attempt: 60 * attempt,
        gpu=lambda w: arch_resources(w.task, w.arch)["gpu"],
    log:
        P("logs", name="embeddings/{task}/{arch}/{locale}"),
    benchmark:
        P("benchmarks", name="embed/{task}/{arch}/{locale}")
    conda:
        "../envs/gpu.yaml"
    shell:
        "cltm embed --task {wildcards.task} --arch {wildcards.arch} --model-dir \"$(dirname {input.model:q})\""
        " --locale {wildcards.locale} --manifests {params.manifests:q} --ingest-root {params.ingest_root:q}"
        " --hparams {params.hparams:q} --threads {threads} --out {output:q} > {log:q} 2>&1"


# One flag per (task, arch) standing for every language's embedding cache: train jobs depend on it instead
# of on each language's manifest (see task_ingested).
localrules:
    task_embeddings,


rule task_embeddings:
    input:
        lambda w: list(embedding_artifacts(w.task, w.arch).values()),
    output:
        P("ready.embeddings"),
    log:
        P("logs", name="ready/{task}/{arch}/embeddings"),
    benchmark:
        P("benchmarks", name="ready/{task}/{arch}/embeddings")
    conda:
        "../envs/cpu.yaml"
    shell:
        "cltm ready --inputs {input:q} --out {output:q} > {log:q} 2>&1"
