"""Weight import and export between aiayn models and Hugging Face ``transformers`` models.

Each converter maps the foreign parameter names (GPT-2's ``c_attn``, BERT's ``query``) onto aiayn's
(``q_proj``, ...) in one place, so no other module ever sees them. ``transformers`` is imported only
when a converter runs; aiayn itself does not depend on it.
"""
