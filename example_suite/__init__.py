"""An example suite for pytest-repoclones.

A package, so that its module names (``example_suite.test_changes``) cannot clash with tests/.
"""
