# cltm-pipeline: Cross-Lingual Transfer Matrices on Mozilla Common Voice.
# `snakemake --cores 2` runs the embedded demo; `--configfile config/paper.yaml` the reference grid.
from snakemake.utils import min_version

min_version("9.0")


report: "workflow/report/workflow.rst"


# The demo config is the default only: a --configfile replaces it instead of being merged into it
# (a merged `demo:` block would generate demo data into a real release's directory).
if not config:

    configfile: "config/config.yaml"



include: "workflow/rules/common.smk"
include: "workflow/rules/demo.smk"
include: "workflow/rules/ingest.smk"
include: "workflow/rules/subsets.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/embed.smk"
include: "workflow/rules/cltm.smk"
include: "workflow/rules/design.smk"
include: "workflow/rules/analysis.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        all_outputs(),
    default_target: True
