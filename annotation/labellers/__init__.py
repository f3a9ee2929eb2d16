"""Automatic labellers: LLM (``llm``), rule-based (``rules``) and trained (``trained``).

Each writes Labels under its own LabelSource (``llm:<model>:<prompt version>``, ``rule:<version>``,
``trained:<train source>:<version>``) through ``annotation.store``.
"""
