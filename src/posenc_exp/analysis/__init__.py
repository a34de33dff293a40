"""Analysis tools that read finished runs and sweeps, each a command:

- ``python -m posenc_exp.analysis.report <sweep dir>``: the sweep report (tables, CSV, plots);
- ``python -m posenc_exp.analysis.tables <sweep dir>``: the length-generalization table;
- ``python -m posenc_exp.analysis.figures``: the depth study's figures (docs/);
- ``python -m posenc_exp.analysis.probe [overrides]``: the linear-collapse probe of an attention stack.

They share the plot helpers of :mod:`posenc_exp.analysis.plots`.
"""
