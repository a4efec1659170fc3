"""chipletc.compiler"""
