# The built-in demo corpus, generated in Common Voice layout when the config has a `demo` block.
if "demo" in CFG.raw:

    rule demo_corpus:
        output:
            expand("{release}/{locale}/validated.tsv", release=RELEASE, locale=CFG.raw["demo"]["languages"]),
            readme=f"{RELEASE}/README.txt",
        params:
            release=lambda w, output: Path(output.readme).parent,
            languages=" ".join(CFG.raw["demo"]["languages"]),
            seed=CFG.raw["demo"]["seed"],
            speakers=CFG.raw["demo"]["speakers_per_gender"],
            clips=CFG.raw["demo"]["clips_per_speaker"],
        log:
            f"{RESULTS}/logs/demo_corpus.log",
        conda:
            "../envs/cpu.yaml"
        shell:
            "cltm demo-corpus --out {params.release} --languages {params.languages} --seed {params.seed}"
            " --speakers-per-gender {params.speakers} --clips-per-speaker {params.clips} > {log} 2>&1"
