"""chipletc.compiler.frontends"""
