"""Training, evaluation and export of the joint segmenter + classifier model."""
