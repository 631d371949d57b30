"""One query's life: the pipeline from the rules to the answer (``pipeline.py``, with
its outcomes, rule running, settings and recording interface beside it).

Imports nothing above triodist.query: rules, asyncproc, backends, cache, wire, util.
"""
