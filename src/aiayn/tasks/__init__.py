"""The tasks, each end to end as library code (no argparse, no printing):

- :mod:`aiayn.tasks.translation`: the planner, ``TranslationTask``, ``train_translation``,
  ``Translator``, ``evaluate_translation``;
- :mod:`aiayn.tasks.lm`: ``LMTask``, ``LMPlan``, ``train_lm``, ``LanguageModel``, ``evaluate_lm``;
- :mod:`aiayn.tasks.mlm`: masking, ``MaskedLMTask``, ``train_mlm``, ``SentenceEncoder``;
- :mod:`aiayn.tasks.vision`: ``ClassificationTask``, ``train_vit``, ``ImageClassifier``,
  ``evaluate_classifier``.

The command line (:mod:`aiayn.cli`) parses arguments, calls these and prints.
"""
