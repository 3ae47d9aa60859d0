"""The recipe: every setting once, with its default, help and allowed values; YAML in and out.
"""
