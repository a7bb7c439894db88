# Fixed evaluation sets per (task, target); nested single/self and donor draws per (task, target, seed).
localrules:
    eval_sets,
    subsets,


rule eval_sets:
    input:
        table=lambda w: ingest_table(w.target),
    output:
        test=f"{RESULTS}/subsets/{{task}}/{{target}}/test.tsv",
        dev=f"{RESULTS}/subsets/{{task}}/{{target}}/dev.tsv",
    params:
        spec=lambda w: subset_spec_json(w.task, with_languages=False),
    log:
        f"{RESULTS}/logs/subsets/{{task}}/{{target}}/eval_sets.log",
    conda:
        "../envs/cpu.yaml"
    shell:
        "cltm eval-sets --spec {params.spec:q} --target {wildcards.target} --table {input.table}"
        " --test {output.test} --dev {output.dev} > {log} 2>&1"


rule subsets:
    input:
        tables=subset_tables,
        test=f"{RESULTS}/subsets/{{task}}/{{target}}/test.tsv",
        dev=f"{RESULTS}/subsets/{{task}}/{{target}}/dev.tsv",
    output:
        f"{RESULTS}/subsets/{{task}}/{{target}}/seed{{seed}}.tsv",
    params:
        spec=lambda w: subset_spec_json(w.task),
    log:
        f"{RESULTS}/logs/subsets/{{task}}/{{target}}/seed{{seed}}.log",
    conda:
        "../envs/cpu.yaml"
    shell:
        "cltm subsets --spec {params.spec:q} --target {wildcards.target} --seed {wildcards.seed}"
        " --tables {input.tables} --test {input.test} --dev {input.dev} --out {output} > {log} 2>&1"
