"""The data step: read a file, folder, Hub name or in-memory rows, check it, and prepare TRL's datasets.
"""
