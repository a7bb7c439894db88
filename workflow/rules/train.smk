# One job per (task, arch, target, seed group) trains the single, self and every dual cell of that target,
# for each seed of the group (`resources.seeds_per_job`, default 1), in one process: start-up and imports
# (torch, transformers: seconds) are paid once per group. Each cell writes its own metrics.json and
# finished cells are skipped on a rerun, so a failure or kill costs only the cells not yet written.
rule train:
    input:
        # not ancient: a rewritten seed table (a donor added, or the subsets job rerun after a kill) reruns the
        # worker, which skips every cell whose data hash is unchanged, so only the affected cells train
        seed_tables=lambda w: [P("subsets.seed_table", task=w.task, target=w.target, seed=s) for s in w.seeds.split("+")],
        test=P("subsets.test"),
        dev=P("subsets.dev"),
        model=model_flag,
        # ancient too: the data hash covers the artifacts' content (a probe set is not part of the results)
        artifacts=lambda w: [ancient(p) for p in cell_artifacts(w.task, w.target).values()],
        # a frozen encoder's embedding caches (rule embed); ancient: a growing store keeps its manifest
        # (as one flag, rule task_embeddings)
        embeddings=lambda w: [ancient(P("ready.embeddings", task=w.task, arch=w.arch))] if embedding_artifacts(w.task, w.arch) else [],
        probe=lambda w: [ancient(p) for p in probe_input(w.task, w.arch)],
        # every language's table and audio, as one flag (rule task_ingested)
        ingested=P("ready.ingested"),
    output:
        P("runs.flag"),
    wildcard_constraints:
        seeds=r"\d+(\+\d+)*",
    params:
        # one function for the whole argument tail: Snakemake evaluates each param function several times per
        # job while planning (2,390 train jobs on the paper grid), so seven lambdas cost seconds of dry-run
        args=train_args,
    threads: lambda w: arch_resources(w.task, w.arch)["threads"]
    # longest jobs first (resources.priority): the demo's ASR jobs, started last, left one core idle for minutes
    priority: lambda w: arch_resources(w.task, w.arch)["priority"]
    resources:
        mem_mb=lambda w, attempt: arch_resources(w.task, w.arch)["mem_mb"] * attempt,
        runtime=lambda w, attempt: (
            arch_resources(w.task, w.arch)["runtime"] * len(job_donors(w)) * len(w.seeds.split("+")) * attempt
        ),
        gpu=lambda w: arch_resources(w.task, w.arch)["gpu"],
    log:
        P("logs.runs"),
    benchmark:  # wall and CPU seconds per job (README "Quickstart": job-seconds per rule)
        P("benchmarks", name="train/{task}/{arch}/{target}/seed{seeds}")
    conda:
        "../envs/gpu.yaml"
    shell:
        "cltm train-cells --task {wildcards.task} --arch {wildcards.arch} --model-dir \"$(dirname {input.model:q})\""
        " --seed-tables {input.seed_tables:q} --test {input.test:q} --dev {input.dev:q} --target {wildcards.target}"
        " --threads {threads} {params.args} --flag {output:q} > {log:q} 2>&1"
