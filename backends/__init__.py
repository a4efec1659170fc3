"""chipletc.backends"""
