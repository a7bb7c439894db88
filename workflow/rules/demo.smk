# The built-in demo corpus, generated in Common Voice layout when the config has a `demo` block.
if "demo" in CFG.raw:
    DEMO = CFG.raw["demo"]
    DEMO_CLEAN = DEMO.get("clean_languages", [])

    rule demo_corpus:
        output:
            expand("{release}/{locale}/{name}", release=RELEASE, locale=[*DEMO["languages"], *DEMO_CLEAN], name=RELEASE_FILES),
            readme=f"{RELEASE}/README.txt",
        params:
            release=lambda w, output: Path(output.readme).parent,
            languages=" ".join(DEMO["languages"]),
            clean=" ".join(DEMO_CLEAN),
            seed=DEMO["seed"],
            speakers=DEMO["speakers_per_gender"],
            clips=DEMO["clips_per_speaker"],
        # locales rendered side by side; the bytes do not depend on it. 2, not more: a cluster job asks for its
        # threads as CPUs, and a small node (or the one-node test cluster) never grants 8
        threads: 2
        log:
            P("logs", name="demo_corpus"),
        benchmark:
            P("benchmarks", name="demo_corpus")
        conda:
            "../envs/cpu.yaml"
        shell:
            "cltm demo-corpus --out {params.release:q} --languages {params.languages} --clean-languages {params.clean}"
            " --seed {params.seed} --speakers-per-gender {params.speakers} --clips-per-speaker {params.clips}"
            " --workers {threads} > {log:q} 2>&1"
