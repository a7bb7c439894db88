# One job per (task, arch, target, donor, seed): fine-tune, select on dev, score on the target's test set.
rule train:
    input:
        # ancient: adding a donor or seed rewrites a seed table without changing the parts a finished
        # cell used (draws are keyed by seed and locale), so finished cells are not rerun for it
        seed_table=ancient(f"{RESULTS}/subsets/{{task}}/{{target}}/seed{{seed}}.tsv"),
        test=f"{RESULTS}/subsets/{{task}}/{{target}}/test.tsv",
        dev=f"{RESULTS}/subsets/{{task}}/{{target}}/dev.tsv",
        model=model_flag,
        audio=cell_audio,
    output:
        f"{RESULTS}/runs/{{task}}/{{arch}}/{{target}}/{{donor}}/seed{{seed}}/metrics.json",
    params:
        ingest_root=f"{RESULTS}/ingest",
        hparams=lambda w: arch_hparams_json(w.task, w.arch),
        config_hash=lambda w: cell_config_hash(w.task, w.arch),
    threads: lambda w: arch_resources(w.task, w.arch)["threads"]
    resources:
        mem_mb=lambda w, attempt: arch_resources(w.task, w.arch)["mem_mb"] * attempt,
        runtime=lambda w, attempt: arch_resources(w.task, w.arch)["runtime"] * attempt,
        gpu=lambda w: arch_resources(w.task, w.arch)["gpu"],
    log:
        f"{RESULTS}/logs/runs/{{task}}/{{arch}}/{{target}}/{{donor}}/seed{{seed}}.log",
    conda:
        "../envs/gpu.yaml"
    shell:
        "cltm train --task {wildcards.task} --arch {wildcards.arch} --model-dir $(dirname {input.model})"
        " --seed-table {input.seed_table} --test {input.test} --dev {input.dev} --ingest-root {params.ingest_root}"
        " --target {wildcards.target} --donor {wildcards.donor} --seed {wildcards.seed}"
        " --hparams {params.hparams:q} --config-hash {params.config_hash} --threads {threads}"
        " --out {output} > {log} 2>&1"
