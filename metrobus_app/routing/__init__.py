"""Routing rules: the rule language (pure Python) and the rule set a bus stores and serves."""
