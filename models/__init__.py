"""chipletc.models"""
