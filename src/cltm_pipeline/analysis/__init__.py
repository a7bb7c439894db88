"""The analysis layer: matrices from run records, paired-seed inference, matrix properties, typology, learning curve.

It reads what training wrote (metrics.json, the study's CSVs) and needs no torch. Modules point down:
``inference`` (tests, intervals, multiplicity) <- ``matrix`` (CLTM, M, SE, outputs) and ``properties``
(analysis.json); ``typology`` (URIEL+ distances), ``simulate`` (studies with a known answer) and
``learning_curve`` (ladder subsets, fit, recommendation) stand beside them.
"""
