"""Codebook, labelling, labellers and agreement."""
