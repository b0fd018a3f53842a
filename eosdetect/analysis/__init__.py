"""Analyses of an image or a slide, as typed results, with their pictures (overlay, heatmap)."""
