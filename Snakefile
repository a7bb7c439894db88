# cltm-pipeline: Cross-Lingual Transfer Matrices on Mozilla Common Voice.
# `snakemake --cores 2` runs the embedded demo; `--configfile config/paper.yaml` the reference grid.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/demo.smk"
include: "workflow/rules/ingest.smk"
include: "workflow/rules/subsets.smk"


rule all:
    input:
        all_outputs(),
    default_target: True
