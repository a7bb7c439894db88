# Per (task, arch): M, CLTM, SE, Fieller intervals, paired tests with BH, self gain, missing cells.
localrules:
    matrix,


rule matrix:
    input:
        runs=matrix_runs,
    output:
        cltm=P("matrices.cltm"),
        cells=P("matrices.cells"),
        summary=P("matrices.summary"),
    params:
        runs_dir=lambda w: P("runs", task=w.task, arch=w.arch),
        languages=lambda w: " ".join(CFG.raw["tasks"][w.task]["languages"]),
        seeds=lambda w: " ".join(map(str, CFG.seeds(w.task))),
        metric=lambda w: CFG.raw["tasks"][w.task]["metric"],
        policy=CFG.raw["aggregation"],
        test=CFG.raw["inference"]["test"],
        ci=CFG.raw["inference"]["ci"],
        seed=CFG.raw["inference"]["seed"],
    log:
        P("logs", name="matrices/{task}/{arch}"),
    benchmark:
        P("benchmarks", name="matrices/{task}/{arch}")
    conda:
        "../envs/cpu.yaml"
    shell:
        "cltm matrix --runs-dir {params.runs_dir:q} --languages {params.languages} --seeds {params.seeds}"
        " --metric {params.metric} --policy {params.policy} --test {params.test} --ci {params.ci}"
        " --seed {params.seed} --out \"$(dirname {output.cltm:q})\" > {log:q} 2>&1"


# design: {mode: adaptive} only: the matrix's untrained dual cells predicted with intervals (cltm complete).
rule complete:
    input:
        cltm=P("matrices.cltm"),
    output:
        cells=P("completion.cells"),
    log:
        P("logs", name="completion/{task}/{arch}"),
    benchmark:
        P("benchmarks", name="completion/{task}/{arch}")
    conda:
        "../envs/cpu.yaml"
    shell:
        "cltm complete --matrix \"$(dirname {input.cltm:q})\" --out \"$(dirname {output.cells:q})\" > {log:q} 2>&1"
