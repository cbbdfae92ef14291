"""Reusable constructs, one per logical unit; stacks compose them and grant access between them.

Not called `constructs/`: that name would shadow the `constructs` package.
"""
