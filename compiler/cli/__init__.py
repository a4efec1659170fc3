"""chipletc.compiler.cli"""
