"""The language every part of chipletc speaks: plain data with invariants.

No torch, onnx or ortools here: ``ir`` is cheap to import and to test.
"""
