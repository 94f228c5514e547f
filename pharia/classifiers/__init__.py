"""Offline classifiers shared by the data filters, the training-time content filter and evaluation."""
