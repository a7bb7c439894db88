# Fixed evaluation sets per (task, target); nested single/self and donor draws per (task, target, seed).
localrules:
    eval_sets,
    subsets,
    target_artifact,
    task_artifact,
    probe_set,


rule eval_sets:
    input:
        table=lambda w: ingest_table(w.target),
    output:
        test=P("subsets.test"),
        dev=P("subsets.dev"),
    params:
        spec=lambda w: subset_spec_json(w.task, with_languages=False),
    log:
        P("logs", name="subsets/{task}/{target}/eval_sets"),
    benchmark:
        P("benchmarks", name="subsets/{task}/{target}/eval_sets")
    conda:
        "../envs/cpu.yaml"
    shell:
        "cltm eval-sets --spec {params.spec:q} --target {wildcards.target} --table {input.table:q}"
        " --test {output.test:q} --dev {output.dev:q} > {log:q} 2>&1"


rule subsets:
    input:
        ingested=P("ready.ingested"),
        test=P("subsets.test"),
        dev=P("subsets.dev"),
    output:
        table=P("subsets.seed_table"),
        stats=P("subsets.seed_stats"),
    params:
        spec=lambda w: subset_spec_json(w.task),
        tables=subset_tables,
    log:
        P("logs", name="subsets/{task}/{target}/seed{seed}"),
    benchmark:
        P("benchmarks", name="subsets/{task}/{target}/seed{seed}")
    conda:
        "../envs/cpu.yaml"
    shell:
        "cltm subsets --spec {params.spec:q} --target {wildcards.target} --seed {wildcards.seed}"
        " --tables {params.tables:q} --test {input.test:q} --dev {input.dev:q} --out {output.table:q} --stats {output.stats:q}"
        " > {log:q} 2>&1"


# Artifacts a task declares (cltm_pipeline.tasks): per target from its evaluation sets (e.g. SV trials),
# per task from the ingested tables of its languages (e.g. the ASR vocabulary); and every task's probe set.
rule target_artifact:
    input:
        test=P("subsets.test"),
        dev=P("subsets.dev"),
    output:
        P("subsets.target_artifact"),
    wildcard_constraints:
        artifact=artifact_pattern("target"),
    params:
        spec=lambda w: subset_spec_json(w.task),
    log:
        P("logs", name="subsets/{task}/{target}/{artifact}"),
    benchmark:
        P("benchmarks", name="subsets/{task}/{target}/{artifact}")
    conda:
        "../envs/cpu.yaml"
    shell:
        "cltm task-artifact --task {wildcards.task} --name {wildcards.artifact} --spec {params.spec:q}"
        " --test {input.test:q} --dev {input.dev:q} --out {output:q} > {log:q} 2>&1"


rule task_artifact:
    input:
        tables=subset_tables,
    output:
        P("subsets.task_artifact"),
    wildcard_constraints:
        artifact=artifact_pattern("task"),
    params:
        spec=lambda w: subset_spec_json(w.task),
    log:
        P("logs", name="subsets/{task}/{artifact}"),
    benchmark:
        P("benchmarks", name="subsets/{task}/{artifact}")
    conda:
        "../envs/cpu.yaml"
    shell:
        "cltm task-artifact --task {wildcards.task} --name {wildcards.artifact} --spec {params.spec:q}"
        " --tables {input.tables:q} --out {output:q} > {log:q} 2>&1"


rule probe_set:
    input:
        tables=subset_tables,
    output:
        P("subsets.probe"),
    params:
        spec=lambda w: subset_spec_json(w.task),
    log:
        P("logs", name="subsets/{task}/probe"),
    benchmark:
        P("benchmarks", name="subsets/{task}/probe")
    conda:
        "../envs/cpu.yaml"
    shell:
        "cltm probe-set --spec {params.spec:q} --tables {input.tables:q} --out {output:q} > {log:q} 2>&1"


# One flag per task standing for every seed table of the task: each embed job depends on it instead of on
# every (target, seed) table (see task_ingested).
localrules:
    task_seed_tables,


rule task_seed_tables:
    input:
        seed_tables,
    output:
        P("ready.seed_tables"),
    log:
        P("logs", name="ready/{task}/seed_tables"),
    benchmark:
        P("benchmarks", name="ready/{task}/seed_tables")
    conda:
        "../envs/cpu.yaml"
    shell:
        "cltm ready --inputs {input:q} --out {output:q} > {log:q} 2>&1"
