# Per (task, arch): M, CLTM, delta-method SE, paired-seed bootstrap CI, self gain, missing cells.
localrules:
    matrix,


rule matrix:
    input:
        runs=matrix_runs,
    output:
        cltm=f"{RESULTS}/matrices/{{task}}/{{arch}}/cltm.tsv",
        cells=f"{RESULTS}/matrices/{{task}}/{{arch}}/cells.tsv",
        summary=f"{RESULTS}/matrices/{{task}}/{{arch}}/summary.json",
    params:
        runs_dir=lambda w: f"{RESULTS}/runs/{w.task}/{w.arch}",
        languages=lambda w: " ".join(CFG.raw["tasks"][w.task]["languages"]),
        seeds=lambda w: " ".join(map(str, CFG.seeds(w.task))),
        metric=lambda w: CFG.raw["tasks"][w.task]["metric"],
        policy=CFG.raw["aggregation"],
        n_boot=CFG.raw["bootstrap"]["n_boot"],
        ci=CFG.raw["bootstrap"]["ci"],
        boot_seed=CFG.raw["bootstrap"]["seed"],
    log:
        f"{RESULTS}/logs/matrices/{{task}}/{{arch}}.log",
    conda:
        "../envs/cpu.yaml"
    shell:
        "cltm matrix --runs-dir {params.runs_dir} --languages {params.languages} --seeds {params.seeds}"
        " --metric {params.metric} --policy {params.policy} --n-boot {params.n_boot} --ci {params.ci}"
        " --boot-seed {params.boot_seed} --out $(dirname {output.cltm}) > {log} 2>&1"
