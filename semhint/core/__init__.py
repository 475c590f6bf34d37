"""The core floor: camera geometry, typed configs, file input/output, shared conventions, checkpoints,
statistics and pictures. Nothing here knows about networks, losses or commands; everything above
builds on it, and it imports nothing of semhint outside ``semhint.core``.
"""
