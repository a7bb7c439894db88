# Encoders are resolved once into resources/models/<name>; training jobs never touch the hub.
rule prepare_model:
    output:
        "resources/models/{model}/cltm_model.json",
    params:
        arch=lambda w: CFG.raw["models"][w.model]["arch"],
        source=lambda w: CFG.raw["models"][w.model]["source"],
        tiny=lambda w: tiny_arg(w.model),
    log:
        P("logs", name="models/{model}"),
    benchmark:
        P("benchmarks", name="models/{model}")
    conda:
        "../envs/gpu.yaml"
    shell:
        "cltm prepare-model --arch {params.arch} --source {params.source:q} --out \"$(dirname {output:q})\""
        " {params.tiny} > {log:q} 2>&1"
