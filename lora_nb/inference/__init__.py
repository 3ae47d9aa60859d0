"""What a trained adapter is for: generate, compare with the base, evaluate, merge.
"""
