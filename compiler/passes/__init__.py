"""chipletc.compiler.passes"""
