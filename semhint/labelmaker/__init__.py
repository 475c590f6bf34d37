"""Noisy labels, made the way a user would (``labeler``: fit a small segmentation model on a handful
of labelled frames, then label every frame) or under control (``corrupt``: damage ground truth).
Both report the labels' mIoU against ground truth where it exists: the noise level training sees.
"""
