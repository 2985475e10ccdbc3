"""textgen_operator: the kopf operator that reconciles TextGenerationServices into sharded StatefulSets.

Layers (imports point downwards only; checked by operator/tests/layout/test_import_directions.py):
  main -> handlers -> reconciler -> (kube, builders, status, plan, problems) -> (names, quantities, config)
Everything under builders/, status.py, plan.py and problems.py is pure: dicts in, dicts out, no I/O.
"""

GROUP = "textgen.dev"
VERSION = "v1alpha1"
PLURAL = "textgenerationservices"
KIND = "TextGenerationService"
FIELD_MANAGER = "textgen-operator"
