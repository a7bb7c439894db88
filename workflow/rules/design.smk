# design: {mode: adaptive, rounds: k} (issue 17). After the initial design's matrix (round 0), round r plans
# its cells from the matrix after round r - 1 (checkpoint plan: cltm plan, the round's share of the budget),
# trains them (train_round: rule train on those cells, one job per target and seed group) and builds the
# matrix after round r (round_matrix: rule matrix), until the budget or the target width is reached (a round
# that plans nothing ends the design). The final matrix (rule matrix) holds every round's cells.
localrules:
    plan,
    round_matrix,


checkpoint plan:
    input:
        # ancient: a matrix after round r - 1 rebuilt later (a damaged cell retrained) does not re-plan round r
        cells=lambda w: ancient(P("design.cells", task=w.task, arch=w.arch, round=int(w.round) - 1)),
    output:
        P("design.round"),
    params:
        languages=lambda w: " ".join(CFG.raw["tasks"][w.task]["languages"]),
        budget=lambda w: CFG.round_sizes(w.task)[int(w.round) - 1],
        options=plan_options(),
    log:
        P("logs", name="design/{task}/{arch}/round{round}"),
    benchmark:
        P("benchmarks", name="design/{task}/{arch}/round{round}")
    conda:
        "../envs/cpu.yaml"
    shell:
        "cltm plan --cells {input.cells:q} --languages {params.languages} --budget {params.budget}"
        " {params.options} --out {output:q} > {log:q} 2>&1"


use rule train as train_round with:
    output:
        P("runs.round_flag"),
    log:
        P("logs.round_runs"),
    benchmark:
        P("benchmarks", name="train/{task}/{arch}/{target}/round{round}.seed{seeds}")


use rule matrix as round_matrix with:
    input:
        runs=round_runs,
    output:
        cltm=P("design.cltm"),
        cells=P("design.cells"),
        summary=P("design.summary"),
    log:
        P("logs", name="design/{task}/{arch}/round{round}/matrix"),
    benchmark:
        P("benchmarks", name="design/{task}/{arch}/round{round}/matrix")
