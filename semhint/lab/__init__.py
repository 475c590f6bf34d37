"""The project's experiment library: one evaluator of a trained run (``evaluator``), seed sweeps
(``sweep``), error budgets (``budget``), hint quality on trained depth (``hint_quality``) and the lab
records they write (``records``). The scripts in experiments/ and benchmarks/ are thin layers over it.
"""
