"""Evaluation: the metrics (``metrics``) and the protocols that decide which pixels count and how a
monocular prediction is scaled (``protocols``). Pure numpy: no networks, no files beyond reports.
"""
